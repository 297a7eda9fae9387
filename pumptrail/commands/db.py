"""`pumptrail db upgrade`, `db current` and `db grant`: schema revision and privileges.

`db grant ROLE` (PostgreSQL) gives the runtime role DML on the data tables and only
SELECT and INSERT on the audit log (`db.grants`); migrations keep running as the
owner role (docs/operations.md, "PostgreSQL roles").

Every command sets up an empty database by itself; a database at an older revision
is upgraded only by `pumptrail db upgrade` (after a backup). `open_from_settings`
is how the other commands open the database, with one-line errors. Exit status 0,
or 2 when the settings or the database cannot be used.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pumptrail import settings
from pumptrail.commands import set_handler
from pumptrail.errors import CommandError

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.exc import SQLAlchemyError

    from db.checkpoints import AnchorConfig
    from evidence import Rules

DB_SETTINGS = ("db", "data_dir")

__all__ = [
    "CommandError",
    "add_database_arguments",
    "load_clinic_rules",
    "open_from_settings",
    "register",
    "resolve",
]


def _db_error(url: str, exc: SQLAlchemyError) -> CommandError:
    from db.engine import DatabaseUrlError, safe_url_text

    original = getattr(exc, "orig", None) or exc
    first_line = str(original).strip().splitlines()[0] if str(original).strip() else repr(original)
    try:
        where = safe_url_text(url)
    except DatabaseUrlError:
        where = "(bad URL)"
    return CommandError(f"database {where}: {first_line}")


def open_from_settings(resolved: settings.Settings) -> Engine:
    """The database named by the settings, at the newest revision (empty: set up now)."""
    from sqlalchemy.exc import SQLAlchemyError

    from db.checkpoints import anchor_engine
    from db.engine import DatabaseUrlError
    from db.migrate import SchemaError, open_database

    try:
        engine = open_database(resolved.db)
    except (SchemaError, DatabaseUrlError) as exc:
        raise CommandError(str(exc)) from exc
    except SQLAlchemyError as exc:
        raise _db_error(resolved.db, exc) from exc
    try:
        anchor_engine(engine, anchor_config(resolved))
    except BaseException:
        engine.dispose()
        raise
    return engine


def anchor_config(resolved: settings.Settings) -> AnchorConfig:
    """Where this installation's signing identity and audit checkpoints live."""
    from db.checkpoints import AnchorConfig

    return AnchorConfig(
        data_dir=resolved.data_dir,
        signing_key=Path(resolved.signing_key).expanduser() if resolved.signing_key else None,
        clinic_name=resolved.clinic_name,
        syslog_address=resolved.audit_syslog,
    )


def load_clinic_rules(resolved: settings.Settings, folder: Path | None = None) -> Rules:
    """The evidence rules: built-in tables extended by the `rules_dir` folder (or `folder`)."""
    from evidence import RulesError, load_rules

    try:
        return load_rules(folder if folder is not None else resolved.rules_dir)
    except RulesError as exc:
        raise CommandError(str(exc)) from exc


def resolve(args: argparse.Namespace) -> settings.Settings:
    """The settings of a parsed command line; a bad value is a CommandError (exit 2)."""
    try:
        return settings.from_args(args)
    except settings.SettingsError as exc:
        raise CommandError(str(exc)) from exc


def add_database_arguments(parser: argparse.ArgumentParser, names: tuple[str, ...]) -> None:
    parser.add_argument("--config", help="TOML config file (env PUMPTRAIL_CONFIG)")
    settings.add_arguments(parser, names)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("db", help="database schema: upgrade, current revision")
    actions = parser.add_subparsers(dest="db_action", metavar="ACTION", required=True)
    up = actions.add_parser("upgrade", help="upgrade the database to the newest revision")
    add_database_arguments(up, DB_SETTINGS)
    set_handler(up, run_upgrade)
    current = actions.add_parser("current", help="print the database's revision and the newest")
    add_database_arguments(current, DB_SETTINGS)
    set_handler(current, run_current)
    grant = actions.add_parser(
        "grant",
        help="PostgreSQL: give the runtime ROLE what the service needs (audit log: "
        "SELECT and INSERT only); run as the owner role",
    )
    grant.add_argument("role", metavar="ROLE", help="the role the service and web view log in as")
    add_database_arguments(grant, DB_SETTINGS)
    set_handler(grant, run_grant)


def _engine(resolved: settings.Settings) -> Engine:
    """An engine on the `db` setting, not yet checked for its revision."""
    from db.engine import DatabaseUrlError, make_engine

    try:
        return make_engine(resolved.db)
    except DatabaseUrlError as exc:
        raise CommandError(str(exc)) from exc


def run_upgrade(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from db.engine import safe_url_text
    from db.migrate import SchemaError, current_revision, upgrade

    resolved = resolve(args)
    engine = _engine(resolved)
    try:
        before = current_revision(engine)
        after = upgrade(engine)
    except SchemaError as exc:
        raise CommandError(str(exc)) from exc
    except SQLAlchemyError as exc:
        raise _db_error(resolved.db, exc) from exc
    finally:
        engine.dispose()
    where = safe_url_text(resolved.db)
    if before == after:
        print(f"database {where} is at revision {after}, the newest: nothing to do")
    else:
        print(f"database {where} upgraded from {before or 'empty'} to revision {after}")
    return 0


def run_current(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from db.engine import safe_url_text
    from db.migrate import current_revision, head_revision

    resolved = resolve(args)
    engine = _engine(resolved)
    try:
        current = current_revision(engine)
    except SQLAlchemyError as exc:
        raise _db_error(resolved.db, exc) from exc
    finally:
        engine.dispose()
    head = head_revision()
    state = "the newest" if current == head else f"newest is {head}"
    print(f"database {safe_url_text(resolved.db)}: revision {current or 'none (empty)'} ({state})")
    return 0


def run_grant(args: argparse.Namespace) -> int:
    from db.grants import grant_runtime_role
    from db.migrate import open_database

    resolved = resolve(args)
    engine = open_database(resolved.db)
    try:
        with engine.begin() as connection:
            statements = grant_runtime_role(connection, args.role)
    finally:
        engine.dispose()
    for statement in statements:
        print(statement)
    print(f"role {args.role}: runtime privileges granted ({len(statements)} statements)")
    return 0
