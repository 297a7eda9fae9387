"""`pumptrail demo`: the README's first command works on a fresh folder, and again."""

from __future__ import annotations

import subprocess
import sys
from datetime import date
from pathlib import Path

from sqlalchemy import create_engine, func, select

from db.models import evidence, evidence_flags, pumps, sessions
from db.payers import coverage, find_provider, list_payers, payers_on
from db.users import users
from evidence.npi import npi_valid
from pumptrail.commands.demo import (
    DEMO_ACCOUNTS,
    DEMO_FLAGS,
    DEMO_SUPERVISING_PHYSICIAN,
    TROUBLED_SERIAL,
    demo_patients,
)


def run_demo(data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pumptrail.cli", "demo", "--once", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_demo_imports_its_inbox_and_sets_up_accounts(tmp_path: Path) -> None:
    data_dir = tmp_path / "demo"
    first = run_demo(data_dir)
    assert first.returncode == 0, first.stderr
    assert "synthetic exports dropped" in first.stdout
    quarantined = sorted(p.name for p in (data_dir / "quarantine").glob("*.error.json"))
    assert quarantined == [
        "README-from-the-programmer-vendor.txt.error.json",
        "transfer-interrupted.psl.error.json",
    ]
    archived = [p for p in (data_dir / "archive").rglob("*") if p.is_file()]
    # 21 exports of three pumps and a second export of one visit; the fourth pump's
    # five visits, one of them exported twice (conflicting).
    assert len(archived) == 28
    assert not [p for p in (data_dir / "inbox").rglob("*") if p.is_file()]
    engine = create_engine(f"sqlite:///{data_dir}/pumptrail.db")
    with engine.connect() as connection:
        # 3 pumps x 7 visits: the twice-exported visit is one session, and the interrupted
        # transfer's visit arrived whole as well; 5 recorded visits of the fourth pump.
        assert connection.execute(select(func.count()).select_from(sessions)).scalar_one() == 26
        names = set(connection.execute(select(users.c.username)).scalars())
    engine.dispose()
    assert names == {name for name, _role in DEMO_ACCOUNTS}

    again = run_demo(data_dir)
    assert again.returncode == 0, again.stderr
    assert "synthetic exports dropped" not in again.stdout


def test_demo_year_shows_every_flag_and_names_its_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "demo data"
    result = run_demo(data_dir)
    assert result.returncode == 0, result.stderr
    resolved = data_dir.resolve()
    assert f"  data folder: {resolved}\n" in result.stdout
    assert f"--data-dir '{resolved}'" in result.stdout  # quoted: the path has a space
    assert set(DEMO_FLAGS) == {
        "critical_alarm",
        "discrepancy_over_threshold",
        "changed_outside_sessions",
        "chain_gap",
        "reservoir_depleted",
        "refill_overdue",
        "conflicting_exports",
    }
    engine = create_engine(f"sqlite:///{data_dir}/pumptrail.db")
    with engine.connect() as connection:
        stored = set(connection.execute(select(evidence_flags.c.flag)).scalars())
        flags_by_pump = {
            (serial, flags)
            for serial, flags in connection.execute(
                select(pumps.c.serial, evidence.c.flags).select_from(
                    sessions.join(pumps, pumps.c.id == sessions.c.pump_id).join(
                        evidence, evidence.c.session_pk == sessions.c.id
                    )
                )
            )
        }
    engine.dispose()
    assert set(DEMO_FLAGS) <= stored
    # The other three pumps are well kept: only their first sessions carry a flag.
    others = [flags.split() for serial, flags in flags_by_pump if serial != TROUBLED_SERIAL]
    assert [f for f in others if f] == [["no_prior_session"]] * 3
    ran_dry = {flags for serial, flags in flags_by_pump if "reservoir_depleted" in flags.split()}
    assert ran_dry == {" critical_alarm reservoir_depleted refill_overdue "}

    # The printed argument points another command at the same folder.
    listed = subprocess.run(
        [sys.executable, "-m", "pumptrail.cli", "evidence", "--json", "--data-dir", str(resolved)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    assert TROUBLED_SERIAL in listed.stdout
    assert '"reservoir_depleted"' in listed.stdout


def test_demo_seeds_payers_coverage_and_providers(tmp_path: Path) -> None:
    data_dir = tmp_path / "demo"
    result = run_demo(data_dir)
    assert result.returncode == 0, result.stderr
    engine = create_engine(f"sqlite:///{data_dir}/pumptrail.db")
    with engine.connect() as connection:
        payers = {p.name: p.profile for p in list_payers(connection)}
        assert payers == {
            "Medicare (J-15 contractor)": "rate-dose",
            "Lakeside Health Plan": "any-setting",
        }
        covered = set(connection.execute(select(coverage.c.patient_id)).scalars())
        stored_patients = set(connection.execute(select(sessions.c.patient_id)).scalars())
        patients = demo_patients()
        assert set(patients) == stored_patients
        # Every demo patient but one has a payer: that one shows "no payer on file".
        assert len(stored_patients - covered) == 1
        day = date(2026, 1, 15)
        found = payers_on(connection, [(p, day) for p in patients])
        assert {p.name for p in found.values()} == set(payers)
        physician = find_provider(connection, DEMO_SUPERVISING_PHYSICIAN)
        nurse = find_provider(connection, "rn.smith")
        operators = set(connection.execute(select(sessions.c.operator_id)).scalars())
    engine.dispose()
    assert physician is not None and physician.role == "physician"
    assert npi_valid(physician.npi)
    assert nurse is not None and nurse.role == "nurse" and npi_valid(nurse.npi)
    assert "rn.smith" in operators or "rn.tanaka" in operators

    # A second run seeds nothing twice.
    again = run_demo(data_dir)
    assert again.returncode == 0, again.stderr
