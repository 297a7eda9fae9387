"""Backfill throughput of `pumptrail run`: a full inbox imported and archived.

10,000 realistic synthetic exports (1,000 with `--quick`), binary and CSV
alternately, 40-80 records each, one session per pump, are put in the inbox of an
empty temporary data folder (a clinic switching pumptrail on with a year of
exports waiting). `pumptrail run` is started with the default settings and timed
until the inbox is empty and every file is in the archive: files/s from the
process start (Python start-up, database set-up and the 2-4 s the first files
take to settle included), and from the first file archived to the last.

Baseline, same run, same files: the bare `pumptrail import FOLDER` of a copy of
the folder into another temporary database, timed as a subprocess, files/s. Both
keep the raw bytes durably and derive the evidence; the import commits in groups
(group commit, one flush per 64 files), the service commits each file durably
before it moves it (a link, an unlink, two folder fsyncs) and checks it did not
change while it was imported.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.bench_latency import REPO, clean_env, corpus, pumptrail

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


def service_backfill(data_dir: Path, count: int) -> tuple[float, float]:
    """(seconds from process start to an empty inbox, seconds from first to last archived)."""
    inbox, archive = data_dir / "inbox", data_dir / "archive"
    log = (data_dir.parent / "service.log").open("wb")
    started = time.monotonic()
    process = subprocess.Popen(
        pumptrail("run"), cwd=REPO, env=clean_env(data_dir), stdout=log, stderr=log
    )
    first: float | None = None
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"pumptrail run exited with status {process.returncode}")
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
    return finished - started, finished - (first or started)


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
    with tempfile.TemporaryDirectory(prefix="pumptrail-bench-backfill-") as tmp:
        root = Path(tmp)
        size = write_corpus(root / "service" / "inbox", count)
        print(f"   {count} exports, {size / 1e6:.1f} MB, binary and CSV alternately", flush=True)
        write_corpus(root / "baseline-folder", count)
        baseline = baseline_backfill(root / "baseline-folder", root / "baseline")
        print(
            f"   {'baseline: pumptrail import FOLDER':<46} {count / baseline:8.1f} files/s"
            f"   ({baseline:.1f} s)",
            flush=True,
        )
        total, steady = service_backfill(root / "service", count)
    print(
        f"   {'pumptrail run: start to inbox empty':<46} {count / total:8.1f} files/s"
        f"   ({total:.1f} s)   {baseline / total:4.2f}x the baseline's rate",
        flush=True,
    )
    print(
        f"   {'pumptrail run: first to last file archived':<46} {count / steady:8.1f} files/s"
        f"   ({steady:.1f} s)   {baseline / steady:4.2f}x the baseline's rate",
        flush=True,
    )


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
