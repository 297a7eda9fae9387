"""Web view under load while the service imports: one worker against two (docs/web.md).

For each worker count (`pumptrail serve --workers 1`, then `--workers 2`), on a
fresh temporary data folder (SQLite, default settings):

- `pumptrail run` watches the inbox; a thread drops realistic synthetic exports
  into it (binary and CSV alternately, each a different pump) every 0.5 s, each
  written under a temporary name and renamed in, as a programmer does;
- 16 coders (threads, one `httpx.Client` each, logged in once) request without
  pause for 60 s (10 s with `--quick`): the session list page, the API list,
  and the evidence page of a session the last list showed.

Printed per worker count: requests, p50/p95/max response time, errors (any
answer but 200, or a transport error), and the files dropped against the files
whose evidence is in the database once the service has settled (nothing lost).
Target: p95 under 300 ms, no error, nothing lost. The one-worker run is the
baseline of the two-worker run, same machine, same run.

Run alone: `python -m bench.bench_web_workers [--quick]`.
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.bench_latency import REPO, clean_env, corpus, percentile, pumptrail, wait_for_tables
from db.engine import write_transaction
from db.migrate import open_database
from tests.web.support import PASSWORD, csrf_of, free_port
from web.users import add_user

CODERS = 16
DROP_EVERY_S = 0.5
TARGET_P95_MS = 300.0
SETTLE_TIMEOUT_S = 120.0


@dataclass
class Load:
    """What the coders saw."""

    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _wait_for_web(base: str, process: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"pumptrail serve exited with status {process.returncode}")
        try:
            if httpx.get(base + "/login", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError("pumptrail serve did not answer")


def _log_in(client: httpx.Client, username: str) -> None:
    page = client.get("/login")
    answer = client.post(
        "/login",
        data={"username": username, "password": PASSWORD, "csrf_token": csrf_of(page.text)},
    )
    if answer.status_code != 303:
        raise RuntimeError(f"login of {username}: {answer.status_code}")


def _coder(base: str, username: str, until: float, load: Load, seed: int) -> None:
    rng = random.Random(seed)
    known: list[str] = []
    with httpx.Client(base_url=base, timeout=30) as client:
        _log_in(client, username)
        while time.monotonic() < until:
            choice = rng.random()
            if choice < 0.4:
                path = "/sessions"
            elif choice < 0.7 or not known:
                path = "/api/sessions"
            else:
                path = f"/sessions/{rng.choice(known)}"
            started = time.perf_counter()
            try:
                answer = client.get(path)
                status = answer.status_code
            except httpx.HTTPError as exc:
                status = 0
                problem = f"{path}: {type(exc).__name__}"
            elapsed = (time.perf_counter() - started) * 1000
            if status == 200 and path == "/api/sessions":
                known = [item["session_id"] for item in answer.json()["items"]] or known
            with load.lock:
                load.latencies_ms.append(elapsed)
                if status != 200:
                    load.errors.append(problem if status == 0 else f"{path}: {status}")


def _dropper(
    inbox: Path, files: list[tuple[str, bytes, str]], until: float, dropped: list[str]
) -> None:
    for name, data, session_id in files:
        if time.monotonic() >= until:
            return
        temporary = inbox / f".{name}.part"
        temporary.write_bytes(data)
        os.replace(temporary, inbox / name)
        dropped.append(session_id)
        time.sleep(DROP_EVERY_S)


def _imported(db: Path, session_ids: list[str]) -> int:
    if not session_ids:
        return 0
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        marks = ",".join("?" * len(session_ids))
        (count,) = connection.execute(
            "SELECT count(*) FROM evidence e JOIN sessions s ON s.id = e.session_pk "
            f"WHERE s.session_id IN ({marks})",
            session_ids,
        ).fetchone()
    finally:
        connection.close()
    return int(count)


def run_case(workers: int, seconds: float, files: list[tuple[str, bytes, str]]) -> dict[str, Any]:
    """One load run against `pumptrail serve --workers workers`; its figures."""
    with tempfile.TemporaryDirectory(prefix="pt-bench-workers-") as folder:
        data_dir = Path(folder) / "data"
        data_dir.mkdir()
        db = data_dir / "pumptrail.db"
        inbox = data_dir / "inbox"
        env = clean_env(data_dir)
        service_log = (Path(folder) / "run.log").open("wb")
        web_log = (Path(folder) / "serve.log").open("wb")
        service = subprocess.Popen(
            pumptrail("run"), cwd=REPO, env=env, stdout=service_log, stderr=service_log
        )
        web: subprocess.Popen[bytes] | None = None
        try:
            wait_for_tables(db, service)
            inbox.mkdir(parents=True, exist_ok=True)
            engine = open_database(f"sqlite:///{db}")
            with write_transaction(engine) as connection:
                for index in range(CODERS):
                    add_user(connection, f"coder{index:02d}", "coder", PASSWORD)
            engine.dispose()
            port = free_port()
            web = subprocess.Popen(
                pumptrail("serve", "--port", str(port), "--workers", str(workers)),
                cwd=REPO,
                env=env,
                stdout=web_log,
                stderr=web_log,
            )
            base = f"http://127.0.0.1:{port}"
            _wait_for_web(base, web)
            load = Load()
            dropped: list[str] = []
            until = time.monotonic() + seconds
            threads = [
                threading.Thread(target=_dropper, args=(inbox, files, until, dropped)),
                *(
                    threading.Thread(
                        target=_coder, args=(base, f"coder{i:02d}", until, load, 1000 + i)
                    )
                    for i in range(CODERS)
                ),
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            deadline = time.monotonic() + SETTLE_TIMEOUT_S
            imported = _imported(db, dropped)
            while imported < len(dropped) and time.monotonic() < deadline:
                time.sleep(0.5)
                imported = _imported(db, dropped)
        finally:
            for process in (web, service):
                if process is not None:
                    process.terminate()
                    process.wait(timeout=60)
            service_log.close()
            web_log.close()
    samples = load.latencies_ms
    return {
        "requests": len(samples),
        "p50": percentile(samples, 0.50),
        "p95": percentile(samples, 0.95),
        "max": max(samples),
        "errors": len(load.errors),
        "dropped": len(dropped),
        "imported": imported,
        "first_error": load.errors[0] if load.errors else "",
    }


def main(*, quick: bool = False) -> None:
    seconds = 10.0 if quick else 60.0
    files = corpus(int(seconds / DROP_EVERY_S) + 10)
    results = {}
    for workers in (1, 2):
        figures = run_case(workers, seconds, files)
        results[workers] = figures
        verdict = (
            "ok"
            if figures["p95"] < TARGET_P95_MS
            and not figures["errors"]
            and figures["imported"] == figures["dropped"]
            else "FAILS TARGET"
        )
        print(
            f"   --workers {workers}: {CODERS} coders {seconds:.0f} s, "
            f"{figures['requests']:.0f} requests ({figures['requests'] / seconds:.0f}/s), "
            f"p50 {figures['p50']:.0f} ms, p95 {figures['p95']:.0f} ms, "
            f"max {figures['max']:.0f} ms, errors {figures['errors']:.0f}; "
            f"files dropped {figures['dropped']:.0f}, imported {figures['imported']:.0f} "
            f"(target p95 < {TARGET_P95_MS:.0f} ms, no error, nothing lost: {verdict})",
            flush=True,
        )
        if figures["first_error"]:
            print(f"     first error: {figures['first_error']}", flush=True)
    one, two = results[1], results[2]
    print(
        f"   two workers against one: p95 x{two['p95'] / one['p95']:.2f}, "
        f"throughput x{two['requests'] / one['requests']:.2f}",
        flush=True,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.bench_web_workers")
    parser.add_argument("--quick", action="store_true", help="10 s per run instead of 60 s")
    main(quick=parser.parse_args().quick)
