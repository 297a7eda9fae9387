"""Start-up and end-to-end times of the `pumptrail` command, each beside its baseline.

Every figure is measured in this run, as a subprocess, best of several runs:

- `pumptrail --help` and `pumptrail decode ONE_FILE` against a bare `python -c pass`
  (targets: under 200 ms each);
- `pumptrail import ONE_FILE` into an existing SQLite database, a new file each run
  (target: under 0.5 s), against the same bare start;
- `pumptrail decode` over 3,000 exports (`--quick`: 300) against a bare framing
  walk (`bench.bench_decode.bare_walk`) that reads the same files from disk, in
  this process (target: within 10x the walk's time).

Corpus: realistic synthetic sessions (`fixtures.scenarios.realistic_scenario`) as
binary exports in a temporary folder.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench.bench_decode import bare_walk
from fixtures.binary_writer import encode_binary
from fixtures.scenarios import realistic_scenario

START_TARGET_S = 0.200
IMPORT_TARGET_S = 0.5
DECODE_RATIO_TARGET = 10.0
PUMPTRAIL = [sys.executable, "-m", "pumptrail.cli"]


def _wall(argv: Sequence[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started


def _best(argvs: Sequence[Sequence[str]], env: dict[str, str]) -> float:
    return min(_wall(argv, env) for argv in argvs)


def _line(label: str, seconds: float, baseline: float, target: str) -> None:
    print(
        f"   {label:<44} {seconds * 1000:>8.0f} ms   {seconds / baseline:>5.1f}x the baseline"
        f"   ({target})",
        flush=True,
    )


def _walk_files(paths: Sequence[Path]) -> float:
    started = time.perf_counter()
    for path in paths:
        bare_walk(path.read_bytes())
    return time.perf_counter() - started


def main(*, quick: bool = False) -> None:
    count = 300 if quick else 3000
    runs = 3 if quick else 7
    env = {**os.environ, "PUMPTRAIL_CONFIG": ""}
    for name in ("INVOCATION_ID", "JOURNAL_STREAM"):
        env.pop(name, None)
    rng = random.Random(20261205)
    with tempfile.TemporaryDirectory(prefix="pumptrail-bench-cli-") as tmp:
        folder = Path(tmp) / "exports"
        folder.mkdir()
        paths = []
        for index in range(count + runs + 1):
            path = folder / f"s{index:05d}.psl"
            path.write_bytes(encode_binary(realistic_scenario(rng, name=f"cli-{index}")))
            paths.append(path)
        decode_paths, import_paths = paths[:count], paths[count:]
        data_dir = Path(tmp) / "data"
        print(
            f"   corpus: {count} binary exports, "
            f"{sum(p.stat().st_size for p in decode_paths) / 1e6:.1f} MB",
            flush=True,
        )

        bare = _best([[sys.executable, "-c", "pass"]] * runs, env)
        print(f"   {'baseline: python -c pass':<44} {bare * 1000:>8.0f} ms", flush=True)
        target = f"target < {START_TARGET_S * 1000:.0f} ms"
        _line("pumptrail --help", _best([[*PUMPTRAIL, "--help"]] * runs, env), bare, target)
        one = [*PUMPTRAIL, "decode", str(decode_paths[0])]
        _line("pumptrail decode ONE_FILE", _best([one] * runs, env), bare, target)

        database = ["--data-dir", str(data_dir)]
        _wall([*PUMPTRAIL, "import", *database, str(import_paths[0])], env)  # set the database up
        imports = [[*PUMPTRAIL, "import", *database, str(p)] for p in import_paths[1:]]
        _line(
            "pumptrail import ONE_FILE (existing database)",
            _best(imports, env),
            bare,
            f"target < {IMPORT_TARGET_S * 1000:.0f} ms",
        )

        walk = min(_walk_files(decode_paths) for _ in range(3))
        print(
            f"   {f'baseline: bare framing walk of {count} files':<44} {walk * 1000:>8.0f} ms",
            flush=True,
        )
        many = [*PUMPTRAIL, "decode", *map(str, decode_paths)]
        decode_all = min(_wall(many, env) for _ in range(2 if quick else 3))
        print(
            f"   {f'pumptrail decode {count} files':<44} {decode_all * 1000:>8.0f} ms   "
            f"{decode_all / walk:>5.1f}x the walk's time   "
            f"(target <= {DECODE_RATIO_TARGET:.0f}x: "
            f"{'met' if decode_all / walk <= DECODE_RATIO_TARGET else 'NOT met'})",
            flush=True,
        )
