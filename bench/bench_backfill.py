"""Backfill throughput of `pumptrail run`: a full inbox imported and archived.

10,000 realistic synthetic exports (1,000 with `--quick`), binary and CSV
alternately, 40-80 records each, one session per pump, are put in the inbox of an
empty temporary data folder (a clinic switching pumptrail on with a year of
exports waiting). `pumptrail run` is started and timed until the inbox is empty
and every file is in the archive: files/s from the process start (Python
start-up, database set-up and the 2-4 s the first files take to settle
included), and from the first file archived to the last. It runs twice on the
same files: with `import_jobs=1` (every file imported on its own, one durable
commit each, then moved) and with the default `import_jobs` (one worker process
per core: the backlog goes through the parallel importer, a group of 64 files per
durable transaction, each file moved once its group is on disk). The peak
resident memory of the service and its helper processes together (fork server,
resource tracker, workers) is sampled while it runs: resident set sizes added up,
so pages the processes share are counted once per process.

Baseline, same run, same files: the bare `pumptrail import FOLDER` of a copy of
the folder into another temporary database (its default `--jobs`, one worker per
core), timed as a subprocess, files/s. Both keep the raw bytes durably and derive
the evidence; the service also moves every file (a link, an unlink, two folder
fsyncs) and checks it did not change while it was imported.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.bench_latency import REPO, clean_env, corpus, pumptrail
from ingest.parallel import default_jobs

SEED = 20261128


def write_corpus(folder: Path, count: int) -> int:
    """The exports as files; returns their total size in bytes."""
    folder.mkdir(parents=True)
    total = 0
    for name, data, _session_id in corpus(count, seed=SEED):
        (folder / name).write_bytes(data)
        total += len(data)
    return total


def count_files(folder: Path) -> int:
    return sum(len(files) for _root, _dirs, files in os.walk(folder)) if folder.exists() else 0


def family_rss(pid: int) -> int:
    """Resident bytes of a process and every process below it (Linux /proc)."""
    total, pending, seen = 0, [pid], set()
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        try:
            status = Path(f"/proc/{current}/status").read_text()
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
        for task in tasks:
            try:
                pending += map(
                    int, Path(f"/proc/{current}/task/{task}/children").read_text().split()
                )
            except OSError:
                continue
    return total


def service_backfill(data_dir: Path, count: int, jobs: int | None) -> tuple[float, float, int]:
    """(seconds from process start to an empty inbox, seconds from first to last archived,
    peak resident bytes of the service and its workers); `jobs` None: the default."""
    inbox, archive = data_dir / "inbox", data_dir / "archive"
    log = (data_dir.parent / f"service-{jobs}.log").open("wb")
    env = clean_env(data_dir)
    if jobs is not None:
        env["PUMPTRAIL_IMPORT_JOBS"] = str(jobs)
    started = time.monotonic()
    process = subprocess.Popen(pumptrail("run"), cwd=REPO, env=env, stdout=log, stderr=log)
    first: float | None = None
    peak = 0
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"pumptrail run exited with status {process.returncode}")
            peak = max(peak, family_rss(process.pid))
            if first is None and count_files(archive):
                first = time.monotonic()
            if count_files(archive) >= count:
                break
            time.sleep(0.05 if first is None else 0.5)
        finished = time.monotonic()
    finally:
        process.terminate()
        process.wait(timeout=120)
        log.close()
    if count_files(inbox):
        raise RuntimeError("files left in the inbox")
    return finished - started, finished - (first or started), peak


def baseline_backfill(folder: Path, data_dir: Path) -> float:
    started = time.monotonic()
    subprocess.run(
        pumptrail("import", "--quiet", str(folder)),
        cwd=REPO,
        env=clean_env(data_dir),
        check=True,
        capture_output=True,
    )
    return time.monotonic() - started


def main(*, quick: bool = False) -> None:
    count = 1000 if quick else 10_000
    cores = default_jobs()
    with tempfile.TemporaryDirectory(prefix="pumptrail-bench-backfill-") as tmp:
        root = Path(tmp)
        size = write_corpus(root / "baseline-folder", count)
        print(f"   {count} exports, {size / 1e6:.1f} MB, binary and CSV alternately", flush=True)
        baseline = baseline_backfill(root / "baseline-folder", root / "baseline")
        print(
            f"   {f'baseline: pumptrail import FOLDER (--jobs {cores})':<60} "
            f"{count / baseline:8.1f} files/s   ({baseline:.1f} s)",
            flush=True,
        )
        steady_of: dict[int | None, float] = {}
        for jobs, label in ((1, "import_jobs=1"), (None, f"default, {cores} workers")):
            folder = root / f"service-{jobs or 'default'}"
            write_corpus(folder / "inbox", count)
            total, steady, peak = service_backfill(folder, count, jobs)
            steady_of[jobs] = steady
            print(
                f"   {f'pumptrail run ({label}): start to inbox empty':<60} "
                f"{count / total:8.1f} files/s   ({total:.1f} s)   "
                f"{baseline / total:4.2f}x the baseline's rate",
                flush=True,
            )
            print(
                f"   {f'pumptrail run ({label}): first to last archived':<60} "
                f"{count / steady:8.1f} files/s   ({steady:.1f} s)   "
                f"{baseline / steady:4.2f}x the baseline's rate   "
                f"peak RSS {peak / 2**20:.0f} MiB",
                flush=True,
            )
    print(
        f"   {'pumptrail run: default vs import_jobs=1':<60} "
        f"{steady_of[1] / steady_of[None]:8.2f}x (first to last archived)",
        flush=True,
    )


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
