"""`pumptrail run`: the unattended service (inbox watcher, refill-due job, serial receiver).

Runs in the foreground until SIGTERM or SIGINT (systemd's stop, Ctrl-C): the
file being imported is finished and moved, then the process exits 0. Log lines
go to standard error as structured `key=value` lines (journald keeps them).
Exit status 2 when the settings, the folders or the database schema cannot be
used; a database that is merely unreachable is retried with back-off.
See `ingest.service` and docs/operations.md.
"""

from __future__ import annotations

import argparse
import sys
import threading
from typing import Any

from ingest.logging_setup import configure_logging
from ingest.service import Receiver, Service
from pumptrail import settings
from pumptrail.commands.db import CommandError, add_database_arguments, load_clinic_rules, resolve

SETTINGS = (
    "data_dir",
    "rules_dir",
    "db",
    "inbox",
    "archive",
    "quarantine",
    "raw_store",
    "raw_store_mode",
    "poll_seconds",
    "settle_seconds",
    "serial_port",
    "serial_baud",
    "due_within_days",
    "retry_max_seconds",
    "outage_log_seconds",
    "log_level",
)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "run", help="run the service: import every export dropped into the inbox"
    )
    add_database_arguments(parser, SETTINGS)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        resolved = resolve(args)
        rules = load_clinic_rules(resolved)
    except CommandError as exc:
        print(f"pumptrail run: {exc}", file=sys.stderr)
        return 2
    try:
        configure_logging(str(resolved.values["log_level"]))
    except ValueError as exc:
        print(f"pumptrail run: setting log_level: {exc}", file=sys.stderr)
        return 2
    return Service(resolved, rules, receiver_factory=_serial_receiver).run()


def _serial_receiver(resolved: settings.Settings, stop: threading.Event) -> Receiver:
    """The XMODEM receiver on the `serial_port` setting, writing into the inbox."""
    from ingest.serial_receiver import SerialReceiver

    return SerialReceiver(
        str(resolved.values["serial_port"]),
        resolved.inbox,
        baud=int(resolved.values["serial_baud"]),
        stop_event=stop,
    )
