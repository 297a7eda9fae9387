"""Bulk import throughput into SQLite and PostgreSQL, in sessions/s.

Corpus: pumps of 10 consecutive realistic visits each (40-80 records per session,
`fixtures.scenarios`), as binary exports in memory. Warm start: the database is
migrated and a few hundred sessions of other pumps are imported before the clock
starts.

Figures, per backend:

- `import --jobs 1`: `ingest.pipeline.Importer.import_many` (`pumptrail import
  --jobs 1`), one process, one transaction per file with group commit, end to end:
  SHA-256, raw store (flushed per group before the group's commits), decode, rows,
  evidence of the session from its chain, the group made durable before its
  results are given out.
- `import --jobs N`: `ingest.parallel.ParallelImporter` (`pumptrail import`, N the
  cores): decoding, rows and evidence in N worker processes, one writer, a group
  per transaction; the same stored result (tests/ingest/test_parallel_import.py).
  Targets (issue 15): at least 1.7x `--jobs 1` in the same run and 500
  sessions/s into SQLite; into PostgreSQL at least 2x `--jobs 1`.
- `writer alone`: the parallel import's writer with the workers' part done in the
  same process (`--jobs N` with no worker processes), to show what the workers
  take off the writer.
- `import, a durable commit per file`: `Importer.import_bytes` as the watcher calls
  it, every file's raw bytes and commit on disk before the next file.
- `store`: the same pipeline with decoding done beforehand and the raw store's
  fsyncs off: what the database layer and the evidence derivation cost.

Baselines, same run, same rows: every row the pipeline wrote (sessions, settings,
events, raw files, evidence, flags) read back and inserted again into an empty
database by the bare driver (`sqlite3` / psycopg `executemany`), one transaction
per session; and on PostgreSQL the same rows by a bare `COPY` per table, all in one
transaction (the floor of what the server can take).

Run alone: `python -m bench.bench_import [--sessions N] [--no-postgres]`.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sqlite3
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from bench.postgres import PG_URL
from db.migrate import open_database
from evidence import load_rules
from fixtures.binary_writer import encode_binary
from fixtures.scenarios import VisitPlan, drain, new_pump, visit
from ingest.parallel import ParallelImporter, default_jobs
from ingest.pipeline import Importer
from ingest.rawstore import RawStore, sha256_hex
from parsers.model import Session
from parsers.registry import decode_bytes

TARGET_SQLITE = 500.0
TARGET_SPEEDUP = 1.7
TARGET_PG_SPEEDUP = 2.0
VISITS_PER_PUMP = 10
# Tables in insertion order (parents first) and their per-session grouping column.
TABLES = (
    ("sessions", "id"),
    ("setting_values", "session_pk"),
    ("events", "session_pk"),
    ("raw_files", "session_pk"),
    ("evidence", "session_pk"),
    ("evidence_flags", "session_pk"),
)


def corpus(sessions: int, seed: int) -> list[bytes]:
    """Binary exports of pumps with 10 realistic visits each, in visit order."""
    rng = random.Random(seed)
    files: list[bytes] = []
    while len(files) < sessions:
        pump = new_pump(rng)
        when = datetime(2024, 1, 1) + timedelta(days=rng.randrange(0, 60))
        for _ in range(VISITS_PER_PUMP):
            plan = VisitPlan(
                refill=rng.random() < 0.7,
                dose_change_percent=rng.choice((0, 0, 10, -10, 20)),
                alarm_threshold_change=rng.random() < 0.1,
                revert_a_change=rng.random() < 0.1,
                bolus=rng.random() < 0.2,
                logged_alarms=rng.randrange(30, 60),
                notes=rng.randrange(3, 12),
            )
            files.append(encode_binary(visit(rng, pump, when, plan)))
            gap = rng.randrange(30, 90)
            drain(pump, gap)
            when += timedelta(days=gap)
    return files[:sessions]


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def run_pipeline(importer: Importer, files: Sequence[bytes], prefix: str) -> float:
    """One durable transaction per file, as the watcher imports."""
    started = time.perf_counter()
    for index, data in enumerate(files):
        result = importer.import_bytes(data, name=f"{prefix}{index}.psl")
        if result.outcome != "imported":
            raise RuntimeError(f"bench import: {result.detail}")
    return time.perf_counter() - started


def run_bulk(importer: Importer, files: Sequence[bytes], prefix: str) -> float:
    """`pumptrail import --jobs 1`: a transaction per file, group commit (`Importer.import_many`)."""
    started = time.perf_counter()
    items = ((data, f"{prefix}{index}.psl") for index, data in enumerate(files))
    for result in importer.import_many(items):
        if result.outcome != "imported":
            raise RuntimeError(f"bench import: {result.detail}")
    return time.perf_counter() - started


def run_parallel(importer: Importer, files: Sequence[bytes], prefix: str, jobs: int) -> float:
    """`pumptrail import --jobs N`: workers prepare, one writer (`ParallelImporter`)."""
    started = time.perf_counter()
    items = ((data, f"{prefix}{index}.psl") for index, data in enumerate(files))
    for result in ParallelImporter(importer, jobs).import_many(items):
        if result.outcome != "imported":
            raise RuntimeError(f"bench import: {result.detail}")
    return time.perf_counter() - started


# ---------------------------------------------------------------------------
# Baseline: the same rows through the bare driver


def _columns(engine: Engine, table: str) -> list[str]:
    with engine.connect() as connection:
        result = connection.execute(text(f"SELECT * FROM {table} WHERE 1 = 0"))
        return list(result.keys())


def read_rows(
    engine: Engine, first_pk: int
) -> tuple[list[tuple[Any, ...]], dict[str, list[str]], list[Any]]:
    """Pumps, then per session from `first_pk` on (insertion order) its rows of every table."""
    columns = {table: _columns(engine, table) for table, _ in TABLES}
    with engine.connect() as connection:
        pumps = [tuple(r) for r in connection.execute(text("SELECT id, serial, model FROM pumps"))]
        grouped: dict[str, dict[int, list[tuple[Any, ...]]]] = {}
        for table, key in TABLES:
            by_session: dict[int, list[tuple[Any, ...]]] = defaultdict(list)
            select_list = ", ".join(columns[table])
            position = columns[table].index(key)
            for row in connection.execute(text(f"SELECT {select_list} FROM {table}")):
                if row[position] is not None:
                    by_session[row[position]].append(tuple(row))
            grouped[table] = by_session
        order = [
            r[0]
            for r in connection.execute(
                text("SELECT id FROM sessions WHERE id >= :first ORDER BY id"), {"first": first_pk}
            )
        ]
    per_session = [[grouped[table].get(pk, []) for table, _ in TABLES] for pk in order]
    return pumps, columns, per_session


def baseline_sqlite(workdir: Path, engine: Engine, first_pk: int) -> float:
    pumps, columns, per_session = read_rows(engine, first_pk)
    empty = workdir / "baseline.db"
    open_database(f"sqlite:///{empty}").dispose()
    connection = sqlite3.connect(empty, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")  # as db.engine sets it
    connection.execute("PRAGMA foreign_keys=ON")
    connection.executemany("INSERT INTO pumps (id, serial, model) VALUES (?, ?, ?)", pumps)
    statements = [
        f"INSERT INTO {table} ({', '.join(columns[table])}) "
        f"VALUES ({', '.join('?' for _ in columns[table])})"
        for table, _ in TABLES
    ]
    started = time.perf_counter()
    for groups in per_session:
        connection.execute("BEGIN IMMEDIATE")
        for statement, rows in zip(statements, groups, strict=True):
            if rows:
                connection.executemany(statement, rows)
        connection.execute("COMMIT")
    elapsed = time.perf_counter() - started
    connection.close()
    return elapsed


@contextmanager
def _empty_pg_database(url: str, prefix: str, pumps: Sequence[tuple[Any, ...]]) -> Iterator[Any]:
    """A psycopg connection to a fresh migrated schema holding `pumps`; dropped afterwards."""
    import psycopg

    parsed = make_url(url)
    schema = f"{prefix}_{uuid.uuid4().hex[:8]}"
    conninfo = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
    try:
        target = parsed.update_query_dict({"options": f"-csearch_path={schema}"})
        open_database(target.render_as_string(hide_password=False)).dispose()
        with psycopg.connect(conninfo, options=f"-csearch_path={schema}") as connection:
            with connection.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO pumps (id, serial, model) VALUES (%s, %s, %s)", pumps
                )
            connection.commit()
            yield connection
    finally:
        with psycopg.connect(conninfo, autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def baseline_postgres(url: str, engine: Engine, first_pk: int) -> float:
    pumps, columns, per_session = read_rows(engine, first_pk)
    with _empty_pg_database(url, "pt_bench_base", pumps) as connection:
        statements = [
            f"INSERT INTO {table} ({', '.join(columns[table])}) "
            f"VALUES ({', '.join('%s' for _ in columns[table])})"
            for table, _ in TABLES
        ]
        started = time.perf_counter()
        for groups in per_session:
            with connection.cursor() as cursor:
                for statement, rows in zip(statements, groups, strict=True):
                    if rows:
                        cursor.executemany(statement, rows)
            connection.commit()
        return time.perf_counter() - started


def baseline_postgres_copy(url: str, source_url: str) -> float:
    """Every session's rows of `source_url` again, by one bare COPY per table, one transaction."""
    engine = open_database(source_url)
    try:
        pumps, columns, per_session = read_rows(engine, FIRST_MEASURED_PK[source_url])
    finally:
        engine.dispose()
    with _empty_pg_database(url, "pt_bench_copy", pumps) as connection:
        started = time.perf_counter()
        with connection.cursor() as cursor:
            for position, (table, _key) in enumerate(TABLES):
                names = ", ".join(columns[table])
                with cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
                    for groups in per_session:
                        for row in groups[position]:
                            copy.write_row(row)
        connection.commit()
        return time.perf_counter() - started


# ---------------------------------------------------------------------------
# One backend


def _max_session_pk(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(
            connection.execute(text("SELECT coalesce(max(id), 0) FROM sessions")).scalar_one()
        )


FIRST_MEASURED_PK: dict[str, int] = {}


def bench_parallel(
    label: str, urls: Sequence[str], workdir: Path, warmup: Sequence[bytes], files: Sequence[bytes]
) -> tuple[float, float]:
    """`--jobs N` into one database, the writer alone into another: (N rate, writer rate)."""
    rules = load_rules()
    jobs = max(2, default_jobs())
    rates: list[float] = []
    for url, store, workers in ((urls[0], "raw-par", jobs), (urls[1], "raw-writer", 1)):
        engine = open_database(url)
        try:
            importer = Importer(engine, RawStore(workdir / store, durable=True), rules)
            run_bulk(importer, warmup, "warm")
            FIRST_MEASURED_PK[url] = _max_session_pk(engine) + 1
            rates.append(_rate(len(files), run_parallel(importer, files, "file", workers)))
        finally:
            engine.dispose()
    print(
        f"   {label:<8} import --jobs {jobs}: end to end             {rates[0]:>8,.0f} sessions/s"
    )
    print(f"   {label:<8} writer alone (workers' part in it)   {rates[1]:>8,.0f} sessions/s")
    return rates[0], rates[1]


def bench_backend(
    label: str,
    urls: tuple[str, str, str],
    workdir: Path,
    warmup: Sequence[bytes],
    files: Sequence[bytes],
    baseline: Callable[[Engine, int], float],
    parallel_urls: Sequence[str],
) -> tuple[float, float]:
    """Import (end to end, serial and parallel), store (pre-decoded), baseline: the rates."""
    rules = load_rules()
    engine = open_database(urls[0])
    try:
        importer = Importer(engine, RawStore(workdir / "raw", durable=True), rules)
        run_bulk(importer, warmup, "warm")
        rate = _rate(len(files), run_bulk(importer, files, "file"))
    finally:
        engine.dispose()
    print(f"   {label:<8} import --jobs 1: end to end           {rate:>8,.0f} sessions/s")
    parallel_rate, _writer = bench_parallel(label, parallel_urls, workdir, warmup, files)
    engine = open_database(urls[2])
    try:
        importer = Importer(engine, RawStore(workdir / "raw3", durable=True), rules)
        run_pipeline(importer, warmup, "warm")
        per_file = _rate(len(files), run_pipeline(importer, files, "file"))
    finally:
        engine.dispose()
    print(f"   {label:<8} import: a durable commit per file    {per_file:>8,.0f} sessions/s")

    # Decoding done beforehand, raw store without fsync: the database layer + evidence.
    decoded = {sha256_hex(d): decode_bytes(d, source="bench") for d in (*warmup, *files)}

    def predecoded(data: bytes, *, source: str) -> Session:
        return decoded[sha256_hex(data)]

    engine = open_database(urls[1])
    try:
        importer = Importer(
            engine, RawStore(workdir / "raw2", durable=False), rules, decode=predecoded
        )
        run_pipeline(importer, warmup, "warm")
        first_pk = _max_session_pk(engine) + 1
        store_rate = _rate(len(files), run_pipeline(importer, files, "file"))
        base_rate = _rate(len(files), baseline(engine, first_pk))
    finally:
        engine.dispose()
    print(f"   {label:<8} store: rows + evidence, no decoding   {store_rate:>8,.0f} sessions/s")
    print(
        f"   {label:<8} baseline: same rows, bare executemany {base_rate:>8,.0f} sessions/s"
        f"   (import --jobs 1 {base_rate / rate:.1f}x, --jobs N {base_rate / parallel_rate:.1f}x,"
        f" store {base_rate / store_rate:.1f}x its time)"
    )
    return rate, parallel_rate


_PG_SCHEMAS: list[str] = []


def _fresh_pg_schema_url(url: str) -> str:
    import psycopg

    parsed = make_url(url)
    schema = f"pt_bench_{uuid.uuid4().hex[:8]}"
    conninfo = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
    _PG_SCHEMAS.append(schema)
    return parsed.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
        hide_password=False
    )


def _drop_pg_schemas(url: str) -> None:
    import psycopg

    conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as admin:
        while _PG_SCHEMAS:
            admin.execute(f'DROP SCHEMA IF EXISTS "{_PG_SCHEMAS.pop()}" CASCADE')


def main(*, quick: bool = False, sessions: int | None = None, postgres: bool = True) -> None:
    count = sessions or (500 if quick else 3000)
    warm = max(50, min(300, count // 5))
    files = corpus(count, seed=20261127)
    warmup = corpus(warm, seed=7)
    records = sum(int.from_bytes(f[86:90], "little") for f in files)  # body bytes, for size
    print(
        f"   corpus: {count} sessions ({count // VISITS_PER_PUMP} pumps x {VISITS_PER_PUMP} "
        f"visits), {sum(map(len, files)) / 1e6:.1f} MB binary ({records / count:,.0f} body "
        f"bytes each); warm-up {warm} sessions"
    )
    workdir = Path(tempfile.mkdtemp(prefix="pumptrail-bench-import-"))
    try:
        sqlite_dir = workdir / "sqlite"
        sqlite_dir.mkdir()
        rate, parallel_rate = bench_backend(
            "sqlite",
            (
                f"sqlite:///{sqlite_dir / 'import.db'}",
                f"sqlite:///{sqlite_dir / 'store.db'}",
                f"sqlite:///{sqlite_dir / 'per-file.db'}",
            ),
            sqlite_dir,
            warmup,
            files,
            lambda engine, first: baseline_sqlite(sqlite_dir, engine, first),
            (f"sqlite:///{sqlite_dir / 'parallel.db'}", f"sqlite:///{sqlite_dir / 'writer.db'}"),
        )
        speedup = parallel_rate / rate
        print(
            f"   target: --jobs N >= {TARGET_SPEEDUP}x --jobs 1 ({speedup:.2f}x) and "
            f">= {TARGET_SQLITE:,.0f} sessions/s ({parallel_rate:,.0f}) into SQLite: "
            f"{'met' if speedup >= TARGET_SPEEDUP and parallel_rate >= TARGET_SQLITE else 'NOT met'}"
        )
        if postgres:
            _bench_postgres(workdir, warmup, files)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _bench_postgres(workdir: Path, warmup: Sequence[bytes], files: Sequence[bytes]) -> None:
    try:
        urls = (
            _fresh_pg_schema_url(PG_URL),
            _fresh_pg_schema_url(PG_URL),
            _fresh_pg_schema_url(PG_URL),
        )
        parallel_urls = (_fresh_pg_schema_url(PG_URL), _fresh_pg_schema_url(PG_URL))
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"   postgres   skipped: {first}")
        return
    pg_dir = workdir / "postgres"
    pg_dir.mkdir()
    try:
        rate, parallel_rate = bench_backend(
            "postgres",
            urls,
            pg_dir,
            warmup,
            files,
            lambda engine, first: baseline_postgres(PG_URL, engine, first),
            parallel_urls,
        )
        copy_rate = _rate(len(files), baseline_postgres_copy(PG_URL, parallel_urls[0]))
        speedup = parallel_rate / rate
        print(
            f"   postgres baseline: same rows, bare COPY       {copy_rate:>8,.0f} sessions/s"
            f"   (import --jobs N {copy_rate / parallel_rate:.1f}x its time)"
        )
        print(
            f"   target: --jobs N >= {TARGET_PG_SPEEDUP}x --jobs 1 into PostgreSQL "
            f"({speedup:.2f}x): {'met' if speedup >= TARGET_PG_SPEEDUP else 'NOT met'}"
        )
    except OperationalError as exc:
        print(f"   postgres   failed: {str(exc.orig or exc).strip().splitlines()[0]}")
    finally:
        _drop_pg_schemas(PG_URL)


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_import")
    parser.add_argument("--sessions", type=int, help="sessions to import (default 3000)")
    parser.add_argument("--quick", action="store_true", help="500 sessions")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    args = parser.parse_args()
    main(quick=args.quick, sessions=args.sessions, postgres=not args.no_postgres)


if __name__ == "__main__":
    cli()
