"""Shared fixtures: `db_url` runs a test against SQLite and against PostgreSQL.

PostgreSQL is `PUMPTRAIL_TEST_PG_URL` (default
`postgresql+psycopg://postgres@127.0.0.1:5432/test`). Each PostgreSQL test gets a
schema of its own (dropped afterwards) through `search_path`, so tests are
independent and may run beside other users of the database. When PostgreSQL is
unreachable the test is skipped with the reason, except under CI (`CI` set),
where a skip would hide a failure: there it fails.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

PG_URL_ENV = "PUMPTRAIL_TEST_PG_URL"
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def pg_base_url() -> str:
    return os.environ.get(PG_URL_ENV) or DEFAULT_PG_URL


def pg_unavailable(reason: str) -> None:
    """Skip, or fail under CI, because PostgreSQL cannot be used."""
    message = f"PostgreSQL unavailable ({reason}); set {PG_URL_ENV} to run these tests"
    if os.environ.get("CI"):
        pytest.fail(message + " [CI: a skipped PostgreSQL test is a failure]")
    pytest.skip(message)


@contextmanager
def fresh_pg_schema(prefix: str = "pt_test") -> Iterator[str]:
    """A PostgreSQL URL whose `search_path` is a fresh, empty schema, dropped on exit
    (unreachable: `pg_unavailable`)."""
    base = make_url(pg_base_url())
    admin = create_engine(base, connect_args={"connect_timeout": 3})
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        with admin.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    except OperationalError as exc:
        admin.dispose()
        first_line = str(exc.orig or exc).strip().splitlines()[0]
        pg_unavailable(f"{base.render_as_string(hide_password=True)}: {first_line}")
    url = base.update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def pg_schema_url() -> Iterator[str]:
    """A PostgreSQL URL whose `search_path` is a fresh, empty schema."""
    with fresh_pg_schema() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database URL for an empty database: a SQLite file, or a PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'db' / 'pumptrail.db'}"
        return
    yield request.getfixturevalue("pg_schema_url")


@pytest.fixture
def other_db_url(db_url: str, tmp_path: Path) -> Iterator[str]:
    """A second empty database of `db_url`'s kind (two imports compared side by side)."""
    if db_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'other-db' / 'pumptrail.db'}"
        return
    with fresh_pg_schema() as url:
        yield url


@pytest.fixture
def fsynced_paths(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The path of every file or folder `os.fsync` flushes during the test, in order."""
    flushed: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        flushed.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    return flushed
