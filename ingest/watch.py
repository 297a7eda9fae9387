"""The inbox watcher: every export dropped into the inbox is imported exactly once.

One `poll()` per scheduler tick (`ingest.service`):

1. Scan the inbox (recursively; dot files, dot folders and temporary names such
   as the serial receiver's `.receiving-*.part` are skipped). A file is *ready*
   when its size and mtime did not change since the previous poll and it is at
   least `settle_seconds` old (by its mtime, or by how long this watcher has seen
   it unchanged when its mtime lies in the future): a programmer or a copy still
   writing it is left alone.
2. Hand each ready file, in sorted order, to the import pipeline
   (`ingest.pipeline`, docs/coding-rules.md §7.16): the raw bytes are kept and the
   session committed in one transaction.
3. Move it: imported or a duplicate into `archive/YYYY/MM/` (the local month of
   the import), refused into `quarantine/` beside `<name>.error.json` (`ingest.quarantine`: error
   code, message, offset or line, record, time UTC, parser version). A file that
   is not an export at all is refused (`unknown_format`) and quarantined too.

Exactly once, across crashes: the database commit is the point of truth. The
bytes are recognised by SHA-256 (`raw_files`) before decoding and a session is
stored once per session ID, so a process killed after the commit but before the
move finds the file again after restart, imports it as a duplicate (no second
session) and then moves it. A move is a hard link to the destination followed
by removing the inbox name (a link never replaces an existing file, so nothing in
the archive is ever overwritten), the destination folder fsync'ed in between;
a crash between the two leaves one file under two names, which the next attempt
recognises (same inode) and finishes. (An archive on another file system gets a
copy, fsync'ed, then linked into place.) A name already taken gets the SHA-256 prefix:
`<stem>.<sha256[:12]><suffix>`.

A database that cannot be reached (connection refused, read-only, disk full:
`OperationalError` and kin, or an `OSError`) leaves the file in the inbox; the
watcher then waits before trying again, doubling the wait from `poll_seconds` up
to `retry_max_seconds`, and logs the outage at most once per
`outage_log_seconds`, not once per poll. Log lines name files by SHA-256 prefix
and sessions by ID, never by file name: names and contents may carry patient
identifiers.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    InterfaceError,
    OperationalError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from ingest import quarantine
from ingest.logging_setup import log_event
from ingest.pipeline import Importer, ImportResult
from ingest.quarantine import HASH_IN_NAME

log = logging.getLogger(__name__)

# Names a writer uses while a file is incomplete: never picked up.
TEMPORARY_SUFFIXES = (".part", ".partial", ".tmp", ".crdownload", "~")
_HASH_CHUNK = 1 << 20

Disposition = Literal["archived", "quarantined", "waiting", "changed", "gone"]


def is_candidate(name: str) -> bool:
    """Whether an inbox file name may be an export (not hidden, not a temporary name)."""
    return not name.startswith(".") and not name.endswith(TEMPORARY_SUFFIXES)


def is_transient(exc: BaseException) -> bool:
    """A failure of the database or the disk that retrying later may cure."""
    if isinstance(
        exc, OperationalError | InterfaceError | DisconnectionError | PoolTimeoutError | OSError
    ):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def error_text(exc: BaseException) -> str:
    """One line naming a failure, for logs: the driver's first line, never SQL or parameters."""
    original = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    lines = str(original).strip().splitlines()
    first = lines[0] if lines else ""
    return f"{type(original).__name__}: {first}" if first else type(original).__name__


def _file_sha256(path: Path) -> str | None:
    """SHA-256 of a file read in chunks (a file too large to import is still named)."""
    hasher = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(_HASH_CHUNK):
                hasher.update(chunk)
    except OSError:
        return None
    return hasher.hexdigest()


@dataclass(frozen=True, slots=True)
class Signature:
    """What tells a file changed: its size and modification time."""

    size: int
    mtime_ns: int

    @property
    def mtime(self) -> float:
        return self.mtime_ns / 1e9


@dataclass(frozen=True, slots=True)
class _Seen:
    signature: Signature
    # Watcher clock when this signature was first seen.
    since: float


@dataclass(frozen=True, slots=True)
class Handled:
    """What one poll did with one ready file."""

    name: str
    disposition: Disposition
    destination: Path | None = None
    result: ImportResult | None = None


class DatabaseOutage:
    """Back-off and rate-limited logging while the database cannot be used."""

    def __init__(
        self,
        *,
        initial_seconds: float,
        max_seconds: float,
        log_every_seconds: float,
        monotonic: Callable[[], float],
    ) -> None:
        self.initial = max(initial_seconds, 0.05)
        self.max = max(max_seconds, self.initial)
        self.log_every = log_every_seconds
        self._monotonic = monotonic
        self.attempts = 0
        self.started: float | None = None
        self.retry_at = 0.0
        self._logged_at: float | None = None

    @property
    def active(self) -> bool:
        return self.started is not None

    def may_try(self) -> bool:
        return not self.active or self._monotonic() >= self.retry_at

    def failed(self, exc: BaseException, *, waiting: int) -> float:
        """Record a failed attempt; returns the wait before the next one."""
        now = self._monotonic()
        if self.started is None:
            self.started = now
        self.attempts += 1
        delay = min(self.max, self.initial * (1 << min(self.attempts - 1, 30)))
        self.retry_at = now + delay
        if self._logged_at is None or now - self._logged_at >= self.log_every:
            self._logged_at = now
            log_event(
                log,
                "database_unavailable",
                level=logging.WARNING,
                error=error_text(exc),
                attempts=self.attempts,
                outage_s=round(now - self.started, 1),
                retry_in_s=round(delay, 1),
                files_waiting=waiting,
            )
        return delay

    def succeeded(self) -> None:
        if self.started is None:
            return
        log_event(
            log,
            "database_available",
            attempts=self.attempts,
            outage_s=round(self._monotonic() - self.started, 1),
        )
        self.attempts = 0
        self.started = None
        self.retry_at = 0.0
        self._logged_at = None


class InboxWatcher:
    """Polls one inbox and imports, archives or quarantines what is ready."""

    def __init__(
        self,
        *,
        inbox: Path,
        archive: Path,
        quarantine: Path,
        connect: Callable[[], Importer],
        settle_seconds: float,
        retry_initial_seconds: float = 2.0,
        retry_max_seconds: float = 60.0,
        outage_log_seconds: float = 60.0,
        stop_requested: Callable[[], bool] = lambda: False,
        clock: Callable[[], float] | None = None,
        monotonic: Callable[[], float] | None = None,
        durable: bool = True,
    ) -> None:
        self.inbox = Path(inbox)
        self.archive = Path(archive)
        self.quarantine = Path(quarantine)
        self._connect = connect
        self.settle_seconds = settle_seconds
        self._stop_requested = stop_requested
        self._clock = clock or time.time
        self.durable = durable
        self.outage = DatabaseOutage(
            initial_seconds=retry_initial_seconds,
            max_seconds=retry_max_seconds,
            log_every_seconds=outage_log_seconds,
            monotonic=monotonic or time.monotonic,
        )
        self._seen: dict[Path, _Seen] = {}
        self.counts: Counter[str] = Counter()

    # -- scanning -------------------------------------------------------------

    def _excluded(self) -> frozenset[Path]:
        """Our own output folders, when a configuration puts them inside the inbox."""
        return frozenset(p.absolute() for p in (self.archive, self.quarantine))

    def candidates(self) -> dict[Path, Signature]:
        """Every regular, non-temporary file under the inbox with its signature."""
        found: dict[Path, Signature] = {}
        if not self.inbox.is_dir():
            return found
        excluded = self._excluded()
        for dirpath, dirnames, filenames in os.walk(self.inbox):
            folder = Path(dirpath)
            dirnames[:] = sorted(
                d
                for d in dirnames
                if not d.startswith(".") and (folder / d).absolute() not in excluded
            )
            for filename in filenames:
                if not is_candidate(filename):
                    continue
                path = folder / filename
                signature = _signature(path)
                if signature is not None:
                    found[path] = signature
        return found

    def scan(self) -> list[Path]:
        """Observe the inbox; the files ready now, in sorted order."""
        now = self._clock()
        current = self.candidates()
        ready: list[Path] = []
        observed: dict[Path, _Seen] = {}
        for path, signature in current.items():
            previous = self._seen.get(path)
            if previous is None or previous.signature != signature:
                observed[path] = _Seen(signature, now)
                continue
            observed[path] = previous
            age = max(now - signature.mtime, now - previous.since)
            if age >= self.settle_seconds:
                ready.append(path)
        self._seen = observed
        ready.sort(key=lambda p: p.relative_to(self.inbox).parts)
        return ready

    # -- one poll -------------------------------------------------------------

    def poll(self) -> list[Handled]:
        """Scan, then import and move every ready file (stops early on request or outage)."""
        ready = self.scan()
        handled: list[Handled] = []
        if not ready or not self.outage.may_try():
            return handled
        for index, path in enumerate(ready):
            if self._stop_requested():
                break
            outcome = self.handle(path, waiting=len(ready) - index)
            handled.append(outcome)
            self.counts[outcome.disposition] += 1
            if outcome.disposition == "waiting":
                break
        return handled

    def handle(self, path: Path, *, waiting: int = 1) -> Handled:
        """Import one ready file, then archive or quarantine it."""
        name = path.relative_to(self.inbox).as_posix()
        seen = self._seen.get(path)
        before = _signature(path)
        if before is None:
            self._seen.pop(path, None)
            return Handled(name, "gone")
        if seen is not None and seen.signature != before:
            self._seen[path] = _Seen(before, self._clock())
            return Handled(name, "changed")
        try:
            importer = self._connect()
            if self.outage.active:
                # Retry with a ping first: the pipeline logs every import that fails.
                _ping(importer)
        except Exception as exc:
            if not is_transient(exc):
                raise
            self.outage.failed(exc, waiting=waiting)
            return Handled(name, "waiting")
        result = importer.import_path(path, name=name)
        failure = result.exception if result.outcome == "failed" else None
        if failure is not None and is_transient(failure):
            self.outage.failed(failure, waiting=waiting)
            return Handled(name, "waiting", result=result)
        self.outage.succeeded()

        after = _signature(path)
        if after is None:
            self._seen.pop(path, None)
            log_event(log, "file_gone", sha256=_short(result.sha256), outcome=result.outcome)
            return Handled(name, "gone", result=result)
        if after != before:
            # Written to while importing: what was imported may not be the final file.
            self._seen[path] = _Seen(after, self._clock())
            log_event(log, "file_changed", level=logging.WARNING, sha256=_short(result.sha256))
            return Handled(name, "changed", result=result)

        self._seen.pop(path, None)
        if result.outcome in ("imported", "duplicate"):
            digest = result.sha256 or _file_sha256(path) or ""
            destination = self.archive_file(path, digest)
            log_event(
                log,
                "file_archived",
                sha256=_short(digest),
                outcome=result.outcome,
                session_id=result.session_id,
                format=result.source_format,
                conflicting_exports=result.conflicting_exports or None,
                rederived=result.rederived or None,
            )
            return Handled(name, "archived", destination, result)

        error = quarantine.error_record(result)
        refused_digest = result.sha256 or _file_sha256(path)
        destination = self.quarantine_file(path, refused_digest, error, name=name)
        log_event(
            log,
            "file_quarantined",
            level=logging.WARNING,
            sha256=_short(refused_digest),
            outcome=result.outcome,
            code=error["code"],
        )
        return Handled(name, "quarantined", destination, result)

    # -- moving ---------------------------------------------------------------

    def archive_folder(self) -> Path:
        month = datetime.fromtimestamp(self._clock())
        return self.archive / f"{month:%Y}" / f"{month:%m}"

    def archive_file(self, path: Path, digest: str) -> Path:
        """Move an imported file into archive/YYYY/MM/, never overwriting."""
        return quarantine.move_into(path, self.archive_folder(), digest, durable=self.durable)

    def quarantine_file(
        self, path: Path, digest: str | None, error: Mapping[str, Any], *, name: str
    ) -> Path:
        """Write `<name>.error.json`, then move the file beside it (`ingest.quarantine`)."""
        return quarantine.quarantine_file(
            path,
            self.quarantine,
            digest,
            error,
            name=name,
            now=self._clock(),
            durable=self.durable,
        )


# ---------------------------------------------------------------------------
# Helpers


def _signature(path: Path) -> Signature | None:
    try:
        status = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISREG(status.st_mode):
        return None
    return Signature(status.st_size, status.st_mtime_ns)


def _ping(importer: Importer) -> None:
    with importer.engine.connect() as connection:
        connection.execute(select(1))


def _short(digest: str | None) -> str | None:
    return None if digest is None else digest[:HASH_IN_NAME]
