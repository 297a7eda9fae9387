"""`make bench`: run every benchmark in bench/, or the ones named on the command line.

Each benchmark prints its figure and the ratio against a baseline measured in the
same run, so numbers from different machines or days are compared by ratio.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time

BENCHMARKS = (
    "bench.bench_decode",
    "bench.bench_import",
    "bench.bench_evidence_lookup",
    "bench.bench_latency",
    "bench.bench_backfill",
    "bench.bench_web",
    "bench.bench_replay",
    "bench.bench_cli",
    "bench.bench_hl7",
    "bench.bench_web_workers",
)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("names", nargs="*", help="benchmark modules to run (default: all)")
    parser.add_argument("--quick", action="store_true", help="smaller corpora, for a smoke run")
    args = parser.parse_args()
    selected = [n for n in BENCHMARKS if not args.names or any(a in n for a in args.names)]
    for name in selected:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                print(f"== {name}: not present in this checkout")
                continue
            raise
        print(f"== {name}", flush=True)
        started = time.perf_counter()
        module.main(quick=args.quick)
        print(f"   ({time.perf_counter() - started:.1f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
