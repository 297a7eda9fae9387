"""The PostgreSQL part of the benchmarks: the server's URL and a schema of one run's own.

`make bench` measures PostgreSQL beside SQLite whenever the server answers. The
server is `PUMPTRAIL_BENCH_PG_URL`, else `PUMPTRAIL_TEST_PG_URL` (the tests'
server), else `postgresql+psycopg://postgres@127.0.0.1:5432/test`. Each run
works in a schema of its own (through `search_path`, as the tests do), dropped
afterwards, so it may share the database with other users. An unreachable server
prints `skipped: <reason>` and the benchmark goes on, unless the run asked for
PostgreSQL by name (`required`), where it is an error.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from sqlalchemy.engine import make_url

PG_URL: Final = os.environ.get(
    "PUMPTRAIL_BENCH_PG_URL",
    os.environ.get("PUMPTRAIL_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
)


class PostgresUnavailable(RuntimeError):
    """Raised by `pg_schema` when PostgreSQL was asked for by name and cannot be reached."""


def libpq(url: str) -> tuple[str, str]:
    """The libpq connection text of a SQLAlchemy PostgreSQL URL, and its `options`."""
    parsed = make_url(url)
    options = str(parsed.query.get("options", ""))
    plain = parsed.set(drivername="postgresql", query={})
    return plain.render_as_string(hide_password=False), options


@contextmanager
def pg_schema(
    schema: str, *, base_url: str = PG_URL, drop: bool = True, required: bool = False
) -> Iterator[str | None]:
    """A URL of `base_url` whose `search_path` is `schema` (created if missing), or None
    after printing `skipped: <reason>` when the server cannot be reached. The schema
    is dropped on the way out unless `drop` is False."""
    import psycopg

    conninfo, _ = libpq(base_url)
    try:
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=3) as admin:
            admin.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    except psycopg.OperationalError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        where = make_url(base_url).render_as_string(hide_password=True)
        if required:
            raise PostgresUnavailable(f"{where}: {reason}") from exc
        print(f"   skipped: PostgreSQL at {where} unreachable ({reason})", flush=True)
        yield None
        return
    url = make_url(base_url).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        if drop:
            with psycopg.connect(conninfo, autocommit=True) as admin:
                admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
