"""Chain queries (docs/coding-rules.md §7.5): prior session, history start, later sessions."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, insert
from sqlalchemy.engine import Connection

from db import queries
from db.migrate import open_database
from db.models import sessions

T0 = datetime(2026, 1, 1, 9, 0)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = open_database(db_url)
    yield engine
    engine.dispose()


def add(connection: Connection, pump_id: int, day: int, sid: str, *, refill: bool = False) -> None:
    start = T0 + timedelta(days=day)
    connection.execute(
        insert(sessions).values(
            session_id=sid,
            pump_id=pump_id,
            session_start_utc=start,
            session_start_local=start,
            utc_offset_min=0,
            pump_model="IT-40",
            programmer_model="PX-200",
            programmer_serial="PX2-1",
            programmer_software="3.1",
            operator_id="dr.x",
            operator_role="physician",
            clinic_id="C",
            has_refill=refill,
            source_sha256=sid.ljust(64, "0")[:64],
            source_name=sid,
            source_format="psl-binary",
            format_version="1.0",
            document="{}",
            conflicting_exports=False,
            parser_version="p",
            imported_at=T0,
        )
    )


def build_chain(engine: Engine) -> tuple[int, int]:
    """Pump A: days 0 (refill), 10, 20 (two sessions, 'b' < 'c'), 30 (refill), 40.
    Pump B: days 5, 25 (refill)."""
    with engine.begin() as connection:
        a = queries.get_or_create_pump(connection, "A-1", "IT-40")
        b = queries.get_or_create_pump(connection, "B-1", "IT-20")
        assert queries.get_or_create_pump(connection, "A-1", "IT-40") == a
        add(connection, a, 0, "a00", refill=True)
        add(connection, a, 10, "a10")
        add(connection, a, 20, "a20-c")
        add(connection, a, 20, "a20-b")
        add(connection, a, 30, "a30", refill=True)
        add(connection, a, 40, "a40")
        add(connection, b, 5, "b05")
        add(connection, b, 25, "b25", refill=True)
    return a, b


@pytest.fixture
def chain(engine: Engine) -> Iterator[tuple[Connection, int, int]]:
    a, b = build_chain(engine)
    with engine.connect() as connection:
        yield connection, a, b


def day(n: int) -> datetime:
    return T0 + timedelta(days=n)


def ids(entries: list[queries.ChainEntry]) -> list[str]:
    return [entry.session_id for entry in entries]


def test_prior_is_latest_strictly_earlier_of_the_same_pump(
    chain: tuple[Connection, int, int],
) -> None:
    connection, a, b = chain
    assert queries.prior_session(connection, a, day(0)) is None
    prior = queries.prior_session(connection, a, day(10))
    assert prior is not None and prior.session_id == "a00"
    # Two sessions at day 20: the later in chain order (session ID) is the prior of day 30,
    # and neither is the other's prior.
    prior = queries.prior_session(connection, a, day(30))
    assert prior is not None and prior.session_id == "a20-c"
    prior = queries.prior_session(connection, a, day(20))
    assert prior is not None and prior.session_id == "a10"
    prior = queries.prior_session(connection, b, day(40))
    assert prior is not None and prior.session_id == "b25"


def test_history_starts_at_the_latest_earlier_refill_else_the_prior(
    chain: tuple[Connection, int, int],
) -> None:
    connection, a, b = chain
    start = queries.history_start(connection, a, day(30))
    assert start is not None and start.session_id == "a00"
    start = queries.history_start(connection, a, day(40))
    assert start is not None and start.session_id == "a30"
    start = queries.history_start(connection, b, day(25))
    assert start is not None and start.session_id == "b05"  # no earlier refill: the prior
    assert queries.history_start(connection, b, day(5)) is None


def test_history_before_reads_back_to_the_latest_refill(
    chain: tuple[Connection, int, int],
) -> None:
    connection, a, b = chain

    def history(pump: int, n: int) -> list[str]:
        return [s.session_id for s in queries.history_before(connection, pump, day(n))]

    assert history(a, 40) == ["a30"]
    assert history(a, 30) == ["a00", "a10", "a20-b", "a20-c"]
    assert history(a, 10) == ["a00"]
    assert history(a, 0) == []
    assert history(b, 25) == ["b05"]  # no earlier refill: the prior alone
    assert history(b, 40) == ["b25"]
    # Sessions sharing the cut's instant come along; truncation keeps chain order.
    earlier = queries.history_before(connection, a, day(25))
    assert [s.session_id for s in queries.truncate_history(earlier)] == [
        "a00",
        "a10",
        "a20-b",
        "a20-c",
    ]


def test_later_affected_stops_at_the_next_refill(chain: tuple[Connection, int, int]) -> None:
    connection, a, b = chain
    assert ids(queries.later_affected(connection, a, day(10))) == ["a20-b", "a20-c", "a30"]
    assert ids(queries.later_affected(connection, a, day(30))) == ["a40"]
    assert ids(queries.later_affected(connection, a, day(40))) == []
    assert ids(queries.later_affected(connection, b, day(0))) == ["b05", "b25"]


def test_chain_and_window_are_in_chain_order(chain: tuple[Connection, int, int]) -> None:
    connection, a, _ = chain
    assert ids(queries.chain(connection, a)) == ["a00", "a10", "a20-b", "a20-c", "a30", "a40"]
    window = queries.stored_window(connection, a, (day(20), "a20-c"), day(30))
    assert [s.session_id for s in window] == ["a20-c", "a30"]


def test_prior_lookup_uses_the_chain_index_on_sqlite(tmp_path: Path) -> None:
    # PostgreSQL picks plans by table statistics, so the plan is checked on SQLite only.
    engine = open_database(f"sqlite:///{tmp_path / 'plan.db'}")
    a, _ = build_chain(engine)
    statement = (
        "EXPLAIN QUERY PLAN SELECT id FROM sessions WHERE pump_id = ? AND session_start_utc < ? "
        "ORDER BY session_start_utc DESC, session_id DESC LIMIT 1"
    )
    with engine.connect() as connection:
        rows = connection.exec_driver_sql(statement, (a, "2026-02-01 00:00:00")).all()
    engine.dispose()
    plan = " ".join(str(row[-1]) for row in rows)
    assert "ix_sessions_chain" in plan
    assert "TEMP B-TREE" not in plan
