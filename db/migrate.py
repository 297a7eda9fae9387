"""Schema revisions: Alembic run from code, so `pumptrail` needs no alembic.ini at hand.

`pumptrail db upgrade` brings a database to the newest revision. Every other command
opens the database with `open_database`, which upgrades an *empty* database by
itself (a first run just works) but refuses one at an older revision: upgrading a
clinic's data is an explicit step, `pumptrail db upgrade`, taken after a backup.

Opening a database that is already at the newest revision costs one query: the
revision row is compared with the head read from the migration files'
`revision` / `down_revision` lines (`packaged_head`). Alembic itself is imported
only to set up, upgrade or explain a database that is not at the head.
"""

from __future__ import annotations

import functools
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from db.engine import make_engine, safe_url_text, write_transaction
from parsers.errors import PumptrailError

if TYPE_CHECKING:
    from alembic.config import Config

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
ALEMBIC_INI = Path(__file__).resolve().parent / "alembic.ini"
VERSION_TABLE = "alembic_version"


class SchemaError(PumptrailError):
    """Raised when the database is not at the revision this pumptrail needs.

    An older revision (run `pumptrail db upgrade` after a backup), a newer one
    (upgrade pumptrail), tables without a pumptrail revision, or no packaged
    migrations; the message says what to run.
    """


def alembic_config(connection: Connection | None = None) -> Config:
    """The packaged Alembic configuration, optionally bound to an open connection."""
    from alembic.config import Config

    config = Config(str(ALEMBIC_INI))
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision this pumptrail knows."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships revisions
        raise SchemaError("no migrations packaged")
    return head


def known_revisions() -> frozenset[str]:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config())
    return frozenset(rev.revision for rev in script.walk_revisions())


def current_revision(engine: Engine) -> str | None:
    """The database's revision; None for a database never migrated."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def is_empty(engine: Engine) -> bool:
    """No tables (but Alembic's own, left by a downgrade): pumptrail may set it up."""
    with engine.connect() as connection:
        return _no_tables(connection)


def _no_tables(connection: Connection) -> bool:
    return not set(inspect(connection).get_table_names()) - {VERSION_TABLE}


# Key of the PostgreSQL advisory lock that serialises migrations: two services
# starting on one empty clinic database must not both create the tables.
MIGRATION_LOCK_KEY = 0x70756D70  # "pump"


def upgrade(engine: Engine, revision: str = "head") -> str:
    """Migrate the database to `revision` (default newest); returns the revision reached.

    Runs in one write transaction that holds the migration lock (PostgreSQL: an
    advisory lock; SQLite: the write lock), and reads the revision under it, so a
    second process that raced here finds the work done.
    """
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    with write_transaction(engine) as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
            )
        before = MigrationContext.configure(connection).get_current_revision()
        if before is None and not _no_tables(connection):
            raise SchemaError(
                f"database {safe_url_text(engine.url)} has tables but no pumptrail revision: "
                "not a pumptrail database?"
            )
        command.upgrade(alembic_config(connection), revision)
    after = current_revision(engine)
    if after != before:
        log.info("database %s upgraded from %s to %s", safe_url_text(engine.url), before, after)
    if after is None:  # pragma: no cover - upgrade always stamps
        raise SchemaError("upgrade left no revision")
    return after


_REVISION_LINE = re.compile(
    r'^(down_revision|revision)\s*(?::[^=]*)?=\s*(?:"([^"]*)"|\'([^\']*)\'|(None))\s*$',
    re.MULTILINE,
)


@functools.cache
def packaged_head() -> str | None:
    """The newest revision, from the migration files' plain `revision = "..."` lines.

    None when a file does not state both lines as plain strings (a merge or a
    branch): then only Alembic's own reading (`head_revision`) tells.
    """
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (MIGRATIONS_DIR / "versions").glob("*.py"):
        found = {m[1]: m[2] or m[3] for m in _REVISION_LINE.finditer(path.read_text("utf-8"))}
        if path.name == "__init__.py" and not found:
            continue
        if "revision" not in found or "down_revision" not in found or not found["revision"]:
            return None
        revisions.add(found["revision"])
        if found["down_revision"]:
            parents.add(found["down_revision"])
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def at_packaged_head(engine: Engine) -> bool:
    """True when the database's one revision row is `packaged_head()` (one query)."""
    head = packaged_head()
    if head is None:
        return False
    with engine.connect() as connection:
        try:
            rows = connection.execute(text("SELECT version_num FROM alembic_version")).all()
        except SQLAlchemyError:
            # No version table (an empty database) or no permission: the full check says.
            connection.rollback()
            return False
    return [row[0] for row in rows] == [head]


def check_revision(engine: Engine) -> None:
    """Raise SchemaError unless the database is at the newest revision."""
    current = current_revision(engine)
    head = head_revision()
    if current == head:
        return
    where = safe_url_text(engine.url)
    if current is None:
        raise SchemaError(
            f"database {where} has tables but no pumptrail revision: not a pumptrail database?"
        )
    if current not in known_revisions():
        raise SchemaError(
            f"database {where} is at revision {current}, newer than this pumptrail knows "
            f"({head}): upgrade pumptrail"
        )
    raise SchemaError(
        f"database {where} is at revision {current}, this pumptrail needs {head}: "
        "back it up, then run `pumptrail db upgrade`"
    )


def open_database(url: str, *, upgrade_empty: bool = True) -> Engine:
    """An engine on the database at the newest revision; an empty one is set up first."""
    engine = make_engine(url)
    try:
        if at_packaged_head(engine):
            return engine
        if upgrade_empty and is_empty(engine):
            upgrade(engine)
        check_revision(engine)
    except BaseException:
        engine.dispose()
        raise
    return engine
