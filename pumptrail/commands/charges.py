"""`pumptrail charges`: the charge lines of signed-off visits, for billing.

`charges export --since YYYY-MM-DD [--format csv] [--output FILE]` writes the charge
lines of every visit whose current decision (the newest signed-off version) has a
date of service on or after `--since`: one line per CPT code and per drug code,
plus the JW line of discarded drug, with units, modifiers, diagnosis pointers and
codes, rendering NPI and NDC, in the CSV layout of docs/coding-rules.md §9.6 for a
practice-management system's import. The export prints patient IDs (the billing
system needs them): it is recorded in the audit log (`export_charges`: the command,
`--since`, the session IDs) before anything is written. Exit status 0; 2 when the
settings or the database cannot be used.

The billing interface (docs/interfaces.md) sends each sign-off's DFT^P03 message
from the outbox; the service does it all the time, these subcommands by hand:

- `charges send`: one pass over the outbox to `billing_mllp`, oldest message first,
  stopping at the first message billing does not answer. Exit 0 when every pending
  message got an answer; 1 when billing could not be reached or did not answer (the
  message stays queued); 2 when `billing_mllp` is empty or the database unusable.
- `charges list [--status STATUS]`: the outbox messages (ready, sent, acknowledged,
  rejected with billing's text, superseded), audited as a view (`view_charges`).
- `charges resend ID`: queue a rejected message again, with its control ID, once
  the cause is fixed at billing; audited (`charges_resend`). Exit 1 when the
  message does not exist or was not rejected.
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
    anchor_config,
    checking,
    open_existing,
    record_cli_view,
    resolve,
)
from pumptrail.errors import CommandError

SETTINGS = ("db", "data_dir")
SEND_SETTINGS = (
    "db",
    "data_dir",
    "billing_mllp",
    "billing_mllp_tls",
    "billing_mllp_ca",
    "billing_ack_seconds",
)
SHOWN_STATUSES = ("ready", "sent", "acknowledged", "rejected", "superseded")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "charges", help="charge lines of signed-off visits: export, send, list, resend"
    )
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

    send = actions.add_parser("send", help="send the queued HL7 charge messages to billing once")
    add_database_arguments(send, SEND_SETTINGS)
    set_handler(send, run_send)

    listing = actions.add_parser("list", help="the HL7 charge messages and billing's answers")
    listing.add_argument("--status", choices=SHOWN_STATUSES, help="only messages in this state")
    add_database_arguments(listing, SETTINGS)
    set_handler(listing, run_list)

    resend = actions.add_parser("resend", help="queue a rejected HL7 charge message again")
    resend.add_argument("id", type=int, metavar="ID", help="the message's ID (`charges list`)")
    add_database_arguments(resend, SETTINGS)
    set_handler(resend, run_resend)


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


def run_send(args: argparse.Namespace) -> int:
    from ingest.billing import BillingSettingsError, MllpClient, MllpTarget, send_pending

    resolved = resolve(args)
    if not resolved.billing_mllp:
        raise CommandError(
            "setting billing_mllp is empty: set it to the billing listener's HOST:PORT "
            "(env PUMPTRAIL_BILLING_MLLP)"
        )
    try:
        target = MllpTarget.parse(
            resolved.billing_mllp,
            tls=resolved.billing_mllp_tls,
            ca_file=resolved.billing_mllp_ca,
            ack_seconds=resolved.billing_ack_seconds,
        )
    except BillingSettingsError as exc:
        raise CommandError(str(exc)) from exc
    engine = open_existing(resolved)
    client = MllpClient(target)
    try:
        with checking(resolved):
            result = send_pending(engine, client)
    finally:
        client.close()
        engine.dispose()
    print(
        f"{result.sent} message(s) sent to {target}: {result.acknowledged} acknowledged, "
        f"{result.rejected} rejected"
    )
    if result.error is not None:
        print(f"billing: {result.error}; the message stays queued", file=sys.stderr)
        return 1
    return 0


def run_list(args: argparse.Namespace) -> int:
    from db import audit, outbox

    resolved = resolve(args)
    engine = open_existing(resolved)
    try:
        with checking(resolved), engine.connect() as connection:
            found = [
                m
                for m in outbox.list_messages(connection)
                if args.status is None or m.shown_status == args.status
            ]
        with checking(resolved):
            record_cli_view(
                engine,
                resolved,
                audit.VIEW_CHARGES,
                command="pumptrail charges list",
                filters={"status": args.status},
                ids_key="session_ids",
                ids=sorted({m.session_id for m in found}),
            )
    finally:
        engine.dispose()
    print("id\tcreated\tsession\tversion\tkind\tcontrol_id\tstatus\tattempts\tanswer")
    for m in found:
        answer = " ".join(f"{m.ack_code or ''} {m.ack_text or ''}".split())
        print(
            f"{m.id}\t{m.created_at.isoformat(timespec='seconds')}Z\t{m.session_id}\t"
            f"{m.version}\t{m.kind}\t{m.control_id}\t{m.shown_status}\t{m.attempts}\t{answer}"
        )
    return 0


def run_resend(args: argparse.Namespace) -> int:
    from db import audit, outbox
    from db.checkpoints import anchor_engine
    from db.engine import write_transaction

    resolved = resolve(args)
    engine = open_existing(resolved)
    try:
        with checking(resolved):
            anchor_engine(engine, anchor_config(resolved))
            with write_transaction(engine) as connection:
                message = outbox.resend(connection, args.id)
                audit.append(
                    connection,
                    actor=audit.cli_actor(),
                    action=audit.CHARGES_RESEND,
                    target=f"outbox:{message.id}",
                    detail={
                        "route": "pumptrail charges resend",
                        "session_id": message.session_id,
                        "control_id": message.control_id,
                        "rejected": message.ack_code,
                    },
                )
    except outbox.OutboxError as exc:
        raise CommandError(str(exc), exit_status=1) from exc
    finally:
        engine.dispose()
    print(f"message {message.id} ({message.control_id}) queued again for billing")
    return 0
