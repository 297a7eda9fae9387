"""The session list's query plans: every filter reads the large tables through indexes.

Each filter of `web.queries.list_sessions` runs once while SQLAlchemy records the
statements it sends; each statement is then explained by the database itself
(`db.plans`: SQLite `EXPLAIN QUERY PLAN`, PostgreSQL `EXPLAIN (FORMAT JSON)`),
on SQLite and on PostgreSQL.

Why 20,000 sessions and real statistics rather than a tiny table with
`enable_seqscan = off`: on a table of a few dozen rows PostgreSQL rightly reads
everything, and with sequential scans disabled it still takes any index it can
walk whole (a walk of the start index with a row-by-row filter reads every
session just like a scan, and would pass a "no Seq Scan" test). Here the tables
are large enough (1,000 pumps and patients of 20 sessions, a code or flag on a
few per cent of them) and analysed (`ANALYZE`; PostgreSQL `VACUUM (ANALYZE)`),
so both planners choose as they would for a clinic, and the test can ask for
more than "an index exists":

- no statement reads a large table row by row (`scan`), except PostgreSQL's
  unfiltered read under a LIMIT (the capped count of every session: it stops
  after the cap);
- for a selective filter (a pump, a patient, a part of a name, a month, a rare
  code or flag) every read of `sessions` is an index search: no walk of a whole
  index either.

The audit page's patient-or-pump lookup is checked the same way. The one filter
left out is `no_payer_on_file`: "no coverage row holds this date"
is a negation no index can look up, so it is tested session by session along the
start index (`test_no_payer_on_file_walks_the_start_index_in_windows`).

SQLite runs twice: analysed (as the benchmark's database) and not, as at a clinic,
where nothing runs ANALYZE on it and the planner assumes large tables. PostgreSQL is
`PUMPTRAIL_TEST_PG_URL`; unreachable, its cases are skipped, and fail under CI.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, event, insert, select, text

from db.migrate import open_database
from db.models import evidence, evidence_flags, pumps, sessions
from db.payers import coverage, payers
from db.plans import TableRead, table_reads, table_rows, unbounded_scan
from db.users import evidence_codes
from tests.conftest import fresh_pg_schema
from web.queries import Cursor, SessionFilter, list_sessions, listing
from web.queries.subjects import audit_subjects

DEFAULT = "rate-dose"
PUMPS = 1000
VISITS = 20
START = datetime(2020, 1, 6, 9, 0)
LARGE = frozenset({"sessions", "pumps", "evidence", "evidence_flags", "evidence_codes"})
# The list's bounds, scaled from 1,000,000 sessions to this database's 20,000, so
# that each filter takes the path it takes at a million (a code on 0.2 % of the
# sessions drives the query through its index, one on 25 % is probed along the
# start index, a page searches at most 2 % of the sessions).
SCALE = PUMPS * VISITS / 1_000_000
# The default profile's code by visit: 62367 is common (25 %), 62370 rare (0.2 %).
CODES = ("62367", "62368", "95990", "95991")


def _codes(pump: int, visit: int) -> dict[str, dict[str, str]]:
    default = "62370" if visit == 7 and pump % 25 == 0 else CODES[visit % len(CODES)]
    other = "62369" if visit == 4 and pump % 20 == 0 else "62368"
    return {DEFAULT: {"procedure": default}, "any-setting": {"procedure": other}}


def _flags(pump: int, visit: int) -> list[str]:
    """`refill_overdue` on most sessions, `no_prior_session` on 5 %, `chain_gap` on 0.15 %."""
    found = ["no_prior_session"] if visit == 0 else []
    if visit % 5:
        found.append("refill_overdue")
    if visit == 9 and pump % 30 == 0:
        found.append("chain_gap")
    return found


@pytest.fixture(autouse=True)
def scaled_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DRIVER_CAP", "SCAN_WINDOW", "COUNT_CAP", "FIRST_CHUNK"):
        monkeypatch.setattr(listing, name, round(getattr(listing, name) * SCALE))


def fill(engine: Engine, *, analyse: bool = True) -> None:
    """1,000 pumps of 20 sessions with evidence, codes, flags; nine patients in ten covered."""
    now = datetime(2026, 1, 1)
    session_rows: list[dict[str, Any]] = []
    evidence_rows: list[dict[str, Any]] = []
    flag_rows: list[dict[str, Any]] = []
    code_rows: list[dict[str, Any]] = []
    pk = 0
    for pump in range(1, PUMPS + 1):
        first = START + timedelta(days=(pump * 37) % 1500, minutes=pump % 600)
        prior = None
        for visit in range(VISITS):
            pk += 1
            start = first + timedelta(days=60 * visit)
            session_id = str(uuid.UUID(int=pk))
            flags = _flags(pump, visit)
            codes = _codes(pump, visit)
            session_rows.append(
                {
                    "id": pk,
                    "session_id": session_id,
                    "pump_id": pump,
                    "session_start_utc": start,
                    "session_start_local": start - timedelta(hours=6),
                    "utc_offset_min": -360,
                    "pump_model": "IT-40",
                    "programmer_model": "PX-200",
                    "programmer_serial": "PX2-0000001",
                    "programmer_software": "3.1",
                    "operator_id": "rn.plan",
                    "operator_role": "nurse",
                    "clinic_id": "PAIN-01",
                    "patient_id": f"PT-{pump:05d}",
                    "patient_name": f"Planner{pump:05d}, Given{pump % 7}",
                    "patient_birth_date": date(1960, 1, 1),
                    "has_refill": visit % 2 == 1,
                    "pump_clock_local": None,
                    "source_sha256": f"{pk:064x}",
                    "source_name": "plan.psl",
                    "source_format": "psl-binary",
                    "format_version": "1.0",
                    "document": json.dumps({"session_id": session_id}),
                    "conflicting_exports": False,
                    "parser_version": "test",
                    "imported_at": now,
                }
            )
            evidence_rows.append(
                {
                    "session_pk": pk,
                    "prior_session_pk": prior,
                    "procedure": codes[DEFAULT]["procedure"],
                    "flags": "".join(f" {f}" for f in flags) + " ",
                    "document": json.dumps({"codes": codes, "flags": flags}),
                    "rules_version": "test",
                    "parser_version": "test",
                    "derived_at": now,
                }
            )
            flag_rows += [{"session_pk": pk, "flag": flag} for flag in flags]
            code_rows += [
                {"session_pk": pk, "profile": profile, "procedure": entry["procedure"]}
                for profile, entry in codes.items()
            ]
            prior = pk
    with engine.begin() as connection:
        connection.execute(
            insert(pumps),
            [{"id": p, "serial": f"TP-{p:05d}", "model": "IT-40"} for p in range(1, PUMPS + 1)],
        )
        connection.execute(insert(sessions), session_rows)
        connection.execute(insert(evidence), evidence_rows)
        connection.execute(insert(evidence_flags), flag_rows)
        connection.execute(insert(evidence_codes), code_rows)
        connection.execute(
            insert(payers),
            [
                {
                    "id": 1,
                    "name": "Plan",
                    "name_key": "plan",
                    "payer_id": None,
                    "profile": DEFAULT,
                    "created_at": now,
                }
            ],
        )
        connection.execute(
            insert(coverage),
            [
                {
                    "patient_id": f"PT-{p:05d}",
                    "payer_pk": 1,
                    "starts_on": date(2000, 1, 1),
                    "ends_on": None,
                    "created_at": now,
                }
                for p in range(1, PUMPS + 1)
                if p % 10
            ],
        )
    if not analyse:
        return
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(
            text("ANALYZE" if engine.dialect.name == "sqlite" else "VACUUM (ANALYZE)")
        )


@pytest.fixture(scope="module")
def pg_module_url() -> Iterator[str]:
    """A PostgreSQL schema for this module's tests (created once, dropped afterwards)."""
    with fresh_pg_schema("pt_test_plans") as url:
        yield url


@pytest.fixture(
    scope="module",
    params=[
        "sqlite",
        "sqlite-unanalysed",
        pytest.param("postgresql", marks=pytest.mark.postgres),
    ],
)
def planned(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Engine]:
    """A filled database of 20,000 sessions: SQLite analysed, SQLite as a clinic's
    (pumptrail never runs ANALYZE on SQLite: the planner's defaults), PostgreSQL."""
    if request.param.startswith("sqlite"):
        url = f"sqlite:///{tmp_path_factory.mktemp('plans') / 'plans.db'}"
    else:
        url = request.getfixturevalue("pg_module_url")
    engine = open_database(url)
    fill(engine, analyse=request.param != "sqlite-unanalysed")
    yield engine
    engine.dispose()


def reads_of(engine: Engine, flt: SessionFilter, cursor: Cursor | None = None) -> list[str]:
    """The reads of large tables in the plans of the statements one list page sends,
    and (first, marked "UNBOUNDED") the scans no LIMIT ends soon."""
    return reads_in(
        engine,
        lambda connection: list_sessions(connection, flt, default_profile=DEFAULT, cursor=cursor),
    )


def reads_in(engine: Engine, run: Callable[[Connection], object]) -> list[str]:
    """`reads_of` for any reading `run` does on a connection."""
    sent: list[tuple[str, Any]] = []

    def record(_c: Any, _cur: Any, statement: str, parameters: Any, _x: Any, many: bool) -> None:
        if not many and statement.lstrip().upper().startswith("SELECT"):
            sent.append((statement, parameters))

    with engine.connect() as connection:
        event.listen(connection, "before_cursor_execute", record)
        run(connection)
        event.remove(connection, "before_cursor_execute", record)
        sizes = {table: table_rows(connection, table) for table in LARGE}
        reads: list[TableRead] = [
            read
            for statement, parameters in sent
            for read in table_reads(connection, statement, parameters)
            if read.table in LARGE
        ]
    unbounded = [f"UNBOUNDED {r.describe()}" for r in reads if unbounded_scan(r, sizes[r.table])]
    return unbounded + [r.describe() for r in reads]


def unbounded(reads: list[str]) -> list[str]:
    return [r for r in reads if r.startswith("UNBOUNDED")]


SELECTIVE = {
    "pump serial": SessionFilter(pump_serial="TP-00123"),
    "pump serial, other case": SessionFilter(pump_serial="tp-00123"),
    "patient ID": SessionFilter(patient_id="PT-00456"),
    "patient ID, other case": SessionFilter(patient_id="pt-00456"),
    "part of a name": SessionFilter(patient_id="planner00789"),
    "one month": SessionFilter(date_from=date(2021, 3, 1), date_to=date(2021, 3, 31)),
    "rare code, default profile": SessionFilter(procedure="62370"),
    "rare code, another profile": SessionFilter(profile="any-setting", procedure="62369"),
    "rare flag": SessionFilter(flags=("chain_gap",)),
    "absent flag": SessionFilter(flags=("critical_alarm",)),
    "month and code": SessionFilter(
        date_from=date(2021, 3, 1), date_to=date(2021, 3, 31), procedure="62367"
    ),
    "pump and code": SessionFilter(pump_serial="TP-00123", procedure="62367"),
    # A flag on 5 % of the sessions. Not `refill_overdue` (80 %): against a patient's
    # 20 sessions, hashing its 16,000 rows costs about as much as 20 index probes at
    # this size, and which one PostgreSQL takes then turns on the visibility map
    # (which a long transaction elsewhere in the database keeps VACUUM from setting);
    # at a million sessions the probes win by far.
    "patient and flag": SessionFilter(patient_id="PT-00456", flags=("no_prior_session",)),
}
COMMON = {
    "first page": SessionFilter(),
    "oldest first": SessionFilter(sort="oldest"),
    "by pump serial": SessionFilter(sort="pump"),
    "common code": SessionFilter(procedure="62367"),
    "common flag": SessionFilter(flags=("no_prior_session",)),
    "any flag": SessionFilter(flagged=True),
    "common part of a name": SessionFilter(patient_id="given"),
}


@pytest.mark.parametrize("label", sorted(SELECTIVE))
def test_a_selective_filter_searches_sessions_through_an_index(planned: Engine, label: str) -> None:
    reads = reads_of(planned, SELECTIVE[label])
    assert unbounded(reads) == [], reads
    # Not even a walk of an index of sessions under the LIMIT.
    assert [r for r in reads if "sessions" in r and not r.startswith("search")] == [], reads


@pytest.mark.parametrize("label", sorted(COMMON))
def test_a_common_filter_reads_no_large_table_row_by_row(planned: Engine, label: str) -> None:
    flt = COMMON[label]
    reads = reads_of(planned, flt)
    assert unbounded(reads) == [], reads
    with planned.connect() as connection:
        page = list_sessions(connection, flt, default_profile=DEFAULT)
    assert page.next_cursor is not None
    # The next page too (keyset: a range of the start index, or of the pump serials).
    reads = reads_of(planned, flt, Cursor.decode(page.next_cursor))
    assert unbounded(reads) == [], reads


def test_no_payer_on_file_walks_the_start_index_in_windows(planned: Engine) -> None:
    flt = SessionFilter(flags=("no_payer_on_file",))
    with planned.connect() as connection:
        page = list_sessions(connection, flt, default_profile=DEFAULT)
    # No index finds sessions without coverage: no driver, no count.
    assert (page.plan, page.count) == ("start-window", None)
    assert page.rows and all(row.payer is None for row in page.rows)
    reads = reads_of(planned, flt)
    assert unbounded(reads) == [], reads
    # Page after page (some cut short by the scan window), exactly the uncovered ones.
    seen: list[str] = []
    cursor = None
    with planned.connect() as connection:
        while True:
            page = list_sessions(connection, flt, default_profile=DEFAULT, cursor=cursor)
            seen += [row.session_id for row in page.rows]
            if page.next_cursor is None:
                break
            cursor = Cursor.decode(page.next_cursor)
        uncovered = connection.execute(
            select(sessions.c.session_id)
            .where(sessions.c.pump_id % 10 == 0)
            .order_by(sessions.c.session_start_utc.desc(), sessions.c.session_id.desc())
        ).scalars()
        assert seen == list(uncovered)


@pytest.mark.parametrize(
    "subject",
    ["PT-00456", "TP-00123", str(uuid.UUID(int=4321))],
    ids=["patient", "pump", "session"],
)
def test_the_audit_pages_subject_is_found_through_indexes(planned: Engine, subject: str) -> None:
    """The audit page's patient-or-pump filter (`web.queries.subjects`)."""
    with planned.connect() as connection:
        assert audit_subjects(connection, subject).found
    reads = reads_in(planned, lambda connection: audit_subjects(connection, subject))
    assert unbounded(reads) == [], reads
    assert [r for r in reads if "sessions" in r and not r.startswith("search")] == [], reads


@pytest.mark.parametrize("query", ["PT-00456", "pt-00456", "planner00789", "PLANNER0078", "given3"])
def test_the_patient_filter_finds_exactly_its_sessions(planned: Engine, query: str) -> None:
    """Each of the filter's paths (an ID, in any case, a rare and a common part of a
    name, read in chunks) lists exactly the sessions the row-by-row test matches,
    newest first, page after page and back, with the count capped as always."""
    folded = query.lower()
    with planned.connect() as connection:
        rows = connection.execute(
            select(sessions.c.session_id, sessions.c.patient_id, sessions.c.patient_name).order_by(
                sessions.c.session_start_utc.desc(), sessions.c.session_id.desc()
            )
        ).all()
    expected = [
        sid
        for sid, patient, name in rows
        if patient == query or (patient or "").lower() == folded or folded in (name or "").lower()
    ]
    assert expected
    flt = SessionFilter(patient_id=query)
    seen: list[str] = []
    pages = []
    cursor = None
    with planned.connect() as connection:
        while True:
            page = list_sessions(connection, flt, default_profile=DEFAULT, cursor=cursor, limit=50)
            pages.append(page)
            seen += [row.session_id for row in page.rows]
            if page.next_cursor is None:
                break
            cursor = Cursor.decode(page.next_cursor)
        assert seen == expected
        assert pages[0].count == min(len(expected), listing.COUNT_CAP)
        assert pages[0].count_capped == (len(expected) > listing.COUNT_CAP)
        if len(pages) > 1:
            back = list_sessions(
                connection,
                flt,
                default_profile=DEFAULT,
                cursor=Cursor.decode(pages[1].prev_cursor or ""),
                limit=50,
            )
            assert [r.session_id for r in back.rows] == [r.session_id for r in pages[0].rows]
