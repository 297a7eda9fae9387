"""Database health (db/health.py, `pumptrail db check`) and the read-only commands'
refusal of a database that is missing or damaged (docs/operations.md, "Database
health"; docs/auditing.md, exit statuses 0 clean, 1 found a problem, 2 cannot check)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text

import ingest.replay
from db import audit
from db.checkpoints import AnchorConfig, anchor_engine
from db.codec import StoredDocumentError
from db.engine import make_engine, safe_url_text, write_transaction
from db.health import (
    DatabaseDamaged,
    DatabaseMissing,
    check_database,
    is_damage,
    require_existing,
    require_intact,
    safe_error_text,
)
from db.migrate import open_database
from pumptrail.cli import main
from tests.db.damage import overwrite_index_page
from tests.ingest.exports import binary, history, importer


def filled(tmp_path: Path) -> tuple[str, Path]:
    """A SQLite database with a few imports (and their audit entries); its URL and file."""
    path = tmp_path / "data" / "pumptrail.db"
    url = f"sqlite:///{path}"
    with importer(url, tmp_path / "data" / "raw") as imp:
        # Anchored as every command's engine is: the audit entries get their checkpoints.
        anchor_engine(imp.engine, AnchorConfig(tmp_path / "data", syslog_address=""))
        for index, scenario in enumerate(history(21, visits=3)):
            assert imp.import_bytes(binary(scenario), name=f"v{index}.psl").outcome == "imported"
    return url, path


def cli(url: str, tmp_path: Path, *words: str) -> list[str]:
    return [*words, "--db", url, "--data-dir", str(tmp_path / "data")]


# ---------------------------------------------------------------------------
# The checks


def test_an_intact_database_passes_both_checks(tmp_path: Path) -> None:
    url, _path = filled(tmp_path)
    engine = make_engine(url)
    try:
        quick = check_database(engine)
        full = require_intact(engine, full=True)
    finally:
        engine.dispose()
    assert (quick.ok, quick.check, quick.problems) == (True, "quick_check", ())
    assert (full.ok, full.check) == (True, "integrity_check")
    assert quick.as_dict()["database"] == safe_url_text(url)
    assert quick.as_dict()["checked_at"].endswith("Z")


def test_a_damaged_index_page_is_found_by_both_checks(tmp_path: Path) -> None:
    url, path = filled(tmp_path)
    page = overwrite_index_page(path)
    engine = make_engine(url)
    try:
        quick = check_database(engine)
        full = check_database(engine, full=True)
        with pytest.raises(DatabaseDamaged, match="found it damaged") as raised:
            require_intact(engine)
    finally:
        engine.dispose()
    assert not quick.ok
    assert any(f"Page {page}" in problem for problem in quick.problems)
    assert not any(problem.startswith("***") for problem in quick.problems)
    assert not full.ok and full.problems
    assert raised.value.report is not None and not raised.value.report.ok
    assert quick.line().startswith(f"database {safe_url_text(url)}: quick_check found it damaged")


def test_damage_is_told_from_an_outage_by_the_sqlite_result_code(tmp_path: Path) -> None:
    url, path = filled(tmp_path)
    overwrite_index_page(path)
    engine = make_engine(url)
    try:
        with pytest.raises(Exception) as raised, engine.connect() as connection:
            connection.execute(text("SELECT id FROM raw_files WHERE sha256 = 'x'")).all()
    finally:
        engine.dispose()
    assert is_damage(raised.value)
    assert safe_error_text(raised.value) == "DatabaseError: database disk image is malformed"
    busy = sqlite3.OperationalError("database is locked")
    busy.sqlite_errorcode = sqlite3.SQLITE_BUSY
    assert not is_damage(busy)
    assert not is_damage(RuntimeError("file is not a database"))  # not from SQLite
    assert is_damage(sqlite3.DatabaseError("file is not a database"))


def test_a_file_that_is_not_a_database_is_damage(tmp_path: Path) -> None:
    path = tmp_path / "pumptrail.db"
    path.write_bytes(b"this is not a SQLite file, it is long enough to look like one" * 100)
    engine = make_engine(f"sqlite:///{path}")
    try:
        report = check_database(engine)
    finally:
        engine.dispose()
    assert not report.ok
    assert report.problems == ("DatabaseError: file is not a database",)


def test_log_text_never_carries_a_stored_value() -> None:
    stored = StoredDocumentError("stored document: patient_name: expected text, found 'Jane Roe'")
    assert safe_error_text(stored) == "StoredDocumentError"
    missing = FileNotFoundError(2, "No such file or directory", "/inbox/Jane Roe.psl")
    assert safe_error_text(missing) == "FileNotFoundError: No such file or directory"
    assert "Roe" not in safe_error_text(ValueError("found 'Jane Roe'"))


def test_require_existing_creates_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "nowhere"
    with pytest.raises(DatabaseMissing, match=str(folder / "pumptrail.db")):
        require_existing(f"sqlite:///{folder / 'pumptrail.db'}")
    assert not folder.exists()
    require_existing("sqlite://")  # in memory: nothing to look for


# ---------------------------------------------------------------------------
# `pumptrail db check`


def test_db_check_reports_an_intact_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, _path = filled(tmp_path)
    assert main(cli(url, tmp_path, "db", "check")) == 0
    assert capsys.readouterr().out == (
        f"database {safe_url_text(url)}: integrity_check ok; data folder {tmp_path / 'data'}\n"
    )
    assert main(cli(url, tmp_path, "db", "check", "--quick")) == 0
    assert "quick_check ok" in capsys.readouterr().out


@pytest.mark.parametrize("words", [("db", "check"), ("db", "check", "--quick")])
def test_db_check_finds_a_damaged_page_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], words: tuple[str, ...]
) -> None:
    url, path = filled(tmp_path)
    overwrite_index_page(path)
    assert main(cli(url, tmp_path, *words)) == 1
    out = capsys.readouterr().out
    assert "found it damaged" in out
    assert "restore the database from a backup" in out


# ---------------------------------------------------------------------------
# Read-only commands on a damaged database: exit 2, never "intact"


@pytest.mark.parametrize(
    "words",
    [("audit", "verify"), ("replay",), ("replay", "--verify")],
)
def test_checks_refuse_a_damaged_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], words: tuple[str, ...]
) -> None:
    url, path = filled(tmp_path)
    overwrite_index_page(path)
    assert main(cli(url, tmp_path, *words)) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "damaged" in err
    assert str(path) in err
    assert "restore it from a backup" in err


def test_audit_verify_on_an_intact_database_still_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, _path = filled(tmp_path)
    assert main(cli(url, tmp_path, "audit", "verify")) == 0
    assert capsys.readouterr().out.startswith("audit log intact: ")


# ---------------------------------------------------------------------------
# Read-only commands on a missing database: exit 2, nothing created

READ_ONLY = [
    ("audit", "verify"),
    ("audit", "show"),
    ("replay",),
    ("replay", "--verify"),
    ("replay", "--apply"),
    ("due",),
    ("evidence",),
    ("evidence", "--json"),
    ("db", "current"),
    ("db", "check"),
    ("user", "list"),
]


@pytest.mark.parametrize("words", READ_ONLY, ids=" ".join)
def test_read_only_commands_refuse_a_missing_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], words: tuple[str, ...]
) -> None:
    data = tmp_path / "no-such-data-dir"
    assert main([*words, "--data-dir", str(data)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert f"database {data / 'pumptrail.db'} does not exist" in err
    assert f"data folder {data}" in err
    assert not data.exists()


@pytest.mark.parametrize("words", READ_ONLY, ids=" ".join)
def test_read_only_commands_refuse_a_database_without_pumptrail_tables(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], words: tuple[str, ...]
) -> None:
    engine = make_engine(db_url)  # an empty SQLite file, or an empty PostgreSQL schema
    try:
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE unrelated (id INTEGER PRIMARY KEY)"))
    finally:
        engine.dispose()
    status = main(cli(db_url, tmp_path, *words))
    out, err = capsys.readouterr()
    if words == ("db", "current"):  # it answers what revision it finds: none
        assert status == 0
        assert "revision none" in out
        return
    assert status == 2
    assert out == ""
    assert "holds no pumptrail tables" in err
    engine = make_engine(db_url)
    try:
        with engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM unrelated")).scalar() == 0
            names = {
                row[0]
                for row in connection.execute(
                    text(
                        "SELECT name FROM sqlite_schema"
                        if connection.dialect.name == "sqlite"
                        else "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
                    )
                )
            }
    finally:
        engine.dispose()
    assert names == {"unrelated"}  # nothing was set up


# ---------------------------------------------------------------------------
# A crash is "cannot check" (2), never "found differences" (1)


def test_a_crash_of_replay_verify_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _path = filled(tmp_path)

    def crash(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("boom with 'Jane Roe' in it")

    monkeypatch.setattr(ingest.replay.Replayer, "run", crash)
    assert main(cli(url, tmp_path, "replay", "--verify")) == 2
    err = capsys.readouterr().err
    assert "pumptrail replay: could not check the stored evidence in database" in err
    assert f"data folder {tmp_path / 'data'}" in err
    assert err.rstrip().endswith(": RuntimeError")
    assert "Jane Roe" not in err


def test_a_crash_of_audit_verify_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _path = filled(tmp_path)

    def crash(*_args: object, **_kwargs: object) -> None:
        raise KeyError("detail")

    monkeypatch.setattr(audit, "verify", crash)
    assert main(cli(url, tmp_path, "audit", "verify")) == 2
    assert "could not check the audit log in database" in capsys.readouterr().err


def test_a_broken_chain_still_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url, _path = filled(tmp_path)
    engine = open_database(url)
    try:
        with write_transaction(engine) as connection:
            connection.execute(text("DROP TRIGGER audit_log_no_update"))
            connection.execute(text("UPDATE audit_log SET actor = 'mallory' WHERE id = 1"))
    finally:
        engine.dispose()
    assert main(cli(url, tmp_path, "audit", "verify")) == 1
    assert "audit log broken at entry 1: hash_mismatch" in capsys.readouterr().out
