"""The safety flags `reservoir_depleted` and `refill_overdue` (docs/coding-rules.md §8)."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, timedelta

import pytest

from evidence.safety import DEPLETED_MAX_UL, is_refill_overdue, is_reservoir_depleted
from parsers.model import Session
from parsers.params import ParamValue
from tests.evidence.builders import (
    T0,
    alarm,
    base_state,
    derive,
    make_session,
    refill,
    refill_visit,
)


def _prior(**state: ParamValue) -> Session:
    return make_session("S0", start=T0 - timedelta(days=30), interrogated=base_state(**state))


# ---------------------------------------------------------------------------
# §8.1 reservoir_depleted


@pytest.mark.parametrize(
    ("volume", "alarm_volume", "depleted"),
    [
        (500, 2000, True),  # exactly 500 µL: at most 500
        (501, 2000, False),  # one µL over
        (0, 2000, True),
        (50, 2000, True),
        (400, 400, False),  # equal to the alarm volume: not below it
        (400, 401, True),
        (400, 399, False),
        (500, 500, False),
        (None, 2000, False),  # not reported: not compared
        (100, None, False),
    ],
)
def test_reservoir_depleted_volume_boundaries(
    volume: int | None, alarm_volume: int | None, depleted: bool
) -> None:
    state = base_state(reservoir_volume=volume, low_reservoir_alarm_volume=alarm_volume)
    for name in ("reservoir_volume", "low_reservoir_alarm_volume"):
        if state[name] is None:
            del state[name]
    session = make_session(interrogated=state)
    assert is_reservoir_depleted(session) is depleted
    flags = derive(session, _prior())["flags"]
    assert ("reservoir_depleted" in flags) is depleted
    assert DEPLETED_MAX_UL == 500


def test_reservoir_depleted_reads_the_interrogated_volume_not_the_refilled_one() -> None:
    # Found empty, then refilled to 40 mL in the same visit: still depleted.
    session = refill_visit(interrogated=base_state(reservoir_volume=0))
    assert session.end_state["reservoir_volume"] == 40000
    assert "reservoir_depleted" in derive(session)["flags"]
    # Found at 3.4 mL, the end state does not matter either.
    assert "reservoir_depleted" not in derive(refill_visit())["flags"]


@pytest.mark.parametrize(
    ("state", "depleted"),
    [("active", True), ("cleared", False), ("logged", False)],
)
def test_reservoir_depleted_by_an_active_empty_reservoir_alarm(state: str, depleted: bool) -> None:
    session = make_session(events=[alarm("empty_reservoir", "critical", state)])
    assert session.interrogated["reservoir_volume"] == 3400
    assert is_reservoir_depleted(session) is depleted
    flags = derive(session)["flags"]
    assert ("reservoir_depleted" in flags) is depleted
    # Critical in any state (§7.14).
    assert "critical_alarm" in flags


def test_other_active_alarms_do_not_deplete() -> None:
    session = make_session(events=[alarm("low_reservoir", "non_critical", "active")])
    assert not is_reservoir_depleted(session)


# ---------------------------------------------------------------------------
# §8.2 refill_overdue


def test_refill_overdue_is_the_day_after_the_refill_date() -> None:
    prior = _prior(refill_date=date(2026, 3, 1), low_reservoir_alarm_date=date(2026, 3, 10))
    on_the_day = make_session(start=datetime(2026, 3, 1, 16, 0))
    day_after = make_session(start=datetime(2026, 3, 2, 8, 0))
    assert not is_refill_overdue(on_the_day, prior)
    assert is_refill_overdue(day_after, prior)
    assert "refill_overdue" not in derive(on_the_day, prior)["flags"]
    assert "refill_overdue" in derive(day_after, prior)["flags"]


def test_refill_overdue_falls_back_to_the_alarm_date() -> None:
    prior = _prior(refill_date=None, low_reservoir_alarm_date=date(2026, 2, 20))
    assert is_refill_overdue(make_session(start=datetime(2026, 2, 21, 9, 0)), prior)
    assert not is_refill_overdue(make_session(start=datetime(2026, 2, 20, 9, 0)), prior)
    # A refill date, when set, wins over an earlier alarm date.
    later = _prior(refill_date=date(2026, 2, 25), low_reservoir_alarm_date=date(2026, 2, 20))
    assert not is_refill_overdue(make_session(start=datetime(2026, 2, 23, 9, 0)), later)


def test_refill_overdue_without_either_date_is_never_set() -> None:
    state = base_state()
    del state["refill_date"]
    state["low_reservoir_alarm_date"] = None
    prior = make_session("S0", start=T0 - timedelta(days=300), interrogated=state)
    assert not is_refill_overdue(make_session(), prior)
    assert "refill_overdue" not in derive(make_session(), prior)["flags"]


def test_refill_overdue_without_a_prior_session_is_never_set() -> None:
    late = make_session(start=datetime(2030, 1, 1, 9, 0))
    assert late.interrogated["refill_date"] == date(2026, 3, 25)
    assert not is_refill_overdue(late, None)
    assert derive(late)["flags"] == ["no_prior_session"]


def test_refill_overdue_reads_the_prior_end_state() -> None:
    # The prior session was a refill that set a new refill date (2026-09-01).
    prior = refill_visit("S0", start=T0 - timedelta(days=30))
    assert prior.interrogated["refill_date"] == date(2026, 3, 25)
    assert prior.end_state["refill_date"] == date(2026, 9, 1)
    assert not is_refill_overdue(make_session(start=datetime(2026, 4, 1, 9, 0)), prior)
    assert is_refill_overdue(make_session(start=datetime(2026, 9, 2, 9, 0)), prior)


def test_refill_overdue_uses_the_local_start_date() -> None:
    prior = _prior(refill_date=date(2026, 3, 1))
    # 23:30 local at UTC-5 is already 2 March in UTC, still 1 March where the visit was.
    evening = make_session(start=datetime(2026, 3, 1, 23, 30), utc_offset_min=-300)
    assert evening.session_start_utc.date() == date(2026, 3, 2)
    assert not is_refill_overdue(evening, prior)
    # 00:30 local at UTC+2 is still 1 March in UTC, but 2 March where the visit was.
    morning = make_session(start=datetime(2026, 3, 2, 0, 30), utc_offset_min=120)
    assert morning.session_start_utc.date() == date(2026, 3, 1)
    assert is_refill_overdue(morning, prior)


def test_the_prior_is_the_last_session_starting_earlier() -> None:
    old = _prior(refill_date=date(2026, 1, 1))
    recent = make_session(
        "S1", start=T0 - timedelta(days=5), interrogated=base_state(refill_date=date(2026, 4, 1))
    )
    session = make_session("S2", start=T0)
    assert "refill_overdue" not in derive(session, old, recent)["flags"]
    assert "refill_overdue" in derive(session, old)["flags"]


# ---------------------------------------------------------------------------
# §8.3 their place


def test_safety_flags_come_right_after_critical_alarm_and_battery() -> None:
    prior = _prior(refill_date=date(2026, 2, 1))
    session = make_session(
        interrogated=dict(prior.end_state, reservoir_volume=0),
        battery="eos",
        events=[refill(expected=9000, aspirated=1000), alarm("empty_reservoir", "critical")],
    )
    session = replace(session, interrogated=dict(session.interrogated, infusion_rate=210))
    document = derive(session, prior, conflicting_exports=True)
    assert document["flags"] == [
        "critical_alarm",
        "battery_eri",
        "reservoir_depleted",
        "refill_overdue",
        "changed_outside_sessions",
        "discrepancy_over_threshold",
        "chain_gap",
        "conflicting_exports",
    ]
