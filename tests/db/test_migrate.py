"""Migrations: an empty database sets itself up; upgrades are explicit; models = migrations."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

import db
from db.engine import make_engine, normalize_url, sqlite_path, write_transaction
from db.migrate import (
    SchemaError,
    alembic_config,
    current_revision,
    head_revision,
    open_database,
    upgrade,
)
from db.models import Base
from pumptrail.cli import main

TABLES = {
    "alembic_version",
    "pumps",
    "sessions",
    "setting_values",
    "events",
    "raw_files",
    "evidence",
    "evidence_flags",
}


def import_every_model() -> None:
    """Import each module of the `db` package: models put their tables on Base.metadata."""
    for module in pkgutil.iter_modules(db.__path__):
        if module.name != "migrations":
            importlib.import_module(f"db.{module.name}")


# SQLite cannot reflect expression indexes: SQLAlchemy and Alembic say so and leave
# them out; tests/db/test_list_indexes.py compares their SQL with the models instead.
EXPRESSION_INDEXES_UNREFLECTED = pytest.mark.filterwarnings(
    "ignore:.*expression-based index (ix_pumps_serial_upper|ix_sessions_patient_lower|"
    "'ix_pumps_serial_upper'|'ix_sessions_patient_lower')"
)


@EXPRESSION_INDEXES_UNREFLECTED
def test_empty_database_is_set_up_by_itself(db_url: str) -> None:
    import_every_model()
    engine = open_database(db_url)
    try:
        assert current_revision(engine) == head_revision()
        with engine.connect() as connection:
            # Tables of this room's first migration; later migrations add others.
            assert set(inspect(connection).get_table_names()) >= TABLES
            # The migrations create exactly what the models declare.
            assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
            indexes = {ix["name"] for ix in inspect(connection).get_indexes("sessions")}
        assert {"ix_sessions_chain", "ix_sessions_start", "ix_sessions_patient"} <= indexes
    finally:
        engine.dispose()


@EXPRESSION_INDEXES_UNREFLECTED
def test_chain_index_columns(db_url: str) -> None:
    engine = open_database(db_url)
    try:
        with engine.connect() as connection:
            chain = next(
                ix
                for ix in inspect(connection).get_indexes("sessions")
                if ix["name"] == "ix_sessions_chain"
            )
        assert chain["column_names"] == ["pump_id", "session_start_utc", "session_id"]
    finally:
        engine.dispose()


def test_downgrade_to_base_and_up_again(db_url: str) -> None:
    engine = open_database(db_url)
    try:
        with write_transaction(engine) as connection:
            command.downgrade(alembic_config(connection), "base")
        with engine.connect() as connection:
            assert set(inspect(connection).get_table_names()) <= {"alembic_version"}
        assert current_revision(engine) is None
        assert upgrade(engine) == head_revision()
    finally:
        engine.dispose()
    # A downgraded (empty) database is set up again by itself.
    open_database(db_url).dispose()


def test_database_of_something_else_is_refused(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE unrelated (x INTEGER)"))
        with pytest.raises(SchemaError, match="no pumptrail revision"):
            open_database(db_url)
        with pytest.raises(SchemaError, match="not a pumptrail database"):
            upgrade(engine)
    finally:
        engine.dispose()


def test_database_from_a_newer_pumptrail_is_refused(db_url: str) -> None:
    engine = open_database(db_url)
    try:
        with engine.begin() as connection:
            connection.execute(text("UPDATE alembic_version SET version_num = 'ffff'"))
        with pytest.raises(SchemaError, match="revision ffff, newer than this pumptrail knows"):
            open_database(db_url)
    finally:
        engine.dispose()


def test_db_upgrade_and_current_commands(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    head = head_revision()
    path = sqlite_path(normalize_url(db_url))
    if path is not None:  # an empty SQLite database: a file of no pages
        path.parent.mkdir(parents=True)
        path.touch()
    assert main(["db", "current", "--db", db_url]) == 0
    assert f"revision none (empty) (newest is {head})" in capsys.readouterr().out
    assert main(["db", "upgrade", "--db", db_url]) == 0
    assert f"upgraded from empty to revision {head}" in capsys.readouterr().out
    assert main(["db", "upgrade", "--db", db_url]) == 0
    assert f"is at revision {head}, the newest: nothing to do" in capsys.readouterr().out
    assert main(["db", "current", "--db", db_url]) == 0
    assert f"revision {head} (the newest)" in capsys.readouterr().out


def test_db_upgrade_reports_a_bad_url(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "upgrade", "--db", "mysql://u@h/x"]) == 2
    assert "pumptrail db upgrade: unsupported database 'mysql'" in capsys.readouterr().err


def test_db_url_from_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "env.db"
    monkeypatch.setenv("PUMPTRAIL_DB", f"sqlite:///{path}")
    assert main(["db", "upgrade"]) == 0
    assert str(path) in capsys.readouterr().out
    assert path.exists()


def test_two_processes_setting_up_one_empty_database_at_once_both_succeed(db_url: str) -> None:
    """Two services started together on an empty clinic database: one migrates, one waits."""
    import threading

    from db.migrate import head_revision, open_database

    barrier = threading.Barrier(2)
    outcomes: list[object] = []

    def start() -> None:
        barrier.wait()
        try:
            engine = open_database(db_url)
        except Exception as exc:  # the test reports whatever came out
            outcomes.append(exc)
            return
        outcomes.append(current_revision(engine))
        engine.dispose()

    threads = [threading.Thread(target=start) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert outcomes == [head_revision(), head_revision()]


def test_the_head_read_from_the_migration_files_is_alembics() -> None:
    from db.migrate import packaged_head

    assert packaged_head() == head_revision()


def test_opening_a_current_database_needs_no_alembic(tmp_path: Path) -> None:
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'pumptrail.db'}"
    open_database(url).dispose()
    probe = (
        "import sys\n"
        "from db.migrate import open_database\n"
        f"open_database({url!r}).dispose()\n"
        "print('alembic' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "False"


def test_a_database_behind_the_head_is_still_refused_by_open(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        upgrade(engine, "0001")
    finally:
        engine.dispose()
    with pytest.raises(SchemaError, match="run `pumptrail db upgrade`"):
        open_database(db_url)
