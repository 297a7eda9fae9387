"""`pumptrail run`: the unattended service (inbox watcher, refill-due job, serial receiver).

Runs in the foreground until SIGTERM or SIGINT (systemd's stop, Ctrl-C): the
file being imported is finished and moved, then the process exits 0. Log lines
go to standard error as structured `key=value` lines (journald keeps them).
Exit status 2 when the settings, the folders or the database schema cannot be
used; 3 when the database is damaged (docs/operations.md "Database health"); a
database that is merely unreachable is retried with back-off.
The service (`ingest.service`) gets its settings as a typed `ServiceConfig`
built here (`service_config`). See docs/operations.md.
"""

from __future__ import annotations

import argparse
import threading
from typing import TYPE_CHECKING, Any

from pumptrail import settings
from pumptrail.commands import set_handler
from pumptrail.commands.db import (
    add_database_arguments,
    anchor_config,
    load_clinic_rules,
    resolve,
)
from pumptrail.commands.import_ import MAX_JOBS
from pumptrail.errors import CommandError

if TYPE_CHECKING:
    from ingest.service import Receiver, ServiceConfig

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
    "truncated_grace_seconds",
    "unreadable_grace_seconds",
    "import_jobs",
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
    set_handler(parser, run)


def service_config(resolved: settings.Settings) -> ServiceConfig:
    """What the service needs of the settings, typed and frozen."""
    from ingest.service import ServiceConfig

    if resolved.import_jobs > MAX_JOBS:
        raise CommandError(
            f"setting import_jobs: expected 0 to {MAX_JOBS}, found {resolved.import_jobs}"
        )
    return ServiceConfig(
        db_url=resolved.db,
        inbox=resolved.inbox,
        archive=resolved.archive,
        quarantine=resolved.quarantine,
        raw_store=resolved.raw_store,
        raw_store_mode=resolved.raw_store_mode,
        poll_seconds=resolved.poll_seconds,
        settle_seconds=resolved.settle_seconds,
        truncated_grace_seconds=resolved.truncated_grace_seconds,
        unreadable_grace_seconds=resolved.unreadable_grace_seconds,
        data_dir=resolved.data_dir,
        retry_max_seconds=resolved.retry_max_seconds,
        outage_log_seconds=resolved.outage_log_seconds,
        due_within_days=resolved.due_within_days,
        serial_port=resolved.serial_port,
        serial_baud=resolved.serial_baud,
        anchor=anchor_config(resolved),
        billing_mllp=resolved.billing_mllp,
        billing_mllp_tls=resolved.billing_mllp_tls,
        billing_mllp_ca=resolved.billing_mllp_ca,
        billing_ack_seconds=resolved.billing_ack_seconds,
        import_jobs=resolved.import_jobs,
    )


def run(args: argparse.Namespace) -> int:
    from ingest.logging_setup import configure_logging
    from ingest.service import Service

    resolved = resolve(args)
    rules = load_clinic_rules(resolved)
    try:
        configure_logging(resolved.log_level)
    except ValueError as exc:
        raise CommandError(f"setting log_level: {exc}") from exc
    return Service(service_config(resolved), rules, receiver_factory=_serial_receiver).run()


def _serial_receiver(config: ServiceConfig, stop: threading.Event) -> Receiver:
    """The XMODEM receiver on the `serial_port` setting, writing into the inbox."""
    from ingest.serial_receiver import SerialReceiver

    return SerialReceiver(
        config.serial_port, config.inbox, baud=config.serial_baud, stop_event=stop
    )
