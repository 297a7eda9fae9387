"""The subcommands of `pumptrail`, one module each.

A module's `register(subparsers)` adds its parser and names its handler with
`set_handler`; the handler imports the rooms it needs (SQLAlchemy, the web app,
the decoders...) when it runs, so building the parser stays cheap for every
command (`pumptrail --help` imports none of them).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

Handler = Callable[[argparse.Namespace], int]


def set_handler(parser: argparse.ArgumentParser, handler: Handler, **defaults: object) -> None:
    """Run `handler` for this parser; errors are printed as `<parser's prog>: message`."""
    parser.set_defaults(handler=handler, prog=parser.prog, **defaults)
