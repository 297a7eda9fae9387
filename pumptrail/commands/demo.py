"""`pumptrail demo` (`make demo`): the main job on the embedded default, nothing to set up.

In a demo data folder (`./demo-data` unless `--data-dir` says otherwise) it:

1. opens the SQLite database there (created on first run);
2. creates three demo accounts, one per role, and prints their passwords;
3. drops a year of synthetic programmer exports for four pumps into the demo
   inbox: binary and CSV exports (three locales), one visit exported twice, a
   broken export and a file that is not an export at all; the fourth pump's year
   shows what can go wrong, one visit at least per session flag
   (`DEMO_FLAGS`, `fixtures.scenarios.troubled_pump`): a critical alarm, a refill
   discrepancy over threshold, settings changed outside recorded sessions, a gap
   in the chain, a reservoir run dry, a refill overdue, conflicting exports;
4. runs the service (`pumptrail run`: inbox watcher, archive, quarantine, refills
   due) and the web view (`pumptrail serve`) in one process until Ctrl-C.

The banner names the data folder and the `--data-dir` argument that points every
other command (`pumptrail evidence`, `due`, `audit verify`, ...) at it.
`--once` imports what is in the inbox, prints the result and exits without the
web view (what the tests run), status 0, or 1 when the inbox did not empty in
time. Everything is synthetic: no real patient.
"""

from __future__ import annotations

import argparse
import random
import shlex
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pumptrail import __version__, settings
from pumptrail.commands import set_handler
from pumptrail.errors import EXIT_PROBLEM, CommandError

if TYPE_CHECKING:
    from fixtures.csv_writer import Locale
    from ingest.service import Service

DEMO_ACCOUNTS = (
    ("coder.demo", "coder"),
    ("auditor.demo", "auditor"),
    ("admin.demo", "admin"),
)
DEMO_PASSWORD = "demo-password"  # noqa: S105 - synthetic demo data, printed on purpose
DEMO_SEED = 20261127
# The session flags the demo's year shows at least once each (docs/session-json.md
# "Evidence"; docs/coding-rules.md §7.14, §8).
DEMO_FLAGS = (
    "critical_alarm",
    "discrepancy_over_threshold",
    "changed_outside_sessions",
    "chain_gap",
    "reservoir_depleted",
    "refill_overdue",
    "conflicting_exports",
)
TROUBLED_SERIAL = "ITP20-604112"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo", help="run the service and the web view on synthetic demo data"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path("demo-data"),
        help="demo data folder (default ./demo-data; delete it to start over)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="web view address (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8300, help="web view port (8300)")
    parser.add_argument(
        "--once",
        action="store_true",
        help="import the demo inbox, print the result and exit (no web view)",
    )
    set_handler(parser, run)


def demo_exports(rng: random.Random) -> dict[str, bytes]:
    """A year of visits of three pumps, as a clinic's inbox would receive them."""
    from fixtures.binary_writer import Breakage, encode_binary
    from fixtures.csv_writer import encode_csv
    from fixtures.scenarios import pump_history, troubled_pump

    files: dict[str, bytes] = {}
    locales: tuple[Locale, ...] = ("ISO", "en-US", "de-DE")
    for pump_no in range(3):
        # Three well-kept pumps: what goes wrong shows on the fourth.
        start = datetime(2025, 11, 3 + pump_no * 2, 9, 30)
        visits = list(pump_history(rng, visits=7, start=start, on_time=True))
        for n, scenario in enumerate(visits):
            stem = f"{scenario.header.pump_serial}_{scenario.header.session_start_local:%Y%m%d}"
            if n % 3 == 1:
                locale = locales[pump_no]
                files[f"{stem}.csv"] = encode_csv(
                    scenario, locale=locale, delimiter=";" if locale == "de-DE" else ","
                )
            else:
                files[f"{stem}.psl"] = encode_binary(scenario)
            if pump_no == 0 and n == 2:
                # The same visit exported twice, once per format: stored once.
                files[f"{stem}_copy.csv"] = encode_csv(scenario)
        if pump_no == 1:
            # A transfer that went wrong before the good one: a record's CRC fails.
            broken = visits[-1]
            files["transfer-interrupted.psl"] = encode_binary(
                broken, breakage=Breakage(record_crc={3: 0xBEEF})
            )
    for export in troubled_pump(rng, start=datetime(2025, 11, 12, 10, 15), serial=TROUBLED_SERIAL):
        scenario = export.scenario
        stem = f"{scenario.header.pump_serial}_{scenario.header.session_start_local:%Y%m%d}"
        if export.fmt == "psl-csv":
            files[f"{stem}.csv"] = encode_csv(scenario)
        else:
            files[f"{stem}.psl"] = encode_binary(scenario)
    files["README-from-the-programmer-vendor.txt"] = b"Not an export: quarantined.\n"
    return files


def _accounts(engine: Any) -> list[str]:
    from web.users import AccountError, add_user, find_user

    lines = []
    with engine.begin() as connection:
        for username, role in DEMO_ACCOUNTS:
            if find_user(connection, username) is None:
                try:
                    add_user(connection, username, role, DEMO_PASSWORD)
                except AccountError as exc:  # pragma: no cover - fixed, valid demo values
                    raise CommandError(str(exc)) from exc
            lines.append(f"    {username:<14} {DEMO_PASSWORD}   ({role})")
    return lines


def _fill_inbox(inbox: Path, archive: Path) -> int:
    """Drop the demo exports, unless an earlier demo run already imported them."""
    inbox.mkdir(parents=True, exist_ok=True)
    if any(archive.rglob("*")) if archive.exists() else False:
        return 0
    files = demo_exports(random.Random(DEMO_SEED))  # noqa: S311 - synthetic data, not secrets
    for name, data in files.items():
        (inbox / name).write_bytes(data)
    return len(files)


def run(args: argparse.Namespace) -> int:
    from db.migrate import open_database
    from evidence import load_rules
    from ingest.logging_setup import configure_logging
    from ingest.service import Service
    from pumptrail.commands.run import service_config

    data_dir = args.data_dir.resolve()
    resolved = settings.load(
        cli={
            "data_dir": str(data_dir),
            "db": f"sqlite:///{data_dir}/pumptrail.db",
            "inbox": str(data_dir / "inbox"),
            "archive": str(data_dir / "archive"),
            "quarantine": str(data_dir / "quarantine"),
            "raw_store": str(data_dir / "raw"),
            "host": args.host,
            "port": str(args.port),
            "settle_seconds": "1",
            "poll_seconds": "1",
        },
        environ={},
    )
    configure_logging("WARNING")
    engine = open_database(resolved.db)
    accounts = _accounts(engine)
    dropped = _fill_inbox(resolved.inbox, resolved.archive)
    rules = load_rules()
    service = Service(service_config(resolved), rules)
    service_thread = threading.Thread(
        target=service.run, kwargs={"install_signals": False}, name="pumptrail-service"
    )
    print(f"pumptrail {__version__} demo in {data_dir}")
    print(f"  data folder: {data_dir}")
    print(f"  other commands: add --data-dir {shlex.quote(str(data_dir))}")
    print(f"    e.g. pumptrail evidence --data-dir {shlex.quote(str(data_dir))}")
    if dropped:
        print(f"  {dropped} synthetic exports dropped into {resolved.inbox}")
    service_thread.start()
    try:
        if args.once:
            return _wait_and_report(service, resolved)
        from pumptrail.commands.serve import serve_app, web_config
        from web.app import create_app

        app = create_app(web_config(resolved), rules=rules, engine=engine)
        print(f"  web view: http://{args.host}:{args.port}/   (Ctrl-C stops the demo)")
        print("  log in as one of:")
        print("\n".join(accounts))
        sys.stdout.flush()
        serve_app(app, host=args.host, port=args.port)
        return 0
    finally:
        service.stop_event.set()
        service_thread.join(timeout=30)
        engine.dispose()


def _wait_and_report(service: Service, resolved: settings.Settings, timeout_s: float = 120) -> int:
    """Wait until the inbox is empty, then print what the service did."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not any(p.is_file() for p in resolved.inbox.rglob("*")):
            break
        time.sleep(0.5)
    else:
        raise CommandError("the inbox did not empty in time", exit_status=EXIT_PROBLEM)
    counts = dict(sorted(service.watcher.counts.items()))
    print("  " + ", ".join(f"{value} {key}" for key, value in counts.items()))
    archived = sum(1 for p in resolved.archive.rglob("*") if p.is_file())
    quarantined = sorted(p.name for p in resolved.quarantine.glob("*.error.json"))
    print(f"  {archived} files archived, {len(quarantined)} quarantined: {', '.join(quarantined)}")
    return 0
