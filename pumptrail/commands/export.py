"""`pumptrail export fhir --session ID [--output FILE]`: one visit as a FHIR R4 Bundle.

Writes the Bundle (type `collection`, docs/fhir.md) that `GET
/api/sessions/{id}/fhir` answers: Patient, the pump as Device, the Procedure with
the signed-off code (or the applicable one when unsigned), one Observation per pump
setting, a MedicationAdministration per drug of a refill, a ChargeItem per charge
line, a DocumentReference to the signed packet and a Provenance naming the raw
files' SHA-256 and the signer. The bundle carries patient data: the export is
recorded in the audit log (`export_api`, the command as route, the session ID)
before anything is written; `--output` writes the file with mode 0600. Exit status
0; 1 when no stored session with evidence has that ID; 2 when the settings, the
rules or the database cannot be used.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pumptrail.commands import set_handler
from pumptrail.commands.db import (
    add_database_arguments,
    anchor_config,
    checked,
    checking,
    load_clinic_rules,
    open_existing,
    record_cli_view,
    resolve,
)
from pumptrail.errors import EXIT_PROBLEM, CommandError

SETTINGS = ("db", "data_dir", "rules_dir", "signing_key", "supervising_physician")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("export", help="export a visit: a FHIR R4 bundle")
    actions = parser.add_subparsers(dest="export_action", metavar="FORMAT", required=True)
    fhir = actions.add_parser("fhir", help="one session as a FHIR R4 Bundle (JSON)")
    fhir.add_argument("--session", required=True, metavar="ID", help="the session ID")
    fhir.add_argument(
        "--output", type=Path, metavar="FILE", help="write here (0600) instead of standard output"
    )
    add_database_arguments(fhir, SETTINGS)
    set_handler(fhir, run_fhir)


def run_fhir(args: argparse.Namespace) -> int:
    import json
    import os

    from db import audit
    from db.checkpoints import open_identity
    from db.models import utc_now
    from evidence.devices import load_device_makers
    from evidence.edits import load_edits
    from web.fhir import session_bundle

    resolved = resolve(args)
    rules = load_clinic_rules(resolved)
    engine = open_existing(resolved)
    try:
        identity = open_identity(anchor_config(resolved))
        with checking(resolved), engine.connect() as connection:
            bundle = session_bundle(
                connection,
                args.session,
                rules=rules,
                edits=load_edits(resolved.rules_dir),
                supervising_physician=resolved.supervising_physician,
                identity=identity,
                generated_at=utc_now(),
                device_makers=load_device_makers(resolved.rules_dir),
            )
        if bundle is not None:
            with checking(resolved):
                record_cli_view(
                    engine,
                    resolved,
                    audit.EXPORT_API,
                    command="pumptrail export fhir",
                    filters={"session": args.session, "format": "fhir"},
                    ids_key="session_ids",
                    ids=[args.session],
                )
    finally:
        engine.dispose()
    if bundle is None:
        raise CommandError(
            f"no stored evidence for session {args.session} ({checked(resolved)})",
            exit_status=EXIT_PROBLEM,
        )
    text = json.dumps(bundle, indent=2, ensure_ascii=False) + "\n"
    if args.output is None:
        sys.stdout.write(text)
    else:
        descriptor = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
        print(
            f"FHIR bundle of session {args.session} ({len(bundle['entry'])} resources) "
            f"written to {args.output}",
            file=sys.stderr,
        )
    return 0
