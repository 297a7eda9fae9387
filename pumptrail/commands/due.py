"""`pumptrail due [--json] [--show-patient]`: pumps due or overdue for a refill.

The report of `evidence.due` (`db.due.due_report`): every pump whose latest session programmed a
low-reservoir alarm date or refill date within `due_within_days` days (setting,
default 14) or already past. Overdue pumps come first; a pump holding baclofen
is marked `WITHDRAWAL RISK`, since a missed intrathecal baclofen refill is an
emergency. Patient identifiers are printed only with `--show-patient` (the
clinic calling the patient needs them; a report mailed by cron does not).
A database that does not exist or holds no pumptrail tables is refused (nothing
is created): a wrong `data_dir` must not read "no pump due". The report's first
line names the database and data folder it read.
Exit status 0, or 2 when the database (missing, damaged, unreadable) or the
settings cannot be used.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from typing import TYPE_CHECKING, Any

from pumptrail.commands import set_handler
from pumptrail.commands.db import (
    add_database_arguments,
    checked,
    checking,
    load_clinic_rules,
    open_existing,
    record_cli_view,
    resolve,
)
from pumptrail.commands.evidence import table

if TYPE_CHECKING:
    from evidence.due import RefillDue

SETTINGS = ("rules_dir", "db", "data_dir", "due_within_days")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("due", help="pumps due or overdue for a refill, overdue first")
    parser.add_argument("--json", action="store_true", help="print a JSON array instead")
    parser.add_argument(
        "--show-patient", action="store_true", help="include the patient ID and name"
    )
    parser.add_argument(
        "--today",
        type=date.fromisoformat,
        metavar="YYYY-MM-DD",
        help="report as of this date (default: today's local date)",
    )
    add_database_arguments(parser, SETTINGS)
    set_handler(parser, run)


def run(args: argparse.Namespace) -> int:
    from db import audit
    from db.due import due_report

    resolved = resolve(args)
    rules = load_clinic_rules(resolved)
    engine = open_existing(resolved)
    within = resolved.due_within_days
    today = args.today or date.today()
    try:
        with checking(resolved):
            report = due_report(engine, today=today, within_days=within, rules=rules)
            if report:
                record_cli_view(
                    engine,
                    resolved,
                    audit.VIEW_DUE,
                    command="pumptrail due",
                    filters={
                        "today": today.isoformat(),
                        "within_days": within,
                        "show_patient": args.show_patient,
                        "json": args.json,
                    },
                    ids_key="pump_serials",
                    ids=[item.pump_serial for item in report],
                )
    finally:
        engine.dispose()
    if args.json:
        json.dump(
            [item.as_dict(with_patient=args.show_patient) for item in report],
            sys.stdout,
            indent=2,
            ensure_ascii=False,
        )
        sys.stdout.write("\n")
        return 0
    print(
        render(
            report,
            today=today,
            within_days=within,
            show_patient=args.show_patient,
            where=checked(resolved),
        )
    )
    return 0


def _when(item: RefillDue) -> str:
    days = item.days_left
    if days < 0:
        return f"{-days} day{'s' if days != -1 else ''} overdue"
    if days == 0:
        return "today"
    return f"in {days} day{'s' if days != 1 else ''}"


def render(
    report: list[RefillDue],
    *,
    today: date,
    within_days: int,
    show_patient: bool,
    where: str | None = None,
) -> str:
    """The report as a table a person reads; `where` (the database read) ends its first line."""
    suffix = f" ({where})" if where else ""
    if not report:
        return f"no pump due for a refill within {within_days} days of {today.isoformat()}{suffix}"
    overdue = sum(1 for item in report if item.overdue)
    headers = ["status", "pump", "due", "when", "alarm date", "refill date", "drug"]
    if show_patient:
        headers += ["patient id", "patient name"]
    headers.append("risk")
    rows = []
    for item in report:
        row = [
            item.status.upper() if item.overdue else item.status,
            f"{item.pump_serial} ({item.pump_model})",
            item.due_date.isoformat(),
            _when(item),
            item.low_reservoir_alarm_date.isoformat() if item.low_reservoir_alarm_date else "-",
            item.refill_date.isoformat() if item.refill_date else "-",
            " + ".join(item.drugs) or "-",
        ]
        if show_patient:
            row += [item.patient_id or "-", item.patient_name or "-"]
        row.append("WITHDRAWAL RISK (baclofen)" if item.withdrawal_risk else "")
        rows.append(row)
    lines = [
        f"{len(report)} pump(s) due for a refill within {within_days} days of "
        f"{today.isoformat()}, {overdue} overdue{suffix}"
    ]
    lines.extend(table(headers, rows, indent=""))
    return "\n".join(lines)
