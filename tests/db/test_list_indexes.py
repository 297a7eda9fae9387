"""Migration 0010: the list's expression indexes and the table of distinct patient names.

`patient_names` is kept by triggers on both databases (a session inserted with a
name, or given a new one), filled by the migration from the sessions already
stored, and never loses a name. SQLite cannot reflect expression indexes, so
`compare_metadata` (tests/db/test_migrate.py) skips them there: here their SQL is
compared with the models'.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Column, Engine, func, insert, select, text, update
from sqlalchemy.schema import CreateIndex

from db.engine import make_engine
from db.migrate import open_database, upgrade
from db.models import Base, patient_names, pumps, sessions
from tests.conftest import fresh_pg_schema
from tests.db.test_migrate import import_every_model


def _session(pk: int, name: str | None, pump: int = 1) -> dict[str, Any]:
    now = datetime(2026, 1, 1)
    return {
        "id": pk,
        "session_id": f"00000000-0000-4000-8000-{pk:012d}",
        "pump_id": pump,
        "session_start_utc": now,
        "session_start_local": now,
        "utc_offset_min": 0,
        "pump_model": "IT-40",
        "programmer_model": "PX-200",
        "programmer_serial": "PX2-1",
        "programmer_software": "3.1",
        "operator_id": "rn.test",
        "operator_role": "nurse",
        "clinic_id": "PAIN-01",
        "patient_id": f"SYN-{pk}",
        "patient_name": name,
        "has_refill": False,
        "source_sha256": f"{pk:064x}",
        "source_name": "x.psl",
        "source_format": "psl-binary",
        "format_version": "1.0",
        "document": "{}",
        "conflicting_exports": False,
        "parser_version": "test",
        "imported_at": now,
    }


def _names(engine: Engine) -> list[str]:
    """The kept names; each one's key is its lower case, by the database's `lower()`."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(
                patient_names.c.name,
                patient_names.c.name_key,
                func.lower(patient_names.c.name),
            ).order_by(patient_names.c.name)
        ).all()
    assert all(key == lowered for _, key, lowered in rows)
    return [name for name, _, _ in rows]


def test_triggers_keep_every_patient_name(db_url: str) -> None:
    engine = open_database(db_url)
    try:
        with engine.begin() as connection:
            connection.execute(insert(pumps), [{"id": 1, "serial": "P-1", "model": "IT-40"}])
            connection.execute(
                insert(sessions),
                [_session(1, "Doe, Jane"), _session(2, "Doe, Jane"), _session(3, None)],
            )
        assert _names(engine) == ["Doe, Jane"]
        with engine.begin() as connection:
            connection.execute(
                update(sessions).where(sessions.c.id == 3).values(patient_name="Roe, Rick")
            )
            # Another column changes: nothing to add.
            connection.execute(update(sessions).where(sessions.c.id == 1).values(operator_id="x"))
            connection.execute(
                update(sessions).where(sessions.c.id == 2).values(patient_name="Doe, Janet")
            )
        # A name no longer used stays (it matches no session; the list's filter
        # finds sessions by name through the sessions' own index).
        assert _names(engine) == ["Doe, Jane", "Doe, Janet", "Roe, Rick"]
    finally:
        engine.dispose()


def test_the_migration_fills_patient_names_from_stored_sessions(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        upgrade(engine, "0009")
        with engine.begin() as connection:
            connection.execute(insert(pumps), [{"id": 1, "serial": "P-1", "model": "IT-40"}])
            connection.execute(
                insert(sessions),
                [_session(1, "Doe, Jane"), _session(2, "Doe, Jane"), _session(3, None)],
            )
        upgrade(engine)
        assert _names(engine) == ["Doe, Jane"]
        with engine.begin() as connection:
            connection.execute(insert(sessions), [_session(4, "Poe, Edgar")])
        assert _names(engine) == ["Doe, Jane", "Poe, Edgar"]
    finally:
        engine.dispose()


def _squeezed(sql: str) -> str:
    return re.sub(r"\s+", " ", sql.replace('"', "")).strip().lower()


def test_sqlite_expression_indexes_are_the_models(tmp_path: Path) -> None:
    import_every_model()
    engine = open_database(f"sqlite:///{tmp_path / 'pumptrail.db'}")
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text("SELECT name, sql FROM sqlite_master WHERE type = 'index'")
            )
            stored = {str(name): str(sql) for name, sql in rows if sql is not None}
        declared = [
            index
            for table in Base.metadata.tables.values()
            for index in table.indexes
            if any(not isinstance(e, Column) for e in index.expressions)
        ]
        assert {index.name for index in declared} == {
            "ix_pumps_serial_upper",
            "ix_sessions_patient_lower",
        }
        for index in declared:
            expected = str(CreateIndex(index).compile(dialect=engine.dialect))
            assert _squeezed(stored[str(index.name)]) == _squeezed(expected)
    finally:
        engine.dispose()


def _analysed(engine: Engine) -> bool:
    """Whether PostgreSQL holds statistics of `sessions` (reltuples is -1 before any)."""
    with engine.connect() as connection:
        reltuples = connection.execute(
            text("SELECT reltuples FROM pg_class WHERE oid = 'sessions'::regclass")
        ).scalar_one()
    return bool(reltuples >= 0)


def test_postgresql_statistics_gathered_on_upgrade_never_on_a_new_database(
    pg_schema_url: str,
) -> None:
    """ANALYZE of an empty `sessions` would tell the planner the table stays empty: a new
    install's first import then reads whole tables (the bulk import at half its rate)."""
    engine = make_engine(pg_schema_url)
    try:
        upgrade(engine)
        assert not _analysed(engine)
    finally:
        engine.dispose()
    with fresh_pg_schema() as url:
        engine = make_engine(url)
        try:
            upgrade(engine, "0009")
            with engine.begin() as connection:
                connection.execute(insert(pumps), [{"id": 1, "serial": "P-1", "model": "IT-40"}])
                connection.execute(insert(sessions), [_session(1, "Doe, Jane")])
            assert not _analysed(engine)
            upgrade(engine)
            assert _analysed(engine)
        finally:
            engine.dispose()
