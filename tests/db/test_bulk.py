"""Driver-level many-row INSERTs write exactly what SQLAlchemy Core's insert() writes."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import DateTime, Engine, insert, select
from sqlalchemy.dialects import sqlite

from db.bulk import RowInserter, _sqlite_datetime
from db.codec import event_rows, setting_rows
from db.migrate import open_database
from db.models import events, pumps, sessions, setting_values
from fixtures.binary_writer import encode_binary
from fixtures.scenarios import realistic_scenario
from parsers.registry import decode_bytes
from parsers.session_json import session_document
from tests.db.test_queries import add


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = open_database(db_url)
    yield engine
    engine.dispose()


def stored(engine: Engine, table: Any, session_pk: int) -> list[tuple[Any, ...]]:
    """A session's rows, without their own id and session key, in insertion order."""
    columns = [c for c in table.columns if c.name not in ("id", "session_pk")]
    with engine.connect() as connection:
        query = (
            select(*columns).where(table.c.session_pk == session_pk).order_by(*table.primary_key)
        )
        return [tuple(row) for row in connection.execute(query)]


def test_rows_equal_those_core_writes(engine: Engine) -> None:
    session = decode_bytes(encode_binary(realistic_scenario(random.Random(5))), source="s.psl")
    document = session_document(session)
    with engine.begin() as connection:
        pump = connection.execute(insert(pumps).values(serial="P-1", model="IT-40"))
        pump_id = pump.inserted_primary_key[0]  # type: ignore[index]
        add(connection, pump_id, 1, "by-core")
        add(connection, pump_id, 2, "by-driver")
        query = select(sessions.c.session_id, sessions.c.id)
        # dict(result) would take the result for a mapping (it has keys()).
        pks = {session_id: pk for session_id, pk in connection.execute(query)}  # noqa: C416
    core_pk, driver_pk = pks["by-core"], pks["by-driver"]
    with engine.begin() as connection:
        connection.execute(insert(setting_values), setting_rows(core_pk, session, document))
        connection.execute(insert(events), event_rows(core_pk, session, document))
        RowInserter(setting_values).insert(connection, setting_rows(driver_pk, session, document))
        RowInserter(events).insert(connection, event_rows(driver_pk, session, document))
    for table in (setting_values, events):
        by_core = stored(engine, table, core_pk)
        assert by_core, table.name
        assert stored(engine, table, driver_pk) == by_core
    # Alarm rows carry both datetimes (time_utc, pump_clock_local), read back as written.
    alarm_rows = [r for r in stored(engine, events, driver_pk) if r[1] == "alarm"]
    assert alarm_rows and all(isinstance(r[2], datetime) for r in alarm_rows)


def test_no_rows_is_no_statement(engine: Engine) -> None:
    with engine.begin() as connection:
        RowInserter(events).insert(connection, [])


def test_rows_with_keys_that_are_not_columns_are_refused(engine: Engine) -> None:
    with engine.begin() as connection, pytest.raises(ValueError, match="nonsense"):
        RowInserter(events).insert(connection, [{"session_pk": 1, "seq": 0, "nonsense": 2}])


@given(st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1)))
def test_sqlite_datetime_text_is_sqlalchemys(value: datetime) -> None:
    sqlalchemy_processor = (
        DateTime().dialect_impl(sqlite.dialect()).bind_processor(sqlite.dialect())
    )
    assert sqlalchemy_processor is not None
    assert _sqlite_datetime(value) == sqlalchemy_processor(value)
    assert _sqlite_datetime(None) is None


def test_sqlite_datetime_refuses_an_aware_datetime() -> None:
    with pytest.raises(ValueError, match="naive"):
        _sqlite_datetime(datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=1))))
