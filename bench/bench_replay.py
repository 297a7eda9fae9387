"""Replay throughput against decoding the same raw files (docs/auditing.md).

Corpus: 10,000 sessions (1,000 with --quick), the import benchmark's pumps of 10
realistic visits each (`bench.bench_import.corpus`: refills, dose changes,
boluses, 30-60 logged alarms), as binary exports imported into a temporary SQLite
database and raw store by the import pipeline (not timed).

Timed, best of two: `pumptrail replay --verify` over the whole database
(`ingest.replay.Replayer`: raw bytes read and hash-checked, decoded, rows and
documents rebuilt and compared, evidence derived and compared) against the
same-run baseline of decoding the same raw files in process with
`parsers.registry.decode_bytes`, the part of the replay no implementation can
skip. The ratio says what the comparison and derivation cost on top.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.bench_import import VISITS_PER_PUMP, corpus
from db.migrate import open_database
from evidence import load_rules
from ingest.pipeline import Importer
from ingest.rawstore import RawStore
from ingest.replay import Replayer
from parsers.registry import decode_bytes


def _best(func: Callable[[], object], repeat: int = 2) -> float:
    """The fastest of `repeat` runs, in seconds."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        func()
        best = min(best, time.perf_counter() - started)
    return best


def main(*, quick: bool = False) -> None:
    count = 1000 if quick else 10_000
    exports = corpus(count, seed=20261127)
    rules = load_rules()
    with tempfile.TemporaryDirectory(prefix="pumptrail-bench-replay-") as folder:
        root = Path(folder)
        engine = open_database(f"sqlite:///{root / 'bench.db'}")
        store = RawStore(root / "raw", durable=False)
        try:
            importer = Importer(engine, store, rules)
            started = time.perf_counter()
            outcomes = [
                importer.import_bytes(data, name=f"export-{i:05d}.psl").outcome
                for i, data in enumerate(exports)
            ]
            setup = time.perf_counter() - started
            imported = outcomes.count("imported")
            print(
                f"   corpus: {imported} sessions of {count // VISITS_PER_PUMP} pumps imported "
                f"into SQLite in {setup:.1f} s (not timed below), "
                f"binary {sum(map(len, exports)) / 1e6:.1f} MB",
                flush=True,
            )

            decode_s = _best(lambda: [decode_bytes(d, source="bench") for d in exports])
            print(
                f"   baseline: decode_bytes of the raw files   "
                f"{count / decode_s:>10,.0f} sessions/s",
                flush=True,
            )
            replayer = Replayer(engine, store, rules)
            reports = []
            replay_s = _best(lambda: reports.append(replayer.run()))
            differences = len(reports[-1].differences)
            print(
                f"   replay --verify (whole database)           "
                f"{reports[-1].sessions / replay_s:>10,.0f} sessions/s   "
                f"{replay_s / decode_s:>5.1f}x the decode time; "
                f"{differences} differences (expected 0)",
                flush=True,
            )
        finally:
            engine.dispose()
