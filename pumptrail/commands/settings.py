"""`pumptrail settings`: show every setting, its value and where the value came from.

`--markdown` prints the settings table of docs/operations.md, generated from the
declarations in `pumptrail.settings` so the docs cannot drift from the code.
Exit status 0, or 2 when a setting cannot be used.
"""

from __future__ import annotations

import argparse
from typing import Any

from pumptrail import settings
from pumptrail.commands import set_handler


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("settings", help="show the effective settings and their sources")
    parser.add_argument("--config", help="TOML config file (env PUMPTRAIL_CONFIG)")
    parser.add_argument("--markdown", action="store_true", help="print the docs table of settings")
    settings.add_arguments(parser)
    set_handler(parser, run)


def run(args: argparse.Namespace) -> int:
    if args.markdown:
        print(settings.markdown_table(), end="")
        return 0
    resolved = settings.from_args(args)
    width = max(len(s.name) for s in settings.SETTINGS)
    for s in settings.SETTINGS:
        value = getattr(resolved, s.name)
        print(f"{s.name:<{width}}  {value!s:<50}  ({resolved.sources[s.name]})")
    return 0
