"""The session list's pump and patient filters through indexes (docs/web.md "Speed").

- `ix_pumps_serial_upper` on `upper(serial)`: a pump serial typed in another case;
- `ix_sessions_patient_lower` on `lower(patient_id)`: a patient ID in another case;
- `patient_names`: each distinct patient name of `sessions` with its lower-case
  form (`name_key`, the database's own `lower()`), kept by triggers on both
  databases (added when a session is inserted with a name or its name is
  updated; never removed), filled here from the sessions already stored;
- `ix_sessions_patient_name` on `(patient_name, patient_id, id)`: the sessions of
  the names a part of a name matched in `patient_names`, read from the index
  alone (the list tests the ID too, and counts up to 10,000 of them).

The expression indexes are plain SQL on both databases (SQLite 3.9+ and
PostgreSQL); a query uses them when it writes the same expression
(`web.queries.listing`). On PostgreSQL the three tables are analysed at the end,
so the planner knows the new expressions at once. The PostgreSQL trigger function keeps the schema it was
created in (`SET search_path FROM CURRENT`), so it writes to this schema's
`patient_names` whoever runs it.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ANY_SESSION = "SELECT EXISTS (SELECT 1 FROM sessions)"
_KEEP = (
    "INSERT OR IGNORE INTO patient_names (name, name_key) "
    "VALUES (NEW.patient_name, lower(NEW.patient_name));"
)
SQLITE_TRIGGERS = (
    f"""CREATE TRIGGER sessions_patient_name_insert AFTER INSERT ON sessions
    WHEN NEW.patient_name IS NOT NULL BEGIN {_KEEP} END""",
    f"""CREATE TRIGGER sessions_patient_name_update AFTER UPDATE OF patient_name ON sessions
    WHEN NEW.patient_name IS NOT NULL BEGIN {_KEEP} END""",
)
POSTGRESQL_TRIGGERS = (
    """CREATE FUNCTION sessions_patient_name_keep() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT AS $$
    BEGIN
        INSERT INTO patient_names (name, name_key)
        VALUES (NEW.patient_name, lower(NEW.patient_name)) ON CONFLICT DO NOTHING;
        RETURN NULL;
    END $$""",
    """CREATE TRIGGER sessions_patient_name AFTER INSERT OR UPDATE OF patient_name ON sessions
    FOR EACH ROW WHEN (NEW.patient_name IS NOT NULL)
    EXECUTE FUNCTION sessions_patient_name_keep()""",
)


def upgrade() -> None:
    op.create_index("ix_pumps_serial_upper", "pumps", [sa.text("upper(serial)")], unique=False)
    op.create_index(
        "ix_sessions_patient_lower", "sessions", [sa.text("lower(patient_id)")], unique=False
    )
    op.create_index(
        "ix_sessions_patient_name", "sessions", ["patient_name", "patient_id", "id"], unique=False
    )
    op.create_table(
        "patient_names",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("name_key", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_patient_names")),
    )
    op.execute(
        "INSERT INTO patient_names (name, name_key) SELECT DISTINCT patient_name, "
        "lower(patient_name) FROM sessions WHERE patient_name IS NOT NULL"
    )
    dialect = op.get_bind().dialect.name
    for statement in {"sqlite": SQLITE_TRIGGERS, "postgresql": POSTGRESQL_TRIGGERS}.get(
        dialect, ()
    ):
        op.execute(statement)
    if dialect == "postgresql" and op.get_bind().execute(sa.text(_ANY_SESSION)).scalar():
        # Statistics of the new expressions (ANALYZE gathers them for expression
        # indexes; autovacuum would only once enough rows change). Never on an empty
        # database (a new install): statistics saying "empty" would lead the planner
        # to read whole tables while the first import fills them, until autovacuum
        # analyses them again (measured: the bulk import at half its rate).
        op.execute("ANALYZE pumps, sessions, patient_names")


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS sessions_patient_name_update")
        op.execute("DROP TRIGGER IF EXISTS sessions_patient_name_insert")
    elif dialect == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS sessions_patient_name ON sessions")
        op.execute("DROP FUNCTION IF EXISTS sessions_patient_name_keep()")
    op.drop_table("patient_names")
    op.drop_index("ix_sessions_patient_name", table_name="sessions")
    op.drop_index("ix_sessions_patient_lower", table_name="sessions")
    op.drop_index("ix_pumps_serial_upper", table_name="pumps")
