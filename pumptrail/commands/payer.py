"""`pumptrail payer add|assign|list|import`: payers, their profiles, patients' coverage.

docs/coding-rules.md §9.1: a payer codes under one profile (built-in or a clinic's
own, from `rules_dir`); a patient's coverage on the date of service picks the
payer. A patient has at most one payer on a date: an overlapping period is
refused.

- `payer add NAME --profile PROFILE [--payer-id ID]`;
- `payer assign PATIENT_ID NAME --from YYYY-MM-DD [--to YYYY-MM-DD]`;
- `payer list`: the payers with their profiles, then the coverage periods;
- `payer import FILE.csv`: columns `patient_id,payer,from,to` (a header line of
  those names is skipped; `to` may be empty). A bad line is reported with its
  line number and nothing of the file is stored.

Every change is recorded in the audit log (`payer_add`, `coverage_add`) with the
actor `cli:<os user>`; a coverage entry names its row number, never the patient ID.
Exit status 0; 1 when a payer or a period cannot be recorded (the reason on
standard error); 2 when the settings, rules, database or file cannot be used.
"""

from __future__ import annotations

import argparse
import csv
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pumptrail.commands import set_handler
from pumptrail.commands.db import (
    add_database_arguments,
    checked,
    checking,
    load_clinic_rules,
    open_existing,
    open_from_settings,
    resolve,
)
from pumptrail.errors import EXIT_PROBLEM, CommandError

if TYPE_CHECKING:
    from db.payers import CoverageLine

SETTINGS = ("db", "data_dir", "rules_dir")
CSV_COLUMNS = ("patient_id", "payer", "from", "to")


def _day(text: str, what: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise CommandError(f"{what}: not a date (YYYY-MM-DD): {text!r}") from None


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("payer", help="payers, their profiles and patients' coverage")
    actions = parser.add_subparsers(dest="payer_action", metavar="ACTION", required=True)

    add = actions.add_parser("add", help="add a payer and the profile it codes under")
    add.add_argument("name", metavar="NAME")
    add.add_argument("--profile", required=True, help="a built-in or the clinic's own profile")
    add.add_argument("--payer-id", default=None, help="the payer's ID (optional)")
    add_database_arguments(add, SETTINGS)
    set_handler(add, run_add)

    assign = actions.add_parser("assign", help="give a patient a payer from a date")
    assign.add_argument("patient_id", metavar="PATIENT_ID")
    assign.add_argument("name", metavar="NAME")
    assign.add_argument("--from", dest="starts_on", required=True, metavar="YYYY-MM-DD")
    assign.add_argument("--to", dest="ends_on", default=None, metavar="YYYY-MM-DD")
    add_database_arguments(assign, SETTINGS)
    set_handler(assign, run_assign)

    show = actions.add_parser("list", help="list the payers and the coverage periods")
    add_database_arguments(show, SETTINGS)
    set_handler(show, run_list)

    load = actions.add_parser("import", help="store coverage periods from a CSV file")
    load.add_argument("file", metavar="FILE.csv", type=Path)
    add_database_arguments(load, SETTINGS)
    set_handler(load, run_import)


def _refused(exc: Exception) -> CommandError:
    return CommandError(str(exc), exit_status=EXIT_PROBLEM)


def run_add(args: argparse.Namespace) -> int:
    from db import audit
    from db.engine import write_transaction
    from db.payers import add_payer
    from evidence.payers import CoverageError

    resolved = resolve(args)
    rules = load_clinic_rules(resolved)
    engine = open_from_settings(resolved)
    try:
        with write_transaction(engine) as connection:
            payer = add_payer(
                connection,
                args.name,
                args.profile,
                [p.name for p in rules.profiles],
                payer_id=args.payer_id,
            )
            audit.append(
                connection,
                actor=audit.cli_actor(),
                action=audit.PAYER_ADD,
                target=f"payer:{payer.pk}",
                detail={"payer": payer.name, "profile": payer.profile},
            )
    except CoverageError as exc:
        raise _refused(exc) from exc
    finally:
        engine.dispose()
    payer_id = f", payer ID {payer.payer_id}" if payer.payer_id else ""
    print(f"payer {payer.name}: profile {payer.profile}{payer_id}")
    return 0


def run_assign(args: argparse.Namespace) -> int:
    from db import audit
    from db.engine import write_transaction
    from db.payers import assign_coverage
    from evidence.payers import CoverageError

    starts_on = _day(args.starts_on, "--from")
    ends_on = None if args.ends_on is None else _day(args.ends_on, "--to")
    engine = open_from_settings(resolve(args))
    try:
        with write_transaction(engine) as connection:
            period = assign_coverage(connection, args.patient_id, args.name, starts_on, ends_on)
            audit.append(
                connection,
                actor=audit.cli_actor(),
                action=audit.COVERAGE_ADD,
                target=f"coverage:{period.pk}",
                detail=_coverage_detail(period),
            )
    except CoverageError as exc:
        raise _refused(exc) from exc
    finally:
        engine.dispose()
    print(f"coverage {period.pk}: {period.payer} {_span(period.starts_on, period.ends_on)}")
    return 0


def _coverage_detail(period: Any) -> dict[str, object]:
    return {
        "payer": period.payer,
        "from": period.starts_on.isoformat(),
        "to": None if period.ends_on is None else period.ends_on.isoformat(),
    }


def _span(starts_on: date, ends_on: date | None) -> str:
    return f"from {starts_on.isoformat()}" + (
        f" to {ends_on.isoformat()}" if ends_on is not None else " (open)"
    )


def run_list(args: argparse.Namespace) -> int:
    from db.payers import list_coverage, list_payers

    resolved = resolve(args)
    engine = open_existing(resolved)
    try:
        with checking(resolved), engine.connect() as connection:
            payers = list_payers(connection)
            periods = list_coverage(connection, limit=100_000)
    finally:
        engine.dispose()
    if not payers:
        print(
            f"no payers in {checked(resolved)}: add one with "
            "`pumptrail payer add NAME --profile PROFILE`"
        )
        return 0
    width = max(len(p.name) for p in payers)
    for p in payers:
        payer_id = p.payer_id or "-"
        print(f"{p.name:<{width}}  profile {p.profile:<18}  payer ID {payer_id}")
    if periods:
        print()
        pid_width = max(len(c.patient_id) for c in periods)
        for c in sorted(periods, key=lambda c: (c.patient_id, c.starts_on)):
            print(
                f"{c.patient_id:<{pid_width}}  {c.payer:<{width}}  {_span(c.starts_on, c.ends_on)}"
            )
    return 0


def read_coverage_file(path: Path) -> list[CoverageLine]:
    """The lines of a coverage CSV; a bad line raises naming its line number (exit 1)."""
    from db.payers import CoverageLine

    try:
        text = path.read_text("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"{path}: cannot read: {exc}") from exc
    lines: list[CoverageLine] = []
    reader = csv.reader(text.splitlines())
    for number, row in enumerate(reader, start=1):
        cells = [cell.strip() for cell in row]
        if not any(cells):
            continue
        if number == 1 and [c.lower() for c in cells] == list(CSV_COLUMNS):
            continue
        if len(cells) == 3:
            cells.append("")
        where = f"{path}: line {number}"
        if len(cells) != len(CSV_COLUMNS):
            raise CommandError(
                f"{where}: expected {len(CSV_COLUMNS)} columns ({','.join(CSV_COLUMNS)}), "
                f"found {len(cells)}; nothing was stored",
                exit_status=EXIT_PROBLEM,
            )
        patient_id, payer, starts, ends = cells
        try:
            starts_on = date.fromisoformat(starts)
            ends_on = date.fromisoformat(ends) if ends else None
        except ValueError:
            raise CommandError(
                f"{where}: from and to must be dates (YYYY-MM-DD); nothing was stored",
                exit_status=EXIT_PROBLEM,
            ) from None
        lines.append(CoverageLine(number, patient_id, payer, starts_on, ends_on))
    return lines


def run_import(args: argparse.Namespace) -> int:
    from db import audit
    from db.engine import write_transaction
    from db.payers import import_coverage
    from evidence.payers import CoverageError

    lines = read_coverage_file(args.file)
    engine = open_from_settings(resolve(args))
    try:
        with write_transaction(engine) as connection:
            stored = import_coverage(connection, lines)
            for period in stored:
                audit.append(
                    connection,
                    actor=audit.cli_actor(),
                    action=audit.COVERAGE_ADD,
                    target=f"coverage:{period.pk}",
                    detail=_coverage_detail(period),
                )
    except CoverageError as exc:
        raise CommandError(
            f"{args.file}: {exc}; nothing was stored", exit_status=EXIT_PROBLEM
        ) from exc
    finally:
        engine.dispose()
    print(f"{len(stored)} coverage periods stored from {args.file}")
    return 0
