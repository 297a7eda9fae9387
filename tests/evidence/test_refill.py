"""Refill arithmetic (docs/coding-rules.md §4, §7.10-7.12)."""

from __future__ import annotations

from datetime import datetime, timedelta
from fractions import Fraction
from typing import Any

import pytest

from evidence import default_rules
from evidence.refill import recompute_expected, refill_summary, round_half_up
from parsers.model import Session
from tests.evidence.builders import (
    base_state,
    bolus,
    derive,
    make_session,
    refill,
)


def _chain() -> tuple[Session, Session, Session]:
    """Three visits of one pump, every time given explicitly (UTC offset -300).

    A (refill session), 2026-01-05: interrogated 09:01 at 200 uL/day; bolus 100 at
    09:03 (before the refill: not subtracted); REFILL 09:05 to 20000 uL; bolus 300
    at 09:06; transmitted 09:10 at 240 uL/day.
    B (no refill), 2026-01-20: interrogated 10:01 at 250 uL/day (changed outside
    sessions: takes effect at the interrogation); bolus 150; transmitted 10:30 at
    300 uL/day.
    C (this one), 2026-02-01: interrogated 12:01 at 300 uL/day; bolus 200 at 12:02;
    REFILL 12:05; bolus 500 at 12:06 (after: not subtracted).
    """
    day_a, day_b, day_c = datetime(2026, 1, 5), datetime(2026, 1, 20), datetime(2026, 2, 1)

    def at(day: datetime, hh: int, mm: int) -> datetime:
        return day.replace(hour=hh, minute=mm)

    a = make_session(
        "A",
        start=at(day_a, 9, 0),
        utc_offset_min=-300,
        interrogated=base_state(infusion_rate=200),
        interrogated_at=at(day_a, 9, 1),
        events=[
            bolus(100, at=at(day_a, 9, 3)),
            refill(new_volume=20000, added=16000, at=at(day_a, 9, 5)),
            bolus(300, at=at(day_a, 9, 6)),
        ],
        programmed={"infusion_rate": 240, "reservoir_volume": 20000},
        programmed_at=at(day_a, 9, 10),
    )
    b = make_session(
        "B",
        start=at(day_b, 10, 0),
        utc_offset_min=-300,
        interrogated=base_state(infusion_rate=250),
        interrogated_at=at(day_b, 10, 1),
        events=[bolus(150, at=at(day_b, 10, 10))],
        programmed={"infusion_rate": 300},
        programmed_at=at(day_b, 10, 30),
    )
    c = make_session(
        "C",
        start=at(day_c, 12, 0),
        utc_offset_min=-300,
        interrogated=base_state(infusion_rate=300),
        interrogated_at=at(day_c, 12, 1),
        events=[
            bolus(200, at=at(day_c, 12, 2)),
            refill(expected=12000, aspirated=11900, at=at(day_c, 12, 5)),
            bolus(500, at=at(day_c, 12, 6)),
        ],
    )
    return a, b, c


def test_recomputed_expected_residual_matches_hand_computation() -> None:
    a, b, c = _chain()
    # By hand, in minutes at each rate (uL/day x minutes / 1440):
    #   01-05 09:05 -> 09:10          5 min at 200   =  1000/1440
    #   01-05 09:10 -> 01-20 10:01   21651 min at 240 = 5196240/1440
    #   01-20 10:01 -> 10:30         29 min at 250   =  7250/1440
    #   01-20 10:30 -> 02-01 12:01   17371 min at 300 = 5211300/1440
    #   02-01 12:01 -> 12:05          4 min at 300   =  1200/1440
    consumed = Fraction(1000 + 5196240 + 7250 + 5211300 + 1200, 1440)
    assert float(consumed) == pytest.approx(7234.0208, abs=1e-4)
    boluses = 300 + 150 + 200
    expected = 20000 - consumed - boluses  # 12115.979...
    assert round_half_up(expected) == 12116

    recomputation = recompute_expected(c, [a, b])
    assert recomputation is not None
    assert recomputation.expected_ul == 12116
    assert recomputation.bolus_ul == 650
    assert recomputation.start_volume_ul == 20000
    assert recomputation.from_session_id == "A"
    assert [(i.rate_ul_per_day, i.end_utc - i.start_utc) for i in recomputation.intervals] == [
        (200, timedelta(minutes=5)),
        (240, timedelta(minutes=21651)),
        (250, timedelta(minutes=29)),
        (300, timedelta(minutes=17371)),
        (300, timedelta(minutes=4)),
    ]
    assert sum((i.volume_ul for i in recomputation.intervals), Fraction(0)) == consumed
    assert derive(c, a, b)["refill"]["recomputed_expected_ul"] == 12116


def test_history_truncated_at_the_latest_refill_gives_the_same_result() -> None:
    a, b, c = _chain()
    older = make_session(
        "Z",
        start=datetime(2025, 12, 1, 9),
        utc_offset_min=-300,
        events=[refill(new_volume=5000)],
    )
    assert derive(c, older, a, b)["refill"] == derive(c, a, b)["refill"]


def test_recomputation_uses_utc_time_across_a_clock_change() -> None:
    # Same local time ten days apart, but the offset moved from -300 to -240:
    # 10 days minus 1 hour elapsed in UTC.
    a = make_session(
        "A",
        start=datetime(2026, 3, 1, 8, 55),
        utc_offset_min=-300,
        interrogated=base_state(infusion_rate=240),
        events=[refill(new_volume=20000, at=datetime(2026, 3, 1, 9, 0))],
    )
    c = make_session(
        "C",
        start=datetime(2026, 3, 11, 8, 55),
        utc_offset_min=-240,
        interrogated=base_state(infusion_rate=240),
        events=[refill(at=datetime(2026, 3, 11, 9, 0))],
    )
    assert derive(c, a)["refill"]["recomputed_expected_ul"] == 20000 - (2400 - 10)


def test_recomputed_is_null_without_an_earlier_refill() -> None:
    session = make_session(events=[refill()])
    assert derive(session)["refill"]["recomputed_expected_ul"] is None
    prior = make_session("S0", start=datetime(2026, 2, 1, 9))
    assert derive(session, prior)["refill"]["recomputed_expected_ul"] is None


def test_recomputed_never_below_zero() -> None:
    a = make_session(
        "A",
        start=datetime(2025, 1, 1, 9),
        interrogated=base_state(infusion_rate=1000),
        events=[refill(new_volume=20000)],
    )
    c = make_session(interrogated=base_state(infusion_rate=1000), events=[refill()])
    assert derive(c, a)["refill"]["recomputed_expected_ul"] == 0


def test_rate_transmitted_before_the_refill_is_in_force_at_the_refill() -> None:
    # A's end-state rate (300) was transmitted at 09:02, before its REFILL at 09:05.
    a = make_session(
        "A",
        start=datetime(2026, 3, 1, 9, 0),
        interrogated=base_state(infusion_rate=100),
        programmed={"infusion_rate": 300},
        programmed_at=datetime(2026, 3, 1, 9, 2),
        events=[refill(new_volume=20000, at=datetime(2026, 3, 1, 9, 5))],
    )
    c = make_session(
        "C",
        start=datetime(2026, 3, 11, 9, 0),
        interrogated=base_state(infusion_rate=300),
        interrogated_at=datetime(2026, 3, 11, 9, 5),
        events=[refill(at=datetime(2026, 3, 11, 9, 5))],
    )
    assert derive(c, a)["refill"]["recomputed_expected_ul"] == 20000 - 3000


def test_rounding_is_to_nearest_half_up() -> None:
    assert round_half_up(Fraction(5, 2)) == 3
    assert round_half_up(Fraction(7, 2)) == 4
    assert round_half_up(Fraction(249, 100)) == 2
    # 12 hours at 1 uL/day = 0.5 uL: 20000 - 0.5 = 19999.5 -> 20000.
    a = make_session(
        "A",
        start=datetime(2026, 3, 1, 8),
        interrogated=base_state(infusion_rate=1),
        events=[refill(new_volume=20000, at=datetime(2026, 3, 1, 9))],
    )
    c = make_session(
        "C",
        start=datetime(2026, 3, 1, 20, 0),
        interrogated=base_state(infusion_rate=1),
        events=[refill(at=datetime(2026, 3, 1, 21))],
    )
    assert derive(c, a)["refill"]["recomputed_expected_ul"] == 20000


def test_several_refill_records_merge() -> None:
    session = make_session(
        events=[
            refill(expected=3400, aspirated=3000, added=10000, new_volume=13000),
            refill(expected=13000, aspirated=None, added=7000, new_volume=20000),
        ]
    )
    summary = refill_summary(session, [], default_rules())
    assert summary is not None
    assert (summary.expected_residual_ul, summary.aspirated_ul) == (3400, 3000)
    assert (summary.added_ul, summary.new_volume_ul) == (17000, 20000)
    assert summary.discrepancy_ul == 400
    assert summary.record_count == 2
    assert derive(session)["refill"] == {
        "expected_residual_ul": 3400,
        "recomputed_expected_ul": None,
        "aspirated_ul": 3000,
        "added_ul": 17000,
        "new_volume_ul": 20000,
        "discrepancy_ul": 400,
        "discrepancy_threshold_ul": 2000,
    }


def test_no_refill_record_gives_null_refill() -> None:
    assert derive(make_session())["refill"] is None


def _discrepancy(expected: int, aspirated: int | None, capacity: int | None) -> dict[str, Any]:
    state = base_state()
    if capacity is None:
        del state["reservoir_capacity"]
    else:
        state["reservoir_capacity"] = capacity
    session = make_session(
        interrogated=state, events=[refill(expected=expected, aspirated=aspirated)]
    )
    return derive(session)


@pytest.mark.parametrize(
    ("expected", "aspirated", "capacity", "discrepancy", "flagged"),
    [
        # Pocket-fill sized: far less aspirated than expected on a 20 mL pump.
        (8000, 2500, 20000, 5500, True),
        (3500, 2500, 20000, 1000, False),  # exactly 1 mL on 20 mL: not strictly greater
        (3501, 2500, 20000, 1001, True),
        (2500, 3501, 20000, -1001, True),  # more aspirated than expected: absolute value
        (4000, 2500, 40000, 1500, False),
        (4500, 2500, 40000, 2000, False),
        (4501, 2500, 40000, 2001, True),
        (4500, 2500, None, 2000, False),  # unknown capacity: 2 mL
        (4501, 2500, None, 2001, True),
        (4000, None, 20000, None, False),  # not measured
    ],
)
def test_discrepancy_threshold_by_capacity(
    expected: int,
    aspirated: int | None,
    capacity: int | None,
    discrepancy: int | None,
    flagged: bool,
) -> None:
    document = _discrepancy(expected, aspirated, capacity)
    assert document["refill"]["discrepancy_ul"] == discrepancy
    assert ("discrepancy_over_threshold" in document["flags"]) is flagged


def test_capacity_from_end_state_first() -> None:
    session = make_session(
        interrogated=base_state(reservoir_capacity=40000),
        programmed={"reservoir_capacity": 20000},
        events=[refill(expected=4000, aspirated=2500)],
    )
    document = derive(session)
    assert document["refill"]["discrepancy_threshold_ul"] == 1000
    assert "discrepancy_over_threshold" in document["flags"]
