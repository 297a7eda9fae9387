"""Database URLs and engines: SQLite by default, PostgreSQL by URL.

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
recipe). The parent folder of a new SQLite file is created 0700 and the file itself
0600 (with it its `-wal` and `-shm` files) whatever the umask: the database holds
patient identifiers.

Group commit (`write_transaction(..., group_commit=True)`, for bulk imports whose
source files stay where they are): the transaction is atomic as ever but its commit
does not wait for the disk (SQLite `synchronous=NORMAL` in WAL mode; PostgreSQL
`synchronous_commit = off` for that transaction). Both logs are sequential, so one
`make_durable` after a group of such commits puts all of them on disk: the importer
calls it before it reports the group. A power failure in between loses at most the
group's last commits, never consistency, and re-importing the same files restores them.
"""

from __future__ import annotations

import os
import sqlite3
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import ConnectionPoolEntry

from parsers.errors import PumptrailError

# Milliseconds a SQLite connection waits for another writer before giving up.
SQLITE_BUSY_TIMEOUT_MS = 30_000

SQLITE_PRAGMAS: tuple[str, ...] = (
    f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
    "PRAGMA journal_mode=WAL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA synchronous=FULL",
)
# Seconds between attempts at a pragma that SQLite refused as busy without waiting.
_BUSY_RETRY_S = 0.01

# Execution option that makes the next transaction on a connection a write
# transaction (`BEGIN IMMEDIATE` on SQLite; nothing special elsewhere).
WRITE_OPTION = "pumptrail_write"
# Execution option: the transaction's commit need not wait for the disk (group commit).
GROUP_COMMIT_OPTION = "pumptrail_group_commit"
# The `synchronous` level a pooled SQLite connection is at, in its DBAPI connection's info.
_SYNCHRONOUS_KEY = "pumptrail_synchronous"


class DatabaseUrlError(PumptrailError, ValueError):
    """Raised when a `db` setting is empty, not a database URL, or names a backend
    other than SQLite or PostgreSQL."""


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


def _create_sqlite_file(path: Path) -> None:
    """Create a missing database file 0600 just before SQLite would create it.

    SQLite creates the `-wal` and `-shm` files with the database file's mode, so
    all three are 0600 whatever the umask. An existing file is left as it is.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError:
        return  # there already, or SQLite reports what is wrong with the path
    try:
        os.fchmod(fd, 0o600)  # the umask only removes bits; set the mode regardless
    finally:
        os.close(fd)


def _on_sqlite_connect(dbapi_connection: sqlite3.Connection, _record: ConnectionPoolEntry) -> None:
    # Autocommit at the driver level: SQLAlchemy's `begin` listener emits BEGIN.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        for pragma in SQLITE_PRAGMAS:
            _execute_when_not_busy(cursor, pragma)
    finally:
        cursor.close()


def _execute_when_not_busy(cursor: sqlite3.Cursor, statement: str) -> None:
    """Execute, trying again while SQLite answers SQLITE_BUSY, up to the busy timeout.

    Two connections switching a new database to WAL at once both hold a shared lock
    and want an exclusive one: SQLite refuses one of them at once, without the busy
    handler (it would wait forever), so the busy timeout alone does not cover it.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute(statement)
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() >= deadline:
                raise
        time.sleep(_BUSY_RETRY_S)


def _on_sqlite_begin(connection: Connection) -> None:
    options = connection.get_execution_options()
    # `synchronous` cannot change inside a transaction: set it before BEGIN, when it differs.
    level = "NORMAL" if options.get(GROUP_COMMIT_OPTION) else "FULL"
    info = connection.connection.info
    if info.get(_SYNCHRONOUS_KEY, "FULL") != level:
        connection.exec_driver_sql(f"PRAGMA synchronous={level}")
        info[_SYNCHRONOUS_KEY] = level
    if options.get(WRITE_OPTION):
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        connection.exec_driver_sql("BEGIN")


def _on_postgresql_begin(connection: Connection) -> None:
    if connection.get_execution_options().get(GROUP_COMMIT_OPTION):
        # LOCAL: this transaction only; the commit returns before its WAL record is flushed.
        connection.exec_driver_sql("SET LOCAL synchronous_commit TO off")


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
        if path is not None:
            database = path

            def _before_connect(*_args: Any) -> None:
                _create_sqlite_file(database)

            event.listen(engine, "do_connect", _before_connect)
        event.listen(engine, "connect", _on_sqlite_connect)
        event.listen(engine, "begin", _on_sqlite_begin)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    if parsed.get_backend_name() == "postgresql" and "connect_timeout" not in parsed.query:
        # A server that drops packets must not hold a poll (or a systemd stop) for minutes.
        kwargs.setdefault("connect_args", {"connect_timeout": PG_CONNECT_TIMEOUT_S})
    engine = create_engine(parsed, **kwargs)
    if parsed.get_backend_name() == "postgresql":
        event.listen(engine, "begin", _on_postgresql_begin)
    return engine


def is_sqlite(engine: Engine | Connection) -> bool:
    return engine.dialect.name == "sqlite"


@contextmanager
def write_transaction(engine: Engine, *, group_commit: bool = False) -> Iterator[Connection]:
    """One write transaction: commits on success, rolls back on any exception.

    `group_commit`: the commit does not wait for the disk; `make_durable` does, later.
    """
    with engine.connect() as connection:
        connection.execution_options(**{WRITE_OPTION: True, GROUP_COMMIT_OPTION: group_commit})
        with connection.begin():
            yield connection


# Callbacks run after `make_durable` (the audit checkpoint of a group commit).
_AFTER_DURABLE: weakref.WeakKeyDictionary[Engine, list[Callable[[], None]]] = (
    weakref.WeakKeyDictionary()
)


def after_durable(engine: Engine, callback: Callable[[], None]) -> None:
    """Run `callback` each time `make_durable(engine)` has put the commits on disk."""
    _AFTER_DURABLE.setdefault(engine, []).append(callback)


def make_durable(engine: Engine) -> None:
    """Put every commit made so far on disk, group commits included.

    SQLite: the WAL (and the database file) fsync'ed; the WAL holds the commits in
    order, so this covers all of them. PostgreSQL: a transaction that takes a
    transaction ID commits synchronously, and its commit waits until the WAL is
    flushed up to its own record, which lies after every earlier commit's.
    """
    _flush_to_disk(engine)
    for callback in _AFTER_DURABLE.get(engine, ()):
        callback()


def _flush_to_disk(engine: Engine) -> None:
    if is_sqlite(engine):
        path = sqlite_path(engine.url)
        if path is None:
            return  # in memory: nothing on disk to make durable
        for name in (f"{path}-wal", str(path)):
            try:
                fd = os.open(name, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        return
    with engine.connect() as connection, connection.begin():
        # Whatever the server's default, this commit waits for the flush.
        connection.exec_driver_sql("SET LOCAL synchronous_commit TO on")
        # txid_current(): every PostgreSQL version (pg_current_xact_id() is 13 and later).
        connection.execute(text("SELECT txid_current()"))


def safe_url_text(url: str | URL) -> str:
    """The URL for messages and logs, password hidden."""
    parsed = url if isinstance(url, URL) else normalize_url(url)
    return parsed.render_as_string(hide_password=True)
