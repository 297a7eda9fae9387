"""Workstations sharing one database: one raw store, every duplicate audited, replay anywhere.

Each workstation has its own settings and its own local `raw_store` folder; on
PostgreSQL the raw exports live in the database, so `replay --verify` run from
any workstation's settings checks every file, whichever workstation imported it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from db import audit
from db.migrate import open_database
from db.models import raw_files, sessions
from db.raw_blobs import raw_blobs
from ingest.pipeline import Importer
from ingest.rawstore import open_raw_store, sha256_hex
from ingest.replay import Replayer
from ingest.replay.report import RAW_MISSING, TAMPERED
from pumptrail.cli import main
from tests.ingest.exports import binary, csv, history, rules


@dataclass(frozen=True)
class Workstation:
    """One clinic workstation: its actor name, its local raw folder, its settings."""

    name: str
    url: str
    raw: Path
    mode: str = "auto"

    @contextmanager
    def importer(self) -> Iterator[Importer]:
        engine = open_database(self.url)
        try:
            store = open_raw_store(engine, self.raw, self.mode)
            yield Importer(engine, store, rules(), actor=f"cli:{self.name}")
        finally:
            engine.dispose()

    def replay_argv(self) -> list[str]:
        return [
            "replay",
            "--db",
            self.url,
            "--raw-store",
            str(self.raw),
            "--raw-store-mode",
            self.mode,
            "--data-dir",
            str(self.raw.parent / "data"),
        ]


def two_workstations(url: str, tmp_path: Path, mode: str = "auto") -> tuple[Workstation, ...]:
    return tuple(Workstation(name, url, tmp_path / name / "raw", mode) for name in ("ws-a", "ws-b"))


def replay(ws: Workstation) -> tuple[int, int, int, list[str]]:
    """Raw files and sessions checked, and the differences, of a replay from `ws`."""
    engine = open_database(ws.url)
    try:
        store = open_raw_store(engine, ws.raw, ws.mode)
        report = Replayer(engine, store, rules(), actor=f"cli:{ws.name}").run()
    finally:
        engine.dispose()
    return report.raw_files, report.sessions, report.pumps, [d.line() for d in report.differences]


def stored_counts(url: str) -> tuple[int, int]:
    engine = open_database(url)
    try:
        with engine.connect() as connection:
            files = connection.execute(select(func.count()).select_from(raw_files)).scalar()
            stored = connection.execute(select(func.count()).select_from(sessions)).scalar()
    finally:
        engine.dispose()
    return int(files or 0), int(stored or 0)


@pytest.mark.postgres
def test_two_workstations_on_one_postgresql_replay_clean_from_each(
    pg_schema_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = two_workstations(pg_schema_url, tmp_path)
    pump_x = history(61, visits=6)
    pump_y = history(62, visits=3)
    # A imports visits 0-3 of pump X and pump Y; B visits 2-5 of pump X (2 and 3
    # overlap: identical bytes) and the CSV export of visit 1 of pump Y.
    with a.importer() as imp:
        first = [imp.import_bytes(binary(s), f"x{n}.psl") for n, s in enumerate(pump_x[:4])]
        first += [imp.import_bytes(binary(s), f"y{n}.psl") for n, s in enumerate(pump_y)]
        refused = imp.import_bytes(b"PSL Session Export\nnot really", "broken.csv")
    with b.importer() as imp:
        second = [imp.import_bytes(binary(s), f"x{n}.psl") for n, s in enumerate(pump_x[2:], 2)]
        second.append(imp.import_bytes(csv(pump_y[1]), "y1.csv"))
    assert [r.outcome for r in first] == ["imported"] * 7
    assert refused.outcome == "refused"
    outcomes = ["duplicate", "duplicate", "imported", "imported", "duplicate"]
    assert [r.outcome for r in second] == outcomes
    # Nothing was written to either workstation's folder: the bytes are in the database.
    assert not a.raw.exists() and not b.raw.exists()
    files, stored = stored_counts(pg_schema_url)
    assert (files, stored) == (7 + 1 + 2 + 1, 9)
    for ws in (a, b):
        assert replay(ws) == (files, stored, 2, [])
        status = main(ws.replay_argv())
        out = capsys.readouterr().out.splitlines()
        assert status == 0
        assert out[-1].startswith(
            f"replayed {files} raw files, {stored} sessions of 2 pumps: no differences "
            "(database postgresql"
        )


@pytest.mark.postgres
def test_a_per_workstation_folder_store_fails_replay_elsewhere(
    pg_schema_url: str, tmp_path: Path
) -> None:
    """The configuration the database store replaces: each folder holds only its own files."""
    a, b = two_workstations(pg_schema_url, tmp_path, mode="files")
    with a.importer() as imp:
        assert imp.import_bytes(binary(history(63, visits=1)[0]), "a.psl").outcome == "imported"
    with b.importer() as imp:
        assert imp.import_bytes(binary(history(64, visits=1)[0]), "b.psl").outcome == "imported"
    for ws in (a, b):
        lines = replay(ws)[3]
        assert len(lines) == 1
        assert f": {RAW_MISSING}: not in the raw store" in lines[0]


def test_every_duplicate_is_audited_whichever_workstation_saw_it(
    db_url: str, tmp_path: Path
) -> None:
    # One raw store for both on SQLite too (what PostgreSQL chooses by itself).
    a, b = two_workstations(db_url, tmp_path, mode="database")
    one, two = history(65, visits=2)
    with a.importer() as imp:
        imported_one = imp.import_bytes(binary(one), "one.psl")
    with b.importer() as imp:
        seen_by_b = imp.import_bytes(binary(one), "one-again.psl")
        imported_two = imp.import_bytes(binary(two), "two.psl")
    with a.importer() as imp:
        seen_by_a = imp.import_bytes(binary(two), "two-again.psl")
        seen_by_a_again = imp.import_bytes(binary(two), "two-once-more.psl")
        with imp.engine.connect() as connection:
            entries = audit.show(connection, audit.AuditFilter(action=audit.IMPORT))
            assert audit.verify(connection) is None
    assert [r.outcome for r in (imported_one, seen_by_b, imported_two)] == [
        "imported",
        "duplicate",
        "imported",
    ]
    assert (seen_by_a.outcome, seen_by_a_again.outcome) == ("duplicate", "duplicate")
    assert [(e.actor, e.target, e.detail["outcome"], e.detail["sha256"]) for e in entries] == [
        ("cli:ws-a", one.header.session_id, "imported", imported_one.sha256),
        ("cli:ws-b", one.header.session_id, "duplicate", imported_one.sha256),
        ("cli:ws-b", two.header.session_id, "imported", imported_two.sha256),
        ("cli:ws-a", two.header.session_id, "duplicate", imported_two.sha256),
        ("cli:ws-a", two.header.session_id, "duplicate", imported_two.sha256),
    ]
    # The duplicates' entries agree with what is stored: replay finds nothing.
    assert replay(a)[3] == []


def test_damaged_blob_is_reported_by_replay_verify(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The database store on both backends (SQLite only when asked for).
    a, b = two_workstations(db_url, tmp_path, mode="database")
    edited, gone = history(66, visits=2)
    with a.importer() as imp:
        assert imp.import_bytes(binary(edited), "edited.psl").outcome == "imported"
    with b.importer() as imp:
        assert imp.import_bytes(binary(gone), "gone.psl").outcome == "imported"
    edited_sha, gone_sha = sha256_hex(binary(edited)), sha256_hex(binary(gone))
    engine = open_database(db_url)
    try:
        with engine.begin() as connection:
            connection.execute(
                update(raw_blobs)
                .where(raw_blobs.c.sha256 == edited_sha)
                .values(data=binary(edited) + b"\x00")
            )
            connection.execute(raw_blobs.delete().where(raw_blobs.c.sha256 == gone_sha))
    finally:
        engine.dispose()
    for ws in (a, b):
        lines = replay(ws)[3]
        assert len(lines) == 2
        assert lines[0].startswith(f"raw {edited_sha[:12]}: {TAMPERED}: bytes hash to ")
        assert lines[1].startswith(f"raw {gone_sha[:12]}: {RAW_MISSING}: not in the raw store")
        status = main(ws.replay_argv())
        out = capsys.readouterr().out
        assert status == 1
        assert f"raw {edited_sha[:12]}: {TAMPERED}" in out
