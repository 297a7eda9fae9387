"""Alembic environment: runs migrations on the connection `db.migrate` hands over.

`pumptrail db upgrade` (and every command, on an empty database) calls
`db.migrate.upgrade`, which passes an open connection in
`config.attributes["connection"]`. For developers, `alembic -c db/alembic.ini
-x url=sqlite:///PATH revision --autogenerate -m "..."` works too: without a
connection the URL comes from `-x url=`, then `PUMPTRAIL_DB`.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy.engine import Connection

# Imported for their models, which these modules put on Base.metadata.
import db.audit
import db.decisions
import db.outbox
import db.payers
import db.raw_blobs  # noqa: F401
from db.engine import make_engine
from db.models import Base

config = context.config
target_metadata = Base.metadata


def _configure_and_run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        # SQLite cannot ALTER most things: later migrations use batch mode.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    context.configure(
        url=_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or os.environ.get("PUMPTRAIL_DB")
    if not url:
        raise SystemExit("give the database with -x url=... or PUMPTRAIL_DB")
    return url


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure_and_run(connection)
        return
    engine = make_engine(_url())
    try:
        with engine.connect() as fresh:
            _configure_and_run(fresh)
            fresh.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
