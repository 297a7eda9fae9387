"""The import pipeline against SQLite and PostgreSQL (docs/coding-rules.md §7.5, §7.16)."""

from __future__ import annotations

import json
import logging
import random
import threading
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select, update
from sqlalchemy.engine import Connection

from db import queries
from db.engine import WRITE_OPTION, make_durable
from db.migrate import open_database
from db.models import (
    events,
    evidence,
    evidence_flags,
    pumps,
    raw_files,
    sessions,
    setting_values,
)
from evidence import derive_evidence, evidence_document
from fixtures.scenario import Scenario
from fixtures.scenarios import VisitPlan, drain, new_pump, visit
from ingest import pipeline
from ingest.pipeline import Importer, ImportResult, walk_folder
from ingest.rawstore import RawStore
from parsers.errors import DecodeError
from parsers.model import Session
from parsers.params import MAX_FILE_BYTES
from parsers.records import PatientRec
from parsers.registry import PARSER_VERSION, decode_bytes
from tests.ingest import exports
from tests.ingest.exports import binary, csv, history, importer, rules, write, write_binaries


def stored_evidence(imp: Importer) -> list[dict[str, Any]]:
    with imp.engine.connect() as connection:
        return [json.loads(text) for text in queries.evidence_documents(connection)]


def expected_evidence(files: Sequence[bytes]) -> list[dict[str, Any]]:
    """Evidence derived straight from the decoded files, each with its full history."""
    decoded = [decode_bytes(data, source="x") for data in files]
    decoded.sort(key=lambda s: (s.pump.serial, s.session_start_utc, s.session_id))
    documents = []
    for session in decoded:
        earlier = [
            other
            for other in decoded
            if other.pump.serial == session.pump.serial
            and other.session_start_utc < session.session_start_utc
        ]
        documents.append(evidence_document(derive_evidence(session, earlier, rules())))
    return documents


def count(imp: Importer, table: Any) -> int:
    with imp.engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(table)).scalar_one())


# ---------------------------------------------------------------------------
# Files and folders


def test_folder_import_stores_each_session_with_evidence(db_url: str, tmp_path: Path) -> None:
    scenarios = history(1, visits=4)
    folder = tmp_path / "in"
    paths = write_binaries(folder / "sub", scenarios)
    with importer(db_url, tmp_path / "raw") as imp:
        results = list(imp.import_paths([folder]))
        assert [r.outcome for r in results] == ["imported"] * 4
        assert [r.name for r in results] == [str(p) for p in paths]
        assert [r.session_id for r in results] == [s.header.session_id for s in scenarios]
        assert count(imp, sessions) == 4
        assert count(imp, evidence) == 4
        assert count(imp, raw_files) == 4
        documents = stored_evidence(imp)
    assert [d["session_id"] for d in documents] == [s.header.session_id for s in scenarios]
    assert documents[0]["prior_session_id"] is None
    assert "no_prior_session" in documents[0]["flags"]
    assert [d["prior_session_id"] for d in documents[1:]] == [
        s.header.session_id for s in scenarios[:-1]
    ]
    assert documents == expected_evidence([binary(s) for s in scenarios])


def test_walk_folder_is_recursive_sorted_any_extension_regular_files_only(tmp_path: Path) -> None:
    root = tmp_path / "drop"
    for name in ("b.psl", "a/z.csv", "a/y/x.bin", ".hidden", "c", "a.txt"):
        write(root, name, b"x")
    (root / "link.psl").symlink_to(root / "b.psl")
    (root / "dirlink").symlink_to(root / "a", target_is_directory=True)
    found = [p.relative_to(root).as_posix() for p in walk_folder(root)]
    assert found == [".hidden", "a/y/x.bin", "a/z.csv", "a.txt", "b.psl", "c"]


def test_missing_path_is_refused_with_reason(db_url: str, tmp_path: Path) -> None:
    with importer(db_url, tmp_path / "raw") as imp:
        result = imp.import_path(tmp_path / "nothere.psl")
    assert result.outcome == "refused"
    assert "cannot read" in result.detail
    assert "No such file" in result.detail


# ---------------------------------------------------------------------------
# Duplicates (§7.16)


def test_identical_bytes_are_recognised_before_decoding(db_url: str, tmp_path: Path) -> None:
    scenario = history(2, visits=1)[0]
    first = write(tmp_path, "first.psl", binary(scenario))
    again = write(tmp_path, "again.psl", binary(scenario))
    calls: list[str] = []

    def spy(data: bytes, *, source: str) -> Session:
        calls.append(source)
        return decode_bytes(data, source=source)

    with importer(db_url, tmp_path / "raw") as imp:
        counting = Importer(imp.engine, imp.store, imp.rules, decode=spy)
        assert counting.import_path(first).outcome == "imported"
        result = counting.import_path(again)
        assert calls == [str(first)]
        assert count(imp, raw_files) == 1
        assert count(imp, sessions) == 1
    assert result.outcome == "duplicate"
    assert result.session_id == scenario.header.session_id
    assert result.detail == (
        f"{again}: identical to {first} (session {scenario.header.session_id})"
    )


@pytest.mark.parametrize("order", [("psl", "csv"), ("csv", "psl")])
def test_same_session_in_both_formats_is_one_session(
    db_url: str, tmp_path: Path, order: tuple[str, str]
) -> None:
    scenario = history(3, visits=2)[1]
    data = {"psl": binary(scenario), "csv": csv(scenario)}
    paths = [write(tmp_path, f"export.{ext}", data[ext]) for ext in order]
    with importer(db_url, tmp_path / "raw") as imp:
        first, second = (imp.import_path(p) for p in paths)
        with imp.engine.connect() as connection:
            linked = (
                connection.execute(
                    select(raw_files.c.source_format)
                    .select_from(raw_files.join(sessions, sessions.c.id == raw_files.c.session_pk))
                    .where(sessions.c.session_id == scenario.header.session_id)
                    .order_by(raw_files.c.id)
                )
                .scalars()
                .all()
            )
            row = connection.execute(
                select(sessions.c.source_format, sessions.c.conflicting_exports)
            ).one()
        assert count(imp, sessions) == 1
        assert count(imp, evidence) == 1
        assert imp.store.contains(first.sha256 or "")
        assert imp.store.contains(second.sha256 or "")
        documents = stored_evidence(imp)
    fmt = {"psl": "psl-binary", "csv": "psl-csv"}
    assert (first.outcome, second.outcome) == ("imported", "duplicate")
    assert second.conflicting_exports is False
    assert f"already stored (from a {fmt[order[0]]} export)" in second.detail
    assert linked == [fmt[order[0]], fmt[order[1]]]
    assert tuple(row) == (fmt[order[0]], False)
    assert "conflicting_exports" not in documents[0]["flags"]


def test_conflicting_exports_binary_first_keeps_binary(db_url: str, tmp_path: Path) -> None:
    scenario = history(4, visits=1)[0]
    edited = exports.with_other_note(scenario)
    psl = write(tmp_path, "s.psl", binary(scenario))
    other = write(tmp_path, "s.csv", csv(edited))
    with importer(db_url, tmp_path / "raw") as imp:
        imp.import_path(psl)
        result = imp.import_path(other)
        with imp.engine.connect() as connection:
            row = connection.execute(
                select(
                    sessions.c.source_format, sessions.c.conflicting_exports, sessions.c.document
                )
            ).one()
        assert count(imp, raw_files) == 2
        documents = stored_evidence(imp)
    assert result.outcome == "duplicate"
    assert result.conflicting_exports is True
    assert "exports disagree; flagged conflicting_exports, using the psl-binary export" in (
        result.detail
    )
    assert row.source_format == "psl-binary"
    assert row.conflicting_exports is True
    assert "Edited after export." not in row.document
    assert documents[0]["flags"][-1] == "conflicting_exports"


def test_conflicting_exports_csv_first_switches_to_binary_and_rederives_later(
    db_url: str, tmp_path: Path
) -> None:
    scenarios = history(5, visits=3)
    middle = scenarios[1]
    edited_csv = csv(exports.with_other_note(middle))
    with importer(db_url, tmp_path / "raw") as imp:
        imp.import_path(write(tmp_path, "a.psl", binary(scenarios[0])))
        imp.import_path(write(tmp_path, "b.csv", edited_csv))
        imp.import_path(write(tmp_path, "c.psl", binary(scenarios[2])))
        result = imp.import_path(write(tmp_path, "b.psl", binary(middle)))
        with imp.engine.connect() as connection:
            row = connection.execute(
                select(sessions.c.id, sessions.c.source_format, sessions.c.document).where(
                    sessions.c.session_id == middle.header.session_id
                )
            ).one()
            kinds = set(
                connection.execute(
                    select(events.c.position_kind).where(events.c.session_pk == row.id)
                ).scalars()
            )
            rebuilt = queries.load_session(connection, middle.header.session_id)
        documents = stored_evidence(imp)
    assert result.conflicting_exports is True
    assert result.rederived == 1
    assert row.source_format == "psl-binary"
    assert "Edited after export." not in row.document
    assert kinds == {"offset"}
    assert rebuilt == decode_bytes(binary(middle), source=str(tmp_path / "b.psl"))
    expected = expected_evidence([binary(s) for s in scenarios])
    expected[1]["flags"].append("conflicting_exports")
    assert documents == expected


# ---------------------------------------------------------------------------
# Refused files


def test_broken_file_is_refused_and_the_others_imported(db_url: str, tmp_path: Path) -> None:
    scenarios = history(6, visits=2)
    folder = tmp_path / "in"
    write_binaries(folder, scenarios)
    broken = bytearray(binary(scenarios[0]))
    broken[100] ^= 0xFF  # a byte of record 0: its CRC no longer matches
    broken_path = write(folder, "v00b-broken.psl", bytes(broken))
    with importer(db_url, tmp_path / "raw") as imp:
        results = list(imp.import_paths([folder]))
        with imp.engine.connect() as connection:
            refused_row = connection.execute(
                select(raw_files).where(raw_files.c.status == "refused")
            ).one()
        assert count(imp, sessions) == 2
        assert imp.store.get(refused_row.sha256) == bytes(broken)
    outcomes = {Path(r.name).name: r.outcome for r in results}
    assert outcomes == {"v00.psl": "imported", "v00b-broken.psl": "refused", "v01.psl": "imported"}
    refused = next(r for r in results if r.outcome == "refused")
    assert refused.error is not None
    assert refused.detail.startswith(f"{broken_path}: offset 0x")
    assert refused_row.error_code == refused.error["code"]
    stored_error = json.loads(refused_row.error)
    assert stored_error["code"] == refused.error["code"]
    assert stored_error["text"] == refused.detail
    assert refused_row.session_pk is None
    assert refused_row.source_format == "psl-binary"


def test_refused_bytes_offered_again_are_refused_again(db_url: str, tmp_path: Path) -> None:
    junk = b"not an export at all\n"
    with importer(db_url, tmp_path / "raw") as imp:
        first = imp.import_path(write(tmp_path, "one.txt", junk))
        second = imp.import_path(write(tmp_path, "two.txt", junk))
        assert count(imp, raw_files) == 1
    assert first.outcome == second.outcome == "refused"
    assert first.error is not None and first.error["code"] == "unknown_format"
    assert second.detail.startswith(f"{tmp_path / 'two.txt'}: identical to {tmp_path / 'one.txt'}")
    assert "refused before: offset 0x0: not a pump session export" in second.detail


def test_bytes_refused_by_an_older_parser_are_decoded_again(db_url: str, tmp_path: Path) -> None:
    """After an upgrade (or an admin's re-queue after one) refused bytes get a new decode."""
    scenario = history(5, visits=1)[0]
    path = write(tmp_path, "late.psl", binary(scenario))

    def old_parser(data: bytes, *, source: str) -> Session:
        raise DecodeError("record_crc", "record CRC mismatch", source=source)

    with importer(db_url, tmp_path / "raw") as imp:
        refusing = Importer(imp.engine, imp.store, imp.rules, decode=old_parser)
        assert refusing.import_path(path).outcome == "refused"
        # The same parser version refuses the bytes again without decoding them.
        assert imp.import_path(path).outcome == "refused"
        with imp.engine.begin() as connection:
            connection.execute(update(raw_files).values(parser_version="pumptrail-parsers/0"))
        result = imp.import_path(path)
        assert result.outcome == "imported"
        assert result.session_id == scenario.header.session_id
        assert count(imp, raw_files) == 1
        assert count(imp, sessions) == 1
        with imp.engine.connect() as connection:
            status, version = connection.execute(
                select(raw_files.c.status, raw_files.c.parser_version)
            ).one()
    assert (status, version) == ("imported", PARSER_VERSION)


def test_file_over_the_size_limit_is_refused_unread(db_url: str, tmp_path: Path) -> None:
    big = tmp_path / "big.psl"
    with big.open("wb") as handle:
        handle.truncate(MAX_FILE_BYTES + 1)
    with importer(db_url, tmp_path / "raw") as imp:
        result = imp.import_path(big)
        assert count(imp, raw_files) == 0
    assert result.outcome == "refused"
    assert result.error is not None and result.error["code"] == "file_too_large"
    assert result.detail.startswith(f"{big}: offset 0x0: file larger than the 4 MiB limit")
    assert f"{MAX_FILE_BYTES + 1} bytes" in result.detail


# ---------------------------------------------------------------------------
# The chain (§7.5): any import order gives the same evidence


def wipe(imp: Importer) -> None:
    with imp.engine.begin() as connection:
        for table in (evidence_flags, evidence, events, setting_values, raw_files, sessions, pumps):
            connection.execute(table.delete())


def test_out_of_order_import_gives_the_in_order_evidence(db_url: str, tmp_path: Path) -> None:
    scenarios = history(7, visits=7) + history(8, visits=4)
    files = [binary(s) for s in scenarios]
    shuffled = list(range(len(files)))
    random.Random(3).shuffle(shuffled)
    shuffled.sort(key=lambda i: i % 3)  # older sessions of each pump arrive late
    with importer(db_url, tmp_path / "raw") as imp:
        in_order_results = [imp.import_bytes(data, name=f"f{i}") for i, data in enumerate(files)]
        in_order = stored_evidence(imp)
        wipe(imp)
        imp.store = RawStore(tmp_path / "raw2")
        results = [imp.import_bytes(files[i], name=f"f{i}") for i in shuffled]
        late = stored_evidence(imp)
    assert all(r.outcome == "imported" for r in in_order_results + results)
    assert sum(r.rederived for r in in_order_results) == 0
    assert sum(r.rederived for r in results) > 0
    assert late == in_order
    assert in_order == expected_evidence(files)


def test_reverse_order_import_gives_the_full_history_evidence(db_url: str, tmp_path: Path) -> None:
    files = [binary(s) for s in history(9, visits=6)]
    with importer(db_url, tmp_path / "raw") as imp:
        for index, data in enumerate(reversed(files)):
            result = imp.import_bytes(data, name=f"r{index}")
        reverse = stored_evidence(imp)
    # The oldest session came last: every later session whose history reads it was re-derived.
    assert result.rederived >= 1
    assert reverse == expected_evidence(files)


def _no_refill_chain(seed: int, visits: int) -> list[Scenario]:
    rng = random.Random(seed)
    pump = new_pump(rng)
    when = datetime(2025, 3, 3, 9, 0)
    out = []
    for n in range(visits):
        plan = VisitPlan(refill=False, dose_change_percent=10 if n == 2 else 0, logged_alarms=2)
        out.append(visit(rng, pump, when, plan, name=f"nr-{n}"))
        drain(pump, 20)
        when += timedelta(days=20)
    return out


def test_chain_without_refills_uses_the_prior_session(db_url: str, tmp_path: Path) -> None:
    files = [binary(s) for s in _no_refill_chain(10, 5)]
    with importer(db_url, tmp_path / "raw") as imp:
        for index in (3, 0, 4, 2, 1):
            imp.import_bytes(files[index], name=f"n{index}")
        documents = stored_evidence(imp)
    assert documents == expected_evidence(files)
    assert all(d["refill"] is None for d in documents)


def test_sessions_starting_at_the_same_instant_are_not_each_others_prior(
    db_url: str, tmp_path: Path
) -> None:
    scenarios = history(11, visits=2)
    # Another session of the same pump starting at the very same instant.
    twin = _with_session_id(
        exports.with_other_note(scenarios[1]), "00000000-0000-4000-8000-000000000001"
    )
    files = [binary(scenarios[0]), binary(scenarios[1]), binary(twin)]
    with importer(db_url, tmp_path / "raw") as imp:
        for index in (2, 1, 0):
            imp.import_bytes(files[index], name=f"t{index}")
        documents = stored_evidence(imp)
    assert documents == expected_evidence(files)
    first_id = scenarios[0].header.session_id
    assert [d["prior_session_id"] for d in documents] == [None, first_id, first_id]


def _with_session_id(scenario: Scenario, session_id: str) -> Scenario:
    return replace(scenario, header=scenario.header._replace(session_id=session_id))


def test_evidence_derived_again_equals_the_stored(db_url: str, tmp_path: Path) -> None:
    files = [binary(s) for s in history(16, visits=5) + history(17, visits=3)]
    with importer(db_url, tmp_path / "raw") as imp:
        for index in (4, 6, 0, 7, 2, 1, 5, 3):
            imp.import_bytes(files[index], name=f"e{index}")
        stored = stored_evidence(imp)
        # A fresh importer: nothing cached, every session rebuilt from its stored document.
        fresh = Importer(imp.engine, imp.store, imp.rules)
        with imp.engine.connect() as connection:
            again = [fresh.evidence_for(connection, d["session_id"]) for d in stored]
            assert fresh.evidence_for(connection, "no-such-session") is None
    assert again == stored


def test_concurrent_importers_of_one_pump_derive_from_each_other(
    db_url: str, tmp_path: Path
) -> None:
    files = [binary(s) for s in history(18, visits=8)]
    order = list(range(len(files)))
    random.Random(4).shuffle(order)
    with importer(db_url, tmp_path / "raw") as imp:
        # The same file twice among the work, so two threads may race on its bytes too.
        work = [*order, order[0]]
        results: list[Any] = []

        def run(share: Sequence[int], label: str) -> None:
            own = Importer(imp.engine, imp.store, imp.rules)
            results.extend(own.import_bytes(files[i], name=f"{label}{i}") for i in share)

        threads = [threading.Thread(target=run, args=(work[k::2], f"t{k}-")) for k in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        documents = stored_evidence(imp)
    outcomes = sorted(r.outcome for r in results)
    assert outcomes == ["duplicate"] + ["imported"] * len(files), [r.detail for r in results]
    assert documents == expected_evidence(files)


def test_rederive_all_gives_the_same_documents(db_url: str, tmp_path: Path) -> None:
    files = [binary(s) for s in history(12, visits=5)]
    with importer(db_url, tmp_path / "raw") as imp:
        for index, data in enumerate(files):
            imp.import_bytes(data, name=f"x{index}")
        before = stored_evidence(imp)
        with imp.engine.begin() as connection:
            assert imp.rederive_all(connection) == 5
        assert stored_evidence(imp) == before


# ---------------------------------------------------------------------------
# What is recorded, and what is never logged


def test_parser_and_rules_versions_recorded(db_url: str, tmp_path: Path) -> None:
    with importer(db_url, tmp_path / "raw") as imp:
        imp.import_bytes(binary(history(13, visits=1)[0]), name="one.psl")
        with imp.engine.connect() as connection:
            session_version = connection.execute(select(sessions.c.parser_version)).scalar_one()
            ev = connection.execute(
                select(evidence.c.parser_version, evidence.c.rules_version, evidence.c.document)
            ).one()
    assert session_version == PARSER_VERSION
    assert ev.parser_version == PARSER_VERSION
    assert ev.rules_version == rules().version
    assert json.loads(ev.document)["rules_version"] == rules().version


def test_stored_session_rebuilds_to_the_decoded_session(db_url: str, tmp_path: Path) -> None:
    scenario = history(14, visits=2)[1]
    for name, data in (("s.psl", binary(scenario)), ("s.csv", csv(scenario))):
        with importer(db_url, tmp_path / name) as imp:
            imp.import_bytes(data, name=name)
            with imp.engine.connect() as connection:
                rebuilt = queries.load_session(connection, scenario.header.session_id)
            with imp.engine.begin() as connection:
                connection.execute(events.delete())
                connection.execute(evidence.delete())
                connection.execute(raw_files.delete())
                connection.execute(sessions.delete())
        assert rebuilt == decode_bytes(data, source=name)


def test_logs_name_no_patient_and_no_file(
    db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    scenarios = history(15, visits=3)
    folder = tmp_path / "Doe_Jane_MRN"
    write_binaries(folder, scenarios)
    write(folder, "zz.csv", csv(exports.with_other_note(scenarios[0])))
    write(folder, "zzz.bin", b"junk")
    caplog.set_level(logging.DEBUG)
    with importer(db_url, tmp_path / "raw") as imp:
        list(imp.import_paths([folder]))
    text = caplog.text
    assert "exports of session" in text  # the conflict was logged, by session ID
    patients = [r for s in scenarios for r in s.records if isinstance(r, PatientRec)]
    assert len(patients) == 3
    for patient in patients:
        assert patient.patient_id not in text
        assert patient.patient_name not in text
    assert "Doe_Jane_MRN" not in text


def test_import_writes_the_code_of_every_profile_with_the_evidence(
    db_url: str, tmp_path: Path
) -> None:
    from db.users import evidence_codes

    scenario = history(6, visits=1)[0]
    with importer(db_url, tmp_path / "raw") as imp:
        assert imp.import_path(write(tmp_path, "v.psl", binary(scenario))).outcome == "imported"
        with imp.engine.connect() as connection:
            rows = dict(
                connection.execute(select(evidence_codes.c.profile, evidence_codes.c.procedure))
                .tuples()
                .all()
            )
        document = stored_evidence(imp)[0]
    assert rows == {profile: code["procedure"] for profile, code in document["codes"].items()}
    assert set(rows) >= {"rate-dose", "rate-dose-alarms", "any-setting"}


# ---------------------------------------------------------------------------
# Bulk import with group commit (`pumptrail import`)


class RecordingStore(RawStore):
    """A durable raw store that notes each group flush in a shared log."""

    def __init__(self, root: Path, log: list[object], *, fail_sync: bool = False) -> None:
        super().__init__(root, durable=True)
        self.log = log
        self.fail_sync = fail_sync

    def sync(self) -> int:
        if self.fail_sync:
            self.log.append("sync failed")
            raise OSError(5, "Input/output error")
        flushed = super().sync()
        self.log.append(("sync", flushed))
        return flushed


def bulk_files(tmp_path: Path) -> list[tuple[bytes, str] | ImportResult]:
    """Five visits of one pump, a refused file, an unreadable one and a duplicate."""
    visits = [binary(s) for s in history(41, visits=5)]
    unreadable = ImportResult("gone.psl", "refused", "gone.psl: cannot read: No such file")
    return [
        *((data, f"v{i}.psl") for i, data in enumerate(visits[:3])),
        (b"not an export", "junk.txt"),
        unreadable,
        *((data, f"v{i}.psl") for i, data in enumerate(visits[3:], start=3)),
        (visits[0], "copy-of-v0.psl"),
    ]


def test_bulk_import_flushes_raw_bytes_first_and_reports_a_group_once_it_is_durable(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = bulk_files(tmp_path)
    log: list[object] = []
    real_make_durable = make_durable

    def recording_make_durable(engine: Engine) -> None:
        real_make_durable(engine)
        log.append("durable")

    monkeypatch.setattr(pipeline, "make_durable", recording_make_durable)
    engine = open_database(db_url)
    try:

        def note_import_commit(connection: Connection) -> None:
            if connection.get_execution_options().get(WRITE_OPTION):
                log.append("commit")

        event.listen(engine, "commit", note_import_commit)
        imp = Importer(engine, RecordingStore(tmp_path / "raw", log), rules())
        results = imp.import_many(iter(items), group=4)
        first = next(results)
        # Group 1 (v0, v1, v2, junk): flushed, four commits, made durable, then reported.
        assert log[0][0] == "sync" and log[0][1] >= 4  # type: ignore[index]
        assert log[1:] == ["commit"] * 4 + ["durable"]
        rest = list(results)
        # Group 2 (unreadable, v3, v4, copy): the unreadable file commits nothing.
        assert log[6][0] == "sync"  # type: ignore[index]
        assert log[7:] == ["commit"] * 3 + ["durable"]
        bulk = [first, *rest]
        bulk_evidence = stored_evidence(imp)
    finally:
        engine.dispose()
    # The outcome, detail and evidence of every file equal a file-by-file import's
    # (into SQLite: neither depends on the backend).
    with importer(f"sqlite:///{tmp_path / 'one-by-one.db'}", tmp_path / "raw2") as other:
        one_by_one = [
            item if isinstance(item, ImportResult) else other.import_bytes(*item) for item in items
        ]
        one_by_one_evidence = stored_evidence(other)
    assert [(r.name, r.outcome, r.detail) for r in bulk] == [
        (r.name, r.outcome, r.detail) for r in one_by_one
    ]
    assert [r.outcome for r in bulk] == ["imported"] * 3 + ["refused"] * 2 + ["imported"] * 2 + [
        "duplicate"
    ]
    assert bulk_evidence == one_by_one_evidence
    assert len(bulk_evidence) == 5


def test_bulk_import_group_whose_raw_bytes_cannot_be_flushed_stores_nothing(
    db_url: str, tmp_path: Path
) -> None:
    visits = [binary(s) for s in history(42, visits=3)]
    log: list[object] = []
    with importer(db_url, tmp_path / "unused") as imp:
        imp.store = RecordingStore(tmp_path / "raw", log, fail_sync=True)
        results = list(imp.import_many([(d, f"v{i}.psl") for i, d in enumerate(visits)]))
        assert [r.outcome for r in results] == ["failed"] * 3
        assert "raw store could not be flushed to disk" in results[0].detail
        assert count(imp, sessions) == 0 and count(imp, raw_files) == 0
        # The next run, with a working disk, imports them.
        imp.store.fail_sync = False
        again = list(imp.import_many([(d, f"v{i}.psl") for i, d in enumerate(visits)]))
        assert [r.outcome for r in again] == ["imported"] * 3


def test_bulk_import_says_when_the_database_cannot_confirm_a_group_is_on_disk(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    visits = [binary(s) for s in history(43, visits=2)]

    def unconfirmed(_engine: Engine) -> None:
        raise OSError(5, "Input/output error")

    with importer(db_url, tmp_path / "raw") as imp:
        monkeypatch.setattr(pipeline, "make_durable", unconfirmed)
        items = [(visits[0], "v0.psl"), (b"junk", "junk.txt"), (visits[1], "v1.psl")]
        results = list(imp.import_many(items))
        assert [r.outcome for r in results] == ["failed"] * 3
        assert all("import the file again to check" in r.detail for r in results)
        assert results[0].detail.startswith("v0.psl: session ")
        monkeypatch.undo()
        # Importing again tells what the database kept.
        again = list(imp.import_many(items))
        assert [r.outcome for r in again] == ["duplicate", "refused", "duplicate"]


# ---------------------------------------------------------------------------
# Two exports under one file name (§7.16: files are told apart by their bytes)


def stored_raw_rows(imp: Importer) -> list[tuple[str, str, str | None]]:
    """(file name, status, session ID) of every `raw_files` row, in arrival order."""
    with imp.engine.connect() as connection:
        rows = connection.execute(
            select(raw_files.c.name, raw_files.c.status, sessions.c.session_id)
            .select_from(raw_files.outerjoin(sessions, sessions.c.id == raw_files.c.session_pk))
            .order_by(raw_files.c.id)
        )
        return [tuple(row) for row in rows]  # type: ignore[misc]


@pytest.mark.parametrize("group", [1, 4], ids=["one_by_one", "group_commit"])
def test_two_exports_with_one_name_in_two_folders_are_both_imported(
    db_url: str, tmp_path: Path, group: int
) -> None:
    first, second = history(44, visits=2)
    a = write(tmp_path / "clinic-a", "visit.psl", binary(first))
    b = write(tmp_path / "clinic-b", "visit.psl", binary(second))
    with importer(db_url, tmp_path / "raw") as imp:
        results = list(imp.import_paths([a.parent, b.parent], group=group))
        assert [(r.name, r.outcome, r.session_id) for r in results] == [
            (str(a), "imported", first.header.session_id),
            (str(b), "imported", second.header.session_id),
        ]
        assert count(imp, sessions) == 2
        assert count(imp, evidence) == 2
        assert stored_raw_rows(imp) == [
            (str(a), "imported", first.header.session_id),
            (str(b), "imported", second.header.session_id),
        ]
        assert all(imp.store.contains(r.sha256 or "") for r in results)
        assert results[0].sha256 != results[1].sha256


def test_two_exports_offered_one_after_the_other_under_one_name_are_both_imported(
    db_url: str, tmp_path: Path
) -> None:
    # The watcher names a file by its path in the inbox: a second drop of `visit.psl`
    # (another visit, another session) carries the same name as the first.
    first, second = history(45, visits=2)
    with importer(db_url, tmp_path / "raw") as imp:
        one = imp.import_bytes(binary(first), "visit.psl")
        two = imp.import_bytes(csv(second), "visit.psl")
        assert (one.outcome, one.session_id) == ("imported", first.header.session_id)
        assert (two.outcome, two.session_id) == ("imported", second.header.session_id)
        assert count(imp, sessions) == 2
        assert stored_raw_rows(imp) == [
            ("visit.psl", "imported", first.header.session_id),
            ("visit.psl", "imported", second.header.session_id),
        ]
        assert imp.store.contains(one.sha256 or "") and imp.store.contains(two.sha256 or "")
