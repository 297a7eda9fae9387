"""Replay: re-decode every raw file with this version and compare with what is stored (issue 6 item 2).

`pumptrail replay` answers an auditor's question: were the stored sessions and
their evidence derived from the programmer's own bytes by this software, and has
nothing been changed since? For every pump (or one, `--pump`), in chain order:

1. Every imported raw file of its sessions is read back from the raw store and
   its SHA-256 checked: a file whose bytes no longer match is *tampered*, a file
   gone from the store is *missing*.
2. Each file is decoded again (`parsers.registry.decode_bytes`) and the session's
   exports are resolved as the import pipeline resolves them, in arrival order
   (coding-rules.md §7.16): the first export is used unless a later one
   disagrees, which flags `conflicting_exports` and makes the binary one used.
3. The rows the pipeline would store (`db.codec`: the `sessions` columns and
   document, `setting_values`, `events`) are compared with the stored rows,
   field by field, old value against new.
4. The evidence of each session is derived again from the re-decoded chain
   (§7.5, the history window of §7.11 as the pipeline takes it) and compared with
   the stored `evidence` row, its document and its `evidence_flags`; a missing
   row is reported.

Refused files are decoded again too: a changed error, or a file that decodes now,
is reported. Without filters, the audit log's `import` and `quarantine` entries
are checked against what is stored, both ways: a session deleted together with
its raw file row is still noticed, and so is a file added behind the importer.

`--verify` (the default) only reads, then appends one `replay_verify` audit entry.
`--apply` rewrites what differs (session rows, settings, events, evidence,
refused files' errors) in one transaction per pump, under a lock that keeps the
importer out, and appends a `replay_apply` entry per pump; a pump with an unusable
raw file is left as it is. Audit entries name sessions by ID and fields by name,
never values: values may be patient identifiers. The printed report masks
patient fields too.
"""

from __future__ import annotations

import json
import re
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any, Final

from sqlalchemy import Engine, select, update
from sqlalchemy.engine import Connection

from db import audit, queries
from db.codec import dumps, event_rows, has_refill, loads, session_columns, setting_rows
from db.engine import write_transaction
from db.models import (
    events,
    evidence,
    evidence_flags,
    pumps,
    raw_files,
    sessions,
    setting_values,
    utc_now,
)
from evidence import Rules
from ingest.pipeline import BINARY, Importer, Incoming, evidence_record
from ingest.rawstore import RawStore, RawStoreError, sha256_hex
from parsers.errors import DecodeError
from parsers.model import Session
from parsers.params import PHASE_INTERROGATED, PHASE_PROGRAMMED
from parsers.registry import PARSER_VERSION, decode_bytes
from parsers.session_json import comparable_document, session_document

# Pumps loaded per query batch in --verify (sessions of many pumps per round trip).
PUMP_BATCH: Final = 200

# Difference kinds.
SESSION: Final = "session"  # a `sessions` column or its normalized document
SETTING: Final = "setting"  # a `setting_values` row
EVENT: Final = "event"  # an `events` row
EVIDENCE: Final = "evidence"  # an `evidence` column, its document or its flags
EVIDENCE_MISSING: Final = "evidence_missing"
NO_RAW_FILE: Final = "no_raw_file"  # a stored session no raw file is linked to
TAMPERED: Final = "tampered"  # raw bytes that no longer hash to their name
RAW_MISSING: Final = "raw_missing"  # a raw file gone from the raw store
UNDECODABLE: Final = "undecodable"  # an imported raw file that no longer decodes
REFUSAL: Final = "refusal"  # a refused file whose error changed, or that decodes now
NOT_STORED: Final = "not_stored"  # the audit log names a session that is not stored
RAW_NOT_STORED: Final = "raw_not_stored"  # ... or a raw file `raw_files` has no row for
UNAUDITED: Final = "unaudited"  # a stored raw file the audit log does not name

RAW_KINDS: Final = frozenset(
    {TAMPERED, RAW_MISSING, UNDECODABLE, REFUSAL, RAW_NOT_STORED, UNAUDITED}
)
# Kinds --apply cannot repair from the raw bytes.
UNREPAIRABLE: Final = frozenset(
    {NO_RAW_FILE, TAMPERED, RAW_MISSING, UNDECODABLE, NOT_STORED, RAW_NOT_STORED, UNAUDITED}
)
PHASE_NAMES: Final = {PHASE_INTERROGATED: "interrogated", PHASE_PROGRAMMED: "programmed"}
HIDDEN: Final = "(not shown: may identify the patient)"
# Fields whose values may identify a patient: patient identifiers, and note text
# (free text a clinician typed). Reports print neither.
_HIDDEN_FIELD: Final = re.compile(r"patient|(^|\.)text$")
_HIDDEN_KEYS: Final = frozenset(
    {"patient", "patient_id", "patient_name", "patient_birth_date", "text"}
)


class _Absent:
    """A value on one side only (a row or key the other side does not have)."""

    def __repr__(self) -> str:
        return "(absent)"


ABSENT: Final = _Absent()


@dataclass(frozen=True, slots=True)
class Difference:
    """One finding: what is stored (`old`) against what replay derives (`new`).

    `subject` is a session ID, or for raw-file kinds the file's SHA-256.
    """

    kind: str
    subject: str
    field: str = ""
    old: Any = None
    new: Any = None
    message: str = ""

    @property
    def hidden(self) -> bool:
        """Whether the values may identify a patient (never printed)."""
        return _HIDDEN_FIELD.search(self.field) is not None

    def line(self) -> str:
        """One report line; values that may identify a patient are never printed."""
        if self.kind not in RAW_KINDS:
            where = f"session {self.subject}"
        elif re.fullmatch(r"[0-9a-f]{64}", self.subject):
            where = f"raw {self.subject[:12]}"
        else:  # a case folder's file (`--fixtures`)
            where = f"file {self.subject}"
        head = f"{where}: {self.kind}"
        if self.field:
            head += f": {self.field}"
        if self.message:
            return f"{head}: {self.message}"
        if self.hidden:
            return f"{head}: {HIDDEN}"
        return f"{head}: {show_value(self.old)} -> {show_value(self.new)}"


def show_value(value: Any) -> str:
    """A value as the report prints it: JSON, `(absent)` for a missing side.

    Inside objects (a whole event, say), patient data and note text are replaced.
    """
    if value is ABSENT:
        return "(absent)"
    if isinstance(value, datetime | date):
        return value.isoformat()
    return json.dumps(_redacted(value), ensure_ascii=False, default=str)


def _redacted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: HIDDEN if k in _HIDDEN_KEYS else _redacted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(item) for item in value]
    return value


@dataclass
class ReplayReport:
    """What a replay found (and, with --apply, did)."""

    raw_files: int = 0
    sessions: int = 0
    pumps: int = 0
    differences: list[Difference] = field(default_factory=list)
    # False when `--pump SERIAL` names no stored pump.
    pump_found: bool = True
    # Pumps whose evidence could not be derived again, and why.
    unchecked: list[str] = field(default_factory=list)
    # --apply: sessions whose rows or evidence were rewritten, pumps left alone and why.
    rewritten_sessions: int = 0
    rewritten_evidence: int = 0
    not_applied: list[str] = field(default_factory=list)

    @property
    def differing_sessions(self) -> int:
        return len({d.subject for d in self.differences if d.kind not in RAW_KINDS})

    def summary(self) -> str:
        line = (
            f"replayed {counted(self.raw_files, 'raw file')}, {counted(self.sessions, 'session')} "
            f"of {counted(self.pumps, 'pump')}"
        )
        if not self.differences:
            return line + ": no differences"
        kinds = Counter(d.kind for d in self.differences)
        differing = self.differing_sessions
        parts = [f"{differing} {'session differs' if differing == 1 else 'sessions differ'}"]
        parts += [f"{n} {kind}" for kind, n in sorted(kinds.items()) if kind in UNREPAIRABLE]
        parts.append(f"{counted(len(self.differences), 'difference')} in all")
        return line + ": " + ", ".join(parts)


def counted(n: int, one: str, many: str | None = None) -> str:
    """`1 pump`, `2 pumps`."""
    return f"{n} {one if n == 1 else many or one + 's'}"


# ---------------------------------------------------------------------------
# Pieces shared with `ingest.replay_fixtures`


def decode_export(data: bytes, name: str) -> Incoming:
    """Decode one export (raises DecodeError) into what the pipeline would store."""
    session = decode_bytes(data, source=name)
    return Incoming(name, sha256_hex(data), len(data), session, session_document(session))


@dataclass(frozen=True, slots=True)
class Resolved:
    """A session as the pipeline stores it: the export in use, and whether exports conflict."""

    export: Incoming
    conflicting: bool

    @property
    def session(self) -> Session:
        return self.export.session

    @property
    def has_refill(self) -> bool:
        return has_refill(self.export.session)


def export_in_use(exports: Sequence[Incoming]) -> Resolved:
    """The export whose document is stored, and whether the exports conflict (§7.16).

    `exports` are one session's exports in arrival order. As the pipeline does: the
    first is used; a later one whose document differs in anything but
    `source_format`, `format_version` and `warnings` flags the conflict, and the
    binary export replaces a non-binary one.
    """
    if not exports:
        raise ValueError("a session needs at least one export")
    used, conflicting = exports[0], False
    for other in exports[1:]:
        if comparable_document(used.document) == comparable_document(other.document):
            continue
        conflicting = True
        if other.session.source_format == BINARY and used.session.source_format != BINARY:
            used = other
    return Resolved(used, conflicting)


def chain_walk(
    items: Sequence[queries.ChainItem], start_of: Callable[[queries.ChainItem], datetime]
) -> Iterator[tuple[queries.ChainItem, queries.ChainItem | None, list[queries.ChainItem]]]:
    """Each item of one pump's chain (in chain order) with its prior and its history.

    The prior session starts strictly earlier (§7.5); the history is what the
    pipeline passes a derivation (`db.queries.truncate_history`, §7.11, §7.6).
    """
    starts = [start_of(item) for item in items]
    for item in items:
        earlier = items[: bisect_left(starts, start_of(item))]
        yield item, (earlier[-1] if earlier else None), queries.truncate_history(earlier)


def json_differences(old: Any, new: Any, path: str) -> Iterator[tuple[str, Any, Any]]:
    """(path, old, new) of every leaf where two JSON values differ.

    Objects by key (`a.b`), arrays by index (`a[3]`); `true` and `1` differ.
    """
    if isinstance(old, dict) and isinstance(new, dict):
        for key in [*old, *(k for k in new if k not in old)]:
            sub = f"{path}.{key}" if path else str(key)
            if key not in new:
                yield sub, old[key], ABSENT
            elif key not in old:
                yield sub, ABSENT, new[key]
            else:
                yield from json_differences(old[key], new[key], sub)
    elif isinstance(old, list) and isinstance(new, list):
        for index in range(max(len(old), len(new))):
            sub = f"{path}[{index}]"
            if index >= len(new):
                yield sub, old[index], ABSENT
            elif index >= len(old):
                yield sub, ABSENT, new[index]
            else:
                yield from json_differences(old[index], new[index], sub)
    elif not same_value(old, new):
        yield path, old, new


def same_value(old: Any, new: Any) -> bool:
    """Equal and of the same kind (a boolean never equals an integer)."""
    return isinstance(old, bool) == isinstance(new, bool) and old == new


# ---------------------------------------------------------------------------
# What is stored


@dataclass(frozen=True, slots=True)
class _Raw:
    id: int
    sha256: str
    name: str


@dataclass
class _Stored:
    """One stored session and every row derived from it."""

    pk: int
    session_id: str
    pump_id: int
    start_utc: datetime
    has_refill: bool
    row: Mapping[str, Any]
    raws: list[_Raw] = field(default_factory=list)
    settings: dict[tuple[int, str], str] = field(default_factory=dict)
    events: dict[int, Mapping[str, Any]] = field(default_factory=dict)
    evidence: Mapping[str, Any] | None = None
    flags: set[str] = field(default_factory=set)


def _pump_sessions(connection: Connection, pump_ids: Sequence[int]) -> dict[int, list[_Stored]]:
    """Every stored session of these pumps with its rows, each pump's in chain order."""
    in_pumps = sessions.c.pump_id.in_(pump_ids)
    by_pk: dict[int, _Stored] = {}
    by_pump: dict[int, list[_Stored]] = {pump_id: [] for pump_id in pump_ids}
    query = select(sessions).where(in_pumps)
    query = query.order_by(sessions.c.pump_id, sessions.c.session_start_utc, sessions.c.session_id)
    for row in connection.execute(query).mappings():
        stored = _Stored(
            row["id"],
            row["session_id"],
            row["pump_id"],
            row["session_start_utc"],
            bool(row["has_refill"]),
            dict(row),
        )
        by_pk[stored.pk] = stored
        by_pump[stored.pump_id].append(stored)
    if not by_pk:
        return by_pump

    def joined(table: Any, *columns: Any) -> Any:
        return (
            select(*columns)
            .select_from(table.join(sessions, sessions.c.id == table.c.session_pk))
            .where(in_pumps)
        )

    raw_query = joined(
        raw_files, raw_files.c.id, raw_files.c.sha256, raw_files.c.name, raw_files.c.session_pk
    ).where(raw_files.c.status == "imported")
    for raw_id, digest, name, session_pk in connection.execute(raw_query.order_by(raw_files.c.id)):
        by_pk[session_pk].raws.append(_Raw(raw_id, digest, name))
    setting_query = joined(
        setting_values,
        setting_values.c.session_pk,
        setting_values.c.phase,
        setting_values.c.param,
        setting_values.c.value,
    )
    for session_pk, phase, param, value in connection.execute(setting_query):
        by_pk[session_pk].settings[(phase, param)] = value
    names = [column.name for column in events.columns]
    for values in connection.execute(joined(events, *events.columns)):
        event = dict(zip(names, values, strict=True))
        by_pk[event["session_pk"]].events[event["seq"]] = event
    for row in connection.execute(joined(evidence, *evidence.columns)).mappings():
        by_pk[row["session_pk"]].evidence = dict(row)
    flag_query = joined(evidence_flags, evidence_flags.c.session_pk, evidence_flags.c.flag)
    for session_pk, flag in connection.execute(flag_query):
        by_pk[session_pk].flags.add(flag)
    return by_pump


# ---------------------------------------------------------------------------
# One pump


@dataclass(frozen=True)
class _Rebuilt:
    """A stored session and what its raw files give now."""

    stored: _Stored
    now: Resolved

    @property
    def has_refill(self) -> bool:
        return self.now.has_refill


@dataclass
class _PumpReplay:
    """A pump's findings and what --apply would write."""

    serial: str
    raw_files: int = 0
    sessions: int = 0
    differences: list[Difference] = field(default_factory=list)
    # Why the pump cannot be rewritten from its raw files (None: it can).
    blocked: str | None = None
    rewrite_sessions: list[_Rebuilt] = field(default_factory=list)
    rewrite_evidence: list[queries.EvidenceRecord] = field(default_factory=list)


class Replayer:
    """Replays one database against its raw store with the current parsers and rules."""

    def __init__(
        self,
        engine: Engine,
        store: RawStore,
        rules: Rules,
        *,
        actor: str = audit.SYSTEM_ACTOR,
        decode: Callable[[bytes, str], Incoming] = decode_export,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.engine = engine
        self.store = store
        self.rules = rules
        self.actor = actor
        self._decode = decode
        self._clock = clock
        # Writes rows exactly as an import does (--apply).
        self._importer = Importer(engine, store, rules, clock=clock, actor=actor)

    # -- entry point ----------------------------------------------------------

    def run(
        self,
        *,
        pump: str | None = None,
        since: date | None = None,
        apply: bool = False,
        report: Callable[[Difference], None] | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> ReplayReport:
        """Replay every pump (or one serial), sessions starting on or after `since` (UTC).

        `report` sees each difference as it is found; `progress(done, total)` each pump done.
        """
        result = ReplayReport()
        since_utc = None if since is None else datetime.combine(since, time())

        def found(differences: Sequence[Difference]) -> None:
            result.differences.extend(differences)
            if report is not None:
                for difference in differences:
                    report(difference)

        with self.engine.connect() as connection:
            if pump is None:
                pump_ids = queries.all_pump_ids(connection)
            else:
                pk = queries.pump_pk(connection, pump)
                pump_ids = [] if pk is None else [pk]
                result.pump_found = pk is not None
        if apply:
            for done, pump_id in enumerate(pump_ids, 1):
                self._apply_pump(pump_id, since_utc, result, found)
                if progress is not None:
                    progress(done, len(pump_ids))
        else:
            for first in range(0, len(pump_ids), PUMP_BATCH):
                batch = pump_ids[first : first + PUMP_BATCH]
                with self._snapshot() as connection:
                    serials = self._serials(connection, batch)
                    for pump_id, stored in _pump_sessions(connection, batch).items():
                        replayed = self._replay_pump(serials[pump_id], stored, since_utc)
                        self._count(result, replayed)
                        found(replayed.differences)
                if progress is not None:
                    progress(first + len(batch), len(pump_ids))
        found(self._refused(pump, since_utc, result, apply=apply))
        if pump is None and since is None:
            found(self._against_audit_log())
        self._record_run(result, pump=pump, since=since, apply=apply)
        return result

    # -- reading ----------------------------------------------------------------

    @contextmanager
    def _snapshot(self) -> Iterator[Connection]:
        """A read transaction: one consistent view of the batch on both backends."""
        with self.engine.connect() as connection:
            if connection.dialect.name == "postgresql":
                connection.execution_options(isolation_level="REPEATABLE READ")
            with connection.begin():
                yield connection

    @staticmethod
    def _serials(connection: Connection, pump_ids: Sequence[int]) -> dict[int, str]:
        rows = connection.execute(
            select(pumps.c.id, pumps.c.serial).where(pumps.c.id.in_(pump_ids))
        )
        return {int(pump_id): str(serial) for pump_id, serial in rows}

    def _read(self, raw: _Raw, whose: str) -> tuple[bytes | None, Difference | None]:
        """The raw bytes checked against their SHA-256, or the finding why not.

        `whose` says what the file is, for the report: `stored session ID`, `refused`.
        """
        try:
            return self.store.get(raw.sha256), None
        except OSError as exc:
            return None, Difference(
                RAW_MISSING, raw.sha256, message=f"cannot be read ({whose}): {exc.strerror}"
            )
        except RawStoreError:
            if not self.store.contains(raw.sha256):
                return None, Difference(
                    RAW_MISSING, raw.sha256, message=f"not in the raw store ({whose})"
                )
            data = self.store.path_for(raw.sha256).read_bytes()
            return None, Difference(
                TAMPERED,
                raw.sha256,
                message=f"bytes hash to {sha256_hex(data)[:12]}, not to their name "
                f"({whose}): edited after import",
            )

    # -- one pump -----------------------------------------------------------------

    def _replay_pump(
        self, serial: str, chain: Sequence[_Stored], since: datetime | None
    ) -> _PumpReplay:
        replayed = _PumpReplay(serial)
        in_scope = [s for s in chain if since is None or s.start_utc >= since]
        if not in_scope:
            return replayed
        first = chain.index(in_scope[0])
        scope = {s.pk for s in in_scope}
        replayed.sessions = len(in_scope)
        rebuilt: list[_Rebuilt] = []
        # The history the first session in scope reads (§7.11) is decoded too, newest
        # first back to the latest session whose file holds a refill; nothing older.
        for stored in reversed(chain[:first]):
            earlier = self._rebuild(stored, replayed)
            if earlier is not None:
                rebuilt.append(earlier)
            if earlier is None or earlier.has_refill:
                break
        for stored in chain[first:]:
            one = self._rebuild(stored, replayed)
            if one is None:
                continue
            rebuilt.append(one)
            session_diffs = compare_session(one, serial)
            replayed.differences.extend(session_diffs)
            if session_diffs:
                replayed.rewrite_sessions.append(one)
        if replayed.blocked is None:
            replayed.blocked = _moved(rebuilt, serial)
        if replayed.blocked is not None:
            return replayed
        rebuilt.sort(key=lambda r: (r.now.session.session_start_utc, r.now.session.session_id))
        now = self._clock()
        for item, prior, history in chain_walk(rebuilt, lambda r: r.now.session.session_start_utc):
            if item.stored.pk not in scope:
                continue
            record = evidence_record(
                item.now.session,
                [h.now.session for h in history],
                self.rules,
                session_pk=item.stored.pk,
                prior_session_pk=None if prior is None else prior.stored.pk,
                conflicting_exports=item.now.conflicting,
                derived_at=now,
            )
            evidence_diffs = compare_evidence(item.stored, record)
            replayed.differences.extend(evidence_diffs)
            if evidence_diffs:
                replayed.rewrite_evidence.append(record)
        return replayed

    def _rebuild(self, stored: _Stored, replayed: _PumpReplay) -> _Rebuilt | None:
        """The session as the pipeline would store it from its raw files; None when it cannot."""
        if not stored.raws:
            replayed.differences.append(
                Difference(
                    NO_RAW_FILE,
                    stored.session_id,
                    message="no raw file is linked to this session: it cannot be replayed",
                )
            )
            replayed.blocked = "a session has no raw file"
            return None
        exports: list[Incoming] = []
        for raw in stored.raws:
            replayed.raw_files += 1
            data, problem = self._read(raw, f"stored session {stored.session_id}")
            if problem is not None:
                replayed.differences.append(problem)
                replayed.blocked = "a raw file is missing or tampered"
                continue
            try:
                exports.append(self._decode(data or b"", raw.name))
            except DecodeError as exc:
                replayed.differences.append(
                    Difference(
                        UNDECODABLE,
                        raw.sha256,
                        message=f"imported before, refused now (stored session "
                        f"{stored.session_id}): {exc.code}",
                    )
                )
                replayed.blocked = "a raw file no longer decodes"
        if len(exports) != len(stored.raws):
            return None
        return _Rebuilt(stored, export_in_use(exports))

    # -- --apply ----------------------------------------------------------------

    def _apply_pump(
        self,
        pump_id: int,
        since: datetime | None,
        result: ReplayReport,
        found: Callable[[Sequence[Difference]], None],
    ) -> None:
        """Replay one pump and rewrite what differs, in one write transaction."""
        with write_transaction(self.engine) as connection:
            # Importers of this pump wait until it is rewritten (as they wait for each other).
            queries.lock_pump(connection, pump_id)
            serial = self._serials(connection, [pump_id])[pump_id]
            chain = _pump_sessions(connection, [pump_id])[pump_id]
            replayed = self._replay_pump(serial, chain, since)
            self._count(result, replayed)
            found(replayed.differences)
            if not replayed.differences:
                return
            if replayed.blocked is not None:
                result.not_applied.append(f"pump {serial}: not rewritten: {replayed.blocked}")
                return
            for one in replayed.rewrite_sessions:
                self._importer.replace_session(
                    connection, one.stored.pk, one.now.export, one.stored.pump_id
                )
                connection.execute(
                    update(sessions)
                    .where(sessions.c.id == one.stored.pk)
                    .values(conflicting_exports=one.now.conflicting)
                )
            queries.replace_evidence(connection, replayed.rewrite_evidence)
            result.rewritten_sessions += len(replayed.rewrite_sessions)
            result.rewritten_evidence += len(replayed.rewrite_evidence)
            audit.append(
                connection,
                actor=self.actor,
                action=audit.REPLAY_APPLY,
                target=f"pump#{pump_id}",
                detail={
                    "sessions_rewritten": sorted(
                        r.stored.session_id for r in replayed.rewrite_sessions
                    ),
                    "evidence_rewritten": len(replayed.rewrite_evidence),
                    "fields": _field_counts(replayed.differences),
                    "parser_version": PARSER_VERSION,
                    "rules_version": self.rules.version,
                },
            )

    @staticmethod
    def _count(result: ReplayReport, replayed: _PumpReplay) -> None:
        if replayed.sessions:
            result.pumps += 1
        result.sessions += replayed.sessions
        result.raw_files += replayed.raw_files
        if replayed.blocked is not None:
            result.unchecked.append(
                f"pump {replayed.serial}: evidence not derived again: {replayed.blocked}"
            )

    # -- refused files -------------------------------------------------------

    def _refused(
        self, pump: str | None, since: datetime | None, result: ReplayReport, *, apply: bool
    ) -> list[Difference]:
        """Refused files decoded again: a changed error or a file that decodes now."""
        query = select(
            raw_files.c.id, raw_files.c.sha256, raw_files.c.name, raw_files.c.error_code
        ).where(raw_files.c.status == "refused")
        if since is not None:
            query = query.where(raw_files.c.received_at >= since)
        with self.engine.connect() as connection:
            rows = list(connection.execute(query.order_by(raw_files.c.id)))
        found: list[Difference] = []
        for raw_id, digest, name, old_code in rows:
            raw = _Raw(raw_id, digest, name)
            data, problem = self._read(raw, "a refused file")
            if problem is not None:
                if pump is None:
                    result.raw_files += 1
                    found.append(problem)
                continue
            try:
                export = self._decode(data or b"", name)
            except DecodeError as exc:
                if pump is not None:
                    continue
                result.raw_files += 1
                if exc.code != old_code:
                    found.append(Difference(REFUSAL, digest, "error_code", old_code, exc.code))
                    if apply:
                        self._rewrite_refusal(raw_id, digest, exc)
                continue
            if pump is not None and export.session.pump.serial != pump:
                continue
            result.raw_files += 1
            found.append(
                Difference(
                    REFUSAL,
                    digest,
                    message=f"refused before ({old_code}), decodes now to session "
                    f"{export.session.session_id}: replay does not import it",
                )
            )
            if apply:
                result.not_applied.append(f"raw {digest[:12]}: decodes now; not imported by replay")
        return found

    def _rewrite_refusal(self, raw_id: int, digest: str, exc: DecodeError) -> None:
        with write_transaction(self.engine) as connection:
            connection.execute(
                update(raw_files)
                .where(raw_files.c.id == raw_id)
                .values(
                    error_code=exc.code,
                    error=dumps({**exc.as_dict(), "text": str(exc)}),
                    parser_version=PARSER_VERSION,
                )
            )
            audit.append(
                connection,
                actor=self.actor,
                action=audit.REPLAY_APPLY,
                target=digest,
                detail={"refusal_rewritten": exc.code, "parser_version": PARSER_VERSION},
            )

    # -- the audit log against what is stored -------------------------------

    def _against_audit_log(self) -> list[Difference]:
        """The audit log's import and quarantine entries against what is stored, both ways.

        A session or raw file the log names must be stored (else it was deleted). A
        raw file stored after the first one the log names must be named by the log
        (else its row was added behind the importer's back); files stored before
        the log's first import predate the audit log and are not asked for.
        """
        log_table = audit.audit_log
        with self.engine.connect() as connection:
            entries = connection.execute(
                select(log_table.c.action, log_table.c.target, log_table.c.detail)
                .where(log_table.c.action.in_((audit.IMPORT, audit.QUARANTINE)))
                .order_by(log_table.c.id)
            )
            audited_sessions: dict[str, None] = {}
            audited_raws: dict[str, None] = {}
            for action, target, detail_text in entries:
                digest = _detail(detail_text).get("sha256")
                if isinstance(digest, str):
                    audited_raws[digest] = None
                if action == audit.IMPORT and target:
                    audited_sessions[target] = None
            have_sessions = _existing(connection, sessions.c.session_id, list(audited_sessions))
            stored_raws = list(
                connection.execute(
                    select(raw_files.c.id, raw_files.c.sha256).order_by(raw_files.c.id)
                )
            )
        found = [
            Difference(
                NOT_STORED,
                session_id,
                message="the audit log records its import, but it is not stored (deleted)",
            )
            for session_id in audited_sessions
            if session_id not in have_sessions
        ]
        have_raws = {digest for _id, digest in stored_raws}
        found.extend(
            Difference(
                RAW_NOT_STORED,
                digest,
                message="the audit log records this raw file, but `raw_files` has no row "
                "for it (deleted)",
            )
            for digest in audited_raws
            if digest not in have_raws
        )
        first = next((raw_id for raw_id, digest in stored_raws if digest in audited_raws), None)
        if first is not None:
            found.extend(
                Difference(
                    UNAUDITED,
                    digest,
                    message="stored, but the audit log has no import or quarantine entry "
                    "for it (added outside pumptrail, or its entry was removed)",
                )
                for raw_id, digest in stored_raws
                if raw_id > first and digest not in audited_raws
            )
        return found

    def _record_run(
        self, result: ReplayReport, *, pump: str | None, since: date | None, apply: bool
    ) -> None:
        with write_transaction(self.engine) as connection:
            audit.append(
                connection,
                actor=self.actor,
                action=audit.REPLAY_APPLY if apply else audit.REPLAY_VERIFY,
                target="run",
                detail={
                    "pump_filter": pump is not None,
                    "since": None if since is None else since.isoformat(),
                    "raw_files": result.raw_files,
                    "sessions": result.sessions,
                    "pumps": result.pumps,
                    "differences": len(result.differences),
                    "sessions_differing": result.differing_sessions,
                    "kinds": dict(Counter(d.kind for d in result.differences)),
                    "rewritten_sessions": result.rewritten_sessions,
                    "rewritten_evidence": result.rewritten_evidence,
                    "parser_version": PARSER_VERSION,
                    "rules_version": self.rules.version,
                },
            )


def _detail(text_value: str) -> dict[str, Any]:
    try:
        value = loads(text_value)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _existing(connection: Connection, column: Any, values: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for first in range(0, len(values), 500):
        chunk = values[first : first + 500]
        found.update(connection.execute(select(column).where(column.in_(chunk))).scalars())
    return found


def _moved(rebuilt: Sequence[_Rebuilt], serial: str) -> str | None:
    """Why a pump's chain cannot be re-derived in place (a session changed pump or ID)."""
    for one in rebuilt:
        if one.now.session.pump.serial != serial:
            return f"session {one.stored.session_id} decodes to another pump now"
        if one.now.session.session_id != one.stored.session_id:
            return f"a raw file of session {one.stored.session_id} decodes to another session"
    return None


def _field_counts(differences: Sequence[Difference]) -> dict[str, int]:
    """How often each field differs: names only, no values (audit detail)."""
    counts: Counter[str] = Counter()
    for difference in differences:
        # events[3].data.new -> events[].data.new: field names, not positions.
        name = difference.field or difference.kind
        counts[_generic(name)] += 1
    return dict(sorted(counts.items()))


def _generic(name: str) -> str:
    out: list[str] = []
    skipping = False
    for char in name:
        if char == "[":
            skipping = True
            out.append("[")
        elif char == "]":
            skipping = False
            out.append("]")
        elif not skipping:
            out.append(char)
    return "".join(out)


# ---------------------------------------------------------------------------
# Comparing


def compare_session(one: _Rebuilt, serial: str) -> list[Difference]:
    """The stored session rows against those the pipeline would write now."""
    stored, export = one.stored, one.now.export
    subject = stored.session_id
    found: list[Difference] = []
    expected = session_columns(export.session, export.document)
    expected.update(
        source_sha256=export.digest,
        source_name=export.name,
        conflicting_exports=one.now.conflicting,
        parser_version=PARSER_VERSION,
    )
    for column, new in expected.items():
        if column == "document":
            continue
        old = stored.row.get(column, ABSENT)
        if not same_value(old, new):
            found.append(Difference(SESSION, subject, f"sessions.{column}", old, new))
    if export.session.pump.serial != serial:
        found.append(
            Difference(SESSION, subject, "pump.serial", serial, export.session.pump.serial)
        )
    found.extend(
        _document_differences(
            SESSION, subject, "document", stored.row["document"], expected["document"]
        )
    )

    new_settings = {
        (row["phase"], row["param"]): row["value"]
        for row in setting_rows(stored.pk, export.session, export.document)
    }
    for key in [*stored.settings, *(k for k in new_settings if k not in stored.settings)]:
        old_text, new_text = stored.settings.get(key), new_settings.get(key)
        if old_text == new_text:
            continue
        phase, param = key
        found.append(
            Difference(
                SETTING,
                subject,
                f"setting_values.{PHASE_NAMES.get(phase, phase)}.{param}",
                ABSENT if old_text is None else _json(old_text),
                ABSENT if new_text is None else _json(new_text),
            )
        )

    new_events = {row["seq"]: row for row in event_rows(stored.pk, export.session, export.document)}
    for seq in sorted(set(stored.events) | set(new_events)):
        old_row, new_row = stored.events.get(seq), new_events.get(seq)
        if old_row is None or new_row is None:
            found.append(
                Difference(
                    EVENT,
                    subject,
                    f"events[{seq}]",
                    ABSENT if old_row is None else _json(old_row["data"]),
                    ABSENT if new_row is None else _json(new_row["data"]),
                )
            )
            continue
        for column, new in new_row.items():
            if column in ("session_pk", "seq", "data"):
                continue
            if not same_value(old_row.get(column), new):
                found.append(
                    Difference(EVENT, subject, f"events[{seq}].{column}", old_row.get(column), new)
                )
        found.extend(
            _document_differences(
                EVENT, subject, f"events[{seq}].data", old_row["data"], new_row["data"]
            )
        )
    return found


def compare_evidence(stored: _Stored, record: queries.EvidenceRecord) -> list[Difference]:
    """The stored evidence row and flags against the evidence derived now."""
    subject = stored.session_id
    row = stored.evidence
    if row is None:
        code = _json(record.document).get("codes", {})
        summary = ", ".join(f"{name} {value.get('procedure')}" for name, value in code.items())
        return [
            Difference(
                EVIDENCE_MISSING,
                subject,
                "evidence",
                message=f"no stored evidence row (derived now: {summary or 'no codes'})",
            )
        ]
    found: list[Difference] = []
    expected = {
        "prior_session_pk": record.prior_session_pk,
        "procedure": record.procedure,
        "flags": queries.flags_text(record.flags),
        "rules_version": record.rules_version,
        "parser_version": record.parser_version,
    }
    for column, new in expected.items():
        old = row.get(column, ABSENT)
        if not same_value(old, new):
            found.append(Difference(EVIDENCE, subject, f"evidence.{column}", old, new))
    found.extend(
        _document_differences(
            EVIDENCE, subject, "evidence.document", row["document"], record.document
        )
    )
    if stored.flags != set(record.flags):
        found.append(
            Difference(
                EVIDENCE, subject, "evidence_flags", sorted(stored.flags), sorted(record.flags)
            )
        )
    return found


def _json(text_value: str) -> Any:
    try:
        return loads(text_value)
    except ValueError:
        return text_value


def _document_differences(
    kind: str, subject: str, where: str, old_text: str, new_text: str
) -> list[Difference]:
    if old_text == new_text:
        return []
    old, new = _json(old_text), _json(new_text)
    found = [
        Difference(kind, subject, path, old_value, new_value)
        for path, old_value, new_value in json_differences(old, new, where)
    ]
    if not found:  # same JSON, other text: the stored text was rewritten
        found.append(
            Difference(kind, subject, where, message="stored JSON text differs in form only")
        )
    return found
