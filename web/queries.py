"""The web view's queries: the session list, one session, a pump's timeline, imports.

The session list stays fast at 1,000,000 sessions (issue "web view" item 3):

- pagination is keyset, never OFFSET: a page is "the next N after this (start,
  session ID)", one index range read whatever the page number. The order is the
  chain order of docs/coding-rules.md §7.5 (session start UTC, then session ID),
  newest or oldest first, or pump serial first;
- the total is counted only up to `COUNT_CAP` ("10,000+"), a bounded index read
  (a date range alone: from the start index, reading table rows only near the
  range's two ends); several common filters together have no bounded count and
  show none;
- each filter has an index: date range on `ix_sessions_start` (the range is
  widened by the largest UTC offset, then checked exactly on the programmer's
  local date), pump serial on `ix_sessions_chain`, patient ID on
  `ix_sessions_patient`, the default profile's code on `ix_evidence_procedure`,
  another profile's code on `ix_evidence_codes_profile` (`evidence_codes`,
  migration 0003), a flag on `ix_evidence_flags_flag`;
- the plan is chosen here, not left to chance: with a pump or patient filter the
  few matching sessions are read through that index; otherwise, when a code or
  flag filter matches fewer than `DRIVER_CAP` sessions (a bounded count), the
  matches are read through that filter's index and sorted; otherwise the start
  index is walked newest first and each session probed by primary key, which
  fills a page after about page size / selectivity probes, and never more than
  `SCAN_WINDOW` of them: a page that searched that far ends there, says so, and
  its Next link goes on from where it stopped. The walk is pinned to the start
  index by writing the pump join key `pump_id + 0` (no index serves it), so
  SQLite cannot choose to walk every pump and sort.

`evidence_codes` rows are written with the evidence, in the same transaction
(`db.queries.replace_evidence`, from the import pipeline and replay --apply).
`sync_codes` fills in rows that something else left out (a database bulk-loaded
by hand or by a benchmark); the web app runs it at start and then every minute.
Storing evidence again deletes the old rows (ON DELETE CASCADE from `evidence`),
so a row is never stale. The codes a page shows are
always read from the evidence document.
Patient identifiers are filter values here and nothing else: never logged.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Final, Literal

from sqlalchemy import (
    ColumnElement,
    CompoundSelect,
    Select,
    and_,
    delete,
    exists,
    false,
    func,
    insert,
    literal,
    or_,
    select,
    union_all,
)
from sqlalchemy.engine import Connection

from db.codec import loads
from db.models import events, evidence, evidence_flags, pumps, raw_files, sessions
from db.users import evidence_codes

Sort = Literal["newest", "oldest", "pump"]
SORTS: Final[tuple[Sort, ...]] = ("newest", "oldest", "pump")
COUNT_CAP: Final = 10_000
# A code or flag filter matching at most this many sessions drives the query.
DRIVER_CAP: Final = 4_000
# Sessions a page examines along the start index when every filter is common.
SCAN_WINDOW: Final = 20_000
# Largest distance between programmer-local time and UTC (UTC-12 to UTC+14).
MAX_UTC_OFFSET: Final = timedelta(hours=14, minutes=1)
PAGE_SIZES: Final = (25, 50, 100, 200)
DEFAULT_PAGE_SIZE: Final = 50

# Session flags a list can filter on (docs/session-json.md "Evidence").
SESSION_FLAGS: Final = (
    "critical_alarm",
    "battery_eri",
    "changed_outside_sessions",
    "discrepancy_over_threshold",
    "no_prior_session",
    "chain_gap",
    "conflicting_exports",
)
PROCEDURES: Final = ("62367", "62368", "62369", "62370", "95990", "95991")


class BadCursor(ValueError):
    """A page cursor that this list did not issue."""


@dataclass(frozen=True, slots=True)
class SessionFilter:
    """The list's filters; every field optional. Dates are the programmer's local dates."""

    date_from: date | None = None
    date_to: date | None = None
    pump_serial: str | None = None
    patient_id: str | None = None
    profile: str | None = None
    procedure: str | None = None
    flags: tuple[str, ...] = ()
    flagged: bool = False
    sort: Sort = "newest"

    def active(self) -> list[str]:
        """Names of the filters in use (what an audit row may record: never values)."""
        names = []
        for name in ("date_from", "date_to", "pump_serial", "patient_id", "procedure"):
            if getattr(self, name) not in (None, ""):
                names.append(name)
        if self.flags:
            names.append("flags")
        if self.flagged:
            names.append("flagged")
        return names


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a page starts: the chain key of the row next to it, and the direction."""

    start_utc: datetime
    session_id: str
    serial: str
    # "after": the rows following this key in list order; "before": preceding it.
    direction: Literal["after", "before"]
    # Beyond the whole instant `start_utc` (a scan window ended there).
    edge: bool = False

    def encode(self) -> str:
        direction = self.direction[0] + ("e" if self.edge else "")
        raw = json.dumps(
            [direction, self.start_utc.isoformat(), self.session_id, self.serial],
            separators=(",", ":"),
        ).encode("utf-8")
        return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")

    @staticmethod
    def decode(text: str) -> Cursor:
        try:
            padded = text + "=" * (-len(text) % 4)
            raw = base64.urlsafe_b64decode(padded.encode("ascii"))
            direction, start, session_id, serial = json.loads(raw.decode("utf-8"))
            if direction not in ("a", "b", "ae", "be") or not isinstance(session_id, str):
                raise BadCursor("not a page cursor")
            if not isinstance(serial, str) or not isinstance(start, str):
                raise BadCursor("not a page cursor")
            return Cursor(
                datetime.fromisoformat(start),
                session_id,
                serial,
                "after" if direction[0] == "a" else "before",
                edge=direction.endswith("e"),
            )
        except (ValueError, TypeError, UnicodeError, binascii.Error) as exc:
            raise BadCursor("not a page cursor") from exc


@dataclass(frozen=True, slots=True)
class ListRow:
    """One row of the session list."""

    pk: int
    session_id: str
    start_utc: datetime
    start_local: datetime
    utc_offset_min: int
    pump_serial: str
    pump_model: str
    patient_id: str | None
    patient_name: str | None
    operator_id: str
    operator_role: str
    has_refill: bool
    conflicting_exports: bool
    # From the evidence document: profile -> procedure (empty without evidence).
    codes: Mapping[str, str | None]
    flags: tuple[str, ...]
    has_evidence: bool


@dataclass(frozen=True, slots=True)
class Page:
    rows: list[ListRow]
    next_cursor: str | None
    prev_cursor: str | None
    # Matching sessions, counted up to COUNT_CAP; `count_capped` when there are more;
    # None when no bounded count exists for these filters (several common ones).
    count: int | None
    count_capped: bool
    plan: str = ""
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------
# Filters and the plan


@dataclass(frozen=True, slots=True)
class _EvidenceFilter:
    label: str
    # Session pks matching, read through the filter's own index.
    matching: Select[Any]
    # The same test for one session (primary-key probes).
    probe: ColumnElement[bool]


def _code_filter(profile: str, default_profile: str, procedure: str) -> _EvidenceFilter:
    if profile == default_profile:
        return _EvidenceFilter(
            f"code:{profile}",
            select(evidence.c.session_pk).where(evidence.c.procedure == procedure),
            exists().where(
                evidence.c.session_pk == sessions.c.id, evidence.c.procedure == procedure
            ),
        )
    return _EvidenceFilter(
        f"code:{profile}",
        select(evidence_codes.c.session_pk).where(
            evidence_codes.c.profile == profile, evidence_codes.c.procedure == procedure
        ),
        exists().where(
            evidence_codes.c.session_pk == sessions.c.id,
            evidence_codes.c.profile == profile,
            evidence_codes.c.procedure == procedure,
        ),
    )


def _flag_filter(flag: str) -> _EvidenceFilter:
    return _EvidenceFilter(
        f"flag:{flag}",
        select(evidence_flags.c.session_pk).where(evidence_flags.c.flag == flag),
        exists().where(evidence_flags.c.session_pk == sessions.c.id, evidence_flags.c.flag == flag),
    )


def _evidence_filters(flt: SessionFilter, default_profile: str) -> list[_EvidenceFilter]:
    found = []
    if flt.procedure:
        found.append(_code_filter(flt.profile or default_profile, default_profile, flt.procedure))
    found += [_flag_filter(flag) for flag in flt.flags]
    if flt.flagged:
        found.append(
            _EvidenceFilter(
                "flagged",
                # A flagged session has evidence_flags rows (their primary key leads
                # with session_pk: a distinct walk of it, and a probe by prefix).
                select(evidence_flags.c.session_pk).distinct(),
                exists().where(evidence_flags.c.session_pk == sessions.c.id),
            )
        )
    return found


Countable = Select[Any] | CompoundSelect[Any]


def _capped_count(connection: Connection, query: Countable, cap: int) -> int:
    """Rows of `query`, counted up to `cap` + 1 (a bounded read)."""
    inner = query.limit(cap + 1).subquery()
    return int(connection.execute(select(func.count()).select_from(inner)).scalar_one())


@dataclass(frozen=True, slots=True)
class _Plan:
    name: str
    conditions: list[ColumnElement[bool]]
    # Conditions on the start index alone (the window bound reads only the index).
    start_conditions: list[ColumnElement[bool]]
    # What to count (capped) for the total; None when no bounded count exists.
    count_query: Countable | None
    # Walk the start index within a bounded window (see `SCAN_WINDOW`).
    windowed: bool


def _count_of(flt: SessionFilter, conditions: Sequence[ColumnElement[bool]]) -> Countable:
    """What the total counts: the sessions matching, joined to pumps only when needed."""
    if flt.pump_serial:
        return _base([literal(1)]).where(*conditions)
    return select(literal(1)).select_from(sessions).where(*conditions)


def _date_count(flt: SessionFilter, conditions: Sequence[ColumnElement[bool]]) -> Countable:
    """The count of a date range alone, reading table rows only near its two ends.

    A session starting more than the largest UTC offset inside the range is in it
    whatever its offset: those are counted from the start index alone; only the
    ones near either end have their programmer-local date checked.
    """
    start = sessions.c.session_start_utc
    low = high = None
    if flt.date_from is not None:
        low = datetime.combine(flt.date_from, datetime.min.time()) + MAX_UTC_OFFSET
    if flt.date_to is not None:
        high = datetime.combine(flt.date_to + timedelta(days=1), datetime.min.time())
        high -= MAX_UTC_OFFSET
    if (low is not None and high is not None and low >= high) or (
        flt.date_from and flt.date_to and flt.date_from > flt.date_to
    ):
        return _count_of(flt, conditions)
    inside = [
        c
        for c in (None if low is None else start >= low, None if high is None else start < high)
        if c is not None
    ]
    outside = [
        c
        for c in (None if low is None else start < low, None if high is None else start >= high)
        if c is not None
    ]
    interior = select(literal(1)).select_from(sessions).where(*inside)
    edges = select(literal(1)).select_from(sessions).where(*conditions, or_(*outside))
    return union_all(interior, edges)


def _plan(connection: Connection, flt: SessionFilter, default_profile: str) -> _Plan:
    """The WHERE conditions and the driving index (see the module docstring)."""
    start_conditions: list[ColumnElement[bool]] = []
    conditions: list[ColumnElement[bool]] = []
    if flt.date_from is not None:
        start = datetime.combine(flt.date_from, datetime.min.time())
        start_conditions.append(sessions.c.session_start_utc >= start - MAX_UTC_OFFSET)
        conditions.append(sessions.c.session_start_local >= start)
    if flt.date_to is not None:
        end = datetime.combine(flt.date_to + timedelta(days=1), datetime.min.time())
        start_conditions.append(sessions.c.session_start_utc < end + MAX_UTC_OFFSET)
        conditions.append(sessions.c.session_start_local < end)
    if flt.date_from and flt.date_to and flt.date_from > flt.date_to:
        conditions.append(false())
    conditions = start_conditions + conditions
    if flt.pump_serial:
        conditions.append(pumps.c.serial == flt.pump_serial)
    if flt.patient_id:
        conditions.append(sessions.c.patient_id == flt.patient_id)
    filters = _evidence_filters(flt, default_profile)

    if flt.pump_serial or flt.patient_id or not filters:
        # A pump or a patient has few sessions; no evidence filter: the start index.
        conditions += [f.probe for f in filters]
        name = "pump" if flt.pump_serial else "patient" if flt.patient_id else "start-index"
        dates_only = name == "start-index" and bool(start_conditions)
        counted = _date_count(flt, conditions) if dates_only else _count_of(flt, conditions)
        return _Plan(name, conditions, start_conditions, counted, False)

    counts = [_capped_count(connection, f.matching, DRIVER_CAP) for f in filters]
    smallest = min(range(len(counts)), key=counts.__getitem__)
    if counts[smallest] <= DRIVER_CAP:
        driver = filters[smallest]
        conditions.append(sessions.c.id.in_(driver.matching))
        conditions += [f.probe for i, f in enumerate(filters) if i != smallest]
        alone = len(filters) == 1 and len(conditions) == 1
        driven = driver.matching if alone else _count_of(flt, conditions)
        return _Plan(driver.label, conditions, start_conditions, driven, False)

    # Every evidence filter is common: walk the start index, probing each session.
    conditions += [f.probe for f in filters]
    alone = len(filters) == 1 and not start_conditions
    count: Countable | None = filters[0].matching if alone else None
    return _Plan("start-window", conditions, start_conditions, count, flt.sort != "pump")


# ---------------------------------------------------------------------------
# Keyset order


def _ascending(sort: Sort, backwards: bool) -> bool:
    """Whether the query walks the chain key upwards."""
    return (sort != "newest") != backwards


def _order(sort: Sort, reverse: bool) -> list[Any]:
    descending = not _ascending(sort, reverse)
    keys: list[Any] = []
    if sort == "pump":
        keys.append(pumps.c.serial.desc() if reverse else pumps.c.serial.asc())
    for column in (sessions.c.session_start_utc, sessions.c.session_id):
        keys.append(column.desc() if descending else column.asc())
    return keys


def _beyond(cursor: Cursor, sort: Sort) -> ColumnElement[bool]:
    """Rows after (or before) the cursor's key in list order, spelled out for the index."""
    forward = cursor.direction == "after"
    ascending = _ascending(sort, not forward)
    start, sid = sessions.c.session_start_utc, sessions.c.session_id
    if cursor.edge:
        # Every session at the cursor's instant was already examined.
        return start > cursor.start_utc if ascending else start < cursor.start_utc

    def later(column: Any, value: Any) -> ColumnElement[bool]:
        return column > value if ascending else column < value  # type: ignore[no-any-return]

    within = or_(
        later(start, cursor.start_utc),
        and_(start == cursor.start_utc, later(sid, cursor.session_id)),
    )
    bound = start >= cursor.start_utc if ascending else start <= cursor.start_utc
    if sort != "pump":
        return and_(bound, within)
    serial = pumps.c.serial
    serial_later = serial > cursor.serial if forward else serial < cursor.serial
    serial_bound = serial >= cursor.serial if forward else serial <= cursor.serial
    return and_(serial_bound, or_(serial_later, and_(serial == cursor.serial, within)))


_LIST_COLUMNS = (
    sessions.c.id,
    sessions.c.session_id,
    sessions.c.session_start_utc,
    sessions.c.session_start_local,
    sessions.c.utc_offset_min,
    pumps.c.serial,
    sessions.c.pump_model,
    sessions.c.patient_id,
    sessions.c.patient_name,
    sessions.c.operator_id,
    sessions.c.operator_role,
    sessions.c.has_refill,
    sessions.c.conflicting_exports,
)


def _base(columns: Sequence[Any], *, start_driven: bool = False) -> Select[Any]:
    """Sessions joined to their pump.

    `start_driven`: the join key is written `pump_id + 0`, which no index serves, so
    the sessions are read along the start index and each pump found by its primary
    key (without it SQLite may walk every pump and sort: its statistics cannot know
    that a page needs only the newest 50 rows).
    """
    key = sessions.c.pump_id + 0 if start_driven else sessions.c.pump_id
    return select(*columns).select_from(sessions.join(pumps, pumps.c.id == key))


def _window_edge(
    connection: Connection, plan: _Plan, cursor: Cursor | None, ascending: bool
) -> datetime | None:
    """The start instant `SCAN_WINDOW` sessions away along the start index, or None (fewer)."""
    start = sessions.c.session_start_utc
    query = select(start).where(*plan.start_conditions)
    if cursor is not None:
        query = query.where(start >= cursor.start_utc if ascending else start <= cursor.start_utc)
    query = query.order_by(start.asc() if ascending else start.desc())
    edge: datetime | None = connection.execute(query.offset(SCAN_WINDOW - 1).limit(1)).scalar()
    return edge


def list_sessions(
    connection: Connection,
    flt: SessionFilter,
    *,
    default_profile: str,
    cursor: Cursor | None = None,
    limit: int = DEFAULT_PAGE_SIZE,
) -> Page:
    """One page of the session list (keyset pagination, see the module docstring)."""
    plan = _plan(connection, flt, default_profile)
    backwards = cursor is not None and cursor.direction == "before"
    ascending = _ascending(flt.sort, backwards)
    start_driven = plan.name in ("start-index", "start-window") and flt.sort != "pump"
    query = _base(_LIST_COLUMNS, start_driven=start_driven).where(*plan.conditions)
    if cursor is not None:
        query = query.where(_beyond(cursor, flt.sort))
    edge = _window_edge(connection, plan, cursor, ascending) if plan.windowed else None
    if edge is not None:
        start = sessions.c.session_start_utc
        query = query.where(start <= edge if ascending else start >= edge)
    query = query.order_by(*_order(flt.sort, backwards)).limit(limit + 1)
    fetched = list(connection.execute(query))
    more = len(fetched) > limit
    fetched = fetched[:limit]
    if backwards:
        fetched.reverse()
    documents = _evidence_of(connection, [int(row[0]) for row in fetched])
    rows = [_list_row(row, documents.get(int(row[0]))) for row in fetched]

    notes: list[str] = []
    # The window ended before the page filled: the page after it goes on beyond it.
    window_cut = edge is not None and not more
    if window_cut:
        notes.append(f"searched {SCAN_WINDOW:,} sessions for this page; more may match further on")
    onward: str | None = None
    if more and rows:
        row = rows[0] if backwards else rows[-1]
        onward = Cursor(
            row.start_utc, row.session_id, row.pump_serial, "before" if backwards else "after"
        ).encode()
    elif window_cut and edge is not None:
        onward = Cursor(edge, "", "", "before" if backwards else "after", edge=True).encode()
    # Back the way we came: the rows before the first one shown (after the last, backwards).
    back: str | None = None
    if cursor is not None and rows:
        row = rows[-1] if backwards else rows[0]
        back = Cursor(
            row.start_utc, row.session_id, row.pump_serial, "after" if backwards else "before"
        ).encode()
    next_cursor, prev_cursor = (back, onward) if backwards else (onward, back)
    count, capped = None, False
    if plan.count_query is not None:
        counted = _capped_count(connection, plan.count_query, COUNT_CAP)
        count, capped = min(counted, COUNT_CAP), counted > COUNT_CAP
    return Page(
        rows=rows,
        next_cursor=next_cursor,
        prev_cursor=prev_cursor,
        count=count,
        count_capped=capped,
        plan=plan.name,
        notes=notes,
    )


def _evidence_of(connection: Connection, pks: Sequence[int]) -> dict[int, Mapping[str, Any]]:
    if not pks:
        return {}
    rows = connection.execute(
        select(evidence.c.session_pk, evidence.c.document).where(evidence.c.session_pk.in_(pks))
    )
    return {int(pk): loads(text) for pk, text in rows}


def _list_row(row: Any, document: Mapping[str, Any] | None) -> ListRow:
    codes: dict[str, str | None] = {}
    flags: tuple[str, ...] = ()
    if document is not None:
        for profile, code in (document.get("codes") or {}).items():
            codes[str(profile)] = code.get("procedure") if isinstance(code, Mapping) else None
        flags = tuple(str(f) for f in document.get("flags") or ())
    return ListRow(
        pk=int(row[0]),
        session_id=row[1],
        start_utc=row[2],
        start_local=row[3],
        utc_offset_min=int(row[4]),
        pump_serial=row[5],
        pump_model=row[6],
        patient_id=row[7],
        patient_name=row[8],
        operator_id=row[9],
        operator_role=row[10],
        has_refill=bool(row[11]),
        conflicting_exports=bool(row[12]),
        codes=codes,
        flags=flags,
        has_evidence=document is not None,
    )


def bare_list_query(limit: int = DEFAULT_PAGE_SIZE) -> Select[Any]:
    """The list's first page as one bare query (the benchmark's baseline)."""
    return _base(_LIST_COLUMNS).order_by(*_order("newest", reverse=False)).limit(limit)


# ---------------------------------------------------------------------------
# The per-profile code index


def index_codes(
    connection: Connection, session_pk: int, evidence_document: Mapping[str, Any]
) -> None:
    """Write the `evidence_codes` rows of one session from its evidence document.

    Call it in the transaction that stores the evidence (after
    `db.queries.replace_evidence`): the rows hang off the `evidence` row, which
    must exist.
    """
    connection.execute(delete(evidence_codes).where(evidence_codes.c.session_pk == session_pk))
    rows = _code_rows(session_pk, evidence_document)
    if rows:
        connection.execute(insert(evidence_codes), rows)


def _code_rows(session_pk: int, document: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for profile, code in (document.get("codes") or {}).items():
        procedure = code.get("procedure") if isinstance(code, Mapping) else None
        rows.append(
            {
                "session_pk": session_pk,
                "profile": str(profile),
                "procedure": None if procedure is None else str(procedure),
            }
        )
    return rows


def unindexed_query(limit: int) -> Select[Any]:
    """Sessions whose evidence has no `evidence_codes` rows yet.

    Both sides are read through primary keys and `ix_evidence_procedure`, which
    covers `session_pk`: the check never reads an evidence document.
    """
    indexed = exists().where(evidence_codes.c.session_pk == evidence.c.session_pk)
    return select(evidence.c.session_pk).where(~indexed).limit(limit)


def code_index_counts(connection: Connection, profile: str) -> tuple[int, int]:
    """(evidence documents, sessions indexed under `profile`): two index-only counts.

    Equal when the index is complete (every evidence document codes the default
    profile); a cheap test before the anti-join of `unindexed_query`.
    """
    documents = connection.execute(select(func.count()).select_from(evidence)).scalar_one()
    indexed = connection.execute(
        select(func.count()).select_from(evidence_codes).where(evidence_codes.c.profile == profile)
    ).scalar_one()
    return int(documents), int(indexed)


def unindexed(connection: Connection, limit: int) -> list[int]:
    return [int(pk) for pk in connection.execute(unindexed_query(limit)).scalars()]


def index_sessions(connection: Connection, pks: Sequence[int]) -> None:
    """Write the `evidence_codes` rows of these sessions from their stored evidence."""
    if not pks:
        return
    connection.execute(delete(evidence_codes).where(evidence_codes.c.session_pk.in_(pks)))
    documents = connection.execute(
        select(evidence.c.session_pk, evidence.c.document).where(evidence.c.session_pk.in_(pks))
    )
    rows = [row for pk, text in documents for row in _code_rows(int(pk), loads(text))]
    if rows:
        connection.execute(insert(evidence_codes), rows)


def sync_codes(connection: Connection, *, batch: int = 5000) -> int:
    """Index the evidence that has no `evidence_codes` rows; returns sessions indexed.

    Reads at most `batch` sessions: call it again while it returns `batch`.
    """
    pks = unindexed(connection, batch)
    index_sessions(connection, pks)
    return len(pks)


# ---------------------------------------------------------------------------
# One session


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """Everything the evidence page reads of one stored session."""

    pk: int
    session_id: str
    pump_serial: str
    start_utc: datetime
    start_local: datetime
    utc_offset_min: int
    patient_id: str | None
    patient_name: str | None
    patient_birth_date: date | None
    operator_id: str
    operator_role: str
    clinic_id: str
    source_name: str
    source_sha256: str
    source_format: str
    parser_version: str
    imported_at: datetime
    conflicting_exports: bool
    document: Mapping[str, Any]
    evidence: Mapping[str, Any] | None
    rules_version: str | None
    evidence_parser_version: str | None
    derived_at: datetime | None
    prior_session_id: str | None
    prior_document: Mapping[str, Any] | None
    next_session_id: str | None


@dataclass(frozen=True, slots=True)
class RawFile:
    sha256: str
    size: int
    name: str
    source_format: str | None
    status: str
    error_code: str | None
    error: Mapping[str, Any] | None
    parser_version: str
    received_at: datetime
    session_id: str | None = None


@dataclass(frozen=True, slots=True)
class EventPosition:
    seq: int
    kind: str
    value: int


def session_record(connection: Connection, session_id: str) -> SessionRecord | None:
    """The stored session, its evidence, its prior session's document and its next session."""
    row = connection.execute(
        select(
            sessions.c.id,
            sessions.c.session_id,
            pumps.c.serial,
            sessions.c.session_start_utc,
            sessions.c.session_start_local,
            sessions.c.utc_offset_min,
            sessions.c.patient_id,
            sessions.c.patient_name,
            sessions.c.patient_birth_date,
            sessions.c.operator_id,
            sessions.c.operator_role,
            sessions.c.clinic_id,
            sessions.c.source_name,
            sessions.c.source_sha256,
            sessions.c.source_format,
            sessions.c.parser_version,
            sessions.c.imported_at,
            sessions.c.conflicting_exports,
            sessions.c.document,
            sessions.c.pump_id,
        )
        .select_from(sessions.join(pumps, pumps.c.id == sessions.c.pump_id))
        .where(sessions.c.session_id == session_id)
    ).first()
    if row is None:
        return None
    pk = int(row[0])
    ev = connection.execute(
        select(
            evidence.c.document,
            evidence.c.rules_version,
            evidence.c.parser_version,
            evidence.c.derived_at,
            evidence.c.prior_session_pk,
        ).where(evidence.c.session_pk == pk)
    ).first()
    prior_id = prior_doc = None
    if ev is not None and ev[4] is not None:
        prior = connection.execute(
            select(sessions.c.session_id, sessions.c.document).where(sessions.c.id == ev[4])
        ).first()
        if prior is not None:
            prior_id, prior_doc = prior[0], loads(prior[1])
    next_id = connection.execute(
        select(sessions.c.session_id)
        .where(
            sessions.c.pump_id == row[19],
            or_(
                sessions.c.session_start_utc > row[3],
                and_(
                    sessions.c.session_start_utc == row[3],
                    sessions.c.session_id > row[1],
                ),
            ),
        )
        .order_by(sessions.c.session_start_utc, sessions.c.session_id)
        .limit(1)
    ).scalar()
    return SessionRecord(
        pk=pk,
        session_id=row[1],
        pump_serial=row[2],
        start_utc=row[3],
        start_local=row[4],
        utc_offset_min=int(row[5]),
        patient_id=row[6],
        patient_name=row[7],
        patient_birth_date=row[8],
        operator_id=row[9],
        operator_role=row[10],
        clinic_id=row[11],
        source_name=row[12],
        source_sha256=row[13],
        source_format=row[14],
        parser_version=row[15],
        imported_at=row[16],
        conflicting_exports=bool(row[17]),
        document=loads(row[18]),
        evidence=None if ev is None else loads(ev[0]),
        rules_version=None if ev is None else ev[1],
        evidence_parser_version=None if ev is None else ev[2],
        derived_at=None if ev is None else ev[3],
        prior_session_id=prior_id,
        prior_document=prior_doc,
        next_session_id=next_id,
    )


def _raw_file(row: Any) -> RawFile:
    error = None
    if row[6]:
        try:
            parsed = loads(row[6])
        except ValueError:
            parsed = None
        error = parsed if isinstance(parsed, Mapping) else None
    return RawFile(
        sha256=row[0],
        size=int(row[1]),
        name=row[2],
        source_format=row[3],
        status=row[4],
        error_code=row[5],
        error=error,
        parser_version=row[7],
        received_at=row[8],
        session_id=row[9] if len(row) > 9 else None,
    )


_RAW_COLUMNS = (
    raw_files.c.sha256,
    raw_files.c.size,
    raw_files.c.name,
    raw_files.c.source_format,
    raw_files.c.status,
    raw_files.c.error_code,
    raw_files.c.error,
    raw_files.c.parser_version,
    raw_files.c.received_at,
)


def raw_files_of(connection: Connection, session_pk: int) -> list[RawFile]:
    """Every export file stored for a session (both formats, conflicting ones too)."""
    rows = connection.execute(
        select(*_RAW_COLUMNS)
        .where(raw_files.c.session_pk == session_pk)
        .order_by(raw_files.c.received_at, raw_files.c.id)
    )
    return [_raw_file(row) for row in rows]


def raw_file(connection: Connection, sha256: str) -> RawFile | None:
    row = connection.execute(select(*_RAW_COLUMNS).where(raw_files.c.sha256 == sha256)).first()
    return None if row is None else _raw_file(row)


def event_positions(connection: Connection, session_pk: int) -> list[EventPosition]:
    """Where each event sits in the export in use (byte offset or CSV line), in order."""
    rows = connection.execute(
        select(events.c.seq, events.c.position_kind, events.c.position_value)
        .where(events.c.session_pk == session_pk)
        .order_by(events.c.seq)
    )
    return [EventPosition(int(seq), str(kind), int(value)) for seq, kind, value in rows]


# ---------------------------------------------------------------------------
# A pump's timeline


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    session_id: str
    start_utc: datetime
    start_local: datetime
    utc_offset_min: int
    operator_id: str
    operator_role: str
    has_refill: bool
    document: Mapping[str, Any]
    procedure: str | None
    flags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PumpInfo:
    serial: str
    model: str
    patient_id: str | None
    patient_name: str | None


def pump_timeline(
    connection: Connection, serial: str, *, limit: int = 500
) -> tuple[PumpInfo, list[TimelineEntry]] | None:
    """The pump and its latest `limit` sessions in chain order (§7.5); None for no such pump."""
    pump = connection.execute(
        select(pumps.c.id, pumps.c.serial, pumps.c.model).where(pumps.c.serial == serial)
    ).first()
    if pump is None:
        return None
    rows = list(
        connection.execute(
            select(
                sessions.c.session_id,
                sessions.c.session_start_utc,
                sessions.c.session_start_local,
                sessions.c.utc_offset_min,
                sessions.c.operator_id,
                sessions.c.operator_role,
                sessions.c.has_refill,
                sessions.c.document,
                evidence.c.procedure,
                evidence.c.flags,
                sessions.c.patient_id,
                sessions.c.patient_name,
            )
            .select_from(sessions.outerjoin(evidence, evidence.c.session_pk == sessions.c.id))
            .where(sessions.c.pump_id == pump[0])
            .order_by(sessions.c.session_start_utc.desc(), sessions.c.session_id.desc())
            .limit(limit)
        )
    )
    rows.reverse()
    entries = [
        TimelineEntry(
            session_id=r[0],
            start_utc=r[1],
            start_local=r[2],
            utc_offset_min=int(r[3]),
            operator_id=r[4],
            operator_role=r[5],
            has_refill=bool(r[6]),
            document=loads(r[7]),
            procedure=r[8],
            flags=tuple((r[9] or "").split()),
        )
        for r in rows
    ]
    latest = rows[-1] if rows else None
    info = PumpInfo(
        serial=pump[1],
        model=pump[2],
        patient_id=None if latest is None else latest[10],
        patient_name=None if latest is None else latest[11],
    )
    return info, entries


# ---------------------------------------------------------------------------
# Refills due


@dataclass(frozen=True, slots=True)
class DueRow:
    pump_serial: str
    pump_model: str
    patient_id: str | None
    patient_name: str | None
    last_session_id: str
    last_start_local: datetime
    refill_date: date | None
    low_reservoir_alarm_date: date | None

    @property
    def due(self) -> date | None:
        """The earlier of the refill date and the low-reservoir alarm date."""
        dates = [d for d in (self.refill_date, self.low_reservoir_alarm_date) if d is not None]
        return min(dates) if dates else None


def _date_of(value: Any) -> date | None:
    if not isinstance(value, str):
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


def refills_due(connection: Connection, *, within: date) -> list[DueRow]:
    """Pumps whose latest session programmed a refill or alarm date on or before `within`.

    The end state of the latest session (docs/coding-rules.md §7.1: interrogated values
    overlaid with the programmed ones) gives the dates. Overdue first: ordered by
    due date, then pump serial. Pumps without dates are left out.
    """
    latest = (
        select(sessions.c.id)
        .where(sessions.c.pump_id == pumps.c.id)
        .order_by(sessions.c.session_start_utc.desc(), sessions.c.session_id.desc())
        .limit(1)
        .scalar_subquery()
    )
    rows = connection.execute(
        select(
            pumps.c.serial,
            pumps.c.model,
            sessions.c.patient_id,
            sessions.c.patient_name,
            sessions.c.session_id,
            sessions.c.session_start_local,
            sessions.c.document,
        )
        .select_from(pumps.join(sessions, sessions.c.id == latest))
        .order_by(pumps.c.serial)
    )
    due: list[DueRow] = []
    for serial, model, patient_id, patient_name, session_id, start_local, text in rows:
        document = loads(text)
        end_state = dict(document.get("interrogated") or {})
        end_state.update(document.get("programmed") or {})
        entry = DueRow(
            pump_serial=serial,
            pump_model=model,
            patient_id=patient_id,
            patient_name=patient_name,
            last_session_id=session_id,
            last_start_local=start_local,
            refill_date=_date_of(end_state.get("refill_date")),
            low_reservoir_alarm_date=_date_of(end_state.get("low_reservoir_alarm_date")),
        )
        if entry.due is not None and entry.due <= within:
            due.append(entry)
    due.sort(key=lambda r: (r.due or date.max, r.pump_serial))
    return due


# ---------------------------------------------------------------------------
# Imports


def recent_imports(connection: Connection, *, limit: int = 50) -> list[RawFile]:
    """The latest files offered for import, imported or refused, newest first."""
    rows = connection.execute(
        select(*_RAW_COLUMNS, sessions.c.session_id)
        .select_from(raw_files.outerjoin(sessions, sessions.c.id == raw_files.c.session_pk))
        .order_by(raw_files.c.id.desc())
        .limit(limit)
    )
    return [_raw_file(row) for row in rows]


def import_counts(connection: Connection) -> dict[str, int]:
    """Files by status (`imported`, `refused`) and stored sessions."""
    counts = {
        str(status): int(n)
        for status, n in connection.execute(
            select(raw_files.c.status, func.count()).group_by(raw_files.c.status)
        )
    }
    counts["sessions"] = int(
        connection.execute(select(func.count()).select_from(sessions)).scalar_one()
    )
    return counts
