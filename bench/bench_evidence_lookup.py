"""Evidence for one session in a database of 1,000,000 sessions.

Setup, kept fast: 100 pumps x 10 realistic visits go through the real import
pipeline (real documents and evidence); the rest of the million sessions (10 per
pump) are written with the bare driver's `executemany` (SQLite) or `COPY`
(PostgreSQL), each with a small evidence document, straight into the migrated
schema.

Figures, over random sessions, p50 / p95 / p99:

- `stored evidence`: the evidence document of one session by session ID, parsed
  (`pumptrail evidence --session`, the web view);
- `prior session`: the chain lookup through `db.queries` (Core);
- `derive evidence`: one real session's evidence derived again from its chain
  (history query, documents rebuilt, `evidence.derive_evidence`), nothing cached.

Baseline, same run: the bare indexed lookup, the prior-session query through the
bare driver. Target: evidence p95 under 5 ms.

Both databases are measured: SQLite, then PostgreSQL (`bench.postgres`: its
server and a schema of this run's own, dropped afterwards; `skipped: <reason>`
when the server does not answer).

Run alone: `python -m bench.bench_evidence_lookup [--sessions N | --quick]
[--sqlite | --postgres]`.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select, text

from bench.postgres import libpq, pg_schema
from db import queries
from db.migrate import open_database
from db.models import sessions
from evidence import load_rules
from fixtures.binary_writer import encode_binary
from fixtures.scenarios import VisitPlan, drain, new_pump, visit
from ingest.pipeline import Importer
from ingest.rawstore import RawStore

TARGET_P95_MS = 5.0
VISITS = 10
REAL_PUMPS = 100
SAMPLES = 2000
CHUNK = 50_000
START = datetime(2020, 1, 6, 9, 0)
SESSION_COLUMNS = (
    "id",
    "session_id",
    "pump_id",
    "session_start_utc",
    "session_start_local",
    "utc_offset_min",
    "pump_model",
    "programmer_model",
    "programmer_serial",
    "programmer_software",
    "operator_id",
    "operator_role",
    "clinic_id",
    "patient_id",
    "patient_name",
    "patient_birth_date",
    "has_refill",
    "pump_clock_local",
    "source_sha256",
    "source_name",
    "source_format",
    "format_version",
    "document",
    "conflicting_exports",
    "parser_version",
    "imported_at",
)
EVIDENCE_COLUMNS = (
    "session_pk",
    "prior_session_pk",
    "procedure",
    "flags",
    "document",
    "rules_version",
    "parser_version",
    "derived_at",
)
PRIOR_SQL = (
    "SELECT id FROM sessions WHERE pump_id = {p} AND session_start_utc < {p} "
    "ORDER BY session_start_utc DESC, session_id DESC LIMIT 1"
)


# ---------------------------------------------------------------------------
# Setup


def import_real(engine: Engine, workdir: Path, pumps: int) -> list[str]:
    """Real pumps through the pipeline; returns their session IDs."""
    rng = random.Random(20261127)
    importer = Importer(engine, RawStore(workdir / "raw", durable=False), load_rules())
    ids: list[str] = []
    for _ in range(pumps):
        pump = new_pump(rng)
        when = START + timedelta(days=rng.randrange(0, 60))
        for _ in range(VISITS):
            plan = VisitPlan(
                refill=rng.random() < 0.7,
                dose_change_percent=rng.choice((0, 0, 10, -10)),
                bolus=rng.random() < 0.2,
                logged_alarms=rng.randrange(30, 60),
                notes=rng.randrange(3, 12),
            )
            data = encode_binary(visit(rng, pump, when, plan))
            result = importer.import_bytes(data, name="bench.psl")
            if result.outcome != "imported" or result.session_id is None:
                raise RuntimeError(result.detail)
            ids.append(result.session_id)
            gap = rng.randrange(30, 90)
            drain(pump, gap)
            when += timedelta(days=gap)
    return ids


def _max_ids(engine: Engine) -> tuple[int, int]:
    with engine.connect() as connection:
        pump = connection.execute(text("SELECT coalesce(max(id), 0) FROM pumps")).scalar_one()
        session = connection.execute(text("SELECT coalesce(max(id), 0) FROM sessions")).scalar_one()
    return int(pump), int(session)


def filler_rows(
    first_pump: int, first_session: int, count: int, *, as_text: bool
) -> Iterator[tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]]:
    """Chunks of (pumps, sessions, evidence) rows for `count` synthetic sessions."""
    rng = random.Random(1)

    def when(value: datetime) -> Any:
        return value.strftime("%Y-%m-%d %H:%M:%S.000000") if as_text else value

    now = when(datetime(2026, 1, 1))
    pump_id = first_pump
    pk = first_session
    made = 0
    while made < count:
        pumps: list[tuple[Any, ...]] = []
        sessions: list[tuple[Any, ...]] = []
        evidence: list[tuple[Any, ...]] = []
        while made < count and len(sessions) < CHUNK:
            serial = f"FILL-{pump_id:07d}"
            pumps.append((pump_id, serial, "IT-40"))
            start = START + timedelta(days=rng.randrange(0, 300), minutes=rng.randrange(0, 600))
            prior: int | None = None
            for visit_no in range(min(VISITS, count - made)):
                hex_id = f"{rng.getrandbits(128):032x}"
                session_id = (
                    f"{hex_id[:8]}-{hex_id[8:12]}-4{hex_id[13:16]}-a{hex_id[17:20]}-{hex_id[20:]}"
                )
                refill = visit_no % 2 == 1
                procedure = "95990" if refill else "62367"
                started = when(start)
                sessions.append(
                    (
                        pk,
                        session_id,
                        pump_id,
                        started,
                        started,
                        0,
                        "IT-40",
                        "PX-200",
                        "PX2-0000001",
                        "3.1.2045",
                        "rn.bench",
                        "nurse",
                        "PAIN-01",
                        f"SYN-{pk:07d}",
                        "Bench, Filler",
                        None,
                        refill,
                        None,
                        f"{pk:064x}",
                        "filler.psl",
                        "psl-binary",
                        "1.0",
                        f'{{"session_id":"{session_id}","pump_serial":"{serial}","filler":true}}',
                        False,
                        "bench",
                        now,
                    )
                )
                ev_doc = (
                    f'{{"session_id":"{session_id}","pump_serial":"{serial}",'
                    f'"session_start_utc":"{start.isoformat()}Z","prior_session_id":null,'
                    f'"flags":[],"codes":{{"rate-dose":{{"procedure":"{procedure}"}}}}}}'
                )
                evidence.append(
                    (
                        pk,
                        prior,
                        procedure,
                        "",
                        ev_doc,
                        "bench",
                        "bench",
                        now,
                    )
                )
                prior = pk
                pk += 1
                made += 1
                start += timedelta(days=rng.randrange(30, 90))
            pump_id += 1
        yield pumps, sessions, evidence


def fill_sqlite(path: Path, engine: Engine, count: int) -> None:
    first_pump, first_session = _max_ids(engine)
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=OFF")
    connection.execute("PRAGMA cache_size=-262144")  # 256 MiB: random UUID index inserts
    session_sql = (
        f"INSERT INTO sessions ({', '.join(SESSION_COLUMNS)}) "
        f"VALUES ({', '.join('?' for _ in SESSION_COLUMNS)})"
    )
    evidence_sql = (
        f"INSERT INTO evidence ({', '.join(EVIDENCE_COLUMNS)}) "
        f"VALUES ({', '.join('?' for _ in EVIDENCE_COLUMNS)})"
    )
    for pumps, session_rows, evidence_rows in filler_rows(
        first_pump + 1, first_session + 1, count, as_text=True
    ):
        connection.execute("BEGIN")
        connection.executemany("INSERT INTO pumps (id, serial, model) VALUES (?, ?, ?)", pumps)
        connection.executemany(session_sql, session_rows)
        connection.executemany(evidence_sql, evidence_rows)
        connection.execute("COMMIT")
    connection.execute("ANALYZE")
    connection.close()


# ---------------------------------------------------------------------------
# Measuring


def percentiles(samples: Sequence[float]) -> tuple[float, float, float]:
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return cuts[49], cuts[94], cuts[98]


Timings = tuple[list[float], list[float]]


def measure(func: Callable[[Any], object], arguments: Sequence[Any]) -> Timings:
    """Wall-clock and CPU milliseconds per call (CPU time leaves out other processes)."""
    for argument in arguments[:50]:
        func(argument)  # warm caches and statement caches
    wall: list[float] = []
    cpu: list[float] = []
    for argument in arguments:
        started, started_cpu = time.perf_counter(), time.thread_time()
        func(argument)
        wall.append((time.perf_counter() - started) * 1000)
        cpu.append((time.thread_time() - started_cpu) * 1000)
    return wall, cpu


def report(label: str, timings: Timings, baseline_p50: float | None = None) -> float:
    wall, cpu = timings
    p50, p95, p99 = percentiles(wall)
    line = (
        f"   {label:<32} p50 {p50 * 1000:>6.0f} us  p95 {p95 * 1000:>6.0f} us  "
        f"p99 {p99 * 1000:>6.0f} us  (CPU p95 {percentiles(cpu)[1] * 1000:>5.0f} us)"
    )
    if baseline_p50:
        line += f"  {p50 / baseline_p50:>5.1f}x the bare lookup"
    print(line, flush=True)
    return p95


def run_lookups(
    engine: Engine, real_ids: Sequence[str], bare: Callable[[int, Any], object]
) -> None:
    rng = random.Random(5)
    with engine.connect() as connection:
        total = int(connection.execute(text("SELECT count(*) FROM sessions")).scalar_one())
        picks = sorted(rng.sample(range(1, total + 1), SAMPLES))
        rows = list(
            connection.execute(
                select(
                    sessions.c.id,
                    sessions.c.session_id,
                    sessions.c.pump_id,
                    sessions.c.session_start_utc,
                ).where(sessions.c.id.in_(picks))
            )
        )
        rng.shuffle(rows)
        print(f"   database: {total:,} sessions; {len(rows)} random sessions per figure")

        baseline = measure(lambda r: bare(r[2], r[3]), rows)
        base_p50 = percentiles(baseline[0])[0]
        report("baseline: bare indexed lookup", baseline)
        report(
            "prior session (db.queries)",
            measure(lambda r: queries.prior_session(connection, r[2], r[3]), rows),
            base_p50,
        )
        stored_p95 = report(
            "stored evidence (by session ID)",
            measure(
                lambda r: json.loads(queries.evidence_document_text(connection, r[1]) or "null"),
                rows,
            ),
            base_p50,
        )
        rules = load_rules()
        derived_ids = [rng.choice(real_ids) for _ in range(min(SAMPLES, 5 * len(real_ids)))]

        def derive(session_id: str) -> object:
            # A new importer each time: no rebuilt session is cached.
            importer = Importer(engine, RawStore(Path(tempfile.gettempdir())), rules)
            return importer.evidence_for(connection, session_id)

        derive_p95 = report(
            "derive evidence (real session)", measure(derive, derived_ids), base_p50
        )
    print(
        f"   target: evidence p95 < {TARGET_P95_MS:.0f} ms: stored "
        f"{'met' if stored_p95 < TARGET_P95_MS else 'NOT met'} ({stored_p95:.2f} ms), derived "
        f"{'met' if derive_p95 < TARGET_P95_MS else 'NOT met'} ({derive_p95:.2f} ms)"
    )


def bench_sqlite(count: int, real_pumps: int, workdir: Path) -> None:
    path = workdir / "lookup.db"
    engine = open_database(f"sqlite:///{path}")
    try:
        started = time.perf_counter()
        real_ids = import_real(engine, workdir, real_pumps)
        imported = time.perf_counter()
        fill_sqlite(path, engine, count - len(real_ids))
        print(
            f"   sqlite setup: {imported - started:.1f} s importing {len(real_ids)} real "
            f"sessions, {time.perf_counter() - imported:.1f} s writing the rest"
        )
        bare_connection = sqlite3.connect(path)
        sql = PRIOR_SQL.format(p="?")

        def bare(pump_id: int, start: Any) -> object:
            value = start.strftime("%Y-%m-%d %H:%M:%S.%f")
            return bare_connection.execute(sql, (pump_id, value)).fetchone()

        run_lookups(engine, real_ids, bare)
        bare_connection.close()
    finally:
        engine.dispose()


def bench_postgres(count: int, real_pumps: int, workdir: Path, *, required: bool) -> None:
    import psycopg

    schema = f"pt_bench_lookup_{uuid.uuid4().hex[:8]}"
    with pg_schema(schema, required=required) as url:
        if url is None:
            return
        conninfo, options = libpq(url)
        engine = open_database(url)
        try:
            started = time.perf_counter()
            real_ids = import_real(engine, workdir, real_pumps)
            with psycopg.connect(conninfo, options=options) as filler:
                _fill_pg_connection(filler, engine, count - len(real_ids))
            print(f"   postgres setup: {time.perf_counter() - started:.1f} s (COPY, ANALYZE)")
            with psycopg.connect(conninfo, options=options) as bare_connection:
                sql = PRIOR_SQL.format(p="%s")

                def bare(pump_id: int, start: Any) -> object:
                    return bare_connection.execute(sql, (pump_id, start)).fetchone()

                run_lookups(engine, real_ids, bare)
        finally:
            engine.dispose()


def _fill_pg_connection(connection: Any, engine: Engine, count: int) -> None:
    first_pump, first_session = _max_ids(engine)
    for pumps, session_rows, evidence_rows in filler_rows(
        first_pump + 1, first_session + 1, count, as_text=False
    ):
        with connection.cursor() as cursor:
            with cursor.copy("COPY pumps (id, serial, model) FROM STDIN") as copy:
                for row in pumps:
                    copy.write_row(row)
            with cursor.copy(f"COPY sessions ({', '.join(SESSION_COLUMNS)}) FROM STDIN") as copy:
                for row in session_rows:
                    copy.write_row(row)
            with cursor.copy(f"COPY evidence ({', '.join(EVIDENCE_COLUMNS)}) FROM STDIN") as copy:
                for row in evidence_rows:
                    copy.write_row(row)
        connection.commit()
    connection.execute("ANALYZE")
    connection.commit()


def main(
    *,
    quick: bool = False,
    sessions: int | None = None,
    sqlite: bool = True,
    postgres: bool = True,
) -> None:
    """SQLite, then PostgreSQL (skipped with the reason when the server does not answer,
    unless asked for alone)."""
    count = sessions or (100_000 if quick else 1_000_000)
    real_pumps = min(REAL_PUMPS, max(1, count // (VISITS * 2)))
    workdir = Path(tempfile.mkdtemp(prefix="pumptrail-bench-lookup-"))
    try:
        if sqlite:
            print("   -- SQLite", flush=True)
            (workdir / "sqlite").mkdir()
            bench_sqlite(count, real_pumps, workdir / "sqlite")
        if postgres:
            print("   -- PostgreSQL", flush=True)
            (workdir / "postgres").mkdir()
            bench_postgres(count, real_pumps, workdir / "postgres", required=not sqlite)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_evidence_lookup")
    parser.add_argument("--sessions", type=int, help="sessions in the database (default 1,000,000)")
    parser.add_argument("--quick", action="store_true", help="100,000 sessions")
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--sqlite", action="store_true", help="SQLite only")
    only.add_argument("--postgres", action="store_true", help="PostgreSQL only (COPY setup)")
    args = parser.parse_args()
    main(
        quick=args.quick,
        sessions=args.sessions,
        sqlite=not args.postgres,
        postgres=not args.sqlite,
    )


if __name__ == "__main__":
    cli()
