"""The import pipeline: one file, one transaction, stored once.

For each file (docs/coding-rules.md §7.16):

1. Read it, its size checked before reading (the 4 MiB limit of docs/formats.md §3).
2. SHA-256 of the bytes. Identical bytes already seen are a duplicate, recognised
   before decoding; like every other outcome it gets its audit entry.
3. Keep the bytes in the raw store, refused files included (`ingest.rawstore`:
   the database store writes them in the file's transaction).
4. Decode. A file that does not decode is refused: its `raw_files` row records the
   error (code, position, message), the other files go on.
5. Store the session once per session ID. Another export of a stored session (the
   other format, or the same format with other bytes) is linked to it; when the
   two normalized documents differ in anything but `source_format`,
   `format_version` and `warnings`, the session is flagged `conflicting_exports`
   and the binary export's document is the one used (`ingest.exports.choose_export`).
6. Derive the session's evidence from its chain (§7.5: the prior session is the
   latest earlier one of the same pump serial by session start, whatever the
   import order), and re-derive the later sessions whose evidence reads it, so a
   late-arriving older session fixes the evidence of the sessions after it.
   Evidence is a pure function of the chain: the same sessions in any import
   order give the same evidence documents.

Steps 2-6 are one database transaction, so a file is either wholly stored with
its evidence or not at all. Writers of one pump's chain take turns (SQLite's write
lock, PostgreSQL's lock on the pump row), so concurrent importers derive from
each other's committed sessions. Logs name sessions by ID and files by SHA-256 prefix,
never by file name or patient: both may carry patient identifiers.
"""

from __future__ import annotations

import logging
import os
import stat
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Engine, bindparam, delete, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from db import audit, queries
from db.bulk import RowInserter
from db.codec import (
    dumps,
    event_rows,
    loads,
    session_columns,
    session_from_document,
    setting_rows,
)
from db.engine import make_durable, write_transaction
from db.models import events, raw_files, sessions, setting_values, utc_now
from evidence import Rules, derive_evidence, evidence_document
from ingest.exports import BINARY, Incoming, choose_export
from ingest.rawstore import RawStorage, sha256_hex
from parsers.errors import DecodeError
from parsers.model import Session
from parsers.registry import PARSER_VERSION, decode_bytes, detect, read_export
from parsers.session_json import session_document

log = logging.getLogger(__name__)

# Sessions kept rebuilt between imports (in-order imports re-read the last few).
REBUILT_CACHE = 256
# A bulk import's group (`Importer.import_many`): files, and bytes held at once.
GROUP_FILES = 64
GROUP_BYTES = 32 * 1024 * 1024

# Statements run once or more per file, built once (db.queries explains why).
# What is known of bytes offered before (`Importer._seen`; a group's at once in
# ingest.parallel): first name, status, error, format, session ID, parser version.
SEEN_COLUMNS = (
    raw_files.c.name,
    raw_files.c.status,
    raw_files.c.error,
    raw_files.c.source_format,
    sessions.c.session_id,
    raw_files.c.parser_version,
)
SEEN_FROM = raw_files.outerjoin(sessions, sessions.c.id == raw_files.c.session_pk)
_SEEN = (
    select(*SEEN_COLUMNS).select_from(SEEN_FROM).where(raw_files.c.sha256 == bindparam("sha256"))
)
_EXISTING = select(
    sessions.c.id,
    sessions.c.pump_id,
    sessions.c.session_start_utc,
    sessions.c.source_format,
    sessions.c.document,
).where(sessions.c.session_id == bindparam("session_id"))
_INSERT_RAW = insert(raw_files)
_INSERT_SESSION = insert(sessions)
# A session's many rows go to the driver directly (db.bulk explains why).
_SETTINGS_INSERTER = RowInserter(setting_values)
_EVENTS_INSERTER = RowInserter(events)

Outcome = Literal["imported", "duplicate", "refused", "failed"]


@dataclass(frozen=True)
class ImportResult:
    """What happened to one file; `detail` is the one-line reason a person reads."""

    name: str
    outcome: Outcome
    detail: str
    sha256: str | None = None
    session_id: str | None = None
    source_format: str | None = None
    # The decode error (`DecodeError.as_dict()`) of a refused file.
    error: Mapping[str, Any] | None = None
    conflicting_exports: bool = False
    # Later sessions whose evidence this import re-derived (late arrival).
    rederived: int = 0
    # What made a "failed" import fail (a database outage, a bug): for retry decisions;
    # for a refused file, its DecodeError (the quarantine record keeps its value kinds).
    exception: BaseException | None = field(default=None, compare=False, repr=False)


# A file offered to a bulk import: its bytes and label, or the result of a file
# that could not be read.
Offered = tuple[bytes, str] | ImportResult


@dataclass
class ImportSummary:
    results: list[ImportResult] = field(default_factory=list)

    def count(self, outcome: Outcome) -> int:
        return sum(1 for result in self.results if result.outcome == outcome)

    @property
    def ok(self) -> bool:
        """Nothing refused and nothing failed."""
        return not any(r.outcome in ("refused", "failed") for r in self.results)


# ---------------------------------------------------------------------------
# Folders (docs/coding-rules.md §7.16)


def walk_folder(root: Path) -> list[Path]:
    """Every regular file under `root`, recursively, in sorted order, any extension.

    Symbolic links are not followed (a link is not a regular file), so a folder
    cannot pull in files from elsewhere or loop.
    """
    found: list[Path] = []
    for dirpath, _dirnames, filenames in os.walk(root):
        for filename in filenames:
            path = Path(dirpath) / filename
            try:
                mode = os.lstat(path).st_mode
            except FileNotFoundError:
                continue  # removed while walking
            if stat.S_ISREG(mode):
                found.append(path)
    found.sort(key=lambda path: path.relative_to(root).parts)
    return found


def expand_paths(paths: Iterable[Path]) -> Iterator[Path]:
    """Files named on the command line as given; folders walked (§7.16)."""
    for path in paths:
        if path.is_dir():
            yield from walk_folder(path)
        else:
            yield path


def groups_of(items: Iterable[Offered], group: int = GROUP_FILES) -> Iterator[list[Offered]]:
    """Offered files in groups of `group` files, and at most GROUP_BYTES of them."""
    pending: list[Offered] = []
    size = 0
    for item in items:
        pending.append(item)
        size += 0 if isinstance(item, ImportResult) else len(item[0])
        if len(pending) >= group or size >= GROUP_BYTES:
            yield pending
            pending, size = [], 0
    if pending:
        yield pending


def read_offered(path: Path, label: str) -> Offered:
    """A file's bytes and label, or the result of a file that cannot be read."""
    try:
        return read_export(path, source=label), label
    except DecodeError as exc:  # too large: refused unread, so nothing to keep
        return ImportResult(label, "refused", str(exc), error=exc.as_dict(), exception=exc)
    except OSError as exc:
        return ImportResult(label, "refused", f"{label}: cannot read: {exc.strerror or exc}")


# ---------------------------------------------------------------------------
# The importer


class Importer:
    """Imports export files into one database and one raw store."""

    def __init__(
        self,
        engine: Engine,
        store: RawStorage,
        rules: Rules,
        *,
        decode: Callable[..., Session] = decode_bytes,
        clock: Callable[[], datetime] = utc_now,
        actor: str = audit.SYSTEM_ACTOR,
    ) -> None:
        self.engine = engine
        self.store = store
        self.rules = rules
        self._decode = decode
        self._clock = clock
        # Who the audit log names for these imports: "system" (service) or "cli:<user>".
        self.actor = actor
        # Sessions rebuilt from stored documents, by (row id, document text):
        # consecutive imports of one pump re-read the same prior session.
        self._rebuilt: dict[tuple[int, str], Session] = {}

    # -- entry points -------------------------------------------------------

    def import_paths(self, paths: Iterable[Path], *, group: int = 1) -> Iterator[ImportResult]:
        """Import files and folders; one result per file, whatever happens to the others.

        `group` > 1: a bulk import with group commit (`import_many`), the files read
        `group` at a time (and at most GROUP_BYTES of them).
        """
        if group <= 1:
            for path in expand_paths(paths):
                yield self.import_path(path)
            return
        yield from self.import_many(
            (self._read(path, str(path)) for path in expand_paths(paths)), group=group
        )

    def import_path(self, path: Path, *, name: str | None = None) -> ImportResult:
        label = str(path) if name is None else name
        read = self._read(path, label)
        if isinstance(read, ImportResult):
            return read
        return self.import_bytes(*read)

    @staticmethod
    def _read(path: Path, label: str) -> Offered:
        return read_offered(path, label)

    def import_many(
        self, items: Iterable[Offered], *, group: int = GROUP_FILES
    ) -> Iterator[ImportResult]:
        """Bulk import with group commit: the same result per file as `import_bytes`.

        Files go in groups of `group` (and at most GROUP_BYTES). For each group: every
        file's raw bytes are written, then flushed to disk together; then each file
        is imported in its own transaction whose commit does not wait for the disk;
        then one `make_durable` puts the group's commits on disk, and only then are
        the group's results given out. Per file the outcome, the rows and the audit
        entries are exactly those of `import_bytes`. For `pumptrail import`, whose
        files stay where they are: a power failure loses at most the group being
        imported, which the next run imports again. The watcher, which archives
        each file after its commit, imports one file at a time, durably.
        """
        for pending in groups_of(items, group):
            yield from self._import_group(pending)

    def _import_group(
        self,
        items: Sequence[Offered],
        write: Callable[[Sequence[Offered]], list[ImportResult]] | None = None,
    ) -> list[ImportResult]:
        """One group of `import_many`: raw bytes flushed, files written, made durable.

        `write` stores the group's files once their raw bytes are on disk (the
        parallel import's group writer); by default each file in its own transaction.
        When a deferred raw write failed, every file is written on its own, which
        writes its bytes again, durably, in its transaction.
        """
        deferred_ok = True
        for item in items:
            if isinstance(item, ImportResult):
                continue
            try:
                self.store.put(item[0], defer_sync=True)
            except (OSError, SQLAlchemyError) as exc:
                # import_bytes writes it again, durably, and reports what fails then.
                log.warning("raw store: deferred write failed: %s", type(exc).__name__)
                deferred_ok = False
        try:
            # Raw bytes on disk before any row that names them is committed.
            self.store.sync()
        except (OSError, SQLAlchemyError) as exc:
            log.error("raw store: flushing a group failed: %s", type(exc).__name__)
            return [
                item
                if isinstance(item, ImportResult)
                else ImportResult(
                    item[1],
                    "failed",
                    f"{item[1]}: raw store could not be flushed to disk: {exc}",
                    sha256_hex(item[0]),
                    exception=exc,
                )
                for item in items
            ]
        if write is None or not deferred_ok:
            write = self.import_each
        results = write(items)
        try:
            make_durable(self.engine)
        except Exception as exc:  # the commits happened; that they are on disk is unknown
            log.error("database: making a group durable failed: %s", type(exc).__name__)
            return [
                # Unread files and failed imports wrote nothing: their results stand.
                result
                if result.outcome == "failed" or result.sha256 is None
                else replace(
                    result,
                    outcome="failed",
                    detail=f"{result.detail}; but the database did not confirm it is on disk "
                    f"({type(exc).__name__}): import the file again to check",
                    exception=exc,
                )
                for result in results
            ]
        return results

    def import_each(self, items: Sequence[Offered]) -> list[ImportResult]:
        """Each file in its own group-commit transaction (the raw bytes already flushed)."""
        return [
            item if isinstance(item, ImportResult) else self.import_bytes(*item, group_commit=True)
            for item in items
        ]

    def import_bytes(
        self,
        data: bytes,
        name: str,
        *,
        group_commit: bool = False,
        refusal: DecodeError | None = None,
    ) -> ImportResult:
        """Import one export held in memory (`name` labels it in results and rows).

        `group_commit`: the caller makes the commit durable later (`import_many`).
        `refusal`: the error decoding these bytes as `name` gave, when done beforehand
        (a parallel import's worker); the file is refused with it, not decoded again.
        """
        digest = sha256_hex(data)
        try:
            try:
                return self._import(data, digest, name, group_commit, refusal)
            except IntegrityError:
                # Another importer (a second service on one PostgreSQL database) stored
                # the same bytes or session between this one's check and its insert:
                # once more, the file is recognised as already stored.
                log.info("file %s: stored meanwhile by another importer, retrying", digest[:12])
                return self._import(data, digest, name, group_commit, refusal)
        except Exception as exc:  # one broken import must not stop the others
            log.error("import of %s failed: %s", digest[:12], type(exc).__name__)
            log.debug("import of %s failed", digest[:12], exc_info=exc)
            return ImportResult(
                name,
                "failed",
                f"{name}: internal error: {type(exc).__name__}: {exc}",
                digest,
                exception=exc,
            )

    # -- one file -----------------------------------------------------------

    def _import(
        self,
        data: bytes,
        digest: str,
        name: str,
        group_commit: bool,
        refusal: DecodeError | None,
    ) -> ImportResult:
        with write_transaction(self.engine, group_commit=group_commit) as connection:
            seen = self._seen(connection, digest, name)
            if seen is not None:
                # Recognised before the race for the pump's chain: audited all the same.
                self._audit(connection, seen)
                return seen
            self.store.put(data, connection=connection)
            try:
                if refusal is not None:
                    raise refusal
                session = self._decode(data, source=name)
            except DecodeError as exc:
                result = self._refuse(connection, data, digest, name, exc)
            else:
                document = session_document(session)
                incoming = Incoming(name, digest, len(data), session, document)
                result = self._store(connection, incoming)
            self._audit(connection, result)
            return result

    def _audit(self, connection: Connection, result: ImportResult) -> None:
        """The file's audit entry, in its transaction."""
        audit.append_many(connection, [self.audit_entry(result)])

    def audit_entry(self, result: ImportResult) -> audit.NewEntry:
        """A file's audit entry: by session ID or SHA-256, never by name."""
        refused = result.outcome == "refused"
        return audit.NewEntry(
            actor=self.actor,
            action=audit.QUARANTINE if refused else audit.IMPORT,
            target=(result.sha256 if refused else result.session_id) or "",
            detail={
                "sha256": result.sha256,
                "outcome": result.outcome,
                "source_format": result.source_format,
                "error_code": None if result.error is None else result.error.get("code"),
                "conflicting_exports": result.conflicting_exports,
                "rederived": result.rederived,
                "parser_version": PARSER_VERSION,
                "rules_version": self.rules.version,
            },
        )

    def _seen(self, connection: Connection, digest: str, name: str) -> ImportResult | None:
        """The result for bytes already offered once (imported or refused)."""
        row = connection.execute(_SEEN, {"sha256": digest}).first()
        if row is None:
            return None
        first_name, status, error_text, source_format, session_id, parser_version = row
        if status == "refused" and parser_version != PARSER_VERSION:
            # Refused by an older parser: this one decodes the bytes afresh (an upgrade,
            # or an admin's re-queue after one). The old refusal stays in the audit log.
            connection.execute(delete(raw_files).where(raw_files.c.sha256 == digest))
            log.info("file %s: refused by %s before, decoding again", digest[:12], parser_version)
            return None
        error = loads(error_text) if status == "refused" and error_text else None
        return seen_result(
            name,
            digest,
            first_name=first_name,
            status=status,
            error=error,
            source_format=source_format,
            session_id=session_id,
        )

    def _refuse(
        self, connection: Connection, data: bytes, digest: str, name: str, exc: DecodeError
    ) -> ImportResult:
        connection.execute(
            _INSERT_RAW, self.refused_row(digest, len(data), name, detected_format(data), exc)
        )
        log.info("file %s refused: %s", digest[:12], exc.code)
        return refused_result(name, digest, exc)

    def refused_row(
        self, digest: str, size: int, name: str, detected: str | None, exc: DecodeError
    ) -> dict[str, Any]:
        """The `raw_files` row of a refused file."""
        return {
            "sha256": digest,
            "size": size,
            "name": name,
            "source_format": detected,
            "status": "refused",
            "error_code": exc.code,
            "error": dumps({**exc.as_dict(), "text": str(exc)}),
            "session_pk": None,
            "parser_version": PARSER_VERSION,
            "received_at": self._clock(),
        }

    def imported_row(
        self, digest: str, size: int, name: str, source_format: str, pk: int
    ) -> dict[str, Any]:
        """The `raw_files` row of a file stored as (or linked to) session `pk`."""
        return {
            "sha256": digest,
            "size": size,
            "name": name,
            "source_format": source_format,
            "status": "imported",
            "error_code": None,
            "error": None,
            "session_pk": pk,
            "parser_version": PARSER_VERSION,
            "received_at": self._clock(),
        }

    def _raw_row(self, connection: Connection, incoming: Incoming, pk: int) -> None:
        connection.execute(
            _INSERT_RAW,
            self.imported_row(
                incoming.digest, incoming.size, incoming.name, incoming.session.source_format, pk
            ),
        )

    def _store(self, connection: Connection, incoming: Incoming) -> ImportResult:
        session, document = incoming.session, incoming.document
        digest, name = incoming.digest, incoming.name
        # The pump's chain is ours until commit (PostgreSQL row lock; SQLite write lock).
        pump_id = queries.get_or_create_pump(connection, session.pump.serial, session.pump.model)
        if connection.dialect.name != "sqlite":
            # Another importer of these bytes may have committed while we waited.
            seen = self._seen(connection, digest, name)
            if seen is not None:
                return seen
        existing = connection.execute(_EXISTING, {"session_id": session.session_id}).first()
        if existing is None:
            pk = self._insert_session(connection, incoming, pump_id)
            self._raw_row(connection, incoming, pk)
            rederived = self.derive_after(
                connection, pump_id, session.session_start_utc, session_pk=pk, fresh=True
            )
            log.info("file %s: imported session %s", digest[:12], session.session_id)
            return imported_result(
                name, digest, session.session_id, session.source_format, rederived
            )

        pk, old_pump_id, old_start, stored_format, stored_text = existing
        self._raw_row(connection, incoming, pk)
        choice = choose_export(stored_format, loads(stored_text), session.source_format, document)
        if not choice.conflicting:
            log.info("file %s: another export of session %s", digest[:12], session.session_id)
            return another_export_result(
                name, digest, session.session_id, session.source_format, stored_format
            )

        # Two exports of one session disagree (§7.16): flag it; the binary one is used.
        log.warning("file %s: exports of session %s disagree", digest[:12], session.session_id)
        replace = choice.use_other
        connection.execute(
            update(sessions).where(sessions.c.id == pk).values(conflicting_exports=True)
        )
        if old_pump_id != pump_id:
            queries.lock_pump(connection, old_pump_id)
        if replace:
            self.replace_session(connection, pk, incoming, pump_id)
        else:
            pump_id = old_pump_id
        new_start = session.session_start_utc if replace else old_start
        rederived = self.derive_after(connection, pump_id, new_start, session_pk=pk)
        if pump_id != old_pump_id or new_start != old_start:
            # The session moved in the chain: its old neighbours' evidence changes too.
            rederived += self.derive_after(connection, old_pump_id, old_start)
        used = BINARY if replace else stored_format
        detail = (
            f"{name}: session {session.session_id}: exports disagree; flagged "
            f"conflicting_exports, using the {used} export"
        )
        return ImportResult(
            name,
            "duplicate",
            detail,
            digest,
            session.session_id,
            session.source_format,
            conflicting_exports=True,
            rederived=rederived,
        )

    # -- rows ---------------------------------------------------------------

    def new_session_values(
        self, columns: Mapping[str, Any], pump_id: int, digest: str, name: str
    ) -> dict[str, Any]:
        """The `sessions` row of a session stored for the first time (`columns`: db.codec)."""
        return {
            **columns,
            "pump_id": pump_id,
            "source_sha256": digest,
            "source_name": name,
            "conflicting_exports": False,
            "parser_version": PARSER_VERSION,
            "imported_at": self._clock(),
        }

    def _insert_session(self, connection: Connection, incoming: Incoming, pump_id: int) -> int:
        values = self.new_session_values(
            session_columns(incoming.session, incoming.document),
            pump_id,
            incoming.digest,
            incoming.name,
        )
        key = connection.execute(_INSERT_SESSION, values).inserted_primary_key
        if key is None:  # pragma: no cover - an insert always returns its key here
            raise RuntimeError("session insert returned no key")
        pk = int(key[0])
        self._insert_rows(connection, pk, incoming)
        # The decoded session is what a rebuild of this row would give (db.codec).
        self._remember(pk, values["document"], incoming.session)
        return pk

    @staticmethod
    def _insert_rows(connection: Connection, pk: int, incoming: Incoming) -> None:
        """Snapshot and event rows: one executemany per table."""
        _SETTINGS_INSERTER.insert(connection, setting_rows(pk, incoming.session, incoming.document))
        _EVENTS_INSERTER.insert(connection, event_rows(pk, incoming.session, incoming.document))

    def replace_session(
        self, connection: Connection, pk: int, incoming: Incoming, pump_id: int
    ) -> None:
        """Rewrite a stored session's row, settings and events from another export of it."""
        values = session_columns(incoming.session, incoming.document)
        values.update(
            pump_id=pump_id,
            source_sha256=incoming.digest,
            source_name=incoming.name,
            parser_version=PARSER_VERSION,
        )
        connection.execute(update(sessions).where(sessions.c.id == pk).values(**values))
        connection.execute(delete(setting_values).where(setting_values.c.session_pk == pk))
        connection.execute(delete(events).where(events.c.session_pk == pk))
        self._insert_rows(connection, pk, incoming)
        self._remember(pk, values["document"], incoming.session)

    # -- evidence -----------------------------------------------------------

    def now(self) -> datetime:
        """The importer's clock (UTC)."""
        return self._clock()

    def _remember(self, pk: int, document: str, session: Session) -> None:
        if len(self._rebuilt) >= REBUILT_CACHE:
            self._rebuilt.clear()
        self._rebuilt[(pk, document)] = session

    def _rebuild(self, stored: queries.StoredSession) -> Session:
        session = self._rebuilt.get((stored.pk, stored.document))
        if session is None:
            session = session_from_document(loads(stored.document), source=stored.source_name)
            self._remember(stored.pk, stored.document, session)
        return session

    def derive_after(
        self,
        connection: Connection,
        pump_id: int,
        start_utc: datetime,
        *,
        session_pk: int | None = None,
        fresh: bool = False,
    ) -> int:
        """(Re-)derive the evidence of the pump's sessions that read one at `start_utc`.

        `session_pk`, the session stored at `start_utc`, is derived too (`fresh`: it
        was inserted in this transaction, so it has no evidence yet). Returns how
        many later sessions were re-derived.
        """
        onwards = queries.sessions_from(connection, pump_id, start_utc)
        targets = [s for s in onwards if s.start_utc > start_utc or s.pk == session_pk]
        if not targets:
            return 0
        window = [*queries.history_before(connection, pump_id, start_utc), *onwards]
        new = frozenset({session_pk}) if fresh and session_pk is not None else frozenset()
        self._derive(connection, window, targets, fresh=new)
        return sum(1 for target in targets if target.start_utc > start_utc)

    def evidence_for(self, connection: Connection, session_id: str) -> dict[str, Any] | None:
        """The evidence document of a stored session, derived now from its chain (not stored).

        Evidence is a pure function of the chain: this equals the stored document
        unless the rules or the parser changed since it was derived.
        """
        stored = queries.stored_session(connection, session_id)
        if stored is None:
            return None
        history = queries.truncate_history(
            queries.history_before(connection, stored.pump_id, stored.start_utc)
        )
        evidence = derive_evidence(
            self._rebuild(stored),
            [self._rebuild(h) for h in history],
            self.rules,
            conflicting_exports=stored.conflicting_exports,
        )
        return evidence_document(evidence)

    def rederive_all(self, connection: Connection) -> int:
        """Derive every stored session's evidence again (after a rules or parser change)."""
        total = 0
        for pump_id in queries.all_pump_ids(connection):
            entries = queries.chain(connection, pump_id)
            if not entries:
                continue
            window = queries.stored_window(
                connection, pump_id, entries[0].key, entries[-1].start_utc
            )
            self._derive(connection, window, window)
            total += len(window)
        return total

    def _derive(
        self,
        connection: Connection,
        window: Sequence[queries.StoredSession],
        targets: Sequence[queries.StoredSession],
        *,
        fresh: frozenset[int] = frozenset(),
    ) -> None:
        """Derive `targets` from `window`, a contiguous stretch of one pump's chain."""
        records: list[queries.EvidenceRecord] = []
        now = self._clock()
        starts = [stored.start_utc for stored in window]
        for target in targets:
            # Strictly earlier sessions (§7.5); `window` is in chain order.
            earlier = window[: bisect_left(starts, target.start_utc)]
            # From the latest earlier refill session on (§7.11), else the prior only (§7.6).
            history = queries.truncate_history(earlier)
            records.append(
                evidence_record(
                    self._rebuild(target),
                    [self._rebuild(h) for h in history],
                    self.rules,
                    session_pk=target.pk,
                    prior_session_pk=earlier[-1].pk if earlier else None,
                    conflicting_exports=target.conflicting_exports,
                    derived_at=now,
                )
            )
        queries.replace_evidence(connection, records, fresh=fresh)


# ---------------------------------------------------------------------------
# Results: one wording whichever importer (serial or parallel) stored the file


def detected_format(data: bytes) -> str | None:
    """The format a refused file claims to be, when it gets that far."""
    try:
        return detect(data).name
    except DecodeError:
        return None


def refused_result(name: str, digest: str, exc: DecodeError) -> ImportResult:
    return ImportResult(name, "refused", str(exc), digest, error=exc.as_dict(), exception=exc)


def imported_result(
    name: str, digest: str, session_id: str, source_format: str, rederived: int
) -> ImportResult:
    detail = f"{name}: session {session_id} ({source_format})"
    if rederived:
        detail += f"; re-derived the evidence of {rederived} later session(s)"
    return ImportResult(
        name, "imported", detail, digest, session_id, source_format, rederived=rederived
    )


def another_export_result(
    name: str, digest: str, session_id: str, source_format: str, stored_format: str
) -> ImportResult:
    """A second export of a stored session that agrees with it (§7.16)."""
    return ImportResult(
        name,
        "duplicate",
        f"{name}: session {session_id} already stored (from a {stored_format} export)",
        digest,
        session_id,
        source_format,
    )


def seen_result(
    name: str,
    digest: str,
    *,
    first_name: str,
    status: str,
    error: Mapping[str, Any] | None,
    source_format: str | None,
    session_id: str | None,
) -> ImportResult:
    """Bytes offered before under `first_name`: refused again, or a duplicate."""
    if status == "refused":
        reason = error.get("message", "refused") if isinstance(error, dict) else "refused"
        return ImportResult(
            name,
            "refused",
            f"{name}: identical to {first_name}, refused before: {reason}",
            digest,
            error=error,
        )
    log.info("file %s: identical bytes already imported (session %s)", digest[:12], session_id)
    return ImportResult(
        name,
        "duplicate",
        f"{name}: identical to {first_name} (session {session_id})",
        digest,
        session_id,
        source_format,
    )


def evidence_record(
    session: Session,
    history: Sequence[Session],
    rules: Rules,
    *,
    session_pk: int,
    prior_session_pk: int | None,
    conflicting_exports: bool,
    derived_at: datetime,
) -> queries.EvidenceRecord:
    """The evidence row of one stored session, derived from its history (replay uses it too)."""
    document = evidence_document(
        derive_evidence(session, history, rules, conflicting_exports=conflicting_exports)
    )
    code = document.get("codes", {}).get(rules.default_profile)
    return queries.EvidenceRecord(
        session_pk=session_pk,
        prior_session_pk=prior_session_pk,
        procedure=None if code is None else code.get("procedure"),
        flags=tuple(document.get("flags", ())),
        document=dumps(document),
        rules_version=rules.version,
        parser_version=PARSER_VERSION,
        derived_at=derived_at,
        codes=tuple(
            (str(profile), entry.get("procedure"))
            for profile, entry in document.get("codes", {}).items()
        ),
    )


def summary_counts(summary: ImportSummary) -> str:
    """`N files: a imported, b duplicate, c refused` (and failed, when any)."""
    total = len(summary.results)
    parts = [
        f"{summary.count('imported')} imported",
        f"{summary.count('duplicate')} duplicate",
        f"{summary.count('refused')} refused",
    ]
    failed = summary.count("failed")
    if failed:
        parts.append(f"{failed} failed")
    noun = "file" if total == 1 else "files"
    return f"{total} {noun}: " + ", ".join(parts)
