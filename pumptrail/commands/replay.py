"""`pumptrail replay [--pump SERIAL] [--since DATE] [--verify|--apply] [--fixtures DIR]`.

Re-decodes every raw file with this version and derives the evidence again
(`ingest.replay`). One line per difference, `session ID: kind: field: old -> new`
or `raw SHA256-PREFIX: kind: what`, at most `MAX_LINES_PER_SUBJECT` per session,
then a summary naming the database and data folder replayed. `--verify` first
runs the database's integrity check (`db.health`). A database that does not
exist or holds no pumptrail tables is refused (nothing is created).

Exit status (docs/auditing.md): `--verify` (default) 0 when nothing differs, 1
when anything differs; `--apply` rewrites what differs and exits 1 only when
something could not be rewritten (a tampered, missing or undecodable raw file).
2 when the replay cannot check: the database is missing or damaged, the settings
or rules cannot be used, or the replay itself failed.

`--fixtures DIR` checks a case folder of exports against its
`expected-evidence.json` without any database (`ingest.replay.fixtures`);
`--write-expected` writes that file from this version instead (review it).

On a terminal (standard error a TTY, not under systemd) a progress bar on
standard error shows pumps done, rate and time left (`pumptrail.progress`).
"""

from __future__ import annotations

import argparse
from collections import Counter
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pumptrail import settings
from pumptrail.commands import set_handler
from pumptrail.commands.db import (
    add_database_arguments,
    checked,
    checking,
    load_clinic_rules,
    open_existing,
    resolve,
)
from pumptrail.errors import EXIT_PROBLEM, CommandError

if TYPE_CHECKING:
    from collections.abc import Callable

    from evidence import Rules
    from ingest.replay import Difference

SETTINGS = ("db", "data_dir", "raw_store", "raw_store_mode")
MAX_LINES_PER_SUBJECT = 20


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "replay",
        help="re-decode every raw file and re-derive the evidence; report what differs",
    )
    parser.add_argument("--pump", metavar="SERIAL", help="only this pump's sessions")
    parser.add_argument(
        "--since",
        metavar="DATE",
        type=date.fromisoformat,
        help="only sessions starting on or after DATE (YYYY-MM-DD, UTC)",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--verify",
        dest="apply",
        action="store_false",
        help="report what differs, change nothing (default); exit 1 when anything differs",
    )
    mode.add_argument(
        "--apply",
        dest="apply",
        action="store_true",
        help="rewrite what differs from the raw files (after an upgrade); audited",
    )
    parser.add_argument(
        "--fixtures",
        metavar="DIR",
        type=Path,
        help="check a case folder of exports against its expected-evidence.json (no database)",
    )
    parser.add_argument(
        "--write-expected",
        action="store_true",
        help="with --fixtures: write DIR/expected-evidence.json from this version",
    )
    parser.add_argument(
        "--rules-dir", metavar="DIR", type=Path, help="a clinic's rules folder (profiles, drugs)"
    )
    add_database_arguments(parser, SETTINGS)
    set_handler(parser, run, apply=False)


def _rules(args: argparse.Namespace, resolved: settings.Settings | None) -> Rules:
    from evidence import RulesError, load_rules

    if resolved is None:
        try:
            return load_rules(args.rules_dir)
        except RulesError as exc:
            raise CommandError(str(exc)) from exc
    return load_clinic_rules(resolved, args.rules_dir)


class LinePrinter:
    """Prints differences one line each, at most MAX_LINES_PER_SUBJECT per session or file."""

    def __init__(self, write: Callable[[str], None] | None = None) -> None:
        self.seen: Counter[str] = Counter()
        self.write = write or _print_line

    def __call__(self, difference: Difference) -> None:
        self.seen[difference.subject] += 1
        count = self.seen[difference.subject]
        if count <= MAX_LINES_PER_SUBJECT:
            self.write(difference.line())
        elif count == MAX_LINES_PER_SUBJECT + 1:
            self.write(f"{difference.subject}: further differences not shown")


def _print_line(line: str) -> None:
    print(line, flush=True)


def run(args: argparse.Namespace) -> int:
    if args.fixtures is not None:
        return run_fixtures(args)
    if args.write_expected:
        raise CommandError("--write-expected needs --fixtures DIR")
    from db.audit import cli_actor
    from ingest.rawstore import open_raw_store
    from ingest.replay import UNREPAIRABLE, Replayer, counted
    from pumptrail.progress import Progress

    resolved = resolve(args)
    rules = _rules(args, resolved)
    where = checked(resolved)
    with checking(resolved, what="the stored evidence"):
        engine = open_existing(resolved, check=not args.apply)
        try:
            store = open_raw_store(engine, resolved.raw_store, resolved.raw_store_mode)
            replayer = Replayer(engine, store, rules, actor=cli_actor())
            with Progress(None, unit="pumps") as progress:
                result = replayer.run(
                    pump=args.pump,
                    since=args.since,
                    apply=args.apply,
                    report=LinePrinter(progress.write),
                    progress=progress.moved_to,
                )
        finally:
            engine.dispose()
    if not result.pump_found:
        raise CommandError(f"no stored pump {args.pump} ({where})", exit_status=EXIT_PROBLEM)
    for line in result.unchecked:
        print(line)
    print(f"{result.summary()} ({where})")
    if not args.apply:
        return 1 if result.differences else 0
    print(
        f"rewrote {counted(result.rewritten_sessions, 'session')} and the evidence of "
        f"{counted(result.rewritten_evidence, 'session')}"
    )
    for line in result.not_applied:
        print(line)
    unrepaired = any(d.kind in UNREPAIRABLE for d in result.differences)
    return 1 if result.not_applied or unrepaired else 0


def run_fixtures(args: argparse.Namespace) -> int:
    from ingest.replay.fixtures import CaseError, check_case, write_expected

    if args.apply or args.pump is not None or args.since is not None:
        raise CommandError("--fixtures checks a case folder: no --apply, --pump or --since")
    try:
        resolved: settings.Settings | None = resolve(args)
    except CommandError:
        resolved = None  # no database is opened: its settings do not matter here
    rules = _rules(args, resolved)
    try:
        if args.write_expected:
            report = write_expected(args.fixtures, rules)
        else:
            report = check_case(args.fixtures, rules)
    except CaseError as exc:
        raise CommandError(str(exc)) from exc
    printer = LinePrinter()
    for difference in report.differences:
        printer(difference)
    if args.write_expected:
        print(
            f"case {args.fixtures}: wrote expected-evidence.json, {report.sessions} sessions "
            f"from {report.files} exports: review it before keeping it"
        )
        return 1 if report.differences else 0
    print(report.summary())
    return 0 if report.ok else 1
