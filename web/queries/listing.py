"""The session list: filters, the query plan, keyset pages and bounded counts.

The list stays fast at 1,000,000 sessions:

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
  local date), pump serial on the pumps' serial index or `ix_pumps_serial_upper`
  (in any case) and then `ix_sessions_chain`, patient on `ix_sessions_patient`
  (the exact ID), `ix_sessions_patient_lower` (the ID in any case) and
  `patient_names` + `ix_sessions_patient_name` (a part of the name, in any case;
  migration 0010), the default profile's code on `ix_evidence_procedure`,
  another profile's code on `ix_evidence_codes_profile` (`evidence_codes`,
  migration 0003), a flag on `ix_evidence_flags_flag`. The one exception is the
  read-time flag `no_payer_on_file`, a negation ("no coverage holds this date"):
  it is tested session by session, within the scan window, and has no count;
- the plan is chosen here, not left to chance: with a pump filter its few
  sessions are read through the chain index; a patient matching at most
  `DRIVER_CAP` sessions (a bounded count) is read through the patient indexes;
  otherwise, when a code or flag filter matches fewer than `DRIVER_CAP` sessions,
  the matches are read through that filter's index and sorted; otherwise the
  start index is walked newest first and each session probed by primary key,
  which fills a page after about page size / selectivity probes, and never more
  than `SCAN_WINDOW` of them: a page that searched that far ends there, says so,
  and its Next link goes on from where it stopped. A common part of a patient
  name walks the start index too, in growing stretches until the page is full
  (`_chunked_rows`: the same rows as one walk, but no statement a planner could
  turn into a read of every session). The walk is pinned to the start
  index by writing the pump join key `pump_id + 0` (no index serves it), so
  SQLite cannot choose to walk every pump and sort.

The test `tests/web/test_list_plans.py` explains every filter's statements on
both databases; `bench/bench_web.py` prints each plan at 1,000,000 sessions.

`evidence_codes` rows are written with the evidence (`db.queries.replace_evidence`)
and repaired by `db.code_index`; this module only reads them. The codes a page
shows are always read from the evidence document.
Patient identifiers are filter values here and nothing else: never logged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Final, Literal

from sqlalchemy import (
    ColumnElement,
    CompoundSelect,
    Select,
    and_,
    exists,
    false,
    func,
    literal,
    or_,
    select,
    union_all,
)
from sqlalchemy.engine import Connection

from db.codec import loads
from db.models import evidence, evidence_flags, patient_names, pumps, sessions
from db.payers import covered_condition, payers_on
from db.users import evidence_codes
from evidence.payers import NO_PAYER_ON_FILE, Payer, applicable
from web.queries.cursor import Cursor

Sort = Literal["newest", "oldest", "pump"]
SORTS: Final[tuple[Sort, ...]] = ("newest", "oldest", "pump")
COUNT_CAP: Final = 10_000
# A code or flag filter matching at most this many sessions drives the query.
DRIVER_CAP: Final = 4_000
# Sessions a page examines along the start index when every filter is common.
SCAN_WINDOW: Final = 20_000
# The first stretch of the start index a chunked walk reads (then twice as many
# each time, up to SCAN_WINDOW).
FIRST_CHUNK: Final = 1_000
# Largest distance between programmer-local time and UTC (UTC-12 to UTC+14).
MAX_UTC_OFFSET: Final = timedelta(hours=14, minutes=1)
PAGE_SIZES: Final = (25, 50, 100, 200)
DEFAULT_PAGE_SIZE: Final = 50


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
    # The payer covering the date of service, its profile and that profile's code
    # (docs/coding-rules.md §9.1); the default profile without coverage.
    payer: str | None = None
    applicable_profile: str | None = None
    applicable: str | None = None


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
    # Session pks matching, read through the filter's own index (None: no index
    # can find them; the filter only ever tests sessions one by one).
    matching: Select[Any] | None
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


def _no_payer_filter() -> _EvidenceFilter:
    """Sessions with evidence but no coverage on their date of service (a read-time flag).

    "No coverage row holds this date" is a negation: no index finds such sessions,
    and counting them reads sessions until enough are found (all of them when
    few are). So the filter never drives a page and has no count: it tests each
    session along the start index (evidence by primary key, the patient's coverage
    through `ix_coverage_patient`), within the scan window.
    """
    uncovered = and_(
        exists().where(evidence.c.session_pk == sessions.c.id),
        ~covered_condition(sessions.c.patient_id, sessions.c.session_start_local),
    )
    return _EvidenceFilter(f"flag:{NO_PAYER_ON_FILE}", None, uncovered)


def _evidence_filters(flt: SessionFilter, default_profile: str) -> list[_EvidenceFilter]:
    found = []
    if flt.procedure:
        found.append(_code_filter(flt.profile or default_profile, default_profile, flt.procedure))
    found += [
        _no_payer_filter() if flag == NO_PAYER_ON_FILE else _flag_filter(flag) for flag in flt.flags
    ]
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
    # Walk the start index stretch by stretch until the page is full (`_chunked_rows`).
    chunked: bool = False
    # The total, already counted while choosing the plan (at most `DRIVER_CAP`).
    known_count: int | None = None


def _count_of(conditions: Sequence[ColumnElement[bool]]) -> Countable:
    """What the total counts: the sessions matching."""
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
        return _count_of(conditions)
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


def _pump_condition(serial: str) -> ColumnElement[bool]:
    """The sessions of the pump with this serial, in any case: the pumps are found
    through the unique serial index (exact) or `ix_pumps_serial_upper` (any case),
    their sessions through `ix_sessions_chain`."""
    text = serial.strip()
    found = select(pumps.c.id).where(
        or_(pumps.c.serial == text, func.upper(pumps.c.serial) == text.upper())
    )
    return sessions.c.pump_id.in_(found)


def _like_escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@dataclass(frozen=True, slots=True)
class _PatientFilter:
    # The matching session pks through indexes, each session once (count, driver).
    matching: CompoundSelect[Any]
    # The same test for one session, row by row (a walk of the start index).
    probe: ColumnElement[bool]
    # More names contain the text than `DRIVER_CAP`: more sessions match than that.
    common: bool


def _patient_probe(query: str) -> ColumnElement[bool]:
    """A patient by ID (exact, then in any case) or by a part of the name, in any
    case, for one session: compared row by row (lower case on both sides)."""
    text = query.strip()
    folded = text.lower()
    return or_(
        sessions.c.patient_id == text,
        func.lower(sessions.c.patient_id) == folded,
        func.lower(sessions.c.patient_name).like(f"%{_like_escaped(folded)}%", escape="\\"),
    )


def _patient_filter(connection: Connection, query: str) -> _PatientFilter:
    """The patient filter (`_patient_probe`) as three disjoint reads through indexes.

    The exact ID (`ix_sessions_patient`); the ID in another case
    (`ix_sessions_patient_lower`); the names containing the text, read once here
    from the table of distinct names (`patient_names`, one row per name with its
    `lower()` stored, read whole), and their sessions through
    `ix_sessions_patient_name`. When more than `DRIVER_CAP` names match, the
    names stay a subquery and the filter is common.
    """
    text = query.strip()
    folded = text.lower()
    patient_id, name = sessions.c.patient_id, sessions.c.patient_name
    found = select(patient_names.c.name).where(
        patient_names.c.name_key.like(f"%{_like_escaped(folded)}%", escape="\\")
    )
    names = list(connection.execute(found.limit(DRIVER_CAP + 1)).scalars())
    common = len(names) > DRIVER_CAP
    # A NULL ID is neither: coalesce keeps the "not already matched" tests true for it.
    not_exact = func.coalesce(patient_id, "") != text
    not_any_case = func.coalesce(func.lower(patient_id), "") != folded
    matching = union_all(
        select(sessions.c.id).where(patient_id == text),
        select(sessions.c.id).where(func.lower(patient_id) == folded, not_exact),
        select(sessions.c.id).where(name.in_(found if common else names), not_exact, not_any_case),
    )
    return _PatientFilter(matching, _patient_probe(text), common)


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
        conditions.append(_pump_condition(flt.pump_serial))
    # A patient's matches through indexes: what drives the page, or counts it.
    patient_driven: CompoundSelect[Any] | None = None
    patient_counted: int | None = None
    chunked = False
    if flt.patient_id and flt.pump_serial:
        # The pump's few sessions are tested row by row.
        conditions.append(_patient_probe(flt.patient_id))
    elif flt.patient_id:
        patient = _patient_filter(connection, flt.patient_id)
        if not patient.common:
            patient_counted = _capped_count(connection, patient.matching, DRIVER_CAP)
        if patient_counted is not None and patient_counted <= DRIVER_CAP:
            # A patient (or a rare part of a name): read the matches through indexes.
            conditions.append(sessions.c.id.in_(patient.matching))
        else:
            # A common part of a name: the start index, tested row by row, fills a
            # page soon (read in chunks); the count reads the matches through indexes.
            conditions.append(patient.probe)
            patient_counted = None
            chunked = flt.sort != "pump"
        patient_driven = patient.matching
    filters = _evidence_filters(flt, default_profile)

    if flt.pump_serial or flt.patient_id or not filters:
        # A pump or a patient has few sessions; no evidence filter: the start index.
        patient_alone = patient_driven is not None and len(conditions) == 1 and not filters
        conditions += [f.probe for f in filters]
        name = "pump" if flt.pump_serial else "patient" if flt.patient_id else "start-index"
        if patient_alone and patient_counted is not None:
            # Its capped count while choosing the plan is the total.
            return _Plan(
                name, conditions, start_conditions, None, False, known_count=patient_counted
            )
        counted: Countable
        if patient_alone and patient_driven is not None:
            counted = patient_driven
        elif name == "start-index" and start_conditions:
            counted = _date_count(flt, conditions)
        else:
            counted = _count_of(conditions)
        return _Plan(name, conditions, start_conditions, counted, False, chunked)

    indexed = [
        (f, f.matching, _capped_count(connection, f.matching, DRIVER_CAP))
        for f in filters
        if f.matching is not None
    ]
    driver, matching, found = min(indexed, key=lambda each: each[2], default=(None, None, 0))
    if driver is not None and matching is not None and found <= DRIVER_CAP:
        conditions.append(sessions.c.id.in_(matching))
        conditions += [f.probe for f in filters if f is not driver]
        if len(filters) == 1 and len(conditions) == 1:
            # The driver's own capped count is the total.
            return _Plan(driver.label, conditions, start_conditions, None, False, known_count=found)
        return _Plan(driver.label, conditions, start_conditions, _count_of(conditions), False)

    # Every evidence filter is common (or has no index): walk the start index,
    # probing each session.
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
    connection: Connection,
    plan: _Plan,
    cursor: Cursor | None,
    ascending: bool,
    *,
    size: int | None = None,
) -> datetime | None:
    """The start instant `size` (default `SCAN_WINDOW`) sessions away along the start
    index, or None (fewer)."""
    start = sessions.c.session_start_utc
    query = select(start).where(*plan.start_conditions)
    if cursor is not None:
        query = query.where(start >= cursor.start_utc if ascending else start <= cursor.start_utc)
    query = query.order_by(start.asc() if ascending else start.desc())
    offset = (SCAN_WINDOW if size is None else size) - 1
    edge: datetime | None = connection.execute(query.offset(offset).limit(1)).scalar()
    return edge


def _chunked_rows(
    connection: Connection,
    plan: _Plan,
    query: Select[Any],
    *,
    cursor: Cursor | None,
    sort: Sort,
    backwards: bool,
    limit: int,
) -> list[Any]:
    """Up to `limit` + 1 rows of `query` after `cursor`, read along the start index a
    stretch at a time (`FIRST_CHUNK` sessions, then twice as many each time, at most
    `SCAN_WINDOW`) until enough rows matched or the index ends.

    The rows are those of one unbounded walk; each statement, bounded by its
    stretch's start instant, cannot turn into a read of every session, whatever
    the planner expects of a row-by-row test it cannot estimate (a part of a name).
    """
    ascending = _ascending(sort, backwards)
    start = sessions.c.session_start_utc
    direction: Literal["after", "before"] = "before" if backwards else "after"
    position = cursor
    size = FIRST_CHUNK
    fetched: list[Any] = []
    while True:
        edge = _window_edge(connection, plan, position, ascending, size=size)
        stretch = query if position is None else query.where(_beyond(position, sort))
        if edge is not None:
            stretch = stretch.where(start <= edge if ascending else start >= edge)
        stretch = stretch.order_by(*_order(sort, backwards)).limit(limit + 1 - len(fetched))
        fetched += connection.execute(stretch)
        if len(fetched) > limit or edge is None:
            return fetched
        # Every session at the edge instant was in this stretch: go on beyond it.
        position = Cursor(edge, "", "", direction, edge=True)
        size = min(2 * size, SCAN_WINDOW)


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
    start_driven = (
        plan.name in ("start-index", "start-window") or plan.chunked
    ) and flt.sort != "pump"
    query = _base(_LIST_COLUMNS, start_driven=start_driven).where(*plan.conditions)
    edge = None
    if plan.chunked:
        fetched = _chunked_rows(
            connection,
            plan,
            query,
            cursor=cursor,
            sort=flt.sort,
            backwards=backwards,
            limit=limit,
        )
    else:
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
    covering = payers_on(connection, [(row[7], row[3].date()) for row in fetched])
    rows = [
        _list_row(
            row,
            documents.get(int(row[0])),
            covering.get((row[7], row[3].date())) if row[7] else None,
            default_profile,
        )
        for row in fetched
    ]

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
    count, capped = plan.known_count, False
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


def _list_row(
    row: Any, document: Mapping[str, Any] | None, payer: Payer | None, default_profile: str
) -> ListRow:
    codes: dict[str, str | None] = {}
    flags: tuple[str, ...] = ()
    applies = None
    if document is not None:
        for profile, code in (document.get("codes") or {}).items():
            codes[str(profile)] = code.get("procedure") if isinstance(code, Mapping) else None
        flags = tuple(str(f) for f in document.get("flags") or () if f != NO_PAYER_ON_FILE)
        if payer is None:
            flags += (NO_PAYER_ON_FILE,)
        applies = applicable(document.get("codes") or {}, payer, default_profile)
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
        payer=None if payer is None else payer.name,
        applicable_profile=None if applies is None else applies.profile,
        applicable=None if applies is None else applies.procedure,
    )


def bare_list_query(limit: int = DEFAULT_PAGE_SIZE) -> Select[Any]:
    """The list's first page as one bare query (the benchmark's baseline)."""
    return _base(_LIST_COLUMNS).order_by(*_order("newest", reverse=False)).limit(limit)
