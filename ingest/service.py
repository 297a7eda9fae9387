"""`pumptrail run`: the unattended service of a clinic workstation (APScheduler 3.x).

One process, one `BackgroundScheduler`, these jobs:

- **poll** every `poll_seconds` (`max_instances=1`, `coalesce`: a long backfill
  is never run twice at once, and missed ticks collapse into one): the inbox
  watcher (`ingest.watch`) imports what is ready and archives or quarantines it
  (a backlog of more than one group of files with `import_jobs` worker
  processes, `ingest.parallel`); then the status file
  `<data_dir>/service-status.json` is rewritten (`ingest.status`, read by
  `pumptrail status`).
- **refills due** once at start, then daily: the refill-due report
  (`ingest.due`) logged as one summary line and one line per pump, overdue ones
  at WARNING level.
- **serial** when `serial_port` is set, one long-running job: the XMODEM
  receiver (`ingest.serial_receiver`) writes what a programmer sends into the
  inbox under a temporary name, then its final one, where the poll job picks
  it up. A port that is missing or taken is logged and tried again every
  `SERIAL_RETRY_SECONDS`; the service keeps polling meanwhile.
- **billing** when `billing_mllp` is set, one long-running job: the outbox's
  DFT^P03 charge messages sent in order over MLLP (`ingest.billing`,
  docs/interfaces.md "Transport"), retried with back-off while billing cannot be
  reached, the outage logged at most once per `outage_log_seconds`.

The folders the service creates (data_dir, inbox, archive, quarantine) are
0700 whatever the umask; folders that exist are left as they are.

The database is opened lazily and kept: a database that is down at start is
retried with back-off like one that goes down later (`ingest.watch`), while one
at the wrong schema revision (or a bad URL) stops the service with status 2,
since retrying cannot cure it.

Database health (`db.health`, docs/operations.md, "Database health"): when the
database is first opened the service runs the quick check (SQLite `PRAGMA
quick_check`), and once a day the full one (`integrity_check`). A check that finds
damage, or any database error that says the file is damaged (SQLite "malformed",
"not a database", an I/O error) during an import or a report, stops the service
with status `EXIT_DAMAGED` (3) after logging `database_damaged` with what to do:
imports stop, the file being imported stays in the inbox, and no file is ever
quarantined because of it. systemd does not restart the service on that status
(systemd/pumptrail.service, `RestartPreventExitStatus`): restoring the database
from a backup is the cure. `Service.health` holds the newest check's result.
Log lines of failures name the error's class and the driver's first line, never
a stored value (`db.health.safe_error_text`).

The service reads its settings from a frozen `ServiceConfig`, which `pumptrail run`
builds from the resolved settings (docs/operations.md, "Settings").

SIGTERM or SIGINT asks the service to stop: the file being imported is
finished (and moved; in a backfill, the groups already offered to the workers),
no further file is started, the scheduler is shut down waiting for running
jobs, and the process exits 0.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
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
from db.health import (
    DatabaseDamaged,
    HealthReport,
    check_database,
    is_damage,
    safe_error_text,
)
from db.migrate import SchemaError, open_database
from db.signing import SigningIdentity, SigningKeyError
from evidence import Rules
from ingest.billing import BillingJob, BillingSettingsError, MllpTarget
from ingest.durable import make_private_dir
from ingest.logging_setup import log_event
from ingest.parallel import default_jobs
from ingest.pipeline import Importer, ImportResult, Offered
from ingest.rawstore import AUTO, open_raw_store
from ingest.status import status_path, write_status
from ingest.watch import InboxWatcher, error_text, is_transient
from parsers.errors import DecodeError, PumptrailError

log = logging.getLogger(__name__)

# Seconds between attempts to open a serial port that is missing or taken, and
# how often an unchanged port error is logged again.
SERIAL_RETRY_SECONDS = 30.0
SERIAL_LOG_SECONDS = 600.0
FATAL_ERRORS = (SchemaError, DatabaseUrlError)
# Exit status of a service stopped by a damaged database (systemd does not restart it).
EXIT_DAMAGED = 3
# Seconds between full integrity checks of the database.
HEALTH_CHECK_SECONDS = 24 * 3600.0
# What the log tells the operator to do about a damaged database.
DAMAGED_ACTION = (
    "stop pumptrail, restore the database from the newest backup "
    "(docs/operations.md, Backups), run `pumptrail db check`, then start pumptrail; "
    "files wait in the inbox"
)


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
    truncated_grace_seconds: float = 120.0
    unreadable_grace_seconds: float = 600.0
    retry_max_seconds: float = 60.0
    outage_log_seconds: float = 60.0
    due_within_days: int = 14
    # Empty: no serial receiver.
    serial_port: str = ""
    serial_baud: int = 115200
    # Where the signing identity and the audit checkpoints live; None: no checkpoints.
    anchor: AnchorConfig | None = None
    # Where the status file goes (`ingest.status`); None: no status file.
    data_dir: Path | None = None
    # The billing system's MLLP listener, HOST:PORT (`ingest.billing`); empty: none.
    billing_mllp: str = ""
    billing_mllp_tls: bool = False
    billing_mllp_ca: str = ""
    billing_ack_seconds: float = 30.0
    # Worker processes importing a backlog (`ingest.watch`): 0 one per core, 1 none.
    import_jobs: int = 0

    def billing_target(self) -> MllpTarget | None:
        """Where the billing job sends; None without `billing_mllp` (may raise
        BillingSettingsError)."""
        if not self.billing_mllp:
            return None
        return MllpTarget.parse(
            self.billing_mllp,
            tls=self.billing_mllp_tls,
            ca_file=self.billing_mllp_ca,
            ack_seconds=self.billing_ack_seconds,
        )


class CheckedImporter(Importer):
    """The importer of the service: an import that failed because the database is
    damaged raises DatabaseDamaged instead of returning a failed result, so the
    watcher neither quarantines the file nor moves on to the next one."""

    def import_bytes(
        self,
        data: bytes,
        name: str,
        *,
        group_commit: bool = False,
        refusal: DecodeError | None = None,
    ) -> ImportResult:
        return self._checked(
            super().import_bytes(data, name, group_commit=group_commit, refusal=refusal)
        )

    def _import_group(
        self,
        items: Sequence[Offered],
        write: Callable[[Sequence[Offered]], list[ImportResult]] | None = None,
    ) -> list[ImportResult]:
        # A backfill's group (`ingest.parallel`): its files go through import_bytes
        # above only when the group falls back to the serial path; a group the
        # damaged database could not make durable is caught here.
        return [self._checked(result) for result in super()._import_group(items, write)]

    def _checked(self, result: ImportResult) -> ImportResult:
        failure = result.exception
        if result.outcome == "failed" and failure is not None and is_damage(failure):
            raise DatabaseDamaged(
                f"database {safe_url_text(self.engine.url)}: {safe_error_text(failure)}"
            ) from failure
        return result


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
        # The newest database check (None until the database was first opened).
        self.health: HealthReport | None = None
        self._status_failed = False
        self.watcher = InboxWatcher(
            inbox=config.inbox,
            archive=config.archive,
            quarantine=config.quarantine,
            connect=self.importer,
            settle_seconds=config.settle_seconds,
            truncated_grace_seconds=config.truncated_grace_seconds,
            unreadable_grace_seconds=config.unreadable_grace_seconds,
            retry_initial_seconds=max(config.poll_seconds, 0.1),
            retry_max_seconds=config.retry_max_seconds,
            outage_log_seconds=config.outage_log_seconds,
            stop_requested=self.stop_event.is_set,
            import_jobs=config.import_jobs,
        )

    # -- the database ---------------------------------------------------------

    def importer(self) -> Importer:
        """The importer on the open database; opens it on first use (may raise)."""
        with self._lock:
            if self._importer is None:
                try:
                    engine = self._open()
                    if self.config.anchor is not None:
                        anchor_engine(engine, self.config.anchor, self._identity)
                    self._check(engine, full=False)
                except Exception as exc:
                    if is_damage(exc) and not isinstance(exc, DatabaseDamaged):
                        raise self._damage_error(exc) from exc
                    raise
                self._engine = engine
                store = open_raw_store(engine, self.config.raw_store, self.config.raw_store_mode)
                self._importer = CheckedImporter(engine, store, self.rules)
            return self._importer

    def _open(self) -> Engine:
        try:
            return open_database(self.config.db_url)
        except (IntegrityError, ProgrammingError):
            # Another process set up the empty database at the same moment and
            # won the race to create its tables: it is set up now.
            log_event(log, "database_set_up_elsewhere")
            return open_database(self.config.db_url)

    def _check(self, engine: Engine, *, full: bool) -> HealthReport:
        """Run a database check and keep its result; raise DatabaseDamaged on damage."""
        try:
            report = check_database(engine, full=full)
        except BaseException:
            if engine is not self._engine:
                engine.dispose()  # opened for this check only: nobody else holds it
            raise
        self.health = report
        if not report.ok:
            if engine is not self._engine:
                engine.dispose()
            raise DatabaseDamaged(report.line(), report)
        log_event(log, "database_checked", db=report.database, check=report.check)
        return report

    def _damage_error(self, exc: BaseException) -> DatabaseDamaged:
        where = safe_url_text(self.config.db_url)
        return DatabaseDamaged(f"database {where}: {safe_error_text(exc)}")

    def _fatal(self, exc: BaseException) -> None:
        log_event(log, "service_failed", level=logging.ERROR, error=safe_error_text(exc))
        self.exit_status = 2
        self.stop_event.set()

    def _damaged(self, exc: BaseException) -> None:
        """Stop the service: the database is damaged (imports stop, files stay in the inbox)."""
        damage = exc if isinstance(exc, DatabaseDamaged) else self._damage_error(exc)
        if damage.report is not None:
            self.health = damage.report
        else:
            self.health = HealthReport(
                safe_url_text(self.config.db_url),
                "in_use",
                ok=False,
                problems=(safe_error_text(exc),),
            )
        log_event(
            log,
            "database_damaged",
            level=logging.CRITICAL,
            db=safe_url_text(self.config.db_url),
            error=str(damage),
            action=DAMAGED_ACTION,
        )
        self.exit_status = EXIT_DAMAGED
        self.stop_event.set()

    # -- jobs -----------------------------------------------------------------

    def poll_job(self) -> None:
        if self.stop_event.is_set():
            return
        try:
            self.watcher.poll()
        except FATAL_ERRORS as exc:
            self._fatal(exc)
        except Exception as exc:  # the next tick tries again; the service keeps running
            if is_damage(exc):
                self._damaged(exc)
                return
            log_event(log, "poll_failed", level=logging.ERROR, error=safe_error_text(exc))
        self.write_status()

    def write_status(self) -> None:
        """Write the status file `pumptrail status` reads (`ingest.status`); a failure
        is logged once until a write succeeds again."""
        if self.config.data_dir is None:
            return
        status = {
            **self.watcher.status(),
            "pid": os.getpid(),
            "poll_seconds": self.config.poll_seconds,
            "database_check": None if self.health is None else self.health.as_dict(),
        }
        try:
            write_status(status_path(self.config.data_dir), status)
        except OSError as exc:
            if not self._status_failed:
                log_event(
                    log, "status_file_failed", level=logging.WARNING, error=safe_error_text(exc)
                )
            self._status_failed = True
        else:
            self._status_failed = False

    def health_job(self) -> None:
        """The daily full check (`integrity_check`); damage stops the service."""
        if self.stop_event.is_set():
            return
        try:
            engine = self.importer().engine
            self._check(engine, full=True)
        except FATAL_ERRORS as exc:
            self._fatal(exc)
        except Exception as exc:
            if is_damage(exc):
                self._damaged(exc)
                return
            # Unreachable now: the poll job's back-off reports the outage; checked tomorrow.
            log_event(
                log,
                "database_check_failed",
                level=logging.WARNING,
                error=safe_error_text(exc),
            )

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
            if is_damage(exc):
                self._damaged(exc)
                return
            # Retried every retry_max_seconds; an outage is logged once, not per retry.
            if not (self._due_retrying and is_transient(exc)):
                log_event(
                    log,
                    "refills_due_failed",
                    level=logging.WARNING if is_transient(exc) else logging.ERROR,
                    error=safe_error_text(exc),
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

    def billing_job(self) -> None:
        """Send the billing outbox until stopped (one long-running job)."""
        target = self.config.billing_target()
        if target is None:
            return
        BillingJob(
            lambda: self.importer().engine,
            target,
            self.stop_event,
            idle_seconds=max(self.config.poll_seconds, 0.1),
            retry_max_seconds=self.config.retry_max_seconds,
            outage_log_seconds=self.config.outage_log_seconds,
        ).run()

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
        """Create the folders, open and check the database once.

        Raises ServiceError when the settings or the schema are hopeless and
        DatabaseDamaged when the database is damaged; a database that is down
        is left to the poll job's back-off.
        """
        self.check_folders()
        try:
            self.config.billing_target()
        except BillingSettingsError as exc:
            raise ServiceError(str(exc)) from exc
        if self.config.anchor is not None:
            try:
                self._identity = open_identity(self.config.anchor)
            except SigningKeyError as exc:
                raise ServiceError(str(exc)) from exc
        folders = [self.config.inbox, self.config.archive, self.config.quarantine]
        if self.config.data_dir is not None:
            folders.insert(0, self.config.data_dir)
        for folder in folders:
            try:
                make_private_dir(folder)
            except OSError as exc:
                raise ServiceError(f"cannot create folder {folder}: {exc.strerror}") from exc
        try:
            self.importer()
        except FATAL_ERRORS as exc:
            raise ServiceError(str(exc)) from exc
        except DatabaseDamaged:
            raise
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
        # The quick check ran when the database was opened; the full one runs daily.
        scheduler.add_job(
            self.health_job,
            "interval",
            seconds=HEALTH_CHECK_SECONDS,
            next_run_time=now + timedelta(seconds=HEALTH_CHECK_SECONDS),
            id="database_check",
        )
        if config.serial_port and self._receiver_factory is not None:
            scheduler.add_job(self.serial_job, "date", run_date=now, id="serial")
        if config.billing_mllp:
            scheduler.add_job(self.billing_job, "date", run_date=now, id="billing")
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
        except DatabaseDamaged as exc:
            self._damaged(exc)
            return self.exit_status
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
            billing_mllp=config.billing_mllp or None,
            import_jobs=config.import_jobs or default_jobs(),
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
