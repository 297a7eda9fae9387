"""`pumptrail decisions list`: visits with and without a coder's signed-off decision.

`decisions list [--since YYYY-MM-DD] [--status signed|unsigned] [--json]` lists
sessions newest first: session ID, pump, local start, and for a signed-off one its
current version, procedure code, author and time (db.decisions). Patient
identifiers are not printed. A database that does not exist is refused (nothing is
created). Exit status 0; 2 when the settings or the database cannot be used.
"""

from __future__ import annotations

import argparse
import json
from datetime import date
from typing import Any

from pumptrail.commands import set_handler
from pumptrail.commands.db import (
    add_database_arguments,
    checked,
    checking,
    open_existing,
    resolve,
)

SETTINGS = ("db", "data_dir")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "decisions", help="coders' decisions: which visits are signed off"
    )
    actions = parser.add_subparsers(dest="decisions_action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="sessions with their current decision, newest first")
    listing.add_argument(
        "--since",
        type=date.fromisoformat,
        metavar="YYYY-MM-DD",
        help="only sessions started on or after this local date",
    )
    listing.add_argument("--status", choices=("signed", "unsigned"), help="only these")
    listing.add_argument("--json", action="store_true", help="a JSON array instead of a table")
    add_database_arguments(listing, SETTINGS)
    set_handler(listing, run_list)


def run_list(args: argparse.Namespace) -> int:
    from db.decisions import list_decisions

    resolved = resolve(args)
    engine = open_existing(resolved)
    try:
        with checking(resolved), engine.connect() as connection:
            rows = list_decisions(connection, since=args.since, status=args.status)
    finally:
        engine.dispose()
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "session_id": row.session_id,
                        "pump_serial": row.pump_serial,
                        "session_start_local": row.session_start_local.isoformat(),
                        "status": row.status,
                        "version": row.version,
                        "procedure": row.procedure,
                        "signed_by": row.author,
                        "signed_at": None
                        if row.signed_at is None
                        else row.signed_at.isoformat(timespec="seconds") + "Z",
                    }
                    for row in rows
                ],
                indent=2,
            )
        )
        return 0
    for row in rows:
        signed = (
            "unsigned"
            if row.version is None
            else f"v{row.version} {row.procedure} by {row.author} {row.signed_at:%Y-%m-%d %H:%M}Z"
        )
        print(
            f"{row.session_start_local:%Y-%m-%d %H:%M}  {row.pump_serial:<14} {row.session_id}  {signed}"
        )
    print(f"{len(rows)} session(s) ({checked(resolved)})")
    return 0
