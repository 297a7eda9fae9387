"""Web view response times with 1,000,000 sessions, on SQLite and on PostgreSQL (docs/web.md).

The database: 50,000 pumps of 20 sessions each (100,000 sessions with `--quick`).
Twelve pump histories of 20 realistic visits are imported through the real
pipeline once (`ingest.pipeline`: decode, store, evidence) into a SQLite
template; their rows are then copied pump after pump, each copy with its own
session IDs, pump serial, synthetic patient (ID and name), raw-file SHA-256, and
start times shifted by a per-pump number of days, documents rewritten to match.
Nine patients in ten have a payer on file from before their first visit (two
payers, under two profiles); the tenth have none. Copied: `pumps`, `sessions`,
`evidence`, `evidence_flags`, `evidence_codes`, `raw_files`, `payers`,
`coverage` (the per-event and per-setting rows are not copied; the evidence page
reads them only for event positions, one index probe). SQLite is written with
`sqlite3.executemany`, PostgreSQL with `COPY` (psycopg `cursor.copy`), the same
rows in the same order; both are then analysed (`ANALYZE`; PostgreSQL `VACUUM
(ANALYZE)`, as autovacuum would have left a database in use).

Measured on each database, p50 and p95 over repeated requests through the ASGI
app (`TestClient`, logged in, audit entries written as in production):

- the list page (`GET /sessions`): first page, following `Next` links, and every
  filter (pump serial and patient ID as typed and in another case, a rare and a
  common part of a patient name, a date range, a code under the default and
  under another profile, single flags, any flag, a combination, the sorts);
- the evidence page (`GET /sessions/{id}`) of random sessions;
- the evidence read: one session's stored evidence by session ID, parsed.

Baselines, same run, same database: the list's first page as one bare SQL query
(`web.queries.bare_list_query`), and the evidence document of one session as one
bare query (`db.queries.evidence_document_text`). Targets: every page p95 under
50 ms, the evidence read p95 under 5 ms; each is printed met or NOT met.

Plans: for each request, every SELECT it ran is explained (`db.plans`) and the
line says how it read the large tables: `index` when every read was an index
search or walk (or a scan a LIMIT ends soon, `db.plans.unbounded_scan`), `SEQ
SCAN` naming the tables read row by row. `patient_names` (one row per distinct
patient name, where a part of a name is looked up) is read whole by design: its
reads are shown without a verdict.

PostgreSQL is `PUMPTRAIL_BENCH_PG_URL` (else `PUMPTRAIL_TEST_PG_URL`, else
`postgresql+psycopg://postgres@127.0.0.1:5432/test`), in a schema of its own,
dropped afterwards; when the server cannot be reached the PostgreSQL part prints
`skipped: <reason>`.

Run alone: `python -m bench.bench_web [--quick] [--sqlite | --postgres]
[--keep DIR] [--keep-schema NAME]`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import shutil
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine, event, text

from bench.postgres import libpq, pg_schema
from db.code_index import sync_codes
from db.engine import write_transaction
from db.migrate import open_database
from db.plans import TableRead, table_reads, table_rows, unbounded_scan
from db.queries import evidence_document_text
from tests.web.support import PASSWORD, build_database, csrf_of
from web.app import create_app
from web.context import WebConfig
from web.queries import bare_list_query
from web.users import add_user, find_user

TARGET_PAGE_P95_MS = 50.0
TARGET_EVIDENCE_P95_MS = 5.0
VISITS = 20
TEMPLATE_PUMPS = 12
BATCH_PUMPS = 500
# One patient in this many has no payer on file.
UNCOVERED_EVERY = 10
PAYERS = (
    (1, "Bench Medicare", "MCR-1", "rate-dose"),
    (2, "Bench Commercial", "COM-2", "any-setting"),
)
# Tables whose reads the plan check reports: the ones that grow with the sessions.
# Not `events` and `setting_values` (left empty here: a plan over an empty table
# says nothing), nor `audit_log` (each request reads its newest entry by primary
# key, which SQLite's plan prints as a bare SCAN although LIMIT 1 ends it).
LARGE_TABLES = frozenset(
    {
        "sessions",
        "pumps",
        "evidence",
        "evidence_flags",
        "evidence_codes",
        "raw_files",
        "coverage",
        "patient_names",
    }
)
# Read whole by design: one row per distinct patient name (a part of a name is
# looked up there, `web.queries.listing`); shown, but no SEQ SCAN verdict.
READ_WHOLE = frozenset({"patient_names"})


def _percentile(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def _time(call: Callable[[], object], repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


# ---------------------------------------------------------------------------
# The rows: a template imported through the pipeline, copied pump after pump


def _rows(connection: sqlite3.Connection, sql: str) -> list[tuple[Any, ...]]:
    return list(connection.execute(sql))


def _columns(connection: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in connection.execute(f"PRAGMA table_info({table})")]


@dataclass
class Template:
    """The imported template pumps' rows, by pump and session (SQLite text values)."""

    session_cols: list[str]
    evidence_cols: list[str]
    raw_cols: list[str]
    pumps: list[tuple[Any, ...]]
    by_pump: dict[int, list[dict[str, Any]]]
    evidence: dict[int, dict[str, Any]]
    flags: dict[int, list[str]]
    codes: dict[int, list[tuple[str, str]]]
    raws: dict[int, dict[str, Any]]


@dataclass
class Facts:
    """What the requests pick from: a sample of serials, patients and session IDs."""

    serials: list[str] = field(default_factory=list)
    patients: list[str] = field(default_factory=list)
    surnames: list[str] = field(default_factory=list)
    session_ids: list[str] = field(default_factory=list)
    sessions: int = 0


def load_template(template_dir: Path) -> Template:
    """Twelve pump histories through the real import pipeline, read back as rows."""
    template = build_database(
        template_dir, seeds=tuple(range(100, 100 + TEMPLATE_PUMPS)), visits=VISITS, csv_every=0
    )
    engine = open_database(template.url)
    with write_transaction(engine) as connection:
        while sync_codes(connection):
            pass
    engine.dispose()
    source = sqlite3.connect(template.url.removeprefix("sqlite:///"))
    try:
        session_cols = _columns(source, "sessions")
        by_pump: dict[int, list[dict[str, Any]]] = {}
        for row in _rows(source, "SELECT * FROM sessions ORDER BY pump_id, session_start_utc"):
            by_pump.setdefault(row[session_cols.index("pump_id")], []).append(
                dict(zip(session_cols, row, strict=True))
            )
        evidence_cols = _columns(source, "evidence")
        raw_cols = _columns(source, "raw_files")
        flags: dict[int, list[str]] = {}
        for pk, flag in _rows(source, "SELECT session_pk, flag FROM evidence_flags"):
            flags.setdefault(pk, []).append(flag)
        codes: dict[int, list[tuple[str, str]]] = {}
        for pk, profile, procedure in _rows(
            source, "SELECT session_pk, profile, procedure FROM evidence_codes"
        ):
            codes.setdefault(pk, []).append((profile, procedure))
        return Template(
            session_cols=session_cols,
            evidence_cols=evidence_cols,
            raw_cols=raw_cols,
            pumps=_rows(source, "SELECT id, serial, model FROM pumps ORDER BY id"),
            by_pump=by_pump,
            evidence={
                row[0]: dict(zip(evidence_cols, row, strict=True))
                for row in _rows(source, "SELECT * FROM evidence")
            },
            flags=flags,
            codes=codes,
            raws={
                row[raw_cols.index("session_pk")]: dict(zip(raw_cols, row, strict=True))
                for row in _rows(source, "SELECT * FROM raw_files WHERE session_pk IS NOT NULL")
            },
        )
    finally:
        source.close()


Batch = dict[str, tuple[list[str], list[tuple[Any, ...]]]]


def generate(template: Template, sessions: int, facts: Facts) -> Iterator[Batch]:
    """The benchmark's rows, `BATCH_PUMPS` pumps at a time, table by table in
    foreign-key order; `facts` is filled on the way."""
    now = datetime(2026, 1, 1).strftime("%Y-%m-%d %H:%M:%S.%f")
    yield {
        "payers": (
            ["id", "name", "name_key", "payer_id", "profile", "created_at"],
            [(pk, name, name.lower(), code, profile, now) for pk, name, code, profile in PAYERS],
        )
    }
    rng = random.Random(7)
    pump_count = sessions // VISITS
    session_pk = 0
    for first in range(0, pump_count, BATCH_PUMPS):
        batch: dict[str, list[tuple[Any, ...]]] = {
            name: []
            for name in (
                "pumps",
                "sessions",
                "evidence",
                "evidence_flags",
                "evidence_codes",
                "raw_files",
                "coverage",
            )
        }
        for pump_no in range(first, min(first + BATCH_PUMPS, pump_count)):
            template_pk, template_serial, model = template.pumps[pump_no % len(template.pumps)]
            serial = f"BENCH-{pump_no:07d}"
            patient = f"SYN-B{pump_no:07d}"
            shift = timedelta(days=rng.randrange(0, 3650), minutes=rng.randrange(0, 1440))
            batch["pumps"].append((pump_no + 1, serial, model))
            if pump_no % UNCOVERED_EVERY:
                payer = PAYERS[pump_no % len(PAYERS)][0]
                batch["coverage"].append((pump_no + 1, patient, payer, "2000-01-01", None, now))
            ids: dict[str, str] = {}
            pks: dict[int, int] = {}
            for visit, template_row in enumerate(template.by_pump[template_pk]):
                session_pk += 1
                new_id = f"{pump_no:08x}-{visit:04x}-4b00-8b00-{session_pk:012x}"
                ids[template_row["session_id"]] = new_id
                pks[template_row["id"]] = session_pk
                values = dict(template_row)
                document = template_row["document"].replace(template_row["session_id"], new_id)
                document = document.replace(template_serial, serial)
                if template_row["patient_id"]:
                    document = document.replace(template_row["patient_id"], patient)
                name = template_row["patient_name"]
                if name:
                    # "Surname, Given" -> "Surname-0000123, Given": a name of its own
                    # per patient, the given name shared with a twelfth of them.
                    surname, _, given = name.partition(", ")
                    new_name = f"{surname}-{pump_no:07d}, {given}"
                    document = document.replace(json.dumps(name), json.dumps(new_name))
                    values["patient_name"] = new_name
                values.update(
                    id=session_pk,
                    session_id=new_id,
                    pump_id=pump_no + 1,
                    session_start_utc=_shift(template_row["session_start_utc"], shift),
                    session_start_local=_shift(template_row["session_start_local"], shift),
                    patient_id=patient,
                    source_sha256=hashlib.sha256(new_id.encode()).hexdigest(),
                    document=document,
                )
                batch["sessions"].append(tuple(values[c] for c in template.session_cols))
                ev = template.evidence.get(template_row["id"])
                if ev is not None:
                    text_ = ev["document"]
                    for old, new in ids.items():
                        text_ = text_.replace(old, new)
                    text_ = text_.replace(template_serial, serial)
                    ev_values = dict(ev)
                    ev_values.update(
                        session_pk=session_pk,
                        prior_session_pk=None
                        if ev["prior_session_pk"] is None
                        else pks[ev["prior_session_pk"]],
                        document=text_,
                    )
                    batch["evidence"].append(tuple(ev_values[c] for c in template.evidence_cols))
                    batch["evidence_flags"] += [
                        (session_pk, flag) for flag in template.flags.get(template_row["id"], ())
                    ]
                    batch["evidence_codes"] += [
                        (session_pk, profile, procedure)
                        for profile, procedure in template.codes.get(template_row["id"], ())
                    ]
                raw = template.raws.get(template_row["id"])
                if raw is not None:
                    raw_values = dict(raw)
                    raw_values.update(
                        id=session_pk,
                        sha256=values["source_sha256"],
                        session_pk=session_pk,
                        name=f"{new_id}.psl",
                    )
                    batch["raw_files"].append(tuple(raw_values[c] for c in template.raw_cols))
                if pump_no % 997 == 0:
                    facts.session_ids.append(new_id)
            if pump_no % 991 == 0:
                facts.serials.append(serial)
                facts.patients.append(patient)
                surname = str(template.by_pump[template_pk][0]["patient_name"]).partition(",")[0]
                facts.surnames.append(f"{surname}-{pump_no:07d}")
        columns = {
            "pumps": ["id", "serial", "model"],
            "sessions": template.session_cols,
            "evidence": template.evidence_cols,
            "evidence_flags": ["session_pk", "flag"],
            "evidence_codes": ["session_pk", "profile", "procedure"],
            "raw_files": template.raw_cols,
            "coverage": ["id", "patient_id", "payer_pk", "starts_on", "ends_on", "created_at"],
        }
        yield {name: (columns[name], rows) for name, rows in batch.items()}
    facts.sessions = session_pk


def _shift(value: Any, shift: timedelta) -> Any:
    """A stored SQLite DateTime shifted, in SQLAlchemy's own text form (microseconds kept)."""
    if value is None:
        return None
    moment = datetime.fromisoformat(str(value)) + shift
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")


def build_sqlite(path: Path, template: Template, sessions: int) -> Facts:
    """The benchmark database at `path`, written with `executemany`."""
    open_database(f"sqlite:///{path}").dispose()  # the schema, by the migrations
    target = sqlite3.connect(path, isolation_level=None)
    for pragma in ("journal_mode=OFF", "synchronous=OFF", "cache_size=-200000", "foreign_keys=OFF"):
        target.execute(f"PRAGMA {pragma}")
    facts = Facts()
    target.execute("BEGIN")
    for batch in generate(template, sessions, facts):
        for table, (columns, rows) in batch.items():
            marks = ",".join("?" * len(columns))
            target.executemany(f"INSERT INTO {table} ({','.join(columns)}) VALUES ({marks})", rows)
    target.execute("COMMIT")
    target.execute("ANALYZE")
    target.close()
    return facts


def build_postgres(url: str, template: Template, sessions: int) -> Facts:
    """The benchmark database in the (empty) schema of `url`, written with `COPY`."""
    import psycopg

    open_database(url).dispose()  # the schema, by the migrations
    facts = Facts()
    conninfo, options = libpq(url)
    with psycopg.connect(conninfo, options=options) as connection:
        for batch in generate(template, sessions, facts):
            with connection.cursor() as cursor:
                for table, (columns, rows) in batch.items():
                    with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                        for row in rows:
                            copy.write_row(row)
            connection.commit()
        # Rows were copied with their IDs: move each ID sequence past them.
        for table in ("pumps", "sessions", "raw_files", "payers", "coverage"):
            connection.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT max(id) FROM {table}))"
            )
        connection.commit()
    with psycopg.connect(conninfo, options=options, autocommit=True) as connection:
        connection.execute("VACUUM (ANALYZE)")
    return facts


def read_facts(engine: Engine) -> Facts:
    """The facts of a database built earlier (`--keep`, `--keep-schema`)."""
    with engine.connect() as connection:

        def column(sql: str) -> list[str]:
            return [str(row[0]) for row in connection.execute(text(sql))]

        surnames = column(
            "SELECT min(patient_name) FROM sessions WHERE pump_id % 991 = 1 GROUP BY pump_id "
            "ORDER BY pump_id"
        )
        return Facts(
            serials=column("SELECT serial FROM pumps WHERE id % 991 = 1 ORDER BY id"),
            patients=column(
                "SELECT min(patient_id) FROM sessions WHERE pump_id % 991 = 1 GROUP BY pump_id "
                "ORDER BY pump_id"
            ),
            surnames=[name.partition(",")[0] for name in surnames],
            session_ids=column("SELECT session_id FROM sessions WHERE id % 997 = 0 ORDER BY id"),
            sessions=int(
                connection.execute(text("SELECT max(id) FROM sessions")).scalar_one() or 0
            ),
        )


# ---------------------------------------------------------------------------
# Measuring


@dataclass
class Verdicts:
    """The worst p95 against each target."""

    page_worst: float = 0.0
    page_worst_label: str = ""
    evidence_read: float = 0.0
    scans: list[str] = field(default_factory=list)

    def page(self, label: str, p95: float) -> None:
        if p95 > self.page_worst:
            self.page_worst, self.page_worst_label = p95, label


def _report(label: str, samples: Sequence[float], baseline: Sequence[float] | None) -> float:
    p50, p95 = _percentile(samples, 0.5), _percentile(samples, 0.95)
    line = f"   {label:<46} p50 {p50:7.1f} ms   p95 {p95:7.1f} ms"
    if baseline:
        line += f"   ({p95 / max(_percentile(baseline, 0.95), 0.001):6.1f}x the bare query's p95)"
    print(line, flush=True)
    return p95


class StatementLog:
    """Every SELECT the engine runs while `recording`, with its parameters."""

    def __init__(self, engine: Engine) -> None:
        self.recording = False
        self.statements: list[tuple[str, Any]] = []
        event.listen(engine, "before_cursor_execute", self._record)

    def _record(
        self, _conn: Any, _cursor: Any, statement: str, parameters: Any, _ctx: Any, many: bool
    ) -> None:
        if (
            self.recording
            and not many
            and statement.lstrip().upper().startswith(("SELECT", "WITH"))
        ):
            self.statements.append((statement, parameters))


def plan_line(engine: Engine, statements: Sequence[tuple[str, Any]]) -> tuple[str, list[str]]:
    """How one request's SELECTs read the large tables, and the tables read row by row."""
    reads: dict[str, TableRead] = {}
    with engine.connect() as connection:
        for statement, parameters in statements:
            for read in table_reads(connection, statement, parameters):
                if read.table in LARGE_TABLES:
                    reads.setdefault(read.describe(), read)
        sizes = {
            table: table_rows(connection, table) for table in {r.table for r in reads.values()}
        }
    scanned = sorted(
        {
            r.table
            for r in reads.values()
            if r.table not in READ_WHOLE and unbounded_scan(r, sizes[r.table])
        }
    )
    verdict = "SEQ SCAN of " + ", ".join(scanned) if scanned else "index"
    return f"{verdict}: " + "; ".join(sorted(reads)), scanned


def measure(url: str, engine: Engine, facts: Facts, data_dir: Path, *, quick: bool) -> Verdicts:
    """The requests on one database, each figure beside its baseline; then the targets."""
    with write_transaction(engine) as connection:
        if find_user(connection, "bench") is None:
            add_user(connection, "bench", "coder", PASSWORD)
    log = StatementLog(engine)
    app = create_app(
        WebConfig.for_database(url, data_dir=data_dir, sync_codes_seconds=None), engine=engine
    )
    rng = random.Random(3)
    repeat = 60 if quick else 200
    verdicts = Verdicts()
    with TestClient(app) as client:
        page = client.get("/login")
        client.post(
            "/login",
            data={"username": "bench", "password": PASSWORD, "csrf_token": csrf_of(page.text)},
        )
        if client.get("/sessions", follow_redirects=False).status_code != 200:
            raise RuntimeError("bench login failed")

        ids = facts.session_ids
        with engine.connect() as connection:
            bare_list = _time(lambda: list(connection.execute(bare_list_query(50))), repeat)
            bare_evidence = _time(
                lambda: evidence_document_text(connection, rng.choice(ids)), repeat
            )
        _report("bare query: list first page (50 rows)", bare_list, None)
        _report("bare query: one evidence document", bare_evidence, None)

        def get(url: str) -> str:
            response = client.get(url)
            if response.status_code != 200:
                raise RuntimeError(f"{url}: {response.status_code}")
            text_: str = response.text
            return text_

        for _ in range(5):
            get("/sessions")  # warm-up

        next_links: list[str] = []

        def follow() -> None:
            url = next_links[-1] if next_links else "/sessions"
            found = re.search(r'rel="next" href="([^"]+)"', get(url))
            next_links.append(found.group(1).replace("&amp;", "&") if found else "/sessions")

        def pick(values: list[str]) -> str:
            return rng.choice(values)

        urls: dict[str, Callable[[], str]] = {
            "list: first page": lambda: "/sessions",
            "list: pump serial": lambda: "/sessions?pump_serial=" + pick(facts.serials),
            "list: pump serial, other case": lambda: (
                "/sessions?pump_serial=" + pick(facts.serials).lower()
            ),
            "list: patient ID": lambda: "/sessions?patient_id=" + pick(facts.patients),
            "list: patient ID, other case": lambda: (
                "/sessions?patient_id=" + pick(facts.patients).lower()
            ),
            "list: patient surname (one patient)": lambda: (
                "/sessions?patient_id=" + pick(facts.surnames).lower()
            ),
            "list: patient given name (1 in 6)": lambda: "/sessions?patient_id=morgan",
            "list: one month": lambda: "/sessions?date_from=2030-03-01&date_to=2030-03-31",
            "list: code 62370 (default profile)": lambda: "/sessions?procedure=62370",
            "list: code 62369 under any-setting": lambda: (
                "/sessions?profile=any-setting&procedure=62369"
            ),
            "list: flag no_prior_session": lambda: "/sessions?flag=no_prior_session",
            "list: flag critical_alarm (none)": lambda: "/sessions?flag=critical_alarm",
            "list: flag no_payer_on_file": lambda: "/sessions?flag=no_payer_on_file",
            "list: any flag": lambda: "/sessions?flagged=1",
            "list: one month + code 62370": lambda: (
                "/sessions?date_from=2030-03-01&date_to=2030-03-31&procedure=62370"
            ),
            "list: oldest first": lambda: "/sessions?sort=oldest",
            "list: by pump serial": lambda: "/sessions?sort=pump",
        }

        def request(url_of: Callable[[], str]) -> Callable[[], object]:
            return lambda: get(url_of())

        requests: dict[str, tuple[Callable[[], object], int]] = {
            label: (request(url_of), max(20, repeat // 4)) for label, url_of in urls.items()
        }
        requests["list: first page"] = (requests["list: first page"][0], repeat)
        follow()  # the recorded request below is then a page with a cursor
        requests = {
            "list: first page": requests.pop("list: first page"),
            "list: following Next 1..N": (follow, repeat),
            **requests,
        }
        for label, (call, times) in requests.items():
            log.statements.clear()
            log.recording = True
            call()  # also this request's warm-up
            log.recording = False
            plan, scanned = plan_line(engine, log.statements)
            verdicts.page(label, _report(label, _time(call, times), bare_list))
            print(f"      plan: {plan}", flush=True)
            verdicts.scans += [f"{label}: {table}" for table in scanned]

        log.statements.clear()
        log.recording = True
        get("/sessions/" + ids[0])
        log.recording = False
        plan, scanned = plan_line(engine, log.statements)
        evidence_samples = _time(lambda: get("/sessions/" + rng.choice(ids)), repeat)
        verdicts.page("evidence page", _report("evidence page", evidence_samples, bare_evidence))
        print(f"      plan: {plan}", flush=True)
        verdicts.scans += [f"evidence page: {table}" for table in scanned]
        with engine.connect() as connection:
            reads = _time(
                lambda: json.loads(evidence_document_text(connection, rng.choice(ids)) or "null"),
                repeat * 5,
            )
        verdicts.evidence_read = _report(
            "evidence read (stored, by session ID, parsed)", reads, bare_evidence
        )
    print(
        f"   target pages p95 < {TARGET_PAGE_P95_MS:.0f} ms: "
        f"{'met' if verdicts.page_worst < TARGET_PAGE_P95_MS else 'NOT met'} "
        f"(worst p95 {verdicts.page_worst:.1f} ms, {verdicts.page_worst_label})"
    )
    print(
        f"   target evidence read p95 < {TARGET_EVIDENCE_P95_MS:.0f} ms: "
        f"{'met' if verdicts.evidence_read < TARGET_EVIDENCE_P95_MS else 'NOT met'} "
        f"({verdicts.evidence_read:.2f} ms)"
    )
    print(
        "   plans: "
        + (
            "every request reads the large tables through indexes"
            if not verdicts.scans
            else "SEQ SCAN in " + "; ".join(verdicts.scans)
        ),
        flush=True,
    )
    return verdicts


# ---------------------------------------------------------------------------
# The two databases


def run_sqlite(sessions: int, folder: Path, keep: Path | None, *, quick: bool) -> None:
    print("   -- SQLite", flush=True)
    path = (keep or folder) / "bench.db"
    url = f"sqlite:///{path}"
    if keep is not None and path.exists():
        engine = open_database(url)
        facts = read_facts(engine)
        print(f"   reusing {path}")
    else:
        started = time.perf_counter()
        facts = build_sqlite(path, load_template(folder / "template-sqlite"), sessions)
        size = path.stat().st_size / 1e9
        print(
            f"   built {facts.sessions:,} sessions in {time.perf_counter() - started:.0f} s "
            f"(executemany; {size:.1f} GB)",
            flush=True,
        )
        engine = open_database(url)
    try:
        measure(url, engine, facts, path.parent, quick=quick)
    finally:
        engine.dispose()


def run_postgres(
    sessions: int, folder: Path, keep_schema: str | None, *, quick: bool, required: bool
) -> None:
    print("   -- PostgreSQL", flush=True)
    schema = keep_schema or f"pt_bench_web_{uuid.uuid4().hex[:8]}"
    with pg_schema(schema, drop=keep_schema is None, required=required) as url:
        if url is None:
            return
        engine = open_database(url)
        try:
            with engine.connect() as connection:
                built = connection.execute(text("SELECT count(*) FROM sessions")).scalar_one()
            if built:
                facts = read_facts(engine)
                print(f"   reusing schema {schema}")
            else:
                started = time.perf_counter()
                facts = build_postgres(url, load_template(folder / "template-pg"), sessions)
                with engine.connect() as connection:
                    size = connection.execute(
                        text(
                            "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c "
                            "JOIN pg_namespace n ON n.oid = c.relnamespace "
                            "WHERE n.nspname = current_schema() AND c.relkind = 'r'"
                        )
                    ).scalar_one()
                print(
                    f"   built {facts.sessions:,} sessions in "
                    f"{time.perf_counter() - started:.0f} s (COPY, VACUUM ANALYZE; "
                    f"{int(size or 0) / 1e9:.1f} GB)",
                    flush=True,
                )
            measure(url, engine, facts, folder / "pg-data", quick=quick)
        finally:
            engine.dispose()


def main(
    *,
    quick: bool = False,
    keep: Path | None = None,
    keep_schema: str | None = None,
    sqlite: bool = True,
    postgres: bool = True,
) -> None:
    sessions = 100_000 if quick else 1_000_000
    folder = Path(tempfile.mkdtemp(prefix="pumptrail-bench-web-"))
    try:
        if sqlite:
            run_sqlite(sessions, folder, keep, quick=quick)
        if postgres:
            run_postgres(sessions, folder, keep_schema, quick=quick, required=not sqlite)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.bench_web")
    parser.add_argument("--quick", action="store_true", help="100,000 sessions")
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--sqlite", action="store_true", help="SQLite only")
    only.add_argument("--postgres", action="store_true", help="PostgreSQL only")
    parser.add_argument("--keep", type=Path, help="SQLite: build (or reuse) the database here")
    parser.add_argument(
        "--keep-schema", help="PostgreSQL: build (or reuse) the database in this schema, kept"
    )
    args = parser.parse_args()
    main(
        quick=args.quick,
        keep=args.keep,
        keep_schema=args.keep_schema,
        sqlite=not args.postgres,
        postgres=not args.sqlite,
    )
