"""`pumptrail status`: the service's health, for people and for monitoring.

Reads the status file the running service writes after every poll
(`ingest.status`: last poll, files retrying, files needing attention by hash
and reason, database outage, the last database check) and what it can see
itself: the files in the inbox now, the quarantine count, the last audit
checkpoint. It does not open the database. `--json` prints the same as one JSON
object. Exit status 0 when nothing needs attention, 1 when something does (a
file the service cannot read or move for `unreadable_grace_seconds`, a service
that has not polled for a while, a failed database check), 2 when the settings
cannot be used (docs/operations.md, "Service health").
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from pumptrail import settings
from pumptrail.commands import set_handler
from pumptrail.commands.db import add_database_arguments, resolve
from pumptrail.errors import EXIT_OK, EXIT_PROBLEM

SETTINGS = ("data_dir", "inbox", "archive", "quarantine", "poll_seconds")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "status", help="service health: last poll, files waiting or needing attention"
    )
    add_database_arguments(parser, SETTINGS)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    set_handler(parser, run)


def collect(resolved: settings.Settings, *, now: float | None = None) -> dict[str, Any]:
    """The health mapping `--json` prints (`ingest.status.health`)."""
    from ingest.quarantine import quarantined_files
    from ingest.status import health
    from ingest.watch import InboxWatcher

    def no_database() -> Any:
        raise RuntimeError("pumptrail status does not import")

    watcher = InboxWatcher(
        inbox=resolved.inbox,
        archive=resolved.archive,
        quarantine=resolved.quarantine,
        connect=no_database,
        settle_seconds=resolved.settle_seconds,
    )
    return health(
        data_dir=resolved.data_dir,
        inbox_files=len(watcher.candidates()),
        quarantined=len(quarantined_files(resolved.quarantine, 100_000)),
        poll_seconds=resolved.poll_seconds,
        now=time.time() if now is None else now,
    )


def run(args: argparse.Namespace) -> int:
    report = collect(resolve(args))
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        print(render(report), end="")
    return EXIT_PROBLEM if report["needs_attention"] else EXIT_OK


def render(report: dict[str, Any]) -> str:
    """The report as lines for a person."""
    lines = [f"status: {'NEEDS ATTENTION' if report['needs_attention'] else 'ok'}"]
    lines.extend(f"  - {problem}" for problem in report["problems"])
    age = report["last_poll_age_s"]
    last = report["last_poll_utc"] or "never"
    lines.append(f"last poll: {last}" + ("" if age is None else f" ({age:.0f} s ago)"))
    lines.append(f"files waiting in the inbox: {report['files_waiting']}")
    lines.append(f"files being retried: {report['files_retrying']}")
    attention = report["files_needing_attention"]
    lines.append(f"files needing attention: {len(attention)}")
    for item in attention:
        lines.append(
            f"  - {item.get('key')}: {item.get('reason')} ({item.get('error')}) "
            f"since {item.get('since_utc')}, {item.get('attempts')} attempts"
        )
    lines.append(f"files in the quarantine: {report['quarantined']}")
    outage = " (in an outage)" if report["database_outage"] else ""
    check = report["database_check"]
    if check is None:
        lines.append(f"database check: not run{outage}")
    else:
        verdict = "ok" if check.get("ok") else "FAILED"
        lines.append(f"database check: {verdict}{outage}")
    checkpoint = report["last_audit_checkpoint"]
    if checkpoint is None:
        lines.append("last audit checkpoint: none")
    else:
        lines.append(
            f"last audit checkpoint: entry {checkpoint.get('head_id')} at {checkpoint.get('at')}"
        )
    return "\n".join(lines) + "\n"
