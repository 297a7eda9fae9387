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

A backlog (more ready files than one import group, `GROUP_FILES`: a clinic
switching the service on with months of exports waiting, or the service back
after a long stop) goes through `ingest.parallel.ParallelImporter` when
`import_jobs` allows workers (0: one per core; 1: never): worker processes
decode the files and build their rows, this process writes each group of 64
files in one transaction and makes it durable, and only then are the group's
files archived or quarantined, one by one, after the same checks as a single
file (`_take` before the import, `_finish` after). The result of every file is
the one the file-by-file import gives (tests/service/test_backfill.py compares
the two). A stop request ends the offering of files; the groups already
offered (at most `ingest.parallel.MAX_OFFERED_GROUPS`, three) are finished and
moved. An outage ends the batch: what is not moved stays in the inbox, and the
next poll imports it again (the part already committed as duplicates).

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

Files that are not (yet) what they seem:

- A file refused as cut short (`truncated_header`, `truncated_record`,
  `missing_end`, or `field_count` on its last line: docs/formats.md §9.1) may
  be a slow copy that paused longer than the settle time: it stays in the inbox
  until it has not changed for `truncated_grace_seconds`, and is decoded again
  whenever it changes. A quarantined file whose size or mtime changed after it
  was quarantined (its writer went on through an open handle) is moved back
  into the inbox by itself.
- A file that cannot be read (another user's 0600 file), archived or
  quarantined (disk full for its `.error.json`) stays in the inbox and is tried
  again on the back-off schedule below, logged at most once per
  `outage_log_seconds` by its SHA-256 prefix or a hash of its name; after
  `unreadable_grace_seconds` it is listed as needing attention (`status()`,
  written by the service to its status file, `ingest.status`).
- A symbolic link is never followed: it is moved into the quarantine as a link
  with a record saying so (`ingest.quarantine.quarantine_link`).
- An inbox file is opened with `O_NOFOLLOW` and its `fstat` compared with the
  `lstat` that made it ready: a name swapped in between is observed again.

A database that cannot be reached (connection refused, read-only, disk full:
`OperationalError` and kin, or an `OSError`) leaves the file in the inbox; the
watcher then waits before trying again, doubling the wait from `poll_seconds` up
to `retry_max_seconds`, and logs the outage at most once per
`outage_log_seconds`, not once per poll. Log lines name files by SHA-256 prefix
and sessions by ID, never by file name: names and contents may carry patient
identifiers.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import stat
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
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
from ingest.parallel import ParallelImporter, default_jobs
from ingest.pipeline import GROUP_FILES, Importer, ImportResult, Offered
from ingest.quarantine import HASH_IN_NAME, SHORT_ROW_CODE, TRUNCATION_CODES
from parsers.errors import DecodeError
from parsers.params import MAX_FILE_BYTES
from parsers.registry import check_size

log = logging.getLogger(__name__)

# Names a writer uses while a file is incomplete: never picked up.
TEMPORARY_SUFFIXES = (".part", ".partial", ".tmp", ".crdownload", "~")
_HASH_CHUNK = 1 << 20

Disposition = Literal[
    "archived", "quarantined", "waiting", "changed", "gone", "incomplete", "trouble"
]
# What went wrong with a file the service cannot fix by itself.
TroubleReason = Literal["unreadable", "cannot_archive", "cannot_quarantine"]


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


def is_outage(result: ImportResult) -> bool:
    """An import that failed for a reason retrying later may cure (`is_transient`)."""
    failure = result.exception if result.outcome == "failed" else None
    return failure is not None and is_transient(failure)


def error_text(exc: BaseException) -> str:
    """One line naming a failure, for logs: the driver's first line, never SQL or parameters."""
    original = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    lines = str(original).strip().splitlines()
    first = lines[0] if lines else ""
    return f"{type(original).__name__}: {first}" if first else type(original).__name__


def _file_sha256(path: Path) -> str | None:
    """SHA-256 of a file read in chunks (a file too large to import is still named)."""
    return quarantine.file_sha256(path)


def name_hash(name: str) -> str:
    """A short stable hash of an inbox file's name, for logs and the status file."""
    return hashlib.sha256(("name:" + name).encode("utf-8", "surrogateescape")).hexdigest()[
        :HASH_IN_NAME
    ]


@dataclass(frozen=True, slots=True)
class Signature:
    """What tells a file changed: its size and modification time."""

    size: int
    mtime_ns: int
    # A symbolic link (its own size and mtime): never followed.
    link: bool = False

    @property
    def mtime(self) -> float:
        return self.mtime_ns / 1e9


@dataclass(frozen=True, slots=True)
class _Seen:
    signature: Signature
    # Watcher clock when this signature was first seen.
    since: float


@dataclass(slots=True)
class Trouble:
    """A file the service cannot read, archive or quarantine, tried again with back-off."""

    key: str
    reason: TroubleReason
    error: str
    # Wall clock of the first failure; monotonic time of the next attempt.
    since: float
    retry_at: float
    attempts: int = 1
    logged_at: float | None = None


@dataclass(frozen=True, slots=True)
class Handled:
    """What one poll did with one ready file."""

    name: str
    disposition: Disposition
    destination: Path | None = None
    result: ImportResult | None = None


@dataclass(frozen=True, slots=True)
class _Offer:
    """A ready file that passed the checks before its import, with what was read."""

    path: Path
    name: str
    # The signature the file was read with: any other one after the import means
    # it changed meanwhile.
    before: Signature
    # Its bytes, or the refusal of a file too large to be read.
    read: bytes | ImportResult


def _position(item: tuple[int, Handled]) -> int:
    return item[0]


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
        truncated_grace_seconds: float = 120.0,
        unreadable_grace_seconds: float = 600.0,
        stop_requested: Callable[[], bool] = lambda: False,
        clock: Callable[[], float] | None = None,
        monotonic: Callable[[], float] | None = None,
        durable: bool = True,
        import_jobs: int = 0,
    ) -> None:
        self.inbox = Path(inbox)
        self.archive = Path(archive)
        self.quarantine = Path(quarantine)
        self._connect = connect
        self.settle_seconds = settle_seconds
        self.truncated_grace_seconds = truncated_grace_seconds
        self.unreadable_grace_seconds = unreadable_grace_seconds
        self._stop_requested = stop_requested
        self._clock = clock or time.time
        self._monotonic = monotonic or time.monotonic
        self.durable = durable
        # Worker processes of a backlog's import (0: one per core; 1: none, every
        # file on its own as in a small poll).
        self.import_jobs = import_jobs
        self.retry_initial = max(retry_initial_seconds, 0.05)
        self.retry_max = max(retry_max_seconds, self.retry_initial)
        self.trouble_log_seconds = outage_log_seconds
        self.outage = DatabaseOutage(
            initial_seconds=retry_initial_seconds,
            max_seconds=retry_max_seconds,
            log_every_seconds=outage_log_seconds,
            monotonic=self._monotonic,
        )
        self._seen: dict[Path, _Seen] = {}
        # Files refused as cut short, by the signature they were refused with.
        self._held: dict[Path, Signature] = {}
        self._trouble: dict[Path, Trouble] = {}
        # Quarantined files by (size, mtime_ns) last found equal to their record.
        self._quarantine_checked: dict[Path, tuple[int, int]] = {}
        self.counts: Counter[str] = Counter()
        self.last_poll: float | None = None

    # -- scanning -------------------------------------------------------------

    def _excluded(self) -> frozenset[Path]:
        """Our own output folders, when a configuration puts them inside the inbox."""
        return frozenset(p.absolute() for p in (self.archive, self.quarantine))

    def candidates(self) -> dict[Path, Signature]:
        """Every regular, non-temporary file (or symbolic link) under the inbox."""
        found: dict[Path, Signature] = {}
        if not self.inbox.is_dir():
            return found
        excluded = self._excluded()
        for dirpath, dirnames, filenames in os.walk(self.inbox):
            folder = Path(dirpath)
            # os.walk lists a link to a folder among the folders and never enters it.
            links = [d for d in dirnames if (folder / d).is_symlink()]
            dirnames[:] = sorted(
                d
                for d in dirnames
                if not d.startswith(".")
                and d not in links
                and (folder / d).absolute() not in excluded
            )
            for filename in [*filenames, *links]:
                if not is_candidate(filename):
                    continue
                path = folder / filename
                signature = _signature(path)
                if signature is not None:
                    found[path] = signature
        return found

    def _age(self, now: float, signature: Signature, seen: _Seen) -> float:
        return max(now - signature.mtime, now - seen.since)

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
                self._held.pop(path, None)
                continue
            observed[path] = previous
            age = self._age(now, signature, previous)
            if age < self.settle_seconds:
                continue
            if path in self._held and age < self.truncated_grace_seconds:
                continue
            trouble = self._trouble.get(path)
            if trouble is not None and self._monotonic() < trouble.retry_at:
                continue
            ready.append(path)
        self._seen = observed
        for gone in [p for p in self._held if p not in observed]:
            del self._held[gone]
        for gone in [p for p in self._trouble if p not in observed]:
            del self._trouble[gone]
        ready.sort(key=lambda p: p.relative_to(self.inbox).parts)
        return ready

    # -- one poll -------------------------------------------------------------

    def poll(self) -> list[Handled]:
        """Scan, then import and move every ready file (stops early on request or outage).

        A backlog of more than one group of ready files (`GROUP_FILES`) goes through
        the parallel importer when `import_jobs` allows workers (`_backfill`);
        otherwise each file is imported on its own, durably, then moved.
        """
        self.last_poll = self._clock()
        self.requeue_changed()
        ready = self.scan()
        if not ready or not self.outage.may_try():
            return []
        jobs = self.import_jobs or default_jobs()
        if jobs > 1 and len(ready) > GROUP_FILES:
            return self._backfill(ready, jobs)
        handled: list[Handled] = []
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
        """Import one ready file on its own (a durable commit), then archive or quarantine it."""
        offer = self._take(path)
        if isinstance(offer, Handled):
            return offer
        importer = self._importer(waiting)
        if importer is None:
            return Handled(offer.name, "waiting")
        read = offer.read
        result = read if isinstance(read, ImportResult) else importer.import_bytes(read, offer.name)
        return self._finish(offer, result, waiting=waiting)

    def _backfill(self, ready: list[Path], jobs: int) -> list[Handled]:
        """Import a backlog through `ParallelImporter`; move each file once its group is durable.

        Every file passes the same checks as in `handle` (`_take` before, `_finish`
        after), in the same order. Files are read and offered lazily, so a stop
        request ends the offering and what was offered is finished; the importer
        yields a file's result only after its group's commit is on disk, so no file
        is moved before the database holds it durably. A transient failure (an
        outage) ends the batch: the files not yet handled stay in the inbox for the
        next poll, which imports again whatever was committed (as duplicates).
        """
        importer = self._importer(len(ready))
        if importer is None:
            self.counts["waiting"] += 1
            return [Handled(self._name(ready[0]), "waiting")]
        # What `_take` settled by itself (gone, changed, a link, unreadable), and the
        # files offered to the importer, in ready order, with their positions.
        taken: list[tuple[int, Handled]] = []
        offered: deque[tuple[int, _Offer]] = deque()

        def offers() -> Iterator[Offered]:
            for index, path in enumerate(ready):
                if self._stop_requested():
                    return
                offer = self._take(path)
                if isinstance(offer, Handled):
                    taken.append((index, offer))
                    self.counts[offer.disposition] += 1
                    continue
                offered.append((index, offer))
                read = offer.read
                yield read if isinstance(read, ImportResult) else (read, offer.name)

        log_event(log, "backfill_started", files=len(ready), jobs=jobs)
        started = self._monotonic()
        finished: list[tuple[int, Handled]] = []
        # A group written file by file stops at the first outage, as a poll does.
        results = ParallelImporter(importer, jobs, give_up=is_outage).import_many(offers())
        try:
            for result in results:
                index, offer = offered.popleft()
                if result.name != offer.name:  # pragma: no cover - one result per file, in order
                    raise RuntimeError("backfill: results out of order")
                outcome = self._finish(
                    offer, result, waiting=len(ready) - len(taken) - len(finished)
                )
                finished.append((index, outcome))
                self.counts[outcome.disposition] += 1
                if outcome.disposition == "waiting":
                    break
        finally:
            # Stops the workers now, also when the batch ends early or raises.
            results.close()
        handled = [outcome for _index, outcome in sorted([*taken, *finished], key=_position)]
        counts = Counter(outcome.disposition for outcome in handled)
        log_event(
            log,
            "backfill_finished",
            files=len(handled),
            seconds=round(self._monotonic() - started, 1),
            **dict(sorted(counts.items())),
        )
        return handled

    def _importer(self, waiting: int) -> Importer | None:
        """The importer, or None while the database cannot be reached (outage recorded)."""
        try:
            importer = self._connect()
            if self.outage.active:
                # Retry with a ping first: the pipeline logs every import that fails.
                _ping(importer)
        except Exception as exc:
            if not is_transient(exc):
                raise
            self.outage.failed(exc, waiting=waiting)
            return None
        return importer

    def _name(self, path: Path) -> str:
        return path.relative_to(self.inbox).as_posix()

    def _take(self, path: Path) -> _Offer | Handled:
        """The part of a file's handling before its import: checked, then read.

        A file gone, changed since it was found ready, a link (quarantined here) or
        unreadable is settled without the database; otherwise its bytes (or the
        refusal of a file too large to read) are what goes to the importer.
        """
        name = self._name(path)
        seen = self._seen.get(path)
        before = _signature(path)
        if before is None:
            self._forget(path)
            return Handled(name, "gone")
        if seen is not None and seen.signature != before:
            self._seen[path] = _Seen(before, self._clock())
            return Handled(name, "changed")
        if before.link:
            return self._quarantine_link(path, name)
        read = self._read(path, before, name)
        if isinstance(read, Handled):
            return read
        return _Offer(path, name, before, read)

    def _finish(self, offer: _Offer, result: ImportResult, *, waiting: int) -> Handled:
        """The part of a file's handling after its import: archive, quarantine or leave it."""
        path, name, before, read = offer.path, offer.name, offer.before, offer.read
        if result.exception is not None and is_outage(result):
            self.outage.failed(result.exception, waiting=waiting)
            return Handled(name, "waiting", result=result)
        self.outage.succeeded()

        after = _signature(path)
        if after is None:
            self._forget(path)
            log_event(log, "file_gone", sha256=_short(result.sha256), outcome=result.outcome)
            return Handled(name, "gone", result=result)
        if after != before:
            # Written to while importing: what was imported may not be the final file.
            self._seen[path] = _Seen(after, self._clock())
            log_event(log, "file_changed", level=logging.WARNING, sha256=_short(result.sha256))
            return Handled(name, "changed", result=result)

        if result.outcome in ("imported", "duplicate"):
            digest = result.sha256 or _file_sha256(path) or ""
            try:
                destination = self.archive_file(path, digest)
            except OSError as exc:
                return self._failed(path, name, "cannot_archive", exc, digest)
            self._forget(path)
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
        if self._cut_short(error, read) and self._hold(path, before):
            return Handled(name, "incomplete", result=result)
        try:
            destination = self.quarantine_file(path, refused_digest, error, name=name)
        except OSError as exc:
            return self._failed(path, name, "cannot_quarantine", exc, refused_digest)
        self._forget(path)
        log_event(
            log,
            "file_quarantined",
            level=logging.WARNING,
            sha256=_short(refused_digest),
            outcome=result.outcome,
            code=error["code"],
        )
        return Handled(name, "quarantined", destination, result)

    def _forget(self, path: Path) -> None:
        self._seen.pop(path, None)
        self._held.pop(path, None)
        trouble = self._trouble.pop(path, None)
        if trouble is not None:
            log_event(log, "file_recovered", key=trouble.key, reason=trouble.reason)

    # -- reading --------------------------------------------------------------

    def _read(self, path: Path, before: Signature, name: str) -> bytes | ImportResult | Handled:
        """The file's bytes, read without following a link; or what to do instead.

        The descriptor's `fstat` must be the file the `lstat` saw (same device,
        inode, size and mtime): otherwise the name was replaced meanwhile and the
        file is observed again. A file too large is refused unread.
        """
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            self._forget(path)
            return Handled(name, "gone")
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # replaced by a link since the scan
                self._seen.pop(path, None)
                return Handled(name, "changed")
            return self._failed(path, name, "unreadable", exc, None)
        try:
            opened = os.fstat(fd)
            named = os.lstat(path)
            if (
                not stat.S_ISREG(opened.st_mode)
                or (opened.st_dev, opened.st_ino) != (named.st_dev, named.st_ino)
                or Signature(opened.st_size, opened.st_mtime_ns) != before
            ):
                self._seen.pop(path, None)
                return Handled(name, "changed")
            try:
                check_size(opened.st_size, source=name)
            except DecodeError as exc:
                return ImportResult(name, "refused", str(exc), error=exc.as_dict(), exception=exc)
            chunks: list[bytes] = []
            remaining = MAX_FILE_BYTES + 1
            while remaining > 0 and (chunk := os.read(fd, min(remaining, _HASH_CHUNK))):
                chunks.append(chunk)
                remaining -= len(chunk)
        except FileNotFoundError:
            self._forget(path)
            return Handled(name, "gone")
        except OSError as exc:
            return self._failed(path, name, "unreadable", exc, None)
        finally:
            os.close(fd)
        data = b"".join(chunks)
        try:
            check_size(len(data), source=name)
        except DecodeError as exc:
            return ImportResult(name, "refused", str(exc), error=exc.as_dict(), exception=exc)
        return data

    # -- files that may be cut short -----------------------------------------

    @staticmethod
    def _cut_short(error: Mapping[str, Any], read: bytes | ImportResult) -> bool:
        """Whether a refusal says the file ends early (its writer may not be done)."""
        code = error.get("code")
        if code in TRUNCATION_CODES:
            return True
        if code == SHORT_ROW_CODE and isinstance(read, bytes):
            line = error.get("line")
            return isinstance(line, int) and line >= len(read.splitlines())
        return False

    def _hold(self, path: Path, signature: Signature) -> bool:
        """Keep a file refused as cut short in the inbox until its grace is over."""
        seen = self._seen.get(path)
        now = self._clock()
        if seen is None:
            seen = self._seen[path] = _Seen(signature, now)
        if self._age(now, signature, seen) >= self.truncated_grace_seconds:
            return False
        if self._held.get(path) != signature:
            log_event(
                log,
                "file_incomplete",
                name_hash=name_hash(path.relative_to(self.inbox).as_posix()),
                wait_s=self.truncated_grace_seconds,
            )
        self._held[path] = signature
        return True

    def requeue_changed(self) -> list[Path]:
        """Move quarantined files that changed since they were quarantined back into the inbox."""
        moved: list[Path] = []
        if not self.quarantine.is_dir():
            return moved
        for item_path in list(self._quarantine_checked):
            if not os.path.lexists(item_path):
                del self._quarantine_checked[item_path]
        for path in sorted(self.quarantine.iterdir()):
            signature = _signature(path)
            if signature is None or signature.link or path.name.endswith(quarantine.ERROR_SUFFIX):
                continue
            if path.name.startswith("."):
                continue
            key = (signature.size, signature.mtime_ns)
            if self._quarantine_checked.get(path) == key:
                continue
            item = quarantine.quarantined_file(self.quarantine, path.name)
            if item is None or not item.changed():
                self._quarantine_checked[path] = key
                continue
            try:
                target = quarantine.requeue(item, self.inbox)
            except OSError as exc:
                log_event(
                    log,
                    "requeue_failed",
                    level=logging.WARNING,
                    sha256=_short(item.sha256 or None),
                    error=error_text(exc),
                )
                continue
            self._quarantine_checked.pop(path, None)
            moved.append(target)
            log_event(log, "quarantined_file_changed_requeued", sha256=_short(item.sha256 or None))
        return moved

    # -- files the service cannot fix ----------------------------------------

    def _failed(
        self,
        path: Path,
        name: str,
        reason: TroubleReason,
        exc: OSError,
        digest: str | None,
    ) -> Handled:
        """Leave a file in the inbox, try it again on the back-off schedule, log rarely."""
        now, tick = self._clock(), self._monotonic()
        key = _short(digest) or name_hash(name)
        trouble = self._trouble.get(path)
        if trouble is None:
            trouble = self._trouble[path] = Trouble(key, reason, "", since=now, retry_at=tick)
        else:
            trouble.attempts += 1
            trouble.key, trouble.reason = key, reason
        trouble.error = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
        delay = min(self.retry_max, self.retry_initial * (1 << min(trouble.attempts - 1, 30)))
        trouble.retry_at = tick + delay
        if trouble.logged_at is None or tick - trouble.logged_at >= self.trouble_log_seconds:
            trouble.logged_at = tick
            attention = now - trouble.since >= self.unreadable_grace_seconds
            log_event(
                log,
                "file_needs_attention" if attention else "file_retrying",
                level=logging.ERROR if attention else logging.WARNING,
                key=key,
                reason=reason,
                error=trouble.error,
                attempts=trouble.attempts,
                since_s=round(now - trouble.since, 1),
                retry_in_s=round(delay, 1),
            )
        return Handled(name, "trouble")

    def needing_attention(self) -> list[Trouble]:
        """Files that failed for longer than `unreadable_grace_seconds`, oldest first."""
        now = self._clock()
        found = [
            t for t in self._trouble.values() if now - t.since >= self.unreadable_grace_seconds
        ]
        return sorted(found, key=lambda t: (t.since, t.key))

    def status(self) -> dict[str, Any]:
        """What the service's status file says about the inbox (`ingest.status`)."""
        return {
            "last_poll_utc": None if self.last_poll is None else _utc(self.last_poll),
            "files_waiting": len(self._seen),
            "files_retrying": len(self._trouble),
            "needing_attention": [
                {
                    "key": t.key,
                    "reason": t.reason,
                    "error": t.error,
                    "attempts": t.attempts,
                    "since_utc": _utc(t.since),
                }
                for t in self.needing_attention()
            ],
            "database_outage": self.outage.active,
        }

    # -- moving ---------------------------------------------------------------

    def _quarantine_link(self, path: Path, name: str) -> Handled:
        try:
            destination = quarantine.quarantine_link(
                path, self.quarantine, name=name, now=self._clock()
            )
        except OSError as exc:
            return self._failed(path, name, "cannot_quarantine", exc, None)
        self._forget(path)
        log_event(
            log,
            "file_quarantined",
            level=logging.WARNING,
            name_hash=name_hash(name),
            code=quarantine.SYMLINK_CODE,
        )
        return Handled(name, "quarantined", destination)

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
    if stat.S_ISLNK(status.st_mode):
        return Signature(status.st_size, status.st_mtime_ns, link=True)
    if not stat.S_ISREG(status.st_mode):
        return None
    return Signature(status.st_size, status.st_mtime_ns)


def _utc(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ping(importer: Importer) -> None:
    with importer.engine.connect() as connection:
        connection.execute(select(1))


def _short(digest: str | None) -> str | None:
    return None if digest is None else digest[:HASH_IN_NAME]
