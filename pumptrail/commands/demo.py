"""`pumptrail demo` (`make demo`): the main job on the embedded default, nothing to set up.

In a demo data folder (`./demo-data` unless `--data-dir` says otherwise) it:

1. opens the SQLite database there (created on first run);
2. creates three demo accounts, one per role, and prints their passwords;
   seeds two payers (`DEMO_PAYERS`: one per definition of reprogramming), the
   demo patients' coverage (one patient left without, so "no payer on file"
   shows), the demo operators as providers with NPIs (`DEMO_PROVIDERS`), and
   names the supervising physician of staff-performed visits
   (`DEMO_SUPERVISING_PHYSICIAN`), so a visit can be signed off at once
   (docs/coding-rules.md §9.1-§9.3, docs/web.md "Sign-off");
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
from datetime import date, datetime
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
# Two payers, one per definition of reprogramming (docs/coding-rules.md §9.1).
DEMO_PAYERS = (
    ("Medicare (J-15 contractor)", "rate-dose", "J15"),
    ("Lakeside Health Plan", "any-setting", "LHP01"),
)
# The payer of each demo pump's patient, by pump order (the three well-kept pumps,
# then the troubled one); None: no coverage on file.
DEMO_COVERAGE = (
    "Medicare (J-15 contractor)",
    "Lakeside Health Plan",
    None,
    "Medicare (J-15 contractor)",
)
DEMO_COVERAGE_FROM = date(2025, 1, 1)
# The demo operator IDs (fixtures.scenarios.OPERATORS) as providers, NPIs valid
# under docs/coding-rules.md §9.3 (evidence.npi); the technician is not a provider.
DEMO_PROVIDERS = (
    ("dr.lee", "Dr. Avery Lee", "physician", "1234567893"),
    ("dr.okafor", "Dr. Chidi Okafor", "physician", "1245319599"),
    ("np.garcia", "Rosa Garcia, NP", "qhp", "1326041682"),
    ("pa.novak", "Ivan Novak, PA", "qhp", "1457382731"),
    ("rn.smith", "Jo Smith, RN", "nurse", "1548267305"),
    ("rn.tanaka", "Emi Tanaka, RN", "nurse", "1679485239"),
)
DEMO_SUPERVISING_PHYSICIAN = "dr.lee"


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


def demo_exports(rng: random.Random, patients: list[str] | None = None) -> dict[str, bytes]:
    """A year of visits of four pumps, as a clinic's inbox would receive them.

    `patients`, when given, receives each pump's patient ID, in pump order.
    """
    from fixtures.binary_writer import Breakage, encode_binary
    from fixtures.csv_writer import encode_csv
    from fixtures.scenarios import pump_history, troubled_pump

    files: dict[str, bytes] = {}
    locales: tuple[Locale, ...] = ("ISO", "en-US", "de-DE")
    for pump_no in range(3):
        # Three well-kept pumps: what goes wrong shows on the fourth.
        start = datetime(2025, 11, 3 + pump_no * 2, 9, 30)
        visits = list(pump_history(rng, visits=7, start=start, on_time=True))
        if patients is not None:
            patients.append(_patient_of(visits[0]))
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
    for n, export in enumerate(
        troubled_pump(rng, start=datetime(2025, 11, 12, 10, 15), serial=TROUBLED_SERIAL)
    ):
        scenario = export.scenario
        if patients is not None and n == 0:
            patients.append(_patient_of(scenario))
        stem = f"{scenario.header.pump_serial}_{scenario.header.session_start_local:%Y%m%d}"
        if export.fmt == "psl-csv":
            files[f"{stem}.csv"] = encode_csv(scenario)
        else:
            files[f"{stem}.psl"] = encode_binary(scenario)
    files["README-from-the-programmer-vendor.txt"] = b"Not an export: quarantined.\n"
    return files


def _patient_of(scenario: Any) -> str:
    from parsers.records import PatientRec

    return next(str(r.patient_id) for r in scenario.records if isinstance(r, PatientRec))


def demo_patients() -> list[str]:
    """The demo pumps' patient IDs, in pump order (the exports are deterministic)."""
    patients: list[str] = []
    demo_exports(random.Random(DEMO_SEED), patients)  # noqa: S311 - synthetic data
    return patients


def _payers(engine: Any, profiles: list[str]) -> None:
    """Seed the demo payers, coverage and providers, unless an earlier run did."""
    from db.payers import add_payer, add_provider, assign_coverage, find_payer

    with engine.begin() as connection:
        if find_payer(connection, DEMO_PAYERS[0][0]) is not None:
            return
        for name, profile, payer_id in DEMO_PAYERS:
            add_payer(connection, name, profile, profiles, payer_id=payer_id)
        for patient, payer in zip(demo_patients(), DEMO_COVERAGE, strict=True):
            if payer is not None:
                assign_coverage(connection, patient, payer, DEMO_COVERAGE_FROM)
        for operator_id, name, role, npi in DEMO_PROVIDERS:
            add_provider(connection, operator_id, npi=npi, name=name, role=role)


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
            "supervising_physician": DEMO_SUPERVISING_PHYSICIAN,
        },
        environ={},
    )
    configure_logging("WARNING")
    engine = open_database(resolved.db)
    accounts = _accounts(engine)
    dropped = _fill_inbox(resolved.inbox, resolved.archive)
    rules = load_rules()
    _payers(engine, [p.name for p in rules.profiles])
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
