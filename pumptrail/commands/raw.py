"""`pumptrail raw migrate`: copy a workstation's raw store folder into the database.

On PostgreSQL the raw exports live in the database (`raw_blobs`, docs/operations.md,
"Raw exports on PostgreSQL"), so that `pumptrail replay` on any workstation reads
every file. Files imported into a folder store earlier are copied in with
`pumptrail raw migrate [--db URL] [--raw-store DIR]`, once on each workstation
that has such a folder: each file's SHA-256 is checked against its name, files the
database holds already are skipped, so the command can be run again at any time.
One line per damaged file, then `N files in DIR: a copied, b already in the
database, c damaged`. One `raw_migrate` audit entry records the run (counts and
the damaged files' SHA-256s, no file names). The folder is left as it is. Exit
status 1 when a file was damaged, 2 when the database or settings cannot be used
or this database keeps its raw exports in folders, else 0.
"""

from __future__ import annotations

import argparse
from typing import Any, Final

from pumptrail.commands import set_handler
from pumptrail.commands.db import add_database_arguments, open_from_settings, resolve
from pumptrail.errors import EXIT_PROBLEM, CommandError

SETTINGS = ("db", "data_dir", "raw_store", "raw_store_mode")
# Damaged files named in the audit entry at most (the count is always exact).
AUDITED_DAMAGED: Final = 100


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("raw", help="raw exports: copy a folder store into the database")
    actions = parser.add_subparsers(dest="raw_action", metavar="ACTION", required=True)
    migrate = actions.add_parser(
        "migrate",
        help="copy every file of the raw_store folder into the database (checked, idempotent)",
    )
    add_database_arguments(migrate, SETTINGS)
    set_handler(migrate, run_migrate)


def run_migrate(args: argparse.Namespace) -> int:
    from db import audit
    from db.engine import write_transaction
    from ingest.rawstore import (
        DatabaseRawStore,
        RawStore,
        copy_raw_store,
        open_raw_store,
    )

    resolved = resolve(args)
    folder = resolved.raw_store
    if not folder.is_dir():
        raise CommandError(f"no raw store folder at {folder}")
    engine = open_from_settings(resolved)
    try:
        target = open_raw_store(engine, folder, resolved.raw_store_mode)
        if not isinstance(target, DatabaseRawStore):
            raise CommandError(
                "this database keeps its raw exports in the "
                "raw_store folder (SQLite, or raw_store_mode = files), not in the database: "
                "nothing to migrate (set raw_store_mode = database to keep them there)"
            )

        def report(outcome: str, digest: str) -> None:
            if outcome == "damaged":
                print(f"damaged   {digest}: its bytes do not hash to its name: not copied")

        result = copy_raw_store(RawStore(folder), target, report=report)
        with write_transaction(engine) as connection:
            audit.append(
                connection,
                actor=audit.cli_actor(),
                action=audit.RAW_MIGRATE,
                target="raw_store",
                detail={
                    "files": result.files,
                    "copied": len(result.copied),
                    "already_stored": len(result.already_stored),
                    "damaged": len(result.damaged),
                    "damaged_sha256": result.damaged[:AUDITED_DAMAGED],
                },
            )
    finally:
        engine.dispose()
    noun = "file" if result.files == 1 else "files"
    print(
        f"{result.files} {noun} in {folder}: {len(result.copied)} copied, "
        f"{len(result.already_stored)} already in the database, {len(result.damaged)} damaged"
    )
    return EXIT_PROBLEM if result.damaged else 0
