"""PostgreSQL least privilege: the runtime role may add to the audit log, never change it.

A shared clinic database has two roles. The owner role runs the migrations
(`pumptrail db upgrade`) and owns every table, trigger and function. The runtime
role, which the service and the web view connect as, gets what its work needs and
nothing more (`pumptrail db grant ROLE`, run as the owner):

- USAGE on the schema, and no CREATE: no DDL of its own;
- SELECT, INSERT, UPDATE, DELETE on the data tables, and USAGE and SELECT on
  their sequences;
- on `audit_log` only SELECT and INSERT: no UPDATE, DELETE or TRUNCATE, and, not
  being the table's owner, it cannot drop or disable the append-only triggers;
- on `alembic_version` only SELECT (it checks the schema revision at start).

Grants apply to the tables that exist: run it again after an upgrade that adds
tables. Table names come from the SQLAlchemy metadata, never from the command line.
"""

from __future__ import annotations

import re
from typing import Final

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

import db.payers
import db.users  # noqa: F401  (registers the users and code-index tables)
from db.audit import AuditLogRow
from db.models import Base
from parsers.errors import PumptrailError

AUDIT_TABLE: Final = AuditLogRow.__tablename__
VERSION_TABLE: Final = "alembic_version"
_ROLE_RE: Final = re.compile(r"[a-z_][a-z0-9_$]{0,62}")


class GrantError(PumptrailError):
    """Raised when `pumptrail db grant` is asked for something it cannot do: a
    database other than PostgreSQL, a role name that is not a plain identifier, or a
    role that does not exist."""


def runtime_grants(role: str, schema: str, tables: list[str]) -> list[str]:
    """The GRANT and REVOKE statements for `role`, in the order they run."""
    quoted_role = f'"{role}"'
    quoted_schema = f'"{schema}"'
    statements = [
        f"REVOKE ALL ON ALL TABLES IN SCHEMA {quoted_schema} FROM {quoted_role}",
        f"REVOKE CREATE ON SCHEMA {quoted_schema} FROM {quoted_role}",
        f"GRANT USAGE ON SCHEMA {quoted_schema} TO {quoted_role}",
    ]
    for table in tables:
        qualified = f'{quoted_schema}."{table}"'
        if table == AUDIT_TABLE:
            statements.append(f"GRANT SELECT, INSERT ON {qualified} TO {quoted_role}")
        elif table == VERSION_TABLE:
            statements.append(f"GRANT SELECT ON {qualified} TO {quoted_role}")
        else:
            statements.append(
                f"GRANT SELECT, INSERT, UPDATE, DELETE ON {qualified} TO {quoted_role}"
            )
    statements.append(
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {quoted_schema} TO {quoted_role}"
    )
    return statements


def grant_runtime_role(connection: Connection, role: str) -> list[str]:
    """Grant `role` the runtime privileges on the current schema; the statements run."""
    if connection.dialect.name != "postgresql":
        raise GrantError(
            "db grant applies to PostgreSQL only: a SQLite database is one file, "
            "protected by its mode (0600) and its owner"
        )
    if not _ROLE_RE.fullmatch(role):
        raise GrantError(
            f"expected a plain role name (lower case letters, digits, _), found {role!r}"
        )
    exists = connection.execute(
        text("SELECT 1 FROM pg_roles WHERE rolname = :role"), {"role": role}
    ).scalar()
    if not exists:
        raise GrantError(f"role {role!r} does not exist; create it first (CREATE ROLE ... LOGIN)")
    schema = str(connection.execute(text("SELECT current_schema()")).scalar())
    present = set(inspect(connection).get_table_names(schema=schema))
    known = [name for name in Base.metadata.tables if name in present]
    if VERSION_TABLE in present:
        known.append(VERSION_TABLE)
    statements = runtime_grants(role, schema, sorted(known))
    for statement in statements:
        connection.execute(text(statement))
    return statements
