"""Refills due: the latest session's programmed dates, overdue first, baclofen flagged."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from db import audit
from db.due import LatestSession, due_report, latest_sessions
from db.engine import safe_url_text
from db.migrate import open_database
from evidence.due import is_withdrawal_risk, refills_due
from fixtures.binary_writer import encode_binary
from fixtures.scenario import Scenario
from fixtures.scenarios import pump_history
from ingest.pipeline import Importer
from ingest.service import Service
from parsers.registry import decode_bytes
from pumptrail import cli, settings
from pumptrail.commands.run import service_config
from tests.ingest.exports import importer, rules

TODAY = date(2026, 5, 1)


def latest(
    serial: str,
    *,
    alarm: str | None,
    refill: str | None,
    drug: str = "Morphine",
    programmed: dict[str, Any] | None = None,
) -> LatestSession:
    document = {
        "interrogated": {
            "drug1_name": drug,
            "low_reservoir_alarm_date": alarm,
            "refill_date": refill,
        },
        "programmed": programmed,
    }
    return LatestSession(
        serial, "IT-40", f"sid-{serial}", datetime(2026, 3, 1), json.dumps(document), "SYN-1", "X"
    )


def test_the_earlier_date_decides_and_far_dates_are_left_out() -> None:
    report = refills_due(
        [
            latest("A", alarm="2026-05-20", refill="2026-05-13"),  # due in 12 days
            latest("B", alarm="2026-06-30", refill="2026-06-23"),  # 53 days away
            latest("C", alarm=None, refill=None),  # no schedule programmed
            latest("D", alarm="2026-05-15", refill=None),  # 14 days: included
        ],
        today=TODAY,
        within_days=14,
        rules=rules(),
    )
    assert [(r.pump_serial, r.due_date, r.days_left) for r in report] == [
        ("A", date(2026, 5, 13), 12),
        ("D", date(2026, 5, 15), 14),
    ]
    assert report[0].status == "due"


def test_overdue_pumps_come_first_most_overdue_on_top_baclofen_first_on_a_date() -> None:
    report = refills_due(
        [
            latest("DUE-SOON", alarm="2026-05-03", refill="2026-05-02"),
            latest("LATE-1", alarm="2026-04-29", refill="2026-04-22"),
            latest("LATE-2", alarm="2026-04-10", refill="2026-04-03"),
            latest("LATE-BAC", alarm="2026-04-29", refill="2026-04-22", drug="Gablofen"),
            latest("TODAY", alarm="2026-05-08", refill="2026-05-01"),
        ],
        today=TODAY,
        within_days=14,
        rules=rules(),
    )
    assert [r.pump_serial for r in report] == ["LATE-2", "LATE-BAC", "LATE-1", "TODAY", "DUE-SOON"]
    assert [r.status for r in report] == ["overdue", "overdue", "overdue", "due", "due"]
    assert report[0].days_left == -28
    assert report[1].withdrawal_risk and not report[2].withdrawal_risk


def test_the_programmed_dates_override_the_interrogated_ones() -> None:
    (item,) = refills_due(
        [
            latest(
                "A",
                alarm="2026-04-01",
                refill="2026-03-25",
                programmed={"low_reservoir_alarm_date": "2026-05-10", "refill_date": "2026-05-03"},
            )
        ],
        today=TODAY,
        within_days=14,
        rules=rules(),
    )
    assert (item.refill_date, item.low_reservoir_alarm_date) == (
        date(2026, 5, 3),
        date(2026, 5, 10),
    )
    assert not item.overdue


@pytest.mark.parametrize(
    ("drug", "risk"),
    [
        ("Baclofen", True),
        (" baclofen ", True),
        ("Lioresal Intrathecal", True),
        ("Gablofen", True),
        ("Baclofen 2000 mcg/mL", True),
        ("Morphine", False),
        ("Infumorph", False),
        ("Ziconotide", False),
    ],
)
def test_baclofen_by_name_or_alias_is_a_withdrawal_risk(drug: str, risk: bool) -> None:
    assert is_withdrawal_risk(drug, rules()) is risk


# ---------------------------------------------------------------------------
# From the database


def baclofen_history(visits: int = 3) -> list[Scenario]:
    """Visits of a pump holding baclofen (the first seed whose random pump does)."""
    for seed in range(200):
        scenarios = list(pump_history(random.Random(seed), visits=visits))
        if decode_bytes(encode_binary(scenarios[0]), source="x").interrogated.get("drug1_name") == (
            "Baclofen"
        ):
            return scenarios
    raise AssertionError("no baclofen pump in 200 seeds")


def end_dates(scenario: Scenario) -> tuple[date, date]:
    state = decode_bytes(encode_binary(scenario), source="x").end_state
    alarm, refill = state["low_reservoir_alarm_date"], state["refill_date"]
    assert isinstance(alarm, date) and isinstance(refill, date)
    return alarm, refill


def expected_due(
    histories: list[list[Scenario]], today: date, within: int
) -> list[tuple[str, int]]:
    """(pump serial, days left) of the pumps due, in report order, worked out by hand."""
    due = []
    for history in histories:
        days = (min(end_dates(history[-1])) - today).days
        if days <= within:
            due.append((history[-1].header.pump_serial, days))
    return sorted(due, key=lambda item: (item[1] >= 0, item[1], item[0]))


@pytest.fixture
def stored(tmp_path: Path) -> Iterator[tuple[Importer, list[list[Scenario]]]]:
    histories = [baclofen_history(), list(pump_history(random.Random(7), visits=4))]
    with importer(f"sqlite:///{tmp_path / 'pumptrail.db'}", tmp_path / "raw") as imp:
        everything = [s for history in histories for s in history]
        random.Random(1).shuffle(everything)  # import order must not matter
        for scenario in everything:
            assert imp.import_bytes(encode_binary(scenario), name=scenario.name).outcome == (
                "imported"
            )
        yield imp, histories


def test_the_latest_session_of_each_pump_is_read(
    stored: tuple[Importer, list[list[Scenario]]],
) -> None:
    imp, histories = stored
    with imp.engine.connect() as connection:
        rows = latest_sessions(connection)
    expected = sorted((h[-1].header.pump_serial, h[-1].header.session_id) for h in histories)
    assert sorted((r.pump_serial, r.session_id) for r in rows) == expected


def test_due_report_from_stored_sessions(stored: tuple[Importer, list[list[Scenario]]]) -> None:
    imp, (baclofen, other) = stored
    alarm, refill = end_dates(baclofen[-1])
    today = refill + timedelta(days=3)
    report = due_report(imp.engine, today=today, within_days=14, rules=rules())
    assert [(r.pump_serial, r.days_left) for r in report] == expected_due(
        [baclofen, other], today, 14
    )
    by_serial = {item.pump_serial: item for item in report}
    item = by_serial[baclofen[-1].header.pump_serial]
    assert item.overdue and item.days_left == -3
    assert item.withdrawal_risk
    assert item.drugs[0] == "Baclofen"
    assert (item.low_reservoir_alarm_date, item.refill_date) == (alarm, refill)
    assert item.session_id == baclofen[-1].header.session_id


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = cli.main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


def test_pumptrail_due_prints_a_table_and_json(
    stored: tuple[Importer, list[list[Scenario]]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _imp, histories = stored
    baclofen = histories[0]
    monkeypatch.setenv("PUMPTRAIL_DATA_DIR", str(tmp_path))
    database = safe_url_text(f"sqlite:///{tmp_path / 'pumptrail.db'}")
    checked = f"(database {database}, data folder {tmp_path})"
    _alarm, refill = end_dates(baclofen[-1])
    day = refill + timedelta(days=2)
    today = day.isoformat()
    serial = baclofen[-1].header.pump_serial
    expected = expected_due(histories, day, 14)

    status, out, _ = run_cli(capsys, "due", "--today", today)
    assert status == 0
    lines = out.splitlines()
    overdue = sum(1 for _serial, days in expected if days < 0)
    assert lines[0] == (
        f"{len(expected)} pump(s) due for a refill within 14 days of {today}, {overdue} overdue "
        f"{checked}"
    )
    assert [next(s for s, _ in expected if s in line) for line in lines[2:]] == [
        s for s, _ in expected
    ]
    row = next(line for line in lines if serial in line)
    assert row.startswith("OVERDUE")
    assert "2 days overdue" in row
    assert "WITHDRAWAL RISK (baclofen)" in row
    assert "SYN-" not in out  # no patient identifiers unless asked

    status, out, _ = run_cli(capsys, "due", "--json", "--today", today, "--show-patient")
    documents = json.loads(out)
    mine = next(d for d in documents if d["pump_serial"] == serial)
    assert mine["status"] == "overdue"
    assert mine["days_left"] == -2
    assert mine["withdrawal_risk"] is True
    assert mine["refill_date"] == refill.isoformat()
    assert mine["drugs"] == ["Baclofen"]
    assert mine["patient_id"].startswith("SYN-")

    status, out, _ = run_cli(capsys, "due", "--today", "2020-01-01", "--due-within-days", "3")
    assert status == 0
    assert out.strip() == f"no pump due for a refill within 3 days of 2020-01-01 {checked}"

    # Each answer that listed pumps is in the audit log: who, the command, its
    # filters, the pumps shown; the empty answer added nothing.
    engine = open_database(f"sqlite:///{tmp_path / 'pumptrail.db'}")
    try:
        with engine.connect() as connection:
            views = audit.show(connection, audit.AuditFilter(action=audit.VIEW_DUE))
    finally:
        engine.dispose()
    assert len(views) == 2
    assert all(v.actor.startswith("cli:") for v in views)
    assert views[0].detail["route"] == "pumptrail due"
    assert views[0].detail["pump_serials"] == [s for s, _ in expected]
    assert views[1].detail["filters"]["show_patient"] is True


def test_the_daily_job_logs_overdue_pumps_without_patient_data(
    stored: tuple[Importer, list[list[Scenario]]],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    imp, histories = stored
    baclofen = histories[0]
    _alarm, refill = end_dates(baclofen[-1])
    today = refill + timedelta(days=1)
    expected = expected_due(histories, today, 14)
    resolved = settings.load(environ={"PUMPTRAIL_DATA_DIR": str(tmp_path)}, config_file=None)
    service = Service(service_config(resolved), rules(), today=lambda: today)
    caplog.set_level(logging.INFO, logger="ingest.service")
    try:
        service.due_job()
    finally:
        if service._engine is not None:
            service._engine.dispose()
    messages = [r.getMessage() for r in caplog.records]
    summary = next(m for m in messages if m.startswith("refills_due "))
    overdue_count = sum(1 for _serial, days in expected if days < 0)
    assert f"pumps={len(expected)} overdue={overdue_count}" in summary
    assert "withdrawal_risk_overdue=1" in summary
    overdue = next(m for m in messages if m.startswith("refill_overdue "))
    assert f"pump_serial={baclofen[-1].header.pump_serial}" in overdue
    assert "days_left=-1" in overdue
    assert "withdrawal_risk=true" in overdue
    with imp.engine.connect() as connection:
        patients = {(r.patient_id, r.patient_name) for r in latest_sessions(connection)}
    for patient_id, name in patients:
        assert all(str(patient_id) not in m and str(name) not in m for m in messages)
