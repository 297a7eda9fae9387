"""Web view response times with 1,000,000 sessions in SQLite (docs/web.md).

The database: 50,000 pumps of 20 sessions each (100,000 sessions with `--quick`).
Twelve pump histories of 20 realistic visits are imported through the real
pipeline once (`ingest.pipeline`: decode, store, evidence); their rows are then
copied pump after pump with raw `sqlite3.executemany`, each copy with its own
session IDs, pump serial, synthetic patient, raw-file SHA-256, and start times
shifted by a per-pump number of days, documents rewritten to match. Copied:
`pumps`, `sessions`, `evidence`, `evidence_flags`, `evidence_codes`, `raw_files`
(the per-event and per-setting rows are not copied; the evidence page reads them
only for event positions, one index probe).

Measured in one run, p50 and p95 over repeated requests through the ASGI app
(`TestClient`, logged in, audit entries written as in production):

- the list page (`GET /sessions`), first page and filtered variants (pump
  serial, patient ID, date range, code under the default and under another
  profile, a flag), following `Next` links too;
- the evidence page (`GET /sessions/{id}`) of random sessions.

Baselines, same run, same database: the list's first page as one bare SQL query
(`web.queries.bare_list_query`), and the evidence document of one session as one
bare query (`db.queries.evidence_document_text`). Target: p95 under 200 ms.

Run alone: `python -m bench.bench_web [--quick] [--keep DIR]`.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import re
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from db.code_index import sync_codes
from db.engine import write_transaction
from db.migrate import open_database
from db.queries import evidence_document_text
from tests.web.support import PASSWORD, build_database, csrf_of
from web.app import create_app
from web.context import WebConfig
from web.queries import bare_list_query
from web.users import add_user, find_user

TARGET_P95_MS = 200.0
VISITS = 20
TEMPLATE_PUMPS = 12
BATCH_PUMPS = 500


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
# Building the database


def _rows(connection: sqlite3.Connection, sql: str) -> list[tuple[Any, ...]]:
    return list(connection.execute(sql))


def _columns(connection: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in connection.execute(f"PRAGMA table_info({table})")]


def build(path: Path, sessions: int, template_dir: Path) -> dict[str, Any]:
    """The benchmark database at `path`; returns facts for the requests."""
    template = build_database(
        template_dir, seeds=tuple(range(100, 100 + TEMPLATE_PUMPS)), visits=VISITS, csv_every=0
    )
    engine = open_database(template.url)
    with write_transaction(engine) as connection:
        while sync_codes(connection):
            pass
    engine.dispose()
    source = sqlite3.connect(template.url.removeprefix("sqlite:///"))
    open_database(f"sqlite:///{path}").dispose()  # the schema, by the migrations
    target = sqlite3.connect(path, isolation_level=None)
    for pragma in ("journal_mode=OFF", "synchronous=OFF", "cache_size=-200000", "foreign_keys=OFF"):
        target.execute(f"PRAGMA {pragma}")

    session_cols = _columns(source, "sessions")
    evidence_cols = _columns(source, "evidence")
    raw_cols = _columns(source, "raw_files")
    pumps = _rows(source, "SELECT id, serial, model FROM pumps ORDER BY id")
    by_pump: dict[int, list[dict[str, Any]]] = {}
    for row in _rows(source, "SELECT * FROM sessions ORDER BY pump_id, session_start_utc"):
        by_pump.setdefault(row[session_cols.index("pump_id")], []).append(
            dict(zip(session_cols, row, strict=True))
        )
    evidence = {
        row[0]: dict(zip(evidence_cols, row, strict=True))
        for row in _rows(source, "SELECT * FROM evidence")
    }
    flags: dict[int, list[str]] = {}
    for pk, flag in _rows(source, "SELECT session_pk, flag FROM evidence_flags"):
        flags.setdefault(pk, []).append(flag)
    codes: dict[int, list[tuple[str, str]]] = {}
    for pk, profile, procedure in _rows(
        source, "SELECT session_pk, profile, procedure FROM evidence_codes"
    ):
        codes.setdefault(pk, []).append((profile, procedure))
    raws = {
        row[raw_cols.index("session_pk")]: dict(zip(raw_cols, row, strict=True))
        for row in _rows(source, "SELECT * FROM raw_files WHERE session_pk IS NOT NULL")
    }
    source.close()

    def insert(table: str, columns: list[str], rows: list[tuple[Any, ...]]) -> None:
        marks = ",".join("?" * len(columns))
        target.executemany(f"INSERT INTO {table} ({','.join(columns)}) VALUES ({marks})", rows)

    rng = random.Random(7)
    pump_count = sessions // VISITS
    session_pk = 0
    facts: dict[str, Any] = {"serials": [], "patients": [], "session_ids": []}
    target.execute("BEGIN")
    for first in range(0, pump_count, BATCH_PUMPS):
        pump_rows, session_rows, evidence_rows, flag_rows, code_rows, raw_rows = (
            [],
            [],
            [],
            [],
            [],
            [],
        )
        for pump_no in range(first, min(first + BATCH_PUMPS, pump_count)):
            template_pk, template_serial, model = pumps[pump_no % len(pumps)]
            serial = f"BENCH-{pump_no:07d}"
            patient = f"SYN-B{pump_no:07d}"
            shift = timedelta(days=rng.randrange(0, 3650), minutes=rng.randrange(0, 1440))
            pump_rows.append((pump_no + 1, serial, model))
            ids: dict[str, str] = {}
            pks: dict[int, int] = {}
            for visit, template_row in enumerate(by_pump[template_pk]):
                session_pk += 1
                new_id = f"{pump_no:08x}-{visit:04x}-4b00-8b00-{session_pk:012x}"
                ids[template_row["session_id"]] = new_id
                pks[template_row["id"]] = session_pk
                values = dict(template_row)
                document = template_row["document"].replace(template_row["session_id"], new_id)
                document = document.replace(template_serial, serial)
                if template_row["patient_id"]:
                    document = document.replace(template_row["patient_id"], patient)
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
                session_rows.append(tuple(values[c] for c in session_cols))
                ev = evidence.get(template_row["id"])
                if ev is not None:
                    text = ev["document"]
                    for old, new in ids.items():
                        text = text.replace(old, new)
                    text = text.replace(template_serial, serial)
                    ev_values = dict(ev)
                    ev_values.update(
                        session_pk=session_pk,
                        prior_session_pk=None
                        if ev["prior_session_pk"] is None
                        else pks[ev["prior_session_pk"]],
                        document=text,
                    )
                    evidence_rows.append(tuple(ev_values[c] for c in evidence_cols))
                    flag_rows += [(session_pk, flag) for flag in flags.get(template_row["id"], ())]
                    code_rows += [
                        (session_pk, profile, procedure)
                        for profile, procedure in codes.get(template_row["id"], ())
                    ]
                raw = raws.get(template_row["id"])
                if raw is not None:
                    raw_values = dict(raw)
                    raw_values.update(
                        id=session_pk,
                        sha256=values["source_sha256"],
                        session_pk=session_pk,
                        name=f"{new_id}.psl",
                    )
                    raw_rows.append(tuple(raw_values[c] for c in raw_cols))
                if pump_no % 997 == 0:
                    facts["session_ids"].append(new_id)
            if pump_no % 991 == 0:
                facts["serials"].append(serial)
                facts["patients"].append(patient)
        insert("pumps", ["id", "serial", "model"], pump_rows)
        insert("sessions", session_cols, session_rows)
        insert("evidence", evidence_cols, evidence_rows)
        insert("evidence_flags", ["session_pk", "flag"], flag_rows)
        insert("evidence_codes", ["session_pk", "profile", "procedure"], code_rows)
        insert("raw_files", raw_cols, raw_rows)
    target.execute("COMMIT")
    target.execute("ANALYZE")
    target.close()
    facts["sessions"] = session_pk
    return facts


def _shift(value: Any, shift: timedelta) -> Any:
    """A stored SQLite DateTime shifted, in SQLAlchemy's own text form (microseconds kept)."""
    if value is None:
        return None
    moment = datetime.fromisoformat(str(value)) + shift
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")


# ---------------------------------------------------------------------------
# Measuring


def _report(label: str, samples: Sequence[float], baseline: Sequence[float] | None) -> float:
    p50, p95 = _percentile(samples, 0.5), _percentile(samples, 0.95)
    line = f"   {label:<44} p50 {p50:7.1f} ms   p95 {p95:7.1f} ms"
    if baseline:
        line += f"   ({p95 / max(_percentile(baseline, 0.95), 0.001):5.1f}x the bare query's p95)"
    if p95 > TARGET_P95_MS:
        line += "   OVER TARGET"
    print(line, flush=True)
    return p95


def measure(path: Path, facts: dict[str, Any], *, quick: bool) -> None:
    url = f"sqlite:///{path}"
    engine = open_database(url)
    with write_transaction(engine) as connection:
        if find_user(connection, "bench") is None:
            add_user(connection, "bench", "coder", PASSWORD)
    app = create_app(
        WebConfig.for_database(url, data_dir=path.parent, sync_codes_seconds=None), engine=engine
    )
    rng = random.Random(3)
    repeat = 60 if quick else 200
    with TestClient(app) as client:
        page = client.get("/login")
        client.post(
            "/login",
            data={"username": "bench", "password": PASSWORD, "csrf_token": csrf_of(page.text)},
        )
        if client.get("/sessions", follow_redirects=False).status_code != 200:
            raise RuntimeError("bench login failed")

        with engine.connect() as connection:
            bare_list = _time(lambda: list(connection.execute(bare_list_query(50))), repeat)
            ids = facts["session_ids"]
            bare_evidence = _time(
                lambda: evidence_document_text(connection, rng.choice(ids)), repeat
            )
        _report("bare query: list first page (50 rows)", bare_list, None)
        _report("bare query: one evidence document", bare_evidence, None)

        def get(url: str) -> str:
            response = client.get(url)
            if response.status_code != 200:
                raise RuntimeError(f"{url}: {response.status_code}")
            text: str = response.text
            return text

        worst = 0.0
        for _ in range(5):
            get("/sessions")  # warm-up
        worst = max(
            worst, _report("list: first page", _time(lambda: get("/sessions"), repeat), bare_list)
        )

        next_links: list[str] = []

        def follow() -> None:
            url = next_links[-1] if next_links else "/sessions"
            found = re.search(r'rel="next" href="([^"]+)"', get(url))
            next_links.append(found.group(1).replace("&amp;", "&") if found else "/sessions")

        worst = max(worst, _report("list: following Next 1..N", _time(follow, repeat), bare_list))
        variants = {
            "list: pump serial": lambda: get(
                "/sessions?pump_serial=" + rng.choice(facts["serials"])
            ),
            "list: patient ID": lambda: get(
                "/sessions?patient_id=" + rng.choice(facts["patients"])
            ),
            "list: one month": lambda: get("/sessions?date_from=2030-03-01&date_to=2030-03-31"),
            "list: code 62370 (default profile)": lambda: get("/sessions?procedure=62370"),
            "list: code 62369 under any-setting": lambda: get(
                "/sessions?profile=any-setting&procedure=62369"
            ),
            "list: flag no_prior_session": lambda: get("/sessions?flag=no_prior_session"),
            "list: flag critical_alarm (none)": lambda: get("/sessions?flag=critical_alarm"),
            "list: oldest first": lambda: get("/sessions?sort=oldest"),
            "list: by pump serial": lambda: get("/sessions?sort=pump"),
        }
        for label, call in variants.items():
            worst = max(worst, _report(label, _time(call, max(20, repeat // 4)), bare_list))
        evidence_samples = _time(lambda: get("/sessions/" + rng.choice(ids)), repeat)
        worst = max(worst, _report("evidence page", evidence_samples, bare_evidence))
    engine.dispose()
    verdict = "met" if worst <= TARGET_P95_MS else "NOT met"
    print(f"   target p95 < {TARGET_P95_MS:.0f} ms: {verdict} (worst p95 {worst:.1f} ms)")


def main(*, quick: bool = False, keep: Path | None = None) -> None:
    sessions = 100_000 if quick else 1_000_000
    folder = Path(tempfile.mkdtemp(prefix="pumptrail-bench-web-"))
    try:
        path = (keep or folder) / "bench.db"
        if keep is not None and path.exists():
            facts = _facts(path)
            print(f"   reusing {path}")
        else:
            started = time.perf_counter()
            facts = build(path, sessions, folder / "template")
            size = path.stat().st_size / 1e9
            print(
                f"   built {facts['sessions']:,} sessions in {time.perf_counter() - started:.0f} s "
                f"({size:.1f} GB)",
                flush=True,
            )
        measure(path, facts, quick=quick)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _facts(path: Path) -> dict[str, Any]:
    connection = sqlite3.connect(path)
    try:
        serials = [r[0] for r in connection.execute("SELECT serial FROM pumps WHERE id % 991 = 1")]
        patients = [
            r[0]
            for r in connection.execute(
                "SELECT DISTINCT patient_id FROM sessions WHERE pump_id % 991 = 1"
            )
        ]
        ids = [
            r[0] for r in connection.execute("SELECT session_id FROM sessions WHERE id % 997 = 0")
        ]
        total = connection.execute("SELECT max(id) FROM sessions").fetchone()[0]
    finally:
        connection.close()
    return {"serials": serials, "patients": patients, "session_ids": ids, "sessions": total}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.bench_web")
    parser.add_argument("--quick", action="store_true", help="100,000 sessions")
    parser.add_argument("--keep", type=Path, help="build (or reuse) the database in this folder")
    args = parser.parse_args()
    main(quick=args.quick, keep=args.keep)
