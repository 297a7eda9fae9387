"""`pumptrail evidence [--session ID] [--pump SERIAL] [--json]`: the stored evidence.

By default a readable block per session: what changed (before, after, when, why),
the code under every profile with its one-sentence counterfactual, the refill
arithmetic, the flags, the supply lines and the documentation checklist. With
`--json`, the array of docs/session-json.md "Evidence", ordered by pump serial then
session start. Patient identifiers are not printed: the evidence has none.
A database that does not exist or holds no pumptrail tables is refused (nothing
is created); the readable output ends with the database and data folder it read.
Exit status 0; 1 when `--session ID` names no stored session; 2 when the
settings or the database cannot be used (missing, damaged, unreadable).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from pumptrail.commands import set_handler
from pumptrail.commands.db import (
    add_database_arguments,
    checked,
    checking,
    open_existing,
    record_cli_view,
    resolve,
)
from pumptrail.errors import EXIT_PROBLEM, CommandError

SETTINGS = ("db", "data_dir")
UL = "µL"
STATUS_LABELS = (
    ("proven_by_log", "proven by the log"),
    ("missing_from_log", "missing from the log"),
    ("note_must_state", "the note must state"),
)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("evidence", help="show the stored evidence of sessions")
    parser.add_argument("--session", metavar="ID", help="only this session ID")
    parser.add_argument("--pump", metavar="SERIAL", help="only sessions of this pump serial")
    parser.add_argument(
        "--json", action="store_true", help="print the JSON of docs/session-json.md instead"
    )
    add_database_arguments(parser, SETTINGS)
    set_handler(parser, run)


def run(args: argparse.Namespace) -> int:
    from db import audit, queries
    from db.codec import loads

    resolved = resolve(args)
    engine = open_existing(resolved)
    try:
        with checking(resolved), engine.connect() as connection:
            texts = queries.evidence_documents(
                connection, session_id=args.session, pump_serial=args.pump
            )
        documents = [loads(text) for text in texts]
        if documents:
            with checking(resolved):
                record_cli_view(
                    engine,
                    resolved,
                    audit.VIEW_SESSION if args.session else audit.VIEW_SESSIONS,
                    command="pumptrail evidence",
                    filters={"session": args.session, "pump": args.pump, "json": args.json},
                    ids_key="session_ids",
                    ids=[str(doc.get("session_id")) for doc in documents],
                )
    finally:
        engine.dispose()
    where = checked(resolved)
    if args.json:
        json.dump(documents, sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
    elif documents:
        print("\n\n".join(render(doc) for doc in documents))
        print(f"\n{len(documents)} session(s) ({where})")
    else:
        print(f"no sessions ({where})")
    if args.session is not None and not documents:
        raise CommandError(f"no stored session {args.session} ({where})", exit_status=EXIT_PROBLEM)
    return 0


# ---------------------------------------------------------------------------
# The readable form


def show_value(value: Any) -> str:
    """A setting value as a person reads it: null is `-`, flex steps in words."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Mapping) and set(value) == {"start_minute", "rate_ul_per_day"}:
        minute = int(value["start_minute"])
        return f"{minute // 60:02d}:{minute % 60:02d} {value['rate_ul_per_day']} {UL}/day"
    if isinstance(value, Mapping | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _ul(value: Any) -> str:
    return "-" if value is None else f"{value} {UL}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "    ") -> list[str]:
    """Columns padded to their widest cell; the last column is not padded."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    lines = []
    for cells in (headers, *rows):
        padded = [c.ljust(w) for c, w in zip(cells[:-1], widths[:-1], strict=True)]
        lines.append((indent + "  ".join([*padded, cells[-1]])).rstrip())
    return lines


def render(doc: Mapping[str, Any]) -> str:
    """One session's evidence as a block of text."""
    lines = [f"Session {doc.get('session_id')}"]
    lines.append(
        f"  pump {doc.get('pump_serial')}, started {doc.get('session_start_utc')}, "
        f"operator {doc.get('operator_role')}"
    )
    prior = doc.get("prior_session_id")
    lines.append(f"  prior session: {prior if prior else 'none'}")
    flags = doc.get("flags") or []
    lines.append(f"  flags: {', '.join(flags) if flags else 'none'}")

    alarms = doc.get("alarms") or []
    if alarms:
        lines.append("  alarms:")
        lines.extend(
            table(
                ("alarm", "severity", "state", "occurred (UTC)"),
                [
                    (
                        str(a.get("alarm")) + (" (critical)" if a.get("critical") else ""),
                        str(a.get("severity")),
                        str(a.get("state")),
                        str(a.get("occurred_at_utc") or "-"),
                    )
                    for a in alarms
                ],
            )
        )

    changes = doc.get("changes") or []
    if changes:
        lines.append("  what changed:")
        lines.extend(
            table(
                ("setting", "category", "when", "before", "after", "reason", "flags"),
                [
                    (
                        str(c.get("parameter")),
                        str(c.get("category")),
                        str(c.get("when")),
                        show_value(c.get("before")),
                        show_value(c.get("after")),
                        str(c.get("reason") or "-"),
                        ", ".join(c.get("flags") or []) or "-",
                    )
                    for c in changes
                ],
            )
        )
    else:
        lines.append("  what changed: nothing")

    refill = doc.get("refill")
    if refill:
        lines.append(
            f"  refill: expected {_ul(refill.get('expected_residual_ul'))} (pump), "
            f"{_ul(refill.get('recomputed_expected_ul'))} (recomputed), aspirated "
            f"{_ul(refill.get('aspirated_ul'))}, discrepancy {_ul(refill.get('discrepancy_ul'))}; "
            f"added {_ul(refill.get('added_ul'))}, new volume {_ul(refill.get('new_volume_ul'))}"
        )
    else:
        lines.append("  refill: none")

    codes = doc.get("codes") or {}
    lines.append("  codes:")
    width = max((len(name) for name in codes), default=0)
    for name, code in codes.items():
        what = ", ".join(
            [
                "reprogrammed" if code.get("reprogrammed") else "not reprogrammed",
                "refill" if code.get("refill") else "no refill",
            ]
        )
        lines.append(f"    {name:<{width}}  {code.get('procedure')}  {what}")
        if code.get("counterfactual"):
            lines.append(f"    {'':<{width}}  {code['counterfactual']}")

    supplies = doc.get("supplies") or []
    if supplies:
        lines.append("  supplies:")
        lines.extend(
            table(
                ("hcpcs", "units", "drug", "amount"),
                [
                    (
                        str(s.get("hcpcs") or "-"),
                        show_value(s.get("units")),
                        str(s.get("drug")),
                        f"{s.get('amount_ug')} µg",
                    )
                    for s in supplies
                ],
            )
        )

    documentation = doc.get("documentation") or []
    if documentation:
        lines.append("  checklist:")
        for status, label in STATUS_LABELS:
            items = [str(d.get("item")) for d in documentation if d.get("status") == status]
            if items:
                lines.append(f"    {label}: {', '.join(items)}")
    return "\n".join(lines)
