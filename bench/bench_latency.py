"""Drop-to-evidence latency of `pumptrail run`, default settings.

`pumptrail run` is started on an empty temporary data folder with the default
settings (poll every 2 s, a file ready when 2 s old and unchanged between two
polls, durable raw store). 200 realistic synthetic exports (20 with `--quick`),
binary and CSV alternately, each a different pump, are dropped one at a time at
random intervals of 0.2-1.0 s, each written under a temporary name and renamed
into the inbox, as a programmer or the serial receiver does. A file's latency runs
from the rename to the moment its session's evidence row can be read from the
database (polled every 20 ms by a separate read-only connection).

Baseline, same run, same files: the bare `pumptrail import FILE` of each file into
another temporary database, timed as a subprocess from start to exit (the
evidence is committed when it exits): what a person running the import by hand
waits. Most of the service's latency is the settle time it waits on purpose
(2-4 s with the defaults); most of the baseline's is starting Python.
"""

from __future__ import annotations

import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fixtures.binary_writer import encode_binary
from fixtures.csv_writer import encode_csv
from fixtures.scenarios import realistic_scenario

REPO = Path(__file__).resolve().parents[1]
SEED = 20261127
POLL_DB_SECONDS = 0.02


def clean_env(data_dir: Path) -> dict[str, str]:
    """Default settings: no PUMPTRAIL_* variable but the data folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUMPTRAIL_")}
    env["PUMPTRAIL_DATA_DIR"] = str(data_dir)
    return env


def pumptrail(*args: str) -> list[str]:
    return [sys.executable, "-m", "pumptrail.cli", *args]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def corpus(count: int, *, seed: int = SEED) -> list[tuple[str, bytes, str]]:
    """(file name, bytes, session ID): realistic sessions, binary and CSV alternately."""
    rng = random.Random(seed)
    files = []
    for index in range(count):
        scenario = realistic_scenario(rng, name=f"latency-{index}")
        binary = index % 2 == 0
        data = encode_binary(scenario) if binary else encode_csv(scenario)
        name = f"drop-{index:04d}.{'psl' if binary else 'csv'}"
        files.append((name, data, scenario.header.session_id))
    return files


def wait_for_tables(db: Path, process: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"pumptrail run exited with status {process.returncode}")
        if db.exists():
            connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            try:
                names = {r[0] for r in connection.execute("SELECT name FROM sqlite_master")}
            finally:
                connection.close()
            if "evidence" in names:
                return
        time.sleep(0.1)
    raise RuntimeError("pumptrail run did not set up its database")


def service_latencies(files: list[tuple[str, bytes, str]], data_dir: Path) -> list[float]:
    """Seconds from each drop to its evidence row, the service running with defaults."""
    rng = random.Random(SEED + 1)
    inbox = data_dir / "inbox"
    db = data_dir / "pumptrail.db"
    log = (data_dir.parent / "service.log").open("wb")
    process = subprocess.Popen(
        pumptrail("run"), cwd=REPO, env=clean_env(data_dir), stdout=log, stderr=log
    )
    try:
        wait_for_tables(db, process)
        inbox.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
        dropped_at: dict[str, float] = {}
        latencies: dict[str, float] = {}
        queue = list(files)
        next_drop = time.monotonic()
        deadline = float("inf")
        while len(latencies) < len(files):
            now = time.monotonic()
            if queue and now >= next_drop:
                name, data, session_id = queue.pop(0)
                temp = inbox / f".{name}.part"
                temp.write_bytes(data)
                os.replace(temp, inbox / name)
                dropped_at[session_id] = time.monotonic()
                next_drop = dropped_at[session_id] + rng.uniform(0.2, 1.0)
                if not queue:
                    deadline = time.monotonic() + 120
            waiting = [sid for sid in dropped_at if sid not in latencies]
            if waiting:
                marks = ",".join("?" * len(waiting))
                found = connection.execute(
                    "SELECT s.session_id FROM evidence e JOIN sessions s ON s.id = e.session_pk "
                    f"WHERE s.session_id IN ({marks})",
                    waiting,
                ).fetchall()
                seen = time.monotonic()
                for (session_id,) in found:
                    latencies[session_id] = seen - dropped_at[session_id]
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(latencies)} of {len(files)} files became queryable")
            time.sleep(POLL_DB_SECONDS)
        connection.close()
    finally:
        process.terminate()
        process.wait(timeout=60)
        log.close()
    return [latencies[session_id] for _name, _data, session_id in files]


def baseline_latencies(files: list[tuple[str, bytes, str]], folder: Path) -> list[float]:
    """Seconds each bare `pumptrail import FILE` takes, one subprocess per file."""
    folder.mkdir(parents=True)
    env = clean_env(folder / "data")
    subprocess.run(pumptrail("db", "upgrade"), cwd=REPO, env=env, check=True, capture_output=True)
    times = []
    for name, data, _session_id in files:
        path = folder / name
        path.write_bytes(data)
        started = time.monotonic()
        subprocess.run(
            pumptrail("import", "--quiet", str(path)),
            cwd=REPO,
            env=env,
            check=True,
            capture_output=True,
        )
        times.append(time.monotonic() - started)
    return times


def report(label: str, values: list[float], baseline: list[float] | None = None) -> None:
    p50, p95 = percentile(values, 0.5), percentile(values, 0.95)
    line = (
        f"   {label:<44} p50 {p50:6.2f} s   p95 {p95:6.2f} s   "
        f"max {max(values):6.2f} s   mean {statistics.fmean(values):6.2f} s"
    )
    if baseline is not None:
        line += f"   p50 {p50 / percentile(baseline, 0.5):4.1f}x the baseline"
    print(line, flush=True)


def main(*, quick: bool = False) -> None:
    count = 20 if quick else 200
    files = corpus(count)
    print(
        f"   {count} drops, one at a time every 0.2-1.0 s; defaults: poll 2 s, settle 2 s",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="pumptrail-bench-latency-") as tmp:
        root = Path(tmp)
        service = service_latencies(files, root / "service")
        baseline = baseline_latencies(files, root / "baseline")
    report("baseline: pumptrail import FILE (subprocess)", baseline)
    report("pumptrail run: drop to evidence queryable", service, baseline)


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
