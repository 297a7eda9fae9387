"""The in-session and between-sessions diffs (docs/coding-rules.md §7.1-7.4, §7.6, §7.9, §7.14)."""

from __future__ import annotations

from datetime import date, timedelta

from evidence.diff import in_session_changes
from parsers.model import Position
from parsers.params import FlexStep
from tests.evidence.builders import (
    T0,
    base_state,
    change,
    change_rows,
    derive,
    make_session,
    refill,
    refill_visit,
)


def test_in_session_change_has_before_after_reason_and_provenance() -> None:
    session = make_session(
        programmed={"drug1_daily_dose": 2400},
        events=[
            change("drug1_daily_dose", 2000, 2200, "efficacy"),
            change("drug1_daily_dose", 2200, 2400, "side_effects"),
        ],
    )
    (entry,) = in_session_changes(session)
    assert (entry.parameter, entry.before, entry.after, entry.when, entry.reason) == (
        "drug1_daily_dose",
        2000,
        2400,
        "in_session",
        "side_effects",
    )
    assert entry.flags == ()
    # The last logged change: its time and where it sits in the file (the coder view).
    assert entry.position == Position("line", 11)
    assert entry.changed_at_utc == T0 + timedelta(minutes=3)
    assert entry.logged_changes == 2


def test_end_state_is_interrogated_overlaid_with_phase_one() -> None:
    # Phase 1 omits infusion_rate: it kept its interrogated value, so only the dose changed.
    session = make_session(
        programmed={"drug1_daily_dose": 2400},
        events=[change("drug1_daily_dose", 2000, 2400)],
    )
    assert change_rows(derive(session)) == [("drug1_daily_dose", "in_session")]


def test_phase_one_write_of_never_interrogated_setting_counts() -> None:
    logged = make_session(
        programmed={"ptm_lockout": 120},
        events=[change("ptm_lockout", 60, 120, "patient_request")],
    )
    unlogged = make_session(programmed={"ptm_lockout": 120})
    (a,) = derive(logged)["changes"]
    (b,) = derive(unlogged)["changes"]
    assert (a["before"], a["after"], a["when"], a["reason"], a["flags"]) == (
        60,
        120,
        "in_session",
        "patient_request",
        [],
    )
    assert (b["before"], b["after"], b["when"], b["reason"], b["flags"]) == (
        None,
        120,
        "in_session",
        None,
        ["unlogged_change"],
    )
    assert derive(unlogged)["codes"]["rate-dose"]["reprogrammed"] is True


def test_setting_known_on_one_side_only_is_not_compared() -> None:
    # Interrogated but not transmitted: unknown is not changed.
    interrogated = base_state()
    del interrogated["catheter_volume"]
    session = make_session(interrogated=interrogated, programmed={})
    assert derive(session)["changes"] == []
    # Between sessions: a setting the prior session never read is not compared.
    prior = make_session("S0", start=T0 - timedelta(days=30), interrogated=interrogated)
    current = make_session(interrogated=base_state(catheter_volume=999))
    assert derive(current, prior)["changes"] == []


def test_drug_name_case_and_whitespace_is_not_a_change() -> None:
    session = make_session(programmed={"drug1_name": "  MORPHINE "})
    assert derive(session)["changes"] == []
    prior = make_session(
        "S0", start=T0 - timedelta(days=30), interrogated=base_state(drug1_name="morphine")
    )
    assert derive(make_session(), prior)["changes"] == []
    # Another drug is a change; other text compares exactly.
    renamed = make_session(
        programmed={"drug1_name": "Hydromorphone", "catheter_tip_level": "t10 "},
        interrogated=base_state(catheter_tip_level="T10"),
    )
    assert change_rows(derive(renamed)) == [
        ("drug1_name", "in_session"),
        ("catheter_tip_level", "in_session"),
    ]


def test_values_compare_exactly() -> None:
    session = make_session(
        interrogated=base_state(flex_step_0=FlexStep(360, 480)),
        programmed={"flex_step_0": FlexStep(360, 481), "ptm_enabled": False},
    )
    (entry,) = derive(session)["changes"]
    assert entry["parameter"] == "flex_step_0"
    assert entry["before"] == {"start_minute": 360, "rate_ul_per_day": 480}
    assert entry["after"] == {"start_minute": 360, "rate_ul_per_day": 481}


def test_date_set_to_not_set_is_a_change() -> None:
    session = make_session(
        programmed={"refill_date": None},
        events=[change("refill_date", date(2026, 3, 25), None, "entry_correction")],
    )
    (entry,) = derive(session)["changes"]
    assert (entry["before"], entry["after"], entry["when"]) == ("2026-03-25", None, "in_session")


def test_reverted_needs_a_logged_change_whose_end_equals_start() -> None:
    session = make_session(
        programmed={"drug1_daily_dose": 2000, "infusion_rate": 200},
        events=[
            change("drug1_daily_dose", 2000, 2500, "efficacy"),
            change("drug1_daily_dose", 2500, 2000, "side_effects"),
        ],
    )
    # infusion_rate was transmitted unchanged with no log: not listed at all.
    assert change_rows(derive(session)) == [("drug1_daily_dose", "reverted_in_session")]
    (entry,) = derive(session)["changes"]
    assert entry["reason"] == "side_effects"
    assert entry["flags"] == []


def test_without_phase_one_every_logged_change_is_reverted() -> None:
    session = make_session(
        events=[
            change("drug1_daily_dose", 2000, 2500, "efficacy"),
            change("ptm_lockout", 60, 90, "efficacy"),
        ]
    )
    changes = derive(session)["changes"]
    assert [(c["parameter"], c["when"], c["before"], c["after"]) for c in changes] == [
        ("drug1_daily_dose", "reverted_in_session", 2000, 2000),
        ("ptm_lockout", "reverted_in_session", 60, 60),
    ]


def test_reservoir_update_accounted_for_by_refill_is_refill_bookkeeping() -> None:
    (entry, *_rest) = derive(refill_visit())["changes"]
    assert (entry["parameter"], entry["reason"], entry["flags"]) == (
        "reservoir_volume",
        "refill_bookkeeping",
        [],
    )


def test_reservoir_update_not_matching_refill_is_unlogged() -> None:
    session = make_session(
        programmed={"reservoir_volume": 39000},
        events=[refill(new_volume=40000)],
    )
    (entry,) = derive(session)["changes"]
    assert (entry["reason"], entry["flags"]) == (None, ["unlogged_change"])


def test_unlogged_change_flag() -> None:
    # Logged change ends at 2200, but 2400 was transmitted: no logged change ends there.
    session = make_session(
        programmed={"drug1_daily_dose": 2400, "infusion_rate": 240},
        events=[change("drug1_daily_dose", 2000, 2200, "efficacy")],
    )
    flags = {c["parameter"]: (c["reason"], c["flags"]) for c in derive(session)["changes"]}
    # The logged change's reason explains 2200, not 2400: an unlogged change has none (§7.3).
    assert flags == {
        "drug1_daily_dose": (None, ["unlogged_change"]),
        "infusion_rate": (None, ["unlogged_change"]),
    }


def test_concentration_only_needs_equal_known_daily_dose() -> None:
    same_dose = make_session(
        programmed={"drug1_concentration": 20000, "infusion_rate": 100},
        events=[change("drug1_concentration", 10000, 20000, "drug_change")],
    )
    new_dose = make_session(
        programmed={"drug1_concentration": 20000, "drug1_daily_dose": 4000},
        events=[
            change("drug1_concentration", 10000, 20000, "drug_change"),
            change("drug1_daily_dose", 2000, 4000, "drug_change"),
        ],
    )
    no_dose_interrogated = base_state()
    del no_dose_interrogated["drug1_daily_dose"]
    unknown_dose = make_session(
        interrogated=no_dose_interrogated,
        programmed={"drug1_concentration": 20000},
        events=[change("drug1_concentration", 10000, 20000, "drug_change")],
    )

    def flags(session: object) -> list[str]:
        return next(
            c["flags"]
            for c in derive(session)["changes"]  # type: ignore[arg-type]
            if c["parameter"] == "drug1_concentration"
        )

    assert "concentration_only" in flags(same_dose)
    assert "concentration_only" not in flags(new_dose)
    assert "concentration_only" not in flags(unknown_dose)


def test_between_sessions_compares_prior_end_state_with_interrogated() -> None:
    prior = make_session(
        "S0",
        start=T0 - timedelta(days=30),
        programmed={"drug1_daily_dose": 2200, "infusion_rate": 220},
        events=[
            change("drug1_daily_dose", 2000, 2200),
            change("infusion_rate", 200, 220),
        ],
    )
    # The pump still runs 2200 (prior end state) but alarms and reservoir differ.
    current = make_session(
        interrogated=base_state(
            drug1_daily_dose=2200,
            infusion_rate=220,
            low_reservoir_alarm_volume=2500,
            reservoir_volume=1000,
        )
    )
    document = derive(current, prior)
    assert document["changes"] == [
        {
            "parameter": "low_reservoir_alarm_volume",
            "category": "alarms",
            "before": 2000,
            "after": 2500,
            "when": "between_sessions",
            "reason": None,
            "flags": ["changed_outside_sessions"],
        }
    ]
    assert "changed_outside_sessions" in document["flags"]
    # Not prescription or ptm: no chain gap.
    assert "chain_gap" not in document["flags"]


def test_chain_gap_when_prescription_or_ptm_changed_outside_sessions() -> None:
    prior = make_session(
        "S0", start=T0 - timedelta(days=30), interrogated=base_state(ptm_lockout=60)
    )
    current = make_session(interrogated=base_state(ptm_lockout=30))
    document = derive(current, prior)
    assert change_rows(document) == [("ptm_lockout", "between_sessions")]
    assert document["flags"] == ["changed_outside_sessions", "chain_gap"]


def test_changes_order_between_first_then_in_session_by_table_order() -> None:
    prior = make_session("S0", start=T0 - timedelta(days=30))
    current = make_session(
        interrogated=base_state(catheter_volume=170, drug1_daily_dose=2100, infusion_rate=210),
        programmed={
            "refill_date": date(2026, 4, 1),
            "drug1_daily_dose": 2000,
            "low_reservoir_alarm_volume": 2500,
        },
        events=[
            change("refill_date", date(2026, 3, 25), date(2026, 4, 1)),
            change("low_reservoir_alarm_volume", 2000, 2500),
            change("ptm_enabled", False, True),
            change("drug1_daily_dose", 2100, 2000),
        ],
    )
    assert change_rows(derive(current, prior)) == [
        ("drug1_daily_dose", "between_sessions"),
        ("infusion_rate", "between_sessions"),
        ("catheter_volume", "between_sessions"),
        ("drug1_daily_dose", "in_session"),
        ("ptm_enabled", "reverted_in_session"),
        ("low_reservoir_alarm_volume", "in_session"),
        ("refill_date", "in_session"),
    ]


def test_no_prior_session_flag() -> None:
    document = derive(make_session())
    assert document["prior_session_id"] is None
    assert document["flags"] == ["no_prior_session"]
    prior = make_session("S0", start=T0 - timedelta(days=30))
    document = derive(make_session(), prior)
    assert document["prior_session_id"] == "S0"
    assert document["flags"] == []
