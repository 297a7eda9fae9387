"""Parallel import: files decoded on every core, one writer per database.

`pumptrail import --jobs N` and the service's backfill of a full inbox go through
`ParallelImporter`. The work of a file splits in two:

- **In worker processes** (`prepare`), for each file on its own: its SHA-256, the
  decode (docs/formats.md, docs/format-psl-csv.md), the session document
  (docs/session-json.md), the `sessions` columns and the `setting_values` and
  `events` rows, already converted to what the database driver takes. A refusal
  travels back as its `DecodeError`.
- **In the writer** (this process, the only one that writes to the database):
  everything that reads or changes what is stored, group by group
  (`GroupWriter`). A group is the group commit of `Importer.import_many`: its raw
  bytes are flushed to disk first; then the whole group is one transaction that
  recognises duplicates (stored before, or earlier in the group), stores the new
  sessions, links the other exports of stored sessions, writes the refusals,
  derives the evidence of every session whose chain changed (docs/coding-rules.md
  §7.5: the new sessions and the later sessions that read them, from the chain
  as it stands after the group, however the files of one pump were spread over
  workers), appends every file's audit entry in file order, and commits; the
  group is made durable before its results are given out.

Identical to the serial import, file by file: the same outcome and wording, the
same rows, the same evidence documents (evidence is a pure function of the
chain), the same audit entries in the same order with the same content (the
`rederived` count of each file is the one the serial import would have logged,
counted on the chain as it stood after the files before it). A group holding
what the planner does not model (two exports of one session that disagree, bytes
refused by an older parser, a file whose decoding raised an unexpected error)
or a group whose transaction fails (a concurrent importer on the same PostgreSQL
database, an outage) is rolled back and imported file by file by the serial path
(`Importer.import_each`), with the decoding the workers already did.

A power failure loses at most the group being written, as with the serial group
commit; the transaction makes a group all or nothing, never half a chain.

Workers are started only for an import of more than one group (starting them
costs more than a group gains), from a fork server (the service has threads;
forking them is unsafe). A worker that dies (killed, out of memory) stops the
pool: the rest of the import is prepared in this process instead, and nothing is
lost. A worker ignores SIGTERM and SIGINT (the writer finishes what it started and
stops the pool) and ends by itself when the writer is gone, even killed outright.
Logs name files by SHA-256 prefix only.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import select as io_select
import signal
import threading
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import URL, Connection, Dialect

from db import audit, queries
from db.bulk import Plan, RowInserter
from db.codec import event_rows, loads, session_columns, session_from_document, setting_rows
from db.engine import write_transaction
from db.models import events, pumps, raw_files, sessions, setting_values
from evidence import Rules
from ingest.exports import choose_export
from ingest.pipeline import (
    GROUP_FILES,
    SEEN_COLUMNS,
    SEEN_FROM,
    Importer,
    ImportResult,
    Offered,
    another_export_result,
    detected_format,
    evidence_record,
    expand_paths,
    groups_of,
    imported_result,
    read_offered,
    refused_result,
    seen_result,
)
from ingest.rawstore import sha256_hex
from parsers.errors import DecodeError
from parsers.model import Session
from parsers.registry import PARSER_VERSION, decode_bytes
from parsers.session_json import session_document

log = logging.getLogger(__name__)

# Files per task sent to a worker: enough to amortise the round trip.
CHUNK_FILES = 8
# Groups prepared ahead of the one being written (memory: at most this many
# groups of GROUP_BYTES in flight).
GROUPS_AHEAD = 1
# Groups an import may have taken from its input at once: the one being written,
# the one prepared ahead of it, and the one after next, handed to the workers once
# the group being written has its evidence (`ParallelImporter._refill`).
MAX_OFFERED_GROUPS = GROUPS_AHEAD + 2

# The group's new sessions in one statement, keys in file order.
_INSERT_SESSIONS = sessions.insert().returning(sessions.c.id, sort_by_parameter_order=True)
_RAW_ROWS = RowInserter(raw_files)
_SETTINGS = RowInserter(setting_values)
_EVENTS = RowInserter(events)
_SETTING_KEYS = ("session_pk", "phase", "param", "value")
_EVENT_KEYS = (
    "session_pk",
    "seq",
    "type",
    "time_utc",
    "position_kind",
    "position_value",
    "pump_clock_local",
    "data",
)
# The placeholder session key a worker writes; the writer puts the real one in.
_NO_PK = 0
# Evidence targets per derivation task.
DERIVE_CHUNK = 16
# A worker's records carry no time; the writer stamps `derived_at` (its clock).
_EPOCH = datetime(1970, 1, 1)


def default_jobs() -> int:
    """Worker processes by default: the cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


# ---------------------------------------------------------------------------
# Worker side


@dataclass(frozen=True, slots=True)
class Decoded:
    """What a worker made of a file that decoded: everything the writer stores."""

    session_id: str
    pump_serial: str
    pump_model: str
    start_utc: datetime
    source_format: str
    # `db.codec.session_columns`, the document as stored text among them.
    columns: dict[str, Any]
    # `setting_values` and `events` rows through the writer's dialect's bind
    # processors, each with the placeholder session key.
    settings: list[Any]
    events: list[Any]


@dataclass(frozen=True, slots=True)
class Prepared:
    """A worker's answer for one file."""

    digest: str
    decoded: Decoded | None = None
    # The refusal (docs/formats.md §9.1) and the format the file claims to be.
    refusal: DecodeError | None = None
    detected: str | None = None
    # Decoding raised something else (a decoder bug): the serial path reports it.
    unexpected: str | None = None


class _WorkerState:
    """Per process: the dialect the rows are prepared for, and its compiled plans."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.settings_plan = _SETTINGS.plan(dialect, _SETTING_KEYS)
        self.events_plan = _EVENTS.plan(dialect, _EVENT_KEYS)


_STATE: _WorkerState | None = None


def dialect_for(name: str, driver: str) -> Dialect:
    """A dialect object for bind processing only (it never connects)."""
    dialect: Dialect = URL.create(f"{name}+{driver}").get_dialect()()
    return dialect


def _init_worker(name: str, driver: str, writer_pid: int) -> None:
    global _STATE  # noqa: PLW0603 - one state per worker process
    _STATE = _WorkerState(dialect_for(name, driver))
    # systemd's stop signals every process of the service (KillMode=control-group)
    # and Ctrl-C the whole process group: the writer decides what is finished and
    # stops the pool itself, so a worker must not die under the import it serves.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_with(writer_pid)


def _exit_with(pid: int) -> None:
    """End this worker as soon as the process that started it (the writer) is gone.

    A writer killed outright (SIGKILL, the OOM killer) cannot stop its pool, and a
    worker holds both ends of its task queue, so it would wait for work forever;
    it also holds the fork server's liveness pipe, so the fork server and the
    resource tracker would stay too. A pidfd (Linux 5.3 and later) becomes readable
    when the writer exits, without polling and without mistaking a reused PID.
    """
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        os._exit(0)  # gone already
    except (AttributeError, OSError):  # pragma: no cover - no pidfd: systemd's cgroup kill
        return

    def wait() -> None:
        io_select.select([pidfd], [], [])
        os._exit(0)

    threading.Thread(target=wait, name="writer-watch", daemon=True).start()


def prepare(data: bytes, name: str, state: _WorkerState) -> Prepared:
    """Everything about one file that does not read the database."""
    digest = sha256_hex(data)
    try:
        session = decode_bytes(data, source=name)
    except DecodeError as exc:
        return Prepared(digest, refusal=exc, detected=detected_format(data))
    except Exception as exc:
        return Prepared(digest, unexpected=type(exc).__name__)
    _keep_decoded(digest, session)
    document = session_document(session)
    settings = setting_rows(_NO_PK, session, document)
    event_list = event_rows(_NO_PK, session, document)
    decoded = Decoded(
        session_id=session.session_id,
        pump_serial=session.pump.serial,
        pump_model=session.pump.model,
        start_utc=session.session_start_utc,
        source_format=session.source_format,
        columns=session_columns(session, document),
        settings=state.settings_plan.parameters(settings) if settings else [],
        events=state.events_plan.parameters(event_list) if event_list else [],
    )
    return Prepared(digest, decoded=decoded)


# Where a derivation task finds a session: the file's bytes (decoded again unless
# this worker still holds what it decoded), or the session's stored document.
# ("file", digest, bytes, name) or ("document", document, source name).
SessionSource = tuple[str, str, bytes, str] | tuple[str, str, str]
# One evidence document to derive: (session key, prior session key, conflicting
# exports, the history's keys in chain order).
DeriveJob = tuple[int, int | None, bool, tuple[int, ...]]
# What comes back: (procedure, flags, document text, codes), as `EvidenceRecord` holds.
Derived = tuple[str | None, tuple[str, ...], str, tuple[tuple[str, str | None], ...]]
# Sessions a process keeps between tasks: those it decoded (by SHA-256) and those it
# rebuilt from stored documents (by key and document); a pump's prior comes again.
_KEPT_LIMIT = 256
_DECODED: dict[str, Session] = {}
_REBUILT: dict[tuple[int, str], Session] = {}


def _keep_decoded(digest: str, session: Session) -> None:
    if len(_DECODED) >= _KEPT_LIMIT:
        del _DECODED[next(iter(_DECODED))]  # the oldest: dictionaries keep insertion order
    _DECODED[digest] = session


def _session_of(pk: int, source: SessionSource) -> Session:
    if len(source) == 4:
        _kind, digest, data, name = source
        session = _DECODED.get(digest)
        if session is None:
            session = decode_bytes(data, source=name)
            _keep_decoded(digest, session)
        return session
    _kind, document, source_name = source
    rebuilt = _REBUILT.get((pk, document))
    if rebuilt is None:
        rebuilt = session_from_document(loads(document), source=source_name)
        if len(_REBUILT) >= _KEPT_LIMIT:
            del _REBUILT[next(iter(_REBUILT))]
        _REBUILT[(pk, document)] = rebuilt
    return rebuilt


def derive_chunk(
    rules: Rules, jobs: Sequence[DeriveJob], sources: dict[int, SessionSource]
) -> list[Derived]:
    """Evidence documents of `jobs` (docs/coding-rules.md §7), each from its history."""
    derived: list[Derived] = []
    for pk, prior_pk, conflicting, history in jobs:
        record = evidence_record(
            _session_of(pk, sources[pk]),
            [_session_of(h, sources[h]) for h in history],
            rules,
            session_pk=pk,
            prior_session_pk=prior_pk,
            conflicting_exports=conflicting,
            derived_at=_EPOCH,
        )
        derived.append((record.procedure, record.flags, record.document, record.codes))
    return derived


def _prepare_chunk(chunk: list[tuple[bytes, str]]) -> list[Prepared]:
    if _STATE is None:  # pragma: no cover - the initializer always ran
        raise RuntimeError("worker not initialised")
    return [prepare(data, name, _STATE) for data, name in chunk]


# ---------------------------------------------------------------------------
# The writer's side: preparing ahead


@dataclass
class _Pending:
    """A group being prepared: its files and their futures (or answers, in process)."""

    items: list[Offered]
    futures: list[Future[list[Prepared]]] = field(default_factory=list)
    chunks: list[list[tuple[bytes, str]]] = field(default_factory=list)


class ParallelImporter:
    """Bulk import with `jobs` worker processes preparing files for one writer."""

    def __init__(
        self,
        importer: Importer,
        jobs: int | None = None,
        *,
        group: int = GROUP_FILES,
        give_up: Callable[[ImportResult], bool] | None = None,
    ) -> None:
        """`give_up`: a result after which a group written file by file stops trying
        the rest (GroupWriter)."""
        self.importer = importer
        self.jobs = default_jobs() if jobs is None else max(1, jobs)
        self.group = group
        dialect = importer.engine.dialect
        self._dialect = (dialect.name, dialect.driver)
        self._state = _WorkerState(dialect_for(*self._dialect))
        self._pool: ProcessPoolExecutor | None = None
        self._pool_broken = False
        # During an import: the groups not yet submitted, and those being prepared.
        self._groups: Iterator[list[Offered]] | None = None
        self._ahead: deque[_Pending] = deque()
        self.writer = GroupWriter(importer, self._derive_tasks, give_up=give_up)
        # Groups written by the planner, and groups it handed to the serial path.
        self.groups_planned = 0
        self.groups_serial = 0
        # Derivation tasks the workers ran.
        self.derived_in_workers = 0

    # -- entry points -------------------------------------------------------

    def import_paths(self, paths: Iterable[Path]) -> Iterator[ImportResult]:
        """Files and folders (walked as `pumptrail import` walks them); one result per file."""
        return self.import_many(read_offered(path, str(path)) for path in expand_paths(paths))

    def import_many(self, items: Iterable[Offered]) -> Generator[ImportResult, None, None]:
        """Every offered file, in order, one result each, as `Importer.import_many` gives.

        `items` is read lazily, up to two groups ahead of the one being written; closing the
        generator early stops the workers.
        """
        groups = groups_of(items, self.group)
        try:
            first = next(groups, None)
            if first is None:
                return
            second = next(groups, None)
            if second is None or self.jobs <= 1:
                # One group, or no workers wanted: prepared here.
                rest = [first] if second is None else itertools.chain([first, second], groups)
                for items_ in rest:
                    yield from self._write(self._prepare_here(items_))
                return
            self._groups = itertools.chain([first, second], groups)
            self._refill(GROUPS_AHEAD + 1)
            while self._ahead:
                pending = self._ahead.popleft()
                self._refill(GROUPS_AHEAD)
                yield from self._write(self._collect(pending))
        finally:
            self._groups = None
            for pending in self._ahead:
                for future in pending.futures:
                    future.cancel()
            self._ahead.clear()
            self.close()

    def _refill(self, limit: int) -> None:
        """Submit groups to the workers until `limit` wait beyond the one being written.

        Called before a group is written and again once its evidence is derived
        (`_derive_tasks`): the workers then prepare the group after next while this
        process commits, flushes and starts the next group.
        """
        while self._groups is not None and len(self._ahead) < limit:
            items = next(self._groups, None)
            if items is None:
                self._groups = None
                return
            self._ahead.append(self._submit(items))

    def close(self) -> None:
        """Stop the worker processes (an import's end; safe to call twice)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    # -- preparing ----------------------------------------------------------

    def _prepare_here(self, items: list[Offered]) -> tuple[list[Offered], list[Prepared | None]]:
        return items, [
            None if isinstance(item, ImportResult) else prepare(item[0], item[1], self._state)
            for item in items
        ]

    def _executor(self) -> ProcessPoolExecutor | None:
        if self._pool is None and not self._pool_broken:
            context = multiprocessing.get_context("forkserver")
            # Signals, then the decoders (ingest.forkserver).
            context.set_forkserver_preload(["ingest.forkserver"])
            self._pool = ProcessPoolExecutor(
                max_workers=self.jobs,
                mp_context=context,
                initializer=_init_worker,
                initargs=(*self._dialect, os.getpid()),
            )
        return self._pool

    def _submit(self, items: list[Offered]) -> _Pending:
        pending = _Pending(items)
        files = [item for item in items if not isinstance(item, ImportResult)]
        pending.chunks = [files[i : i + CHUNK_FILES] for i in range(0, len(files), CHUNK_FILES)]
        pool = self._executor()
        if pool is not None:
            try:
                pending.futures = [pool.submit(_prepare_chunk, chunk) for chunk in pending.chunks]
            except (BrokenProcessPool, RuntimeError) as exc:
                self._broken(exc)
                pending.futures = []
        return pending

    def _collect(self, pending: _Pending) -> tuple[list[Offered], list[Prepared | None]]:
        answers: list[Prepared] = []
        for index, chunk in enumerate(pending.chunks):
            future = pending.futures[index] if index < len(pending.futures) else None
            if future is not None:
                try:
                    answers.extend(future.result())
                    continue
                except BrokenProcessPool as exc:
                    self._broken(exc)
            answers.extend(prepare(data, name, self._state) for data, name in chunk)
        answer = iter(answers)
        return pending.items, [
            None if isinstance(item, ImportResult) else next(answer) for item in pending.items
        ]

    def _broken(self, exc: BaseException) -> None:
        if not self._pool_broken:
            log.error("import workers stopped (%s): preparing in this process", type(exc).__name__)
        self._pool_broken = True
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def _derive_tasks(
        self, tasks: Sequence[tuple[Sequence[DeriveJob], dict[int, SessionSource]]]
    ) -> list[list[Derived]]:
        """Derivation tasks on the workers when they run (in this process otherwise).

        Once the answers are in, the group after next goes to the workers (`_refill`).
        """
        answers = self._derive_on_workers(tasks)
        self._refill(GROUPS_AHEAD + 1)
        return answers

    def _derive_on_workers(
        self, tasks: Sequence[tuple[Sequence[DeriveJob], dict[int, SessionSource]]]
    ) -> list[list[Derived]]:
        rules = self.importer.rules
        pool = self._pool
        if pool is None or len(tasks) < 2:
            return run_here(tasks, rules)
        try:
            futures = [pool.submit(derive_chunk, rules, jobs, sources) for jobs, sources in tasks]
        except (BrokenProcessPool, RuntimeError) as exc:
            self._broken(exc)
            return run_here(tasks, rules)
        answers: list[list[Derived]] = []
        for future, (jobs, sources) in zip(futures, tasks, strict=True):
            try:
                answers.append(future.result())
                self.derived_in_workers += 1
            except BrokenProcessPool as exc:
                self._broken(exc)
                answers.append(derive_chunk(rules, jobs, sources))
        return answers

    # -- writing ------------------------------------------------------------

    def _write(self, group: tuple[list[Offered], list[Prepared | None]]) -> list[ImportResult]:
        items, prepared = group
        planned = self.writer.write_count
        results = self.importer._import_group(
            items, lambda flushed: self.writer.write(flushed, prepared)
        )
        if self.writer.write_count > planned:
            self.groups_planned += 1
        else:
            self.groups_serial += 1
        return results


# ---------------------------------------------------------------------------
# The group writer


class _Fallback(Exception):
    """The group holds a case the planner leaves to the serial path."""


@dataclass
class _NewSession:
    """A session the group stores for the first time."""

    index: int
    decoded: Decoded
    pump_id: int
    digest: str
    name: str
    pk: int = 0


@dataclass
class _Known:
    """A digest seen before or earlier in the group: what `_seen` would read of it."""

    first_name: str
    status: str
    error: dict[str, Any] | None
    source_format: str | None
    session_id: str | None


# Runs derivation tasks (in the workers, or here) and gives their answers in order.
TaskRunner = Callable[
    [Sequence[tuple[Sequence[DeriveJob], dict[int, SessionSource]]]], list[list[Derived]]
]
# Files of sessions the writer keeps, by row key, beside the document they were stored with.
FILES_KEPT = 1024


def run_here(
    tasks: Sequence[tuple[Sequence[DeriveJob], dict[int, SessionSource]]], rules: Rules
) -> list[list[Derived]]:
    return [derive_chunk(rules, jobs, sources) for jobs, sources in tasks]


class GroupWriter:
    """Writes one prepared group in one transaction, or hands it to the serial path."""

    def __init__(
        self,
        importer: Importer,
        run_tasks: TaskRunner | None = None,
        *,
        give_up: Callable[[ImportResult], bool] | None = None,
    ) -> None:
        self.importer = importer
        self.write_count = 0
        self._run_tasks = run_tasks or (lambda tasks: run_here(tasks, importer.rules))
        # The service's watcher gives up on a group at the first outage (the next
        # poll tries again); `pumptrail import` tries every file.
        self._give_up = give_up
        # Row key -> (stored document, file source) of sessions stored lately.
        self._files: dict[int, tuple[str, SessionSource]] = {}

    def write(
        self, items: Sequence[Offered], prepared: Sequence[Prepared | None]
    ) -> list[ImportResult]:
        """The group's results; its raw bytes are already flushed (`Importer._import_group`)."""
        reason: str
        try:
            results = self._write(items, prepared)
        except _Fallback as exc:
            reason = str(exc)
        except Exception as exc:
            reason = f"{type(exc).__name__} in the group's transaction"
            log.debug("group transaction failed", exc_info=exc)
        else:
            self.write_count += 1
            return results
        log.info("import group of %d files: %s; importing file by file", len(items), reason)
        return self._serial(items, prepared)

    def _serial(
        self, items: Sequence[Offered], prepared: Sequence[Prepared | None]
    ) -> list[ImportResult]:
        results: list[ImportResult] = []
        stopped: ImportResult | None = None
        for item, answer in zip(items, prepared, strict=True):
            if isinstance(item, ImportResult):
                results.append(item)
                continue
            data, name = item
            if stopped is not None:
                digest = sha256_hex(data) if answer is None else answer.digest
                results.append(
                    replace(
                        stopped,
                        name=name,
                        detail=f"{name}: not tried after the failure of the file before "
                        f"it ({type(stopped.exception).__name__})",
                        sha256=digest,
                    )
                )
                continue
            # A refusal travels on; a decoded file is decoded again here.
            refusal = None if answer is None else answer.refusal
            result = self.importer.import_bytes(data, name, group_commit=True, refusal=refusal)
            results.append(result)
            if self._give_up is not None and self._give_up(result):
                stopped = result
        return results

    # -- one transaction ----------------------------------------------------

    def _write(
        self, items: Sequence[Offered], prepared: Sequence[Prepared | None]
    ) -> list[ImportResult]:
        importer = self.importer
        for answer in prepared:
            if answer is not None and answer.unexpected is not None:
                raise _Fallback(f"decoding raised {answer.unexpected}")
        with write_transaction(importer.engine, group_commit=True) as connection:
            known = self._known_digests(connection, prepared)
            stored = self._stored_sessions(connection, prepared)
            pump_ids = self._pumps(connection, items, prepared, known)
            results: dict[int, ImportResult] = {}
            new: list[_NewSession] = []
            in_group: dict[str, _NewSession] = {}
            # `raw_files` rows in file order; (file index, session ID) for a file of a
            # session inserted by this group, whose key is known only after the insert.
            raw_rows: list[dict[str, Any] | tuple[int, str]] = []
            for index, (item, answer) in enumerate(zip(items, prepared, strict=True)):
                if isinstance(item, ImportResult):
                    results[index] = item
                    continue
                if answer is None:  # pragma: no cover - every read file has an answer
                    raise _Fallback("a file without an answer")
                data, name = item
                digest = answer.digest
                seen = known.get(digest)
                if seen is not None:
                    results[index] = seen_result(
                        name,
                        digest,
                        first_name=seen.first_name,
                        status=seen.status,
                        error=seen.error,
                        source_format=seen.source_format,
                        session_id=seen.session_id,
                    )
                    continue
                if answer.refusal is not None:
                    exc = answer.refusal
                    raw_rows.append(
                        importer.refused_row(digest, len(data), name, answer.detected, exc)
                    )
                    results[index] = refused_result(name, digest, exc)
                    # As `_seen` reads it back from the row just written.
                    error = {**exc.as_dict(), "text": str(exc)}
                    known[digest] = _Known(name, "refused", error, answer.detected, None)
                    continue
                decoded = answer.decoded
                if decoded is None:  # pragma: no cover - refusal, unexpected or decoded
                    raise _Fallback("a file without a decoding")
                session_id = decoded.session_id
                known[digest] = _Known(name, "imported", None, decoded.source_format, session_id)
                previous: tuple[int | None, str, str] | None = stored.get(session_id)
                if previous is None and session_id in in_group:
                    first = in_group[session_id].decoded
                    previous = (None, first.source_format, first.columns["document"])
                if previous is None:
                    entry = _NewSession(index, decoded, pump_ids[decoded.pump_serial], digest, name)
                    new.append(entry)
                    in_group[session_id] = entry
                    raw_rows.append((index, session_id))
                    continue
                stored_pk, stored_format, stored_text = previous
                choice = choose_export(
                    stored_format,
                    loads(stored_text),
                    decoded.source_format,
                    loads(decoded.columns["document"]),
                )
                if choice.conflicting:
                    raise _Fallback("two exports of one session disagree")
                results[index] = another_export_result(
                    name, digest, session_id, decoded.source_format, stored_format
                )
                raw_rows.append(
                    (index, session_id)
                    if stored_pk is None
                    else importer.imported_row(
                        digest, len(data), name, decoded.source_format, stored_pk
                    )
                )
            self._insert_sessions(connection, items, new)
            _RAW_ROWS.insert(
                connection, [self._raw_row(row, items, prepared, in_group) for row in raw_rows]
            )
            rederived = self._derive(connection, new)
            for entry in new:
                results[entry.index] = imported_result(
                    entry.name,
                    entry.digest,
                    entry.decoded.session_id,
                    entry.decoded.source_format,
                    rederived.get(entry.index, 0),
                )
            if len(results) != len(items):  # pragma: no cover - every file has its result
                raise _Fallback("a file without a result")
            final = [results[index] for index in range(len(items))]
            audit.append_many(
                connection,
                [
                    importer.audit_entry(result)
                    for item, result in zip(items, final, strict=True)
                    if not isinstance(item, ImportResult)
                ],
            )
        return final

    def _raw_row(
        self,
        row: dict[str, Any] | tuple[int, str],
        items: Sequence[Offered],
        prepared: Sequence[Prepared | None],
        in_group: dict[str, _NewSession],
    ) -> dict[str, Any]:
        if isinstance(row, dict):
            return row
        index, session_id = row
        item, answer = items[index], prepared[index]
        if isinstance(item, ImportResult) or answer is None or answer.decoded is None:
            raise _Fallback("a raw row without its file")  # pragma: no cover
        return self.importer.imported_row(
            answer.digest,
            len(item[0]),
            item[1],
            answer.decoded.source_format,
            in_group[session_id].pk,
        )

    # -- reads --------------------------------------------------------------

    @staticmethod
    def _known_digests(
        connection: Connection, prepared: Sequence[Prepared | None]
    ) -> dict[str, _Known]:
        digests = sorted({answer.digest for answer in prepared if answer is not None})
        known: dict[str, _Known] = {}
        if not digests:
            return known
        rows = connection.execute(
            select(raw_files.c.sha256, *SEEN_COLUMNS)
            .select_from(SEEN_FROM)
            .where(raw_files.c.sha256.in_(digests))
        )
        for digest, name, status, error_text, source_format, session_id, version in rows:
            if status == "refused" and version != PARSER_VERSION:
                raise _Fallback("bytes refused by an older parser are decoded again")
            error = loads(error_text) if status == "refused" and error_text else None
            known[digest] = _Known(name, status, error, source_format, session_id)
        return known

    @staticmethod
    def _stored_sessions(
        connection: Connection, prepared: Sequence[Prepared | None]
    ) -> dict[str, tuple[int, str, str]]:
        """Stored sessions the group's files name: (key, source format, document)."""
        ids = sorted(
            {a.decoded.session_id for a in prepared if a is not None and a.decoded is not None}
        )
        if not ids:
            return {}
        rows = connection.execute(
            select(
                sessions.c.session_id,
                sessions.c.id,
                sessions.c.source_format,
                sessions.c.document,
            ).where(sessions.c.session_id.in_(ids))
        )
        return {session_id: (pk, fmt, text) for session_id, pk, fmt, text in rows}

    @staticmethod
    def _pumps(
        connection: Connection,
        items: Sequence[Offered],
        prepared: Sequence[Prepared | None],
        known: dict[str, _Known],
    ) -> dict[str, int]:
        """Row keys of the pumps of the group's decoded files, new ones inserted in file order.

        As the serial import does for every file it decodes that is not a byte-for-byte
        duplicate. On PostgreSQL each pump row is locked until commit, in serial order
        (two writers of overlapping groups lock in the same order).
        """
        models: dict[str, str] = {}
        seen_digests = set(known)
        for item, answer in zip(items, prepared, strict=True):
            if isinstance(item, ImportResult) or answer is None:
                continue
            if answer.digest in seen_digests:
                continue
            seen_digests.add(answer.digest)
            if answer.decoded is not None:
                models.setdefault(answer.decoded.pump_serial, answer.decoded.pump_model)
        if not models:
            return {}
        serials = sorted(models)
        postgres = connection.dialect.name == "postgresql"
        by_serial = select(pumps.c.serial, pumps.c.id).where(pumps.c.serial.in_(serials))
        if postgres:
            by_serial = by_serial.order_by(pumps.c.serial).with_for_update()
        found = {serial: int(pk) for serial, pk in connection.execute(by_serial)}
        missing = [serial for serial in models if serial not in found]
        if missing:
            rows = [{"serial": serial, "model": models[serial]} for serial in missing]
            if postgres:
                # In serial order, as the locks: two writers inserting the same new
                # pumps wait for each other in one order and never deadlock.
                rows.sort(key=lambda row: row["serial"])
                connection.execute(pg_insert(pumps).on_conflict_do_nothing(), rows)
                found = {serial: int(pk) for serial, pk in connection.execute(by_serial)}
            else:
                for row in rows:
                    key = connection.execute(queries.INSERT_PUMP, row).inserted_primary_key
                    assert key is not None
                    found[row["serial"]] = int(key[0])
        return found

    # -- writes -------------------------------------------------------------

    def _insert_sessions(
        self, connection: Connection, items: Sequence[Offered], new: Sequence[_NewSession]
    ) -> None:
        if not new:
            return
        importer = self.importer
        values = [
            importer.new_session_values(
                entry.decoded.columns, entry.pump_id, entry.digest, entry.name
            )
            for entry in new
        ]
        keys = connection.execute(_INSERT_SESSIONS, values).scalars().all()
        if len(keys) != len(new):  # pragma: no cover - one key per row inserted
            raise _Fallback("session keys missing")
        for entry, key in zip(new, keys, strict=True):
            entry.pk = int(key)
        dialect = connection.dialect
        settings_plan = _SETTINGS.plan(dialect, _SETTING_KEYS)
        events_plan = _EVENTS.plan(dialect, _EVENT_KEYS)
        _SETTINGS.insert_parameters(
            connection,
            settings_plan,
            _with_key(settings_plan, [(e.pk, e.decoded.settings) for e in new]),
        )
        _EVENTS.insert_parameters(
            connection,
            events_plan,
            _with_key(events_plan, [(e.pk, e.decoded.events) for e in new]),
        )
        if len(self._files) + len(new) > FILES_KEPT:
            self._files.clear()
        for entry in new:
            item = items[entry.index]
            assert not isinstance(item, ImportResult)
            source: SessionSource = ("file", entry.digest, item[0], entry.name)
            self._files[entry.pk] = (entry.decoded.columns["document"], source)

    def _derive(self, connection: Connection, new: Sequence[_NewSession]) -> dict[int, int]:
        """Evidence of every session the group's new sessions change; per file, its count.

        Returns, per file index, how many later sessions its import re-derived as
        the serial import counts them (`Importer.derive_after`).
        """
        if not new:
            return {}
        importer = self.importer
        by_pump: dict[int, list[_NewSession]] = {}
        for entry in new:
            by_pump.setdefault(entry.pump_id, []).append(entry)
        chains = self._chains(connection, sorted(by_pump))
        rederived: dict[int, int] = {}
        jobs: list[DeriveJob] = []
        fresh = frozenset(entry.pk for entry in new)
        for pump_id, entries in by_pump.items():
            chain = chains[pump_id]
            order = {entry.pk: entry.index for entry in entries}
            starts = [link.start_utc for link, _ in chain]
            targets: dict[int, tuple[queries.ChainEntry, bool]] = {}
            for entry in entries:
                start = entry.decoded.start_utc
                # The chain as the serial import saw it: stored before, or earlier in the group.
                as_of = [
                    (link, conflicting)
                    for link, conflicting in chain
                    if link.pk not in order or order[link.pk] <= entry.index
                ]
                before = _affected(as_of, start, entry.pk)
                rederived[entry.index] = sum(1 for link, _ in before if link.start_utc > start)
                for link, conflicting in _affected(chain, start, entry.pk):
                    targets[link.pk] = (link, conflicting)
            for link, conflicting in targets.values():
                # Strictly earlier sessions (§7.5), cut to what a derivation reads (§7.11).
                earlier = [item for item, _ in chain[: bisect_left(starts, link.start_utc)]]
                history = tuple(item.pk for item in queries.truncate_history(earlier))
                prior = earlier[-1].pk if earlier else None
                jobs.append((link.pk, prior, conflicting, history))
        tasks: list[tuple[list[DeriveJob], dict[int, SessionSource]]] = [
            (jobs[i : i + DERIVE_CHUNK], {}) for i in range(0, len(jobs), DERIVE_CHUNK)
        ]
        needed = {key for pk, _prior, _c, history in jobs for key in (pk, *history)}
        sources = self._sources(connection, needed, fresh)
        for chunk, chunk_sources in tasks:
            for pk, _prior, _conflicting, history in chunk:
                for key in (pk, *history):
                    chunk_sources[key] = sources[key]
        now = importer.now()
        records = [
            queries.EvidenceRecord(
                session_pk=job[0],
                prior_session_pk=job[1],
                procedure=procedure,
                flags=flags,
                document=document,
                rules_version=importer.rules.version,
                parser_version=PARSER_VERSION,
                derived_at=now,
                codes=codes,
            )
            for (chunk, _sources), answers in zip(tasks, self._run_tasks(tasks), strict=True)
            for job, (procedure, flags, document, codes) in zip(chunk, answers, strict=True)
        ]
        queries.replace_evidence(connection, records, fresh=fresh)
        return rederived

    @staticmethod
    def _chains(
        connection: Connection, pump_ids: Sequence[int]
    ) -> dict[int, list[tuple[queries.ChainEntry, bool]]]:
        """Every session of these pumps in chain order, with its conflicting-exports flag."""
        chains: dict[int, list[tuple[queries.ChainEntry, bool]]] = {p: [] for p in pump_ids}
        rows = connection.execute(
            select(
                sessions.c.pump_id,
                sessions.c.id,
                sessions.c.session_id,
                sessions.c.session_start_utc,
                sessions.c.has_refill,
                sessions.c.conflicting_exports,
            )
            .where(sessions.c.pump_id.in_(pump_ids))
            .order_by(sessions.c.pump_id, sessions.c.session_start_utc, sessions.c.session_id)
        )
        for pump_id, pk, session_id, start, refill, conflicting in rows:
            chains[pump_id].append(
                (queries.ChainEntry(pk, session_id, start, bool(refill)), bool(conflicting))
            )
        return chains

    def _sources(
        self, connection: Connection, pks: set[int], fresh: frozenset[int]
    ) -> dict[int, SessionSource]:
        """Where the workers find each session: its file when kept, else its document.

        Sessions stored by this group (`fresh`) are always kept; the others are read.
        """
        found: dict[int, SessionSource] = {pk: self._files[pk][1] for pk in pks & fresh}
        stored = sorted(pks - fresh)
        if not stored:
            return found
        rows = connection.execute(
            select(sessions.c.id, sessions.c.document, sessions.c.source_name).where(
                sessions.c.id.in_(stored)
            )
        )
        for pk, document, source_name in rows:
            kept = self._files.get(pk)
            if kept is not None and kept[0] == document:
                found[pk] = kept[1]
            else:
                found[pk] = ("document", document, source_name)
        return found


def _affected(
    chain: Sequence[tuple[queries.ChainEntry, bool]], start: datetime, pk: int
) -> list[tuple[queries.ChainEntry, bool]]:
    """`Importer.derive_after`'s targets for a session at `start` (`queries.sessions_from`).

    The session itself, and the later sessions up to the first later one holding a
    REFILL record, and any starting at that same instant.
    """
    found: list[tuple[queries.ChainEntry, bool]] = []
    stop: datetime | None = None
    for link, conflicting in chain:
        if link.start_utc < start:
            continue
        if stop is not None and link.start_utc > stop:
            break
        if link.start_utc > start or link.pk == pk:
            found.append((link, conflicting))
        if stop is None and link.has_refill and link.start_utc > start:
            stop = link.start_utc
    return found


def _with_key(plan: Plan, groups: Sequence[tuple[int, list[Any]]]) -> list[Any]:
    """Prepared rows of each session with its row key put in the placeholder's place."""
    position = plan.position("session_pk")
    return [(*row[:position], pk, *row[position + 1 :]) for pk, rows in groups for row in rows]
