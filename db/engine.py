"""Database URLs and engines: SQLite by default, PostgreSQL by URL (issue 3 item 1).

The database is chosen by the `db` setting (`--db URL` or `PUMPTRAIL_DB`). A URL
without a scheme is a SQLite file path. `postgresql://` and `postgres://` URLs use
the psycopg 3 driver.

SQLite connections get, on every connect: WAL journal (readers never block the
writer), foreign keys on, `synchronous=FULL` (a commit is on disk when it returns, so
a file the service archived after its commit is never lost to a power failure;
NORMAL would keep the WAL consistent but could roll back the last commits) and a busy timeout,
so a second process waits for the write lock instead of failing. The driver's own
transaction handling is switched off and SQLAlchemy's `begin` emits `BEGIN`
itself, `BEGIN IMMEDIATE` for a connection marked `pumptrail_write`: a write
transaction takes the write lock up front, so two importers queue on the busy
timeout instead of failing to upgrade a read lock (SQLAlchemy's documented pysqlite
recipe). The parent folder of a new SQLite file is created 0700: the database holds
patient identifiers.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import ConnectionPoolEntry

# Milliseconds a SQLite connection waits for another writer before giving up.
SQLITE_BUSY_TIMEOUT_MS = 30_000

SQLITE_PRAGMAS: tuple[str, ...] = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA synchronous=FULL",
    f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
)

# Execution option that makes the next transaction on a connection a write
# transaction (`BEGIN IMMEDIATE` on SQLite; nothing special elsewhere).
WRITE_OPTION = "pumptrail_write"


class DatabaseUrlError(ValueError):
    """A `db` setting that is not a usable database URL."""


def normalize_url(url: str) -> URL:
    """The SQLAlchemy URL for a `db` setting; a bare path is a SQLite file."""
    text = url.strip()
    if not text:
        raise DatabaseUrlError("database URL is empty")
    if "://" not in text:
        text = "sqlite:///" + str(Path(text).expanduser().absolute())
    try:
        parsed = make_url(text)
    except ArgumentError as exc:
        raise DatabaseUrlError(f"not a database URL: {url!r}") from exc
    backend = parsed.get_backend_name()
    if backend == "postgres" or parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    elif backend not in ("sqlite", "postgresql"):
        raise DatabaseUrlError(
            f"unsupported database {backend!r}: use sqlite:///PATH or postgresql+psycopg://..."
        )
    return parsed


def sqlite_path(url: URL) -> Path | None:
    """The file of a SQLite URL; None for in-memory databases and other backends."""
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def _prepare_sqlite_folder(path: Path) -> None:
    """Create the database's parent folder 0700 when it does not exist yet."""
    parent = path.parent
    if parent.exists():
        return
    parent.mkdir(parents=True, mode=0o700, exist_ok=True)
    os.chmod(parent, 0o700)  # mkdir's mode is subject to the umask


def _on_sqlite_connect(dbapi_connection: sqlite3.Connection, _record: ConnectionPoolEntry) -> None:
    # Autocommit at the driver level: SQLAlchemy's `begin` listener emits BEGIN.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        for pragma in SQLITE_PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()


def _on_sqlite_begin(connection: Connection) -> None:
    if connection.get_execution_options().get(WRITE_OPTION):
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        connection.exec_driver_sql("BEGIN")


# Seconds a PostgreSQL connection attempt may take (libpq connect_timeout).
PG_CONNECT_TIMEOUT_S = 10


def make_engine(url: str | URL, **kwargs: Any) -> Engine:
    """An engine for a `db` setting, with the SQLite pragmas installed."""
    parsed = url if isinstance(url, URL) else normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = sqlite_path(parsed)
        if path is not None:
            _prepare_sqlite_folder(path)
        engine = create_engine(parsed, **kwargs)
        event.listen(engine, "connect", _on_sqlite_connect)
        event.listen(engine, "begin", _on_sqlite_begin)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    if parsed.get_backend_name() == "postgresql" and "connect_timeout" not in parsed.query:
        # A server that drops packets must not hold a poll (or a systemd stop) for minutes.
        kwargs.setdefault("connect_args", {"connect_timeout": PG_CONNECT_TIMEOUT_S})
    return create_engine(parsed, **kwargs)


def is_sqlite(engine: Engine | Connection) -> bool:
    return engine.dialect.name == "sqlite"


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """One write transaction: commits on success, rolls back on any exception."""
    with engine.connect() as connection:
        connection.execution_options(**{WRITE_OPTION: True})
        with connection.begin():
            yield connection


def safe_url_text(url: str | URL) -> str:
    """The URL for messages and logs, password hidden."""
    parsed = url if isinstance(url, URL) else normalize_url(url)
    return parsed.render_as_string(hide_password=True)
