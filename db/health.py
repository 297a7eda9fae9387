"""Database health: the database exists, and its pages are intact (docs/operations.md,
"Database health").

Two questions, asked before anything is read or written:

- **Is it there?** `require_existing` refuses a SQLite file that does not exist
  (creating neither it nor its folder) and `require_tables` a database without
  pumptrail's tables: a mistyped `data_dir` or `--db` must never look like an
  empty clinic whose audit log is intact and whose pumps are all on schedule.
- **Is it intact?** `check_database` runs SQLite's `PRAGMA quick_check` (every
  page's b-tree structure: fast, used at start and by the read-only commands) or
  `PRAGMA integrity_check` (also every index against its table: the daily check and
  `pumptrail db check --full`), and returns a `HealthReport`. PostgreSQL checks its
  own pages (data checksums) as it reads them; a client has no equivalent of the
  SQLite pragmas, so there the check is one query through the connection.

`is_damage` tells a damaged database from one that is merely unreachable: SQLite's
result codes SQLITE_CORRUPT ("database disk image is malformed"), SQLITE_NOTADB
("file is not a database") and SQLITE_IOERR (the disk failed a read or write) mean
that retrying cannot help and that what the database answers cannot be trusted.
A damaged database stops imports; restoring it from a backup is the cure
(docs/operations.md, "Backups").

Nothing here puts row content into a message: the checks' own lines name tables,
indexes and pages, and `safe_error_text` keeps only the driver's first line (never
SQL, parameters or a stored value).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from db.engine import normalize_url, safe_url_text, sqlite_path
from parsers.errors import PumptrailError

# SQLite primary result codes that mean the file cannot be trusted (sqlite.org/rescode.html).
SQLITE_IOERR = 10
SQLITE_CORRUPT = 11
SQLITE_NOTADB = 26
DAMAGE_CODES = frozenset({SQLITE_IOERR, SQLITE_CORRUPT, SQLITE_NOTADB})
# The same conditions by the words of SQLite's messages, for an error whose code is lost.
DAMAGE_WORDS = ("database disk image is malformed", "file is not a database", "disk i/o error")
# At most this many problem lines of a check are kept (integrity_check's own default is 100).
MAX_PROBLEMS = 20
# The table of imported files and a missing migration: what `require_tables` looks for.
PUMPTRAIL_TABLES = frozenset({"alembic_version", "raw_files", "audit_log"})

# What found the result: a check, or ("in_use") an error while importing or reading.
CheckKind = Literal["quick_check", "integrity_check", "connect", "in_use"]


class DatabaseMissing(PumptrailError):
    """Raised when a command that only reads or checks names a database that is not
    there: a SQLite file that does not exist, or a database without pumptrail's
    tables. Nothing is created; the message names the database."""


class DatabaseDamaged(PumptrailError):
    """Raised when the database is damaged: its integrity check reports a problem, or
    SQLite answers "malformed", "not a database" or an I/O error. Imports stop; the
    message names the database and the first problem, never row content."""

    def __init__(self, message: str, report: HealthReport | None = None) -> None:
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class HealthReport:
    """The result of one database check (for `pumptrail db check` and the service status)."""

    database: str
    check: CheckKind
    ok: bool
    problems: tuple[str, ...] = ()
    checked_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: {database, check, ok, problems, checked_at (UTC ISO 8601)}."""
        return {
            "database": self.database,
            "check": self.check,
            "ok": self.ok,
            "problems": list(self.problems),
            "checked_at": self.checked_at.isoformat().replace("+00:00", "Z"),
        }

    def line(self) -> str:
        """One line: `database URL: CHECK ok` or `... damaged: first problem (N problems)`."""
        if self.ok:
            return f"database {self.database}: {self.check} ok"
        more = f" ({len(self.problems)} problems)" if len(self.problems) > 1 else ""
        first = self.problems[0] if self.problems else "unknown problem"
        return f"database {self.database}: {self.check} found it damaged: {first}{more}"


def _sqlite_codes(exc: BaseException) -> list[int]:
    codes = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        candidates: list[BaseException] = [current]
        if isinstance(current, DBAPIError) and isinstance(current.orig, BaseException):
            candidates.append(current.orig)
        for candidate in candidates:
            code = getattr(candidate, "sqlite_errorcode", None)
            if isinstance(candidate, sqlite3.Error) and isinstance(code, int):
                codes.append(code & 0xFF)  # extended codes carry the primary in the low byte
        current = current.__cause__ or current.__context__
    return codes


def is_damage(exc: BaseException) -> bool:
    """Whether an error says the database file is damaged (not merely unreachable)."""
    if isinstance(exc, DatabaseDamaged):
        return True
    if any(code in DAMAGE_CODES for code in _sqlite_codes(exc)):
        return True
    original = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    if not isinstance(original, sqlite3.Error):
        return False
    message = str(original).lower()
    return any(words in message for words in DAMAGE_WORDS)


def safe_error_text(exc: BaseException) -> str:
    """One line naming a failure, fit for a log: no SQL, no parameters, no row content.

    A driver error gives its first line (SQLite's and PostgreSQL's first lines name
    the condition, not the data); an OSError its error text without the file name
    (names may carry a patient's); the database and schema errors of `db` their
    message; any other error only its class name, since its message may quote a
    stored value (a damaged document, a record being decoded).
    """
    from db.engine import DatabaseUrlError
    from db.migrate import SchemaError

    original = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    name = type(original).__name__
    if isinstance(original, OSError) and not isinstance(original, sqlite3.Error):
        return f"{name}: {original.strerror}" if original.strerror else name
    trusted = isinstance(exc, DBAPIError) or isinstance(
        original,
        DatabaseMissing | DatabaseDamaged | SchemaError | DatabaseUrlError | sqlite3.Error,
    )
    if not trusted:
        return name
    lines = str(original).strip().splitlines()
    return f"{name}: {lines[0]}" if lines else name


def require_existing(url: str) -> None:
    """Raise DatabaseMissing when `url` names a SQLite file that does not exist.

    Call before opening: `db.engine.make_engine` creates a missing folder and SQLite
    a missing file. Other backends (and in-memory SQLite) are not checked here: a
    missing PostgreSQL database refuses the connection by itself.
    """
    path = sqlite_path(normalize_url(url))
    if path is None or path.is_file():
        return
    if path.exists():
        raise DatabaseMissing(f"database {path} is not a file")
    raise DatabaseMissing(f"database {path} does not exist: check the data_dir and db settings")


def require_tables(engine: Engine) -> None:
    """Raise DatabaseMissing when the database holds no pumptrail tables (a wrong database)."""
    with engine.connect() as connection:
        tables = set(inspect(connection).get_table_names())
    if not tables & PUMPTRAIL_TABLES:
        raise DatabaseMissing(
            f"database {safe_url_text(engine.url)} holds no pumptrail tables: "
            "check the data_dir and db settings"
        )


def check_database(engine: Engine, *, full: bool = False) -> HealthReport:
    """Check the database's pages; a damaged database is a report with `ok` False.

    SQLite: `PRAGMA integrity_check` when `full`, else `PRAGMA quick_check`.
    PostgreSQL: one query. An error that is not damage (a server that is down) is
    raised as it is.
    """
    where = safe_url_text(engine.url)
    if engine.dialect.name != "sqlite":
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return HealthReport(where, "connect", ok=True)
    kind: CheckKind = "integrity_check" if full else "quick_check"
    try:
        with engine.connect() as connection:
            rows = connection.exec_driver_sql(f"PRAGMA {kind}({MAX_PROBLEMS})").all()
    except SQLAlchemyError as exc:
        if not is_damage(exc):
            raise
        return HealthReport(where, kind, ok=False, problems=(safe_error_text(exc),))
    # A row may hold several lines; "*** in database main ***" only heads them.
    lines = tuple(
        line
        for row in rows
        for line in str(row[0]).splitlines()
        if line.strip() and not line.startswith("*** in database")
    )
    if lines == ("ok",):
        return HealthReport(where, kind, ok=True)
    return HealthReport(where, kind, ok=False, problems=lines or ("no answer",))


def require_intact(engine: Engine, *, full: bool = False) -> HealthReport:
    """`check_database`, raising DatabaseDamaged when the database is damaged."""
    report = check_database(engine, full=full)
    if not report.ok:
        raise DatabaseDamaged(report.line(), report)
    return report


def sqlite_file(engine: Engine) -> Path | None:
    """The SQLite file behind an engine; None for PostgreSQL and in-memory databases."""
    return sqlite_path(engine.url)
