"""`pumptrail charges export`: the charge lines of signed-off visits, for billing.

`charges export --since YYYY-MM-DD [--format csv] [--output FILE]` writes the charge
lines of every visit whose current decision (the newest signed-off version) has a
date of service on or after `--since`: one line per CPT code and per drug code,
plus the JW line of discarded drug, with units, modifiers, diagnosis pointers and
codes, rendering NPI and NDC, in the CSV layout of docs/coding-rules.md §9.6 for a
practice-management system's import. The export prints patient IDs (the billing
system needs them): it is recorded in the audit log (`export_charges`: the command,
`--since`, the session IDs) before anything is written. Exit status 0; 2 when the
settings or the database cannot be used.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path
from typing import Any

from pumptrail.commands import set_handler
from pumptrail.commands.db import (
    add_database_arguments,
    checking,
    open_existing,
    record_cli_view,
    resolve,
)

SETTINGS = ("db", "data_dir")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("charges", help="charge lines of signed-off visits: export")
    actions = parser.add_subparsers(dest="charges_action", metavar="ACTION", required=True)
    export = actions.add_parser("export", help="the charge lines since a date, as CSV")
    export.add_argument(
        "--since",
        type=date.fromisoformat,
        required=True,
        metavar="YYYY-MM-DD",
        help="visits with a date of service on or after this date",
    )
    export.add_argument("--format", choices=("csv",), default="csv", help="csv (default)")
    export.add_argument(
        "--output", type=Path, metavar="FILE", help="write here (0600) instead of standard output"
    )
    add_database_arguments(export, SETTINGS)
    set_handler(export, run_export)


def run_export(args: argparse.Namespace) -> int:
    import os

    from db import audit
    from db.decisions import current_decisions
    from evidence.charges import charge_lines, charges_csv
    from evidence.decision import decision_from_json

    resolved = resolve(args)
    engine = open_existing(resolved)
    try:
        with checking(resolved), engine.connect() as connection:
            decisions = current_decisions(connection, since=args.since)
        lines = [
            line
            for version, patient_id in decisions
            for line in charge_lines(
                decision_from_json(version.session_id, patient_id, version.decision)
            )
        ]
        with checking(resolved):
            record_cli_view(
                engine,
                resolved,
                audit.EXPORT_CHARGES,
                command="pumptrail charges export",
                filters={"since": args.since.isoformat(), "format": args.format},
                ids_key="session_ids",
                ids=[version.session_id for version, _ in decisions],
            )
    finally:
        engine.dispose()
    text = charges_csv(lines)
    if args.output is None:
        sys.stdout.write(text)
    else:
        descriptor = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        print(
            f"{len(lines)} charge line(s) of {len(decisions)} visit(s) written to {args.output}",
            file=sys.stderr,
        )
    return 0
