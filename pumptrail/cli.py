"""The `pumptrail` command: one group, one module per subcommand (datasette-style).

Each module in `pumptrail.commands` exposes `register(subparsers)`, which adds its
parser and sets `handler` to a function taking the parsed arguments and returning
the exit status.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from pumptrail import __version__

# Subcommand modules, in the order `pumptrail --help` lists them.
COMMANDS: tuple[str, ...] = (
    "decode",
    "import_",
    "evidence",
    "db",
    "run",
    "receive",
    "due",
    "serve",
    "user",
    "replay",
    "raw",
    "audit",
    "settings",
    "demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pumptrail",
        description="Evidence from implanted drug-pump programmer session logs.",
    )
    parser.add_argument("--version", action="version", version=f"pumptrail {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"pumptrail.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"pumptrail.commands.{name}":
                continue  # not built yet in this checkout
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    status: int = args.handler(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
