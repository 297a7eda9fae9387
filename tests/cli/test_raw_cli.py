"""`pumptrail raw migrate`: an old per-workstation raw folder copied into the database."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from db import audit
from db.migrate import open_database
from ingest.rawstore import DatabaseRawStore, RawStore
from pumptrail.cli import main
from tests.ingest.exports import binary, history, importer, write


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def database_flags(url: str, tmp_path: Path) -> list[str]:
    """`--db`, and on SQLite the mode that keeps raw exports in the database."""
    flags = ["--db", url, "--data-dir", str(tmp_path / "data")]
    return flags + (["--raw-store-mode", "database"] if url.startswith("sqlite") else [])


def migrate_entries(url: str) -> list[audit.AuditEntry]:
    engine = open_database(url)
    try:
        with engine.connect() as connection:
            return audit.show(connection, audit.AuditFilter(action=audit.RAW_MIGRATE))
    finally:
        engine.dispose()


def test_migrate_copies_an_old_folder_store_then_replay_is_clean(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "in"
    for index, scenario in enumerate(history(71, visits=4)):
        write(folder, f"v{index}.psl", binary(scenario))
    write(folder, "broken.csv", b"PSL Session Export\nnot really")
    old = tmp_path / "old-raw"
    # Imported before the database store: the bytes are in this workstation's folder only.
    with importer(db_url, old) as imp:
        assert [r.outcome for r in imp.import_paths([folder])].count("imported") == 4
    flags = database_flags(db_url, tmp_path)
    replay = ["replay", *flags, "--raw-store", str(tmp_path / "elsewhere")]
    assert run(replay, capsys)[0] == 1  # every file missing from the database store

    status, out, err = run(["raw", "migrate", *flags, "--raw-store", str(old)], capsys)
    assert (status, err) == (0, "")
    assert out == f"5 files in {old}: 5 copied, 0 already in the database, 0 damaged\n"
    # Idempotent: a second run copies nothing.
    status, out, _ = run(["raw", "migrate", *flags, "--raw-store", str(old)], capsys)
    assert status == 0
    assert out == f"5 files in {old}: 0 copied, 5 already in the database, 0 damaged\n"

    status, out, _ = run(replay, capsys)
    assert status == 0
    assert out.splitlines()[-1].startswith(
        "replayed 5 raw files, 4 sessions of 1 pump: no differences (database "
    )
    entries = migrate_entries(db_url)
    assert [(e.target, e.detail["copied"], e.detail["already_stored"]) for e in entries] == [
        ("raw_store", 5, 0),
        ("raw_store", 0, 5),
    ]
    assert all(e.detail["damaged"] == 0 for e in entries)
    engine = open_database(db_url)
    try:
        assert list(DatabaseRawStore(engine).iterate()) == list(RawStore(old).iterate())
    finally:
        engine.dispose()


def test_a_damaged_file_is_reported_not_copied_and_exits_1(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = RawStore(tmp_path / "old-raw", durable=False)
    good, _ = old.put(b"\x89PSL\r\n\x1a\n a good export")
    bad, path = old.put(b"\x89PSL\r\n\x1a\n an export edited later")
    os.chmod(path, 0o600)
    path.write_bytes(path.read_bytes() + b"\x00")
    flags = database_flags(db_url, tmp_path)
    status, out, _ = run(["raw", "migrate", *flags, "--raw-store", str(old.root)], capsys)
    assert status == 1
    assert out.splitlines() == [
        f"damaged   {bad}: its bytes do not hash to its name: not copied",
        f"2 files in {old.root}: 1 copied, 0 already in the database, 1 damaged",
    ]
    engine = open_database(db_url)
    try:
        store = DatabaseRawStore(engine)
        assert store.contains(good)
        assert not store.contains(bad)
    finally:
        engine.dispose()
    [entry] = migrate_entries(db_url)
    assert (entry.detail["damaged"], entry.detail["damaged_sha256"]) == (1, [bad])


def test_migrate_refuses_a_database_that_keeps_files_in_folders(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "raw").mkdir()
    argv = ["raw", "migrate", "--db", db_url, "--raw-store", str(tmp_path / "raw")]
    if not db_url.startswith("sqlite"):
        argv += ["--raw-store-mode", "files"]
    status, out, err = run(argv, capsys)
    assert (status, out) == (2, "")
    assert "keeps its raw exports in the raw_store folder" in err
    status, _, err = run(["raw", "migrate", "--db", db_url, "--raw-store", "/nonexistent"], capsys)
    assert status == 2
    assert err == "pumptrail raw migrate: no raw store folder at /nonexistent\n"
