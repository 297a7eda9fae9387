"""`pumptrail demo`: see pumptrail work on synthetic data, with nothing to configure.

Decodes the golden fixture corpus shipped in `fixtures/` and prints, per file, the
session it holds or why it was refused, then a summary.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path
from typing import Any

from parsers.errors import DecodeError
from parsers.registry import decode_file

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("demo", help="run pumptrail on the synthetic demo data")
    parser.add_argument("--fixtures", type=Path, default=FIXTURES, help="fixture folder to decode")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    outcomes: Counter[str] = Counter()
    files = sorted(
        p for p in args.fixtures.rglob("*") if p.is_file() and p.suffix in {".psl", ".csv"}
    )
    for path in files:
        name = path.relative_to(args.fixtures)
        try:
            session = decode_file(path)
        except DecodeError as exc:
            outcomes["refused"] += 1
            print(f"refused  {name}: {exc.describe()}")
            continue
        outcomes[session.source_format] += 1
        changes = sum(1 for e in session.events if e.type == "change")
        print(
            f"decoded  {name}: pump {session.pump.serial}, {session.session_start_utc:%Y-%m-%d %H:%M}Z, "
            f"{session.operator.role}, {changes} logged change(s), {len(session.warnings)} warning(s)"
        )
    print(
        f"\n{len(files)} files: {outcomes['psl-binary']} binary and {outcomes['psl-csv']} CSV sessions "
        f"decoded, {outcomes['refused']} refused (the bad_* cases are refused on purpose)"
    )
    return 0
