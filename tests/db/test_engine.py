"""Database URLs, SQLite pragmas, write transactions, constraints on both backends."""

from __future__ import annotations

import os
import sqlite3
import stat
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, insert, text
from sqlalchemy.exc import IntegrityError

from db.engine import (
    DatabaseUrlError,
    _execute_when_not_busy,
    make_durable,
    make_engine,
    normalize_url,
    safe_url_text,
    write_transaction,
)
from db.migrate import open_database
from db.models import sessions


def test_bare_path_is_a_sqlite_file(tmp_path: Path) -> None:
    url = normalize_url(str(tmp_path / "p.db"))
    assert url.get_backend_name() == "sqlite"
    assert url.database == str(tmp_path / "p.db")


@pytest.mark.parametrize(
    "given",
    ["postgresql://u@h/db", "postgres://u@h/db", "postgresql+psycopg://u@h/db"],
)
def test_postgresql_urls_use_psycopg3(given: str) -> None:
    assert normalize_url(given).drivername == "postgresql+psycopg"


@pytest.mark.parametrize(
    ("given", "message"),
    [("", "empty"), ("mysql://u@h/db", "unsupported database 'mysql'"), ("://x", "not a")],
)
def test_unusable_urls_are_refused(given: str, message: str) -> None:
    with pytest.raises(DatabaseUrlError, match=message):
        normalize_url(given)


def test_password_never_shown() -> None:
    assert "secret" not in safe_url_text("postgresql://u:secret@h/db")


def test_sqlite_pragmas_on_every_connection(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'p.db'}")
    try:
        for _ in range(2):
            with engine.connect() as connection:
                values = {
                    name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()
                    for name in ("journal_mode", "foreign_keys", "synchronous", "busy_timeout")
                }
            assert values == {
                "journal_mode": "wal",
                "foreign_keys": 1,
                "synchronous": 2,  # FULL: commits survive a power failure
                "busy_timeout": 30000,
            }
    finally:
        engine.dispose()


def test_sqlite_parent_folder_created_private(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'new' / 'p.db'}")
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
    finally:
        engine.dispose()
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o700


def test_sqlite_database_and_its_wal_files_are_private_whatever_the_umask(
    tmp_path: Path,
) -> None:
    previous = os.umask(0o022)
    try:
        engine = make_engine(f"sqlite:///{tmp_path / 'data' / 'p.db'}")
        try:
            with engine.begin() as connection:
                connection.exec_driver_sql("CREATE TABLE t (x INTEGER)")
                connection.exec_driver_sql("INSERT INTO t VALUES (1)")
            with engine.connect() as connection:
                connection.exec_driver_sql("SELECT * FROM t")
                modes = {
                    p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "data").iterdir()
                }
        finally:
            engine.dispose()
    finally:
        os.umask(previous)
    assert {"p.db", "p.db-wal", "p.db-shm"} <= set(modes)
    assert modes == dict.fromkeys(modes, 0o600)
    assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700


def test_sqlite_write_transaction_takes_the_write_lock_up_front(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    engine = make_engine(f"sqlite:///{path}")
    try:
        with write_transaction(engine) as connection:
            connection.exec_driver_sql("SELECT 1")  # reads only, yet holds the write lock
            other = sqlite3.connect(path, timeout=0, isolation_level=None)
            try:
                with pytest.raises(sqlite3.OperationalError, match="locked"):
                    other.execute("BEGIN IMMEDIATE")
            finally:
                other.close()
        # A plain transaction reads without taking the write lock.
        with engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
            other = sqlite3.connect(path, timeout=0, isolation_level=None)
            try:
                other.execute("BEGIN IMMEDIATE")
                other.execute("ROLLBACK")
            finally:
                other.close()
    finally:
        engine.dispose()


def test_write_transaction_rolls_back_on_error(db_url: str) -> None:
    engine = open_database(db_url)
    try:
        with pytest.raises(RuntimeError), write_transaction(engine) as connection:
            connection.execute(text("INSERT INTO pumps (serial, model) VALUES ('P1', 'IT-40')"))
            raise RuntimeError("boom")
        with engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM pumps")).scalar() == 0
    finally:
        engine.dispose()


def test_foreign_keys_enforced(db_url: str) -> None:
    engine = open_database(db_url)
    now = datetime(2026, 1, 1)
    row = {
        "session_id": "00000000-0000-4000-8000-000000000000",
        "pump_id": 999,
        "session_start_utc": now,
        "session_start_local": now,
        "utc_offset_min": 0,
        "pump_model": "IT-40",
        "programmer_model": "PX-200",
        "programmer_serial": "PX2-1",
        "programmer_software": "3.1",
        "operator_id": "dr.x",
        "operator_role": "physician",
        "clinic_id": "C",
        "has_refill": False,
        "source_sha256": "0" * 64,
        "source_name": "x",
        "source_format": "psl-binary",
        "format_version": "1.0",
        "document": "{}",
        "conflicting_exports": False,
        "parser_version": "p",
        "imported_at": now,
    }
    try:
        with pytest.raises(IntegrityError), engine.begin() as connection:
            connection.execute(insert(sessions).values(**row))
    finally:
        engine.dispose()


def commit_wait_setting(engine: Engine, *, group_commit: bool) -> str:
    """What the backend says about waiting for the disk, inside such a write transaction."""
    with write_transaction(engine, group_commit=group_commit) as connection:
        if connection.dialect.name == "sqlite":
            level = connection.exec_driver_sql("PRAGMA synchronous").scalar()
            return {1: "NORMAL", 2: "FULL"}[int(level or 0)]
        return str(connection.exec_driver_sql("SHOW synchronous_commit").scalar())


def test_group_commit_transactions_do_not_wait_for_the_disk_and_others_still_do(
    db_url: str,
) -> None:
    # A pool of one: the same connection must switch back and forth.
    engine = open_database(db_url)
    engine.dispose()
    engine = make_engine(db_url, pool_size=1, max_overflow=0)
    try:
        sqlite = engine.dialect.name == "sqlite"
        durable, deferred = ("FULL", "NORMAL") if sqlite else ("on", "off")
        assert commit_wait_setting(engine, group_commit=False) == durable
        assert commit_wait_setting(engine, group_commit=True) == deferred
        assert commit_wait_setting(engine, group_commit=False) == durable
        with engine.connect() as connection:  # a plain read transaction: the default
            if sqlite:
                assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2
            else:
                assert connection.exec_driver_sql("SHOW synchronous_commit").scalar() == "on"
        # Group commits are committed (visible) at once; make_durable then returns cleanly.
        with write_transaction(engine, group_commit=True) as connection:
            connection.execute(text("INSERT INTO pumps (serial, model) VALUES ('G1', 'IT-40')"))
        make_durable(engine)
        with engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM pumps")).scalar() == 1
    finally:
        engine.dispose()


def test_make_durable_flushes_the_sqlite_wal(tmp_path: Path, fsynced_paths: list[str]) -> None:
    engine = open_database(f"sqlite:///{tmp_path / 'p.db'}")
    try:
        with write_transaction(engine, group_commit=True) as connection:
            connection.execute(text("INSERT INTO pumps (serial, model) VALUES ('G1', 'IT-40')"))
        fsynced_paths.clear()
        make_durable(engine)
        assert fsynced_paths == [f"{tmp_path / 'p.db'}-wal", str(tmp_path / "p.db")]
    finally:
        engine.dispose()


def test_make_durable_of_an_in_memory_database_does_nothing() -> None:
    engine = make_engine("sqlite://")
    try:
        make_durable(engine)
    finally:
        engine.dispose()


class BusyThenFine:
    """A cursor that answers SQLITE_BUSY `busy` times, then executes."""

    def __init__(self, busy: int, error_code: int = sqlite3.SQLITE_BUSY) -> None:
        self.busy = busy
        self.error_code = error_code
        self.calls = 0

    def execute(self, statement: str) -> None:
        self.calls += 1
        if self.calls <= self.busy:
            error = sqlite3.OperationalError("database is locked")
            error.sqlite_errorcode = self.error_code
            raise error


def test_a_pragma_refused_as_busy_is_tried_again() -> None:
    cursor = BusyThenFine(busy=3)
    _execute_when_not_busy(cursor, "PRAGMA journal_mode=WAL")  # type: ignore[arg-type]
    assert cursor.calls == 4


def test_other_sqlite_errors_are_not_retried() -> None:
    cursor = BusyThenFine(busy=1, error_code=sqlite3.SQLITE_CORRUPT)
    with pytest.raises(sqlite3.OperationalError):
        _execute_when_not_busy(cursor, "PRAGMA journal_mode=WAL")  # type: ignore[arg-type]
    assert cursor.calls == 1
