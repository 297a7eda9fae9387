"""The list queries: plans, keyset pages, scan windows, counts, the per-profile code index."""

from __future__ import annotations

import json
import random
from datetime import date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, delete, func, select

from db import code_index
from db.code_index import CodeIndexer
from db.engine import write_transaction
from db.models import evidence, evidence_flags, pumps, sessions
from db.queries import EvidenceRecord, replace_evidence
from db.users import evidence_codes
from tests.web.support import DemoData
from web.queries import BadCursor, Cursor, SessionFilter, list_sessions, listing

DEFAULT = "rate-dose"


def all_pages(engine: Engine, flt: SessionFilter, limit: int) -> list[str]:
    """Every session ID of the list, following next cursors from the first page."""
    seen: list[str] = []
    cursor = None
    with engine.connect() as connection:
        for _ in range(1000):
            page = list_sessions(
                connection, flt, default_profile=DEFAULT, cursor=cursor, limit=limit
            )
            seen += [row.session_id for row in page.rows]
            if page.next_cursor is None:
                return seen
            cursor = Cursor.decode(page.next_cursor)
    raise AssertionError("the pages never end")


def stored(engine: Engine) -> list[dict[str, Any]]:
    """Every session with what the filters look at, by brute force."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(
                sessions.c.session_id,
                sessions.c.session_start_utc,
                sessions.c.session_start_local,
                sessions.c.patient_id,
                pumps.c.serial,
                evidence.c.document,
            ).select_from(
                sessions.join(pumps, pumps.c.id == sessions.c.pump_id).join(
                    evidence, evidence.c.session_pk == sessions.c.id
                )
            )
        )
        return [
            {
                "id": r[0],
                "start": r[1],
                "local": r[2],
                "patient": r[3],
                "serial": r[4],
                "evidence": json.loads(r[5]),
            }
            for r in rows
        ]


def expected_order(rows: list[dict[str, Any]], sort: str) -> list[str]:
    if sort == "newest":
        ordered = sorted(rows, key=lambda r: (r["start"], r["id"]), reverse=True)
    elif sort == "oldest":
        ordered = sorted(rows, key=lambda r: (r["start"], r["id"]))
    else:
        ordered = sorted(rows, key=lambda r: (r["serial"], r["start"], r["id"]))
    return [r["id"] for r in ordered]


@pytest.mark.parametrize("sort", ["newest", "oldest", "pump"])
@pytest.mark.parametrize("limit", [1, 4, 7])
def test_keyset_pages_list_every_session_once_in_chain_order(
    engine: Engine, sort: str, limit: int
) -> None:
    rows = stored(engine)
    assert all_pages(engine, SessionFilter(sort=sort), limit) == expected_order(rows, sort)  # type: ignore[arg-type]


def test_previous_pages_go_back_exactly(engine: Engine) -> None:
    flt = SessionFilter()
    with engine.connect() as connection:
        first = list_sessions(connection, flt, default_profile=DEFAULT, limit=5)
        second = list_sessions(
            connection,
            flt,
            default_profile=DEFAULT,
            cursor=Cursor.decode(first.next_cursor or ""),
            limit=5,
        )
        assert second.prev_cursor is not None
        back = list_sessions(
            connection,
            flt,
            default_profile=DEFAULT,
            cursor=Cursor.decode(second.prev_cursor),
            limit=5,
        )
    assert [r.session_id for r in back.rows] == [r.session_id for r in first.rows]
    assert back.prev_cursor is None  # the first page has nothing before it
    assert first.prev_cursor is None and back.next_cursor == first.next_cursor


@pytest.mark.parametrize(
    ("flt", "test"),
    [
        (
            SessionFilter(procedure="62367"),
            lambda r: r["evidence"]["codes"][DEFAULT]["procedure"] == "62367",
        ),
        (
            SessionFilter(profile="any-setting", procedure="62369"),
            lambda r: r["evidence"]["codes"]["any-setting"]["procedure"] == "62369",
        ),
        (
            SessionFilter(flags=("no_prior_session",)),
            lambda r: "no_prior_session" in r["evidence"]["flags"],
        ),
        (
            SessionFilter(procedure="62367", flags=("no_prior_session",)),
            lambda r: (
                r["evidence"]["codes"][DEFAULT]["procedure"] == "62367"
                and "no_prior_session" in r["evidence"]["flags"]
            ),
        ),
        (SessionFilter(flagged=True), lambda r: bool(r["evidence"]["flags"])),
    ],
)
@pytest.mark.parametrize("forced", ["driver", "window"])
def test_every_plan_finds_exactly_the_matching_sessions(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, flt: SessionFilter, test: Any, forced: str
) -> None:
    if forced == "window":
        # Every filter counts as common and a page may examine only 3 sessions: pages
        # end early and their Next links go on from where the search stopped.
        monkeypatch.setattr(listing, "DRIVER_CAP", -1)
        monkeypatch.setattr(listing, "SCAN_WINDOW", 3)
    rows = stored(engine)
    expected = [
        i for i in expected_order(rows, "newest") if test(next(r for r in rows if r["id"] == i))
    ]
    assert expected
    assert all_pages(engine, flt, 2) == expected
    with engine.connect() as connection:
        page = list_sessions(connection, flt, default_profile=DEFAULT, limit=2)
    assert page.plan == ("start-window" if forced == "window" else page.plan)
    if forced == "driver":
        assert page.plan != "start-window"
        assert page.count == len(expected)


def test_a_window_cut_says_so(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(listing, "DRIVER_CAP", -1)
    monkeypatch.setattr(listing, "SCAN_WINDOW", 2)
    flt = SessionFilter(flags=("no_prior_session",))
    with engine.connect() as connection:
        page = list_sessions(connection, flt, default_profile=DEFAULT, limit=50)
    assert page.notes and "searched 2 sessions" in page.notes[0]
    assert page.next_cursor is not None and Cursor.decode(page.next_cursor).edge


def test_pump_and_patient_filters_use_their_indexes(engine: Engine, data: DemoData) -> None:
    serial, ids = next(iter(data.pumps.items()))
    rows = stored(engine)
    patient = next(r["patient"] for r in rows if r["id"] == ids[0])
    with engine.connect() as connection:
        by_pump = list_sessions(
            connection, SessionFilter(pump_serial=serial, sort="oldest"), default_profile=DEFAULT
        )
        by_patient = list_sessions(
            connection, SessionFilter(patient_id=patient), default_profile=DEFAULT
        )
    assert by_pump.plan == "pump" and [r.session_id for r in by_pump.rows] == ids
    assert by_patient.plan == "patient"
    assert {r.session_id for r in by_patient.rows} == {
        r["id"] for r in rows if r["patient"] == patient
    }
    assert by_pump.count == len(ids)


def test_date_filters_use_the_programmers_local_date(engine: Engine) -> None:
    rows = stored(engine)
    rng = random.Random(5)
    days = sorted({r["local"].date() for r in rows})
    cases = [(None, days[2]), (days[3], None), (days[1], days[-2]), (days[4], days[4])]
    cases += [(d, d + timedelta(days=rng.randrange(0, 90))) for d in rng.sample(days, 4)]
    for low, high in cases:
        expected = {
            r["id"]
            for r in rows
            if (low is None or r["local"].date() >= low)
            and (high is None or r["local"].date() <= high)
        }
        flt = SessionFilter(date_from=low, date_to=high)
        assert set(all_pages(engine, flt, 5)) == expected, (low, high)
        with engine.connect() as connection:
            page = list_sessions(connection, flt, default_profile=DEFAULT, limit=5)
        assert page.count == len(expected), (low, high)


def test_a_session_near_midnight_counts_on_its_local_date(engine: Engine) -> None:
    """Local 23:30 at UTC-5 is 04:30 UTC the next day: the local date decides."""
    rows = stored(engine)
    target = rows[0]
    local = datetime.combine(date(2030, 6, 1), datetime.min.time()) + timedelta(
        hours=23, minutes=30
    )
    with engine.begin() as connection:
        connection.execute(
            sessions.update()
            .where(sessions.c.session_id == target["id"])
            .values(
                session_start_local=local,
                session_start_utc=local + timedelta(hours=5),
                utc_offset_min=-300,
            )
        )
    flt = SessionFilter(date_from=date(2030, 6, 1), date_to=date(2030, 6, 1))
    assert all_pages(engine, flt, 10) == [target["id"]]
    assert all_pages(engine, SessionFilter(date_from=date(2030, 6, 2)), 10) == []
    with engine.connect() as connection:
        assert list_sessions(connection, flt, default_profile=DEFAULT).count == 1


def test_an_inverted_date_range_matches_nothing(engine: Engine) -> None:
    flt = SessionFilter(date_from=date(2026, 1, 2), date_to=date(2026, 1, 1))
    assert all_pages(engine, flt, 10) == []


def test_cursors_round_trip_and_refuse_garbage() -> None:
    cursor = Cursor(datetime(2026, 3, 14, 14, 32, 10), "abc", "ITP-1", "before")
    assert Cursor.decode(cursor.encode()) == cursor
    edge = Cursor(datetime(2026, 3, 14), "", "", "after", edge=True)
    assert Cursor.decode(edge.encode()) == edge
    for bad in ("", "!!!", "eyJ4IjoxfQ", cursor.encode()[:-3] + "AAA"):
        with pytest.raises(BadCursor):
            Cursor.decode(bad)


# ---------------------------------------------------------------------------
# The per-profile code index


def code_rows(engine: Engine) -> set[tuple[int, str, str | None]]:
    with engine.connect() as connection:
        return set(
            connection.execute(  # type: ignore[arg-type]
                select(
                    evidence_codes.c.session_pk,
                    evidence_codes.c.profile,
                    evidence_codes.c.procedure,
                )
            )
        )


def test_the_code_index_copies_every_profile_of_every_document(engine: Engine) -> None:
    with engine.connect() as connection:
        documents = list(connection.execute(select(evidence.c.session_pk, evidence.c.document)))
    expected = {
        (pk, profile, code["procedure"])
        for pk, text in documents
        for profile, code in json.loads(text)["codes"].items()
    }
    assert code_rows(engine) == expected


def test_storing_evidence_again_drops_its_codes_until_indexed(engine: Engine) -> None:
    with engine.connect() as connection:
        pk, text, procedure, flags = connection.execute(
            select(
                evidence.c.session_pk, evidence.c.document, evidence.c.procedure, evidence.c.flags
            )
        ).first()  # type: ignore[misc]
    document = json.loads(text)
    document["codes"]["any-setting"]["procedure"] = "62370"
    record = EvidenceRecord(
        session_pk=pk,
        prior_session_pk=None,
        procedure=procedure,
        flags=tuple(flags.split()),
        document=json.dumps(document),
        rules_version="test",
        parser_version="test",
        derived_at=datetime(2026, 1, 1),
    )
    with write_transaction(engine) as connection:
        replace_evidence(connection, [record])
    # The cascade removed the old rows: the session is not under its old code.
    assert not [row for row in code_rows(engine) if row[0] == pk]
    with write_transaction(engine) as connection:
        assert code_index.sync_codes(connection) == 1
        assert code_index.sync_codes(connection) == 0
    assert (pk, "any-setting", "62370") in code_rows(engine)
    with write_transaction(engine) as connection:
        code_index.index_codes(connection, pk, {"codes": {"any-setting": {"procedure": "95991"}}})
    assert [row for row in code_rows(engine) if row[0] == pk] == [(pk, "any-setting", "95991")]


def test_the_indexer_works_only_when_the_counts_differ(engine: Engine) -> None:
    indexer = CodeIndexer(engine, None, DEFAULT, batch=4)
    assert indexer.run_once() == 0  # complete already
    with write_transaction(engine) as connection:
        connection.execute(delete(evidence_codes))
        total = connection.execute(select(func.count()).select_from(evidence)).scalar_one()
    assert indexer.run_once() == total
    assert indexer.run_once() == 0
    with engine.connect() as connection:
        assert code_index.code_index_counts(connection, DEFAULT) == (total, total)


def test_flag_rows_drive_the_flagged_filter(engine: Engine) -> None:
    with engine.connect() as connection:
        flagged = set(connection.execute(select(evidence_flags.c.session_pk).distinct()).scalars())
        page = list_sessions(
            connection, SessionFilter(flagged=True), default_profile=DEFAULT, limit=500
        )
    assert {r.pk for r in page.rows} == flagged
