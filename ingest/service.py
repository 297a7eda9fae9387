"""`pumptrail run`: the unattended service of a clinic workstation (APScheduler 3.x).

One process, one `BackgroundScheduler`, these jobs:

- **poll** every `poll_seconds` (`max_instances=1`, `coalesce`: a long backfill
  is never run twice at once, and missed ticks collapse into one): the inbox
  watcher (`ingest.watch`) imports what is ready and archives or quarantines it.
- **refills due** once at start, then daily: the refill-due report
  (`ingest.due`) logged as one summary line and one line per pump, overdue ones
  at WARNING level.
- **serial** when `serial_port` is set, one long-running job: the XMODEM
  receiver (`ingest.serial_receiver`) writes what a programmer sends into the
  inbox under a temporary name, then its final one, where the poll job picks
  it up. A port that is missing or taken is logged and tried again every
  `SERIAL_RETRY_SECONDS`; the service keeps polling meanwhile.

The database is opened lazily and kept: a database that is down at start is
retried with back-off like one that goes down later (`ingest.watch`), while one
at the wrong schema revision (or a bad URL) stops the service with status 2,
since retrying cannot cure it.

The service reads its settings from a frozen `ServiceConfig`, which `pumptrail run`
builds from the resolved settings (docs/operations.md, "Settings").

SIGTERM or SIGINT asks the service to stop: the file being imported is
finished (and moved), no further file is started, the scheduler is shut down
waiting for running jobs, and the process exits 0.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError, ProgrammingError, SQLAlchemyError

from db.checkpoints import AnchorConfig, anchor_engine, open_identity
from db.due import due_report
from db.engine import DatabaseUrlError, normalize_url, safe_url_text, sqlite_path
from db.migrate import SchemaError, open_database
from db.signing import SigningIdentity, SigningKeyError
from evidence import Rules
from ingest.logging_setup import log_event
from ingest.pipeline import Importer
from ingest.rawstore import AUTO, open_raw_store
from ingest.watch import InboxWatcher, error_text, is_transient
from parsers.errors import PumptrailError

log = logging.getLogger(__name__)

# Seconds between attempts to open a serial port that is missing or taken, and
# how often an unchanged port error is logged again.
SERIAL_RETRY_SECONDS = 30.0
SERIAL_LOG_SECONDS = 600.0
FATAL_ERRORS = (SchemaError, DatabaseUrlError)


class ServiceError(PumptrailError):
    """Raised by `Service.prepare` when the service cannot start: a folder that
    cannot be created or lies where the service would import it, a bad database
    URL, a schema at the wrong revision, or a database that refuses access."""


@dataclass(frozen=True)
class ServiceConfig:
    """What the service needs of the settings (docs/operations.md, "Settings")."""

    db_url: str
    inbox: Path
    archive: Path
    quarantine: Path
    raw_store: Path
    # `raw_store_mode` (ingest.rawstore): where the imported raw exports are kept.
    raw_store_mode: str = AUTO
    poll_seconds: float = 2.0
    settle_seconds: float = 2.0
    retry_max_seconds: float = 60.0
    outage_log_seconds: float = 60.0
    due_within_days: int = 14
    # Empty: no serial receiver.
    serial_port: str = ""
    serial_baud: int = 115200
    # Where the signing identity and the audit checkpoints live; None: no checkpoints.
    anchor: AnchorConfig | None = None


class Receiver(Protocol):
    """What the service needs of the serial receiver (`ingest.serial_receiver`)."""

    def run_once(self) -> object:
        """Listen a while and receive at most one export; raise when the port fails."""

    def close(self) -> None: ...


ReceiverFactory = Callable[[ServiceConfig, threading.Event], Receiver]


class Service:
    """The scheduler, its jobs and the shared database handle."""

    def __init__(
        self,
        config: ServiceConfig,
        rules: Rules,
        *,
        receiver_factory: ReceiverFactory | None = None,
        today: Callable[[], date] = date.today,
    ) -> None:
        self.config = config
        self.rules = rules
        self._identity: SigningIdentity | None = None
        self.stop_event = threading.Event()
        self.exit_status = 0
        self._today = today
        self._lock = threading.Lock()
        self._engine: Engine | None = None
        self._importer: Importer | None = None
        self._receiver_factory = receiver_factory
        self._signal: str | None = None
        self.scheduler: BackgroundScheduler | None = None
        self._due_retrying = False
        self.watcher = InboxWatcher(
            inbox=config.inbox,
            archive=config.archive,
            quarantine=config.quarantine,
            connect=self.importer,
            settle_seconds=config.settle_seconds,
            retry_initial_seconds=max(config.poll_seconds, 0.1),
            retry_max_seconds=config.retry_max_seconds,
            outage_log_seconds=config.outage_log_seconds,
            stop_requested=self.stop_event.is_set,
        )

    # -- the database ---------------------------------------------------------

    def importer(self) -> Importer:
        """The importer on the open database; opens it on first use (may raise)."""
        with self._lock:
            if self._importer is None:
                try:
                    engine = open_database(self.config.db_url)
                except (IntegrityError, ProgrammingError):
                    # Another process set up the empty database at the same moment and
                    # won the race to create its tables: it is set up now.
                    log_event(log, "database_set_up_elsewhere")
                    engine = open_database(self.config.db_url)
                if self.config.anchor is not None:
                    anchor_engine(engine, self.config.anchor, self._identity)
                self._engine = engine
                store = open_raw_store(engine, self.config.raw_store, self.config.raw_store_mode)
                self._importer = Importer(engine, store, self.rules)
            return self._importer

    def _fatal(self, exc: BaseException) -> None:
        log_event(log, "service_failed", level=logging.ERROR, error=error_text(exc))
        self.exit_status = 2
        self.stop_event.set()

    # -- jobs -----------------------------------------------------------------

    def poll_job(self) -> None:
        try:
            self.watcher.poll()
        except FATAL_ERRORS as exc:
            self._fatal(exc)
        except Exception as exc:  # the next tick tries again; the service keeps running
            log_event(log, "poll_failed", level=logging.ERROR, error=error_text(exc))
            log.debug("poll failed", exc_info=exc)

    def due_job(self) -> None:
        if self.stop_event.is_set():
            return
        within = self.config.due_within_days
        try:
            engine = self.importer().engine
            report = due_report(engine, today=self._today(), within_days=within, rules=self.rules)
        except FATAL_ERRORS as exc:
            self._fatal(exc)
            return
        except Exception as exc:
            # Retried every retry_max_seconds; an outage is logged once, not per retry.
            if not (self._due_retrying and is_transient(exc)):
                log_event(
                    log,
                    "refills_due_failed",
                    level=logging.WARNING if is_transient(exc) else logging.ERROR,
                    error=error_text(exc),
                    retry_in_s=self.config.retry_max_seconds,
                )
            self._due_retrying = True
            self._retry_due_later()
            return
        self._due_retrying = False
        overdue = [item for item in report if item.overdue]
        log_event(
            log,
            "refills_due",
            level=logging.WARNING if overdue else logging.INFO,
            within_days=within,
            pumps=len(report),
            overdue=len(overdue),
            withdrawal_risk_overdue=sum(1 for item in overdue if item.withdrawal_risk),
        )
        for item in report:
            log_event(
                log,
                "refill_overdue" if item.overdue else "refill_due",
                level=logging.WARNING if item.overdue else logging.INFO,
                pump_serial=item.pump_serial,
                due_date=item.due_date.isoformat(),
                days_left=item.days_left,
                drugs="+".join(item.drugs) or None,
                withdrawal_risk=item.withdrawal_risk or None,
            )

    def _retry_due_later(self) -> None:
        if self.scheduler is None or self.stop_event.is_set():
            return
        delay = timedelta(seconds=self.config.retry_max_seconds)
        self.scheduler.add_job(
            self.due_job,
            "date",
            run_date=datetime.now().astimezone() + delay,
            id="refills_due_retry",
            replace_existing=True,
        )

    def serial_job(self) -> None:
        """Receive exports from the serial port until stopped (one long-running job).

        A port that is missing, taken or gone is logged (again only when the reason
        changes, or every `SERIAL_LOG_SECONDS`) and retried every
        `SERIAL_RETRY_SECONDS`; the poll job runs on meanwhile. A stop request
        cancels a transfer in progress (the programmer shows it failed; nothing
        reaches the inbox) and ends the job.
        """
        if self._receiver_factory is None:
            return
        last_error: str | None = None
        logged_at = 0.0
        receiver: Receiver | None = None
        try:
            while not self.stop_event.is_set():
                try:
                    if receiver is None:
                        receiver = self._receiver_factory(self.config, self.stop_event)
                    receiver.run_once()
                    if last_error is not None:
                        log_event(log, "serial_available", port=self.config.serial_port)
                        last_error = None
                except Exception as exc:  # missing, taken, gone: logged, retried later
                    if receiver is not None:
                        receiver.close()
                        receiver = None
                    text = error_text(exc)
                    now = time.monotonic()
                    if text != last_error or now - logged_at >= SERIAL_LOG_SECONDS:
                        log_event(
                            log,
                            "serial_unavailable",
                            level=logging.WARNING,
                            port=self.config.serial_port,
                            error=text,
                            retry_in_s=SERIAL_RETRY_SECONDS,
                        )
                        last_error, logged_at = text, now
                    self.stop_event.wait(SERIAL_RETRY_SECONDS)
        finally:
            if receiver is not None:
                receiver.close()

    # -- running --------------------------------------------------------------

    def check_folders(self) -> None:
        """The inbox must not hold what the service writes: it would import it.

        The archive and quarantine may sit inside it (the watcher skips them); the
        raw store and a SQLite database may not.
        """
        inbox = self.config.inbox.absolute()
        try:
            database = sqlite_path(normalize_url(self.config.db_url))
        except DatabaseUrlError as exc:
            raise ServiceError(str(exc)) from exc
        for label, path in (("raw_store", self.config.raw_store), ("db", database)):
            if path is not None and path.absolute().is_relative_to(inbox):
                raise ServiceError(
                    f"setting {label} ({path}) is inside the inbox ({inbox}): "
                    "the service would import it"
                )

    def prepare(self) -> None:
        """Create the folders and try the database once; raise ServiceError when hopeless."""
        self.check_folders()
        if self.config.anchor is not None:
            try:
                self._identity = open_identity(self.config.anchor)
            except SigningKeyError as exc:
                raise ServiceError(str(exc)) from exc
        for folder in (self.config.inbox, self.config.archive, self.config.quarantine):
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ServiceError(f"cannot create folder {folder}: {exc.strerror}") from exc
        try:
            self.importer()
        except FATAL_ERRORS as exc:
            raise ServiceError(str(exc)) from exc
        except Exception as exc:
            if is_transient(exc):
                return  # down at start: the poll job retries with back-off and logs it
            if isinstance(exc, SQLAlchemyError):  # e.g. no permission on the schema
                raise ServiceError(f"database: {error_text(exc)}") from exc
            raise

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._signal = signal.Signals(signum).name
        self.stop_event.set()

    def build_scheduler(self) -> BackgroundScheduler:
        config = self.config
        scheduler = BackgroundScheduler(
            job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": None}
        )
        now = datetime.now().astimezone()
        scheduler.add_job(
            self.poll_job,
            "interval",
            seconds=config.poll_seconds,
            next_run_time=now,
            id="poll",
        )
        scheduler.add_job(self.due_job, "interval", days=1, next_run_time=now, id="refills_due")
        if config.serial_port and self._receiver_factory is not None:
            scheduler.add_job(self.serial_job, "date", run_date=now, id="serial")
        return scheduler

    def run(self, *, install_signals: bool = True) -> int:
        """Run until SIGTERM/SIGINT (or a fatal error); returns the exit status."""
        previous: dict[int, Any] = {}
        if install_signals:
            for signum in (signal.SIGTERM, signal.SIGINT):
                previous[signum] = signal.signal(signum, self._on_signal)
        try:
            self.prepare()
        except ServiceError as exc:
            log_event(log, "service_failed", level=logging.ERROR, error=str(exc))
            return 2
        if not log.isEnabledFor(logging.DEBUG):
            # APScheduler reports every tick skipped while a long poll (a backfill) runs.
            logging.getLogger("apscheduler").setLevel(logging.ERROR)
        scheduler = self.scheduler = self.build_scheduler()
        config = self.config
        log_event(
            log,
            "service_started",
            db=safe_url_text(self.config.db_url),
            inbox=str(self.config.inbox),
            poll_s=config.poll_seconds,
            settle_s=config.settle_seconds,
            serial_port=config.serial_port or None,
        )
        scheduler.start()
        try:
            while not self.stop_event.wait(1.0):
                pass
        finally:
            log_event(log, "service_stopping", signal=self._signal)
            scheduler.shutdown(wait=True)
            with self._lock:
                if self._engine is not None:
                    self._engine.dispose()
            for number, handler in previous.items():
                signal.signal(number, handler)
        log_event(
            log,
            "service_stopped",
            status=self.exit_status,
            **dict(sorted(self.watcher.counts.items())),
        )
        return self.exit_status
