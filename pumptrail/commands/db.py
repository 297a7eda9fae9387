"""`pumptrail db upgrade|current|check|grant`: schema revision, health, privileges.

`db grant ROLE` (PostgreSQL) gives the runtime role DML on the data tables and only
SELECT and INSERT on the audit log (`db.grants`); migrations keep running as the
owner role (docs/operations.md, "PostgreSQL roles").

A command that imports sets up an empty database by itself (`open_from_settings`);
a database at an older revision is upgraded only by `pumptrail db upgrade` (after a
backup). A command that only reads or checks opens the database with
`open_existing`, which refuses a database that is not there (a SQLite file that
does not exist, a database without pumptrail's tables) and creates nothing: a
mistyped `data_dir` must not look like an empty clinic. Its result lines name the
database and data folder they looked at (`checked`). Errors are one line each.

`db check [--quick]` runs the database check of `db.health` by hand: SQLite's
`integrity_check` (with `--quick`, `quick_check`, the service's check at start;
docs/operations.md, "Database health").

Exit status 0; `db check` 1 when the database is damaged; 2 when the settings
cannot be used, or the database is missing, damaged (other commands) or cannot be
read.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pumptrail import settings
from pumptrail.commands import set_handler
from pumptrail.errors import EXIT_PROBLEM, CommandError

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.exc import SQLAlchemyError

    from db.checkpoints import AnchorConfig
    from evidence import Rules
    from evidence.dft import Hl7Settings

DB_SETTINGS = ("db", "data_dir")

__all__ = [
    "CommandError",
    "add_database_arguments",
    "checked",
    "checking",
    "load_clinic_rules",
    "open_existing",
    "open_from_settings",
    "register",
    "resolve",
]


def _url_text(url: str) -> str:
    from db.engine import DatabaseUrlError, safe_url_text

    try:
        return safe_url_text(url)
    except DatabaseUrlError:
        return "(bad URL)"


def _db_error(url: str, exc: SQLAlchemyError) -> CommandError:
    from db.health import is_damage

    original = getattr(exc, "orig", None) or exc
    first_line = str(original).strip().splitlines()[0] if str(original).strip() else repr(original)
    if is_damage(exc):
        return CommandError(
            f"database {_url_text(url)} is damaged ({first_line}): restore it from a backup "
            "(docs/operations.md, Backups)"
        )
    return CommandError(f"database {_url_text(url)}: {first_line}")


def checked(resolved: settings.Settings) -> str:
    """`database URL, data folder PATH`: what a result line names as the place it checked."""
    return f"database {_url_text(resolved.db)}, data folder {resolved.data_dir}"


def open_existing(resolved: settings.Settings, *, check: bool = False) -> Engine:
    """The database of the settings, for a command that only reads or checks it.

    Refuses with a CommandError (exit 2) a SQLite file that does not exist (neither
    it nor its folder is created), a database holding no pumptrail tables, one at
    another schema revision and, with `check`, one that fails `integrity_check`.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from db.engine import DatabaseUrlError, make_engine
    from db.health import (
        DatabaseDamaged,
        DatabaseMissing,
        require_existing,
        require_intact,
        require_tables,
    )
    from db.migrate import SchemaError, at_packaged_head, check_revision

    try:
        require_existing(resolved.db)
        engine = make_engine(resolved.db)
    except DatabaseUrlError as exc:
        raise CommandError(str(exc)) from exc
    except DatabaseMissing as exc:
        raise CommandError(f"{exc} (data folder {resolved.data_dir})") from exc
    try:
        require_tables(engine)
        if check:
            require_intact(engine, full=True)
        if not at_packaged_head(engine):
            check_revision(engine)
    except DatabaseMissing as exc:
        engine.dispose()
        raise CommandError(f"{exc} (data folder {resolved.data_dir})") from exc
    except DatabaseDamaged as exc:
        engine.dispose()
        raise CommandError(
            f"{exc}: restore it from a backup (docs/operations.md, Backups)"
        ) from exc
    except SchemaError as exc:
        engine.dispose()
        raise CommandError(str(exc)) from exc
    except SQLAlchemyError as exc:
        engine.dispose()
        raise _db_error(resolved.db, exc) from exc
    except BaseException:
        engine.dispose()
        raise
    return engine


# Most IDs one CLI view entry lists; a larger answer records the first ones and the count.
CLI_VIEW_ID_LIMIT = 1000


def record_cli_view(
    engine: Engine,
    resolved: settings.Settings,
    action: str,
    *,
    command: str,
    filters: dict[str, object],
    ids_key: str,
    ids: list[str],
) -> None:
    """Append the audit entry of a command that prints patient data, before it prints.

    Like a web view's entry (docs/web.md "What is recorded"): the actor `cli:<os
    user>`, the command as route, its filters, and the session IDs or pump serials
    it shows (the first CLI_VIEW_ID_LIMIT of them, and their count). The engine is
    anchored first, so the entry is covered by a signed checkpoint.
    """
    import socket

    from db import audit
    from db.checkpoints import anchor_engine
    from db.engine import write_transaction

    anchor_engine(engine, anchor_config(resolved))
    detail: dict[str, object] = {
        "route": command,
        "client": f"cli@{socket.gethostname()}",
        "filters": {k: v for k, v in filters.items() if v not in (None, False)},
        ids_key: ids[:CLI_VIEW_ID_LIMIT],
        "shown": len(ids),
    }
    target = ids[0] if len(ids) == 1 else command.removeprefix("pumptrail ")
    with write_transaction(engine) as connection:
        audit.append(
            connection, actor=audit.cli_actor(), action=action, target=target, detail=detail
        )


@contextmanager
def checking(resolved: settings.Settings, *, what: str | None = None) -> Iterator[None]:
    """Turn a failure while reading the database into a one-line CommandError (exit 2).

    A database error always; with `what` (a check: the audit chain, a replay) any
    error at all, so that a crash is "cannot check" (2), never "found a problem" (1).
    A closed standard output passes through (`pumptrail.cli` exits 141 for it).
    """
    from sqlalchemy.exc import SQLAlchemyError

    from db.health import safe_error_text

    try:
        yield
    except (CommandError, BrokenPipeError):
        raise
    except SQLAlchemyError as exc:
        raise _db_error(resolved.db, exc) from exc
    except Exception as exc:
        if what is None:
            raise
        raise CommandError(
            f"could not check {what} in {checked(resolved)}: {safe_error_text(exc)}"
        ) from exc


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


def hl7_settings(resolved: settings.Settings) -> Hl7Settings:
    """What the billing interface's DFT^P03 messages are built with (docs/interfaces.md)."""
    from evidence.dft import DftSettingsError, Hl7Settings, parse_charge_codes

    try:
        return Hl7Settings(
            sending_facility=resolved.hl7_sending_facility,
            receiving_application=resolved.hl7_receiving_application,
            receiving_facility=resolved.hl7_receiving_facility,
            processing_id=resolved.hl7_processing_id,
            charge_codes=parse_charge_codes(resolved.hl7_charge_codes),
        )
    except DftSettingsError as exc:
        raise CommandError(f"setting {exc}") from exc


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
    check = actions.add_parser(
        "check", help="check the database for damage (SQLite integrity_check); exit 1 if damaged"
    )
    check.add_argument(
        "--quick",
        action="store_true",
        help="quick_check only (page structure, not indexes against tables): faster",
    )
    add_database_arguments(check, DB_SETTINGS)
    set_handler(check, run_check)
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


def _existing_engine(resolved: settings.Settings) -> Engine:
    """An engine on the settings' database, refusing (exit 2) one that does not exist."""
    from db.health import DatabaseMissing, require_existing

    try:
        require_existing(resolved.db)
    except DatabaseMissing as exc:
        raise CommandError(f"{exc} (data folder {resolved.data_dir})") from exc
    return _engine(resolved)


def run_current(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from db.engine import safe_url_text
    from db.migrate import current_revision, head_revision

    resolved = resolve(args)
    engine = _existing_engine(resolved)
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


def run_check(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from db.health import DatabaseMissing, check_database, require_tables

    resolved = resolve(args)
    engine = _existing_engine(resolved)
    try:
        require_tables(engine)
        report = check_database(engine, full=not args.quick)
    except DatabaseMissing as exc:
        raise CommandError(f"{exc} (data folder {resolved.data_dir})") from exc
    except SQLAlchemyError as exc:
        raise _db_error(resolved.db, exc) from exc
    finally:
        engine.dispose()
    print(f"{report.line()}; data folder {resolved.data_dir}")
    for problem in report.problems[1:]:
        print(f"  {problem}")
    if report.ok:
        return 0
    print("restore the database from a backup (docs/operations.md, Backups)")
    return EXIT_PROBLEM


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
