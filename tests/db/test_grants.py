"""PostgreSQL least privilege: the runtime role adds audit entries and cannot remove them."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ProgrammingError

from db import audit
from db.engine import write_transaction
from db.grants import GrantError, grant_runtime_role
from db.migrate import open_database

pytestmark = pytest.mark.postgres


@pytest.fixture
def owner(pg_schema_url: str) -> Iterator[Engine]:
    engine = open_database(pg_schema_url)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def runtime_role(owner: Engine) -> Iterator[str]:
    role = f"pt_runtime_{uuid.uuid4().hex[:10]}"
    with owner.begin() as connection:
        connection.execute(text(f'CREATE ROLE "{role}" LOGIN'))
    try:
        yield role
    finally:
        with owner.begin() as connection:
            connection.execute(text(f'DROP OWNED BY "{role}"'))
            connection.execute(text(f'DROP ROLE "{role}"'))


@pytest.fixture
def runtime(pg_schema_url: str, owner: Engine, runtime_role: str) -> Iterator[Engine]:
    with owner.begin() as connection:
        grant_runtime_role(connection, runtime_role)
    engine = create_engine(make_url(pg_schema_url).set(username=runtime_role))
    try:
        yield engine
    finally:
        engine.dispose()


def _refused(engine: Engine, statement: str) -> str:
    with pytest.raises(ProgrammingError) as caught, engine.begin() as connection:
        connection.execute(text(statement))
    return str(caught.value.orig)


def test_runtime_role_appends_audit_entries_and_writes_data(runtime: Engine) -> None:
    with write_transaction(runtime) as connection:
        entry = audit.append(connection, actor="system", action="import", target="t")
    assert entry.id == 1
    with runtime.begin() as connection:
        connection.execute(text("INSERT INTO pumps (serial, model) VALUES ('X1', 'M')"))
        connection.execute(text("UPDATE pumps SET model = 'N' WHERE serial = 'X1'"))
        connection.execute(text("DELETE FROM pumps WHERE serial = 'X1'"))


def test_runtime_role_cannot_delete_update_or_truncate_audit_rows(runtime: Engine) -> None:
    with write_transaction(runtime) as connection:
        audit.append(connection, actor="system", action="import", target="t")
    for statement in (
        "DELETE FROM audit_log",
        "UPDATE audit_log SET actor = 'x'",
        "TRUNCATE audit_log",
    ):
        assert "permission denied" in _refused(runtime, statement)


def test_runtime_role_cannot_drop_or_disable_the_triggers(runtime: Engine) -> None:
    for statement in (
        "DROP TRIGGER audit_log_no_update_delete ON audit_log",
        "ALTER TABLE audit_log DISABLE TRIGGER USER",
        "DROP TABLE audit_log",
        "CREATE TABLE intruder (id int)",
    ):
        message = _refused(runtime, statement)
        assert "must be owner" in message or "permission denied" in message


def test_grant_refuses_a_role_that_is_not_a_plain_name(owner: Engine) -> None:
    with pytest.raises(GrantError, match="plain role name"), owner.begin() as connection:
        grant_runtime_role(connection, 'x"; DROP TABLE audit_log; --')
    with pytest.raises(GrantError, match="does not exist"), owner.begin() as connection:
        grant_runtime_role(connection, "pt_no_such_role_here")
