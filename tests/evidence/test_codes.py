"""CPT codes under every profile (docs/coding-rules.md §2, §3, §7.8, §7.9)."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest

from evidence import DECISION_TABLE, load_rules, procedure_code
from parsers.model import Event
from parsers.params import ParamValue
from tests.evidence.builders import (
    T0,
    base_state,
    change,
    codes_of,
    derive,
    make_session,
    refill,
    refill_visit,
)

PROFILES = ("rate-dose", "rate-dose-alarms", "any-setting")

# A setting each profile counts that the narrower profiles do not, and one it does not count.
COUNTED: dict[str, tuple[str, ParamValue, ParamValue]] = {
    "rate-dose": ("ptm_lockout", 60, 90),
    "rate-dose-alarms": ("low_reservoir_alarm_volume", 2000, 3000),
    "any-setting": ("refill_date", date(2026, 3, 25), date(2026, 4, 1)),
}
NOT_COUNTED: dict[str, tuple[str, ParamValue, ParamValue]] = {
    "rate-dose": ("low_reservoir_alarm_volume", 2000, 3000),
    "rate-dose-alarms": ("refill_date", date(2026, 3, 25), date(2026, 4, 1)),
    "any-setting": ("catheter_volume", 150, 180),
}

# §2 decision table rows: (refill, reprogrammed, physician/QHP performed) -> code.
ROWS = [
    (False, False, False, "62367"),
    (False, False, True, "62367"),
    (False, True, False, "62368"),
    (False, True, True, "62368"),
    (True, True, False, "62369"),
    (True, True, True, "62370"),
    (True, False, False, "95990"),
    (True, False, True, "95991"),
]


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize(("refilled", "reprogrammed", "qhp", "expected"), ROWS)
def test_decision_table_under_every_profile(
    profile: str, refilled: bool, reprogrammed: bool, qhp: bool, expected: str
) -> None:
    name, old, new = (COUNTED if reprogrammed else NOT_COUNTED)[profile]
    events: list[Event] = [change(name, old, new, "efficacy")]
    if refilled:
        # A REFILL record alone: the reservoir volume is not written, so any-setting
        # does not see a reservoir change here.
        events.insert(0, refill())
    session = make_session(
        role="qhp" if qhp else "technician",
        interrogated=base_state(ptm_lockout=60),
        programmed={name: new},
        events=events,
    )
    entry = derive(session)["codes"][profile]
    assert entry == {
        "procedure": expected,
        "reprogrammed": reprogrammed,
        "refill": refilled,
        "counterfactual": entry["counterfactual"],
    }
    assert entry["counterfactual"].startswith(f"under {profile} this visit is {expected} because ")


def test_procedure_code_table_is_the_spec_table() -> None:
    for refilled, reprogrammed, qhp, expected in ROWS:
        assert procedure_code(refill=refilled, reprogrammed=reprogrammed, physician_or_qhp=qhp) == (
            expected
        )
    assert "96522" not in DECISION_TABLE.values()


def test_cpt_assistant_physician_refills_and_raises_dose_ten_percent() -> None:
    session = refill_visit(
        role="physician",
        extra_programmed={"drug1_daily_dose": 2200, "infusion_rate": 220},
        extra_events=[
            change("drug1_daily_dose", 2000, 2200, "efficacy"),
            change("infusion_rate", 200, 220, "efficacy"),
        ],
    )
    document = derive(session)
    assert codes_of(document) == dict.fromkeys(PROFILES, "62370")
    assert document["codes"]["rate-dose"]["counterfactual"] == (
        "under rate-dose this visit is 62370 because drug1_daily_dose and infusion_rate "
        "(prescription) changed in session and a physician refilled"
    )


def test_cpt_assistant_pa_interrogates_after_mri_nothing_changes() -> None:
    session = make_session(role="qhp", operator_id="pa.kim")
    document = derive(session)
    assert codes_of(document) == dict.fromkeys(PROFILES, "62367")
    assert all(not entry["reprogrammed"] for entry in document["codes"].values())
    assert document["changes"] == []
    assert document["codes"]["rate-dose"]["counterfactual"] == (
        "under rate-dose this visit is 62367 because nothing was transmitted to the pump "
        "and there was no refill"
    )


def test_nurse_refill_updating_only_reservoir_volume_and_dates() -> None:
    document = derive(refill_visit(role="nurse"))
    assert codes_of(document) == {
        "rate-dose": "95990",
        "rate-dose-alarms": "95990",
        "any-setting": "62369",
    }
    assert document["codes"]["rate-dose"]["counterfactual"] == (
        "under rate-dose this visit is 95990 because the only writes were reservoir_volume, "
        "low_reservoir_alarm_date and refill_date (reservoir, schedule), which rate-dose does "
        "not count, and a nurse (staff) refilled"
    )
    assert document["codes"]["any-setting"]["counterfactual"] == (
        "under any-setting this visit is 62369 because reservoir_volume, low_reservoir_alarm_date "
        "and refill_date (reservoir, schedule) changed in session and a nurse (staff) refilled"
    )


def test_physician_refill_of_reservoir_and_dates_is_95991_under_rate_dose() -> None:
    document = derive(refill_visit(role="physician"))
    assert codes_of(document) == {
        "rate-dose": "95991",
        "rate-dose-alarms": "95991",
        "any-setting": "62370",
    }


def test_alarm_threshold_only_change() -> None:
    session = make_session(
        role="nurse",
        programmed={"low_reservoir_alarm_volume": 3000},
        events=[change("low_reservoir_alarm_volume", 2000, 3000, "patient_request")],
    )
    codes = derive(session)["codes"]
    assert codes["rate-dose"]["reprogrammed"] is False
    assert codes["rate-dose"]["procedure"] == "62367"
    assert codes["rate-dose-alarms"]["reprogrammed"] is True
    assert codes["rate-dose-alarms"]["procedure"] == "62368"
    assert codes["any-setting"]["procedure"] == "62368"


def test_concentration_change_at_same_dose_counts_everywhere_and_is_flagged() -> None:
    session = make_session(
        programmed={"drug1_concentration": 20000, "infusion_rate": 100},
        events=[
            change("drug1_concentration", 10000, 20000, "drug_change"),
            change("infusion_rate", 200, 100, "drug_change"),
        ],
    )
    document = derive(session)
    assert codes_of(document) == dict.fromkeys(PROFILES, "62368")
    flags = {c["parameter"]: c["flags"] for c in document["changes"]}
    assert flags == {"drug1_concentration": ["concentration_only"], "infusion_rate": []}


def test_concentration_change_counts_even_under_a_profile_without_prescription(
    tmp_path: Path,
) -> None:
    extra = tmp_path
    (extra / "profiles.toml").write_text(
        '[[profile]]\nname = "alarms-only"\ncategories = ["alarms"]\n', "utf-8"
    )
    rules = load_rules(extra)
    concentration = make_session(
        programmed={"drug1_concentration": 20000},
        events=[change("drug1_concentration", 10000, 20000, "drug_change")],
    )
    dose = make_session(
        programmed={"drug1_daily_dose": 2400},
        events=[change("drug1_daily_dose", 2000, 2400, "efficacy")],
    )
    assert derive(concentration, rules=rules)["codes"]["alarms-only"]["reprogrammed"] is True
    assert derive(dose, rules=rules)["codes"]["alarms-only"]["reprogrammed"] is False


def test_change_made_and_reverted_is_listed_not_counted() -> None:
    session = make_session(
        programmed={"drug1_daily_dose": 2000},
        events=[
            change("drug1_daily_dose", 2000, 2500, "efficacy"),
            change("drug1_daily_dose", 2500, 2000, "entry_correction"),
        ],
    )
    document = derive(session)
    assert document["changes"] == [
        {
            "parameter": "drug1_daily_dose",
            "category": "prescription",
            "before": 2000,
            "after": 2000,
            "when": "reverted_in_session",
            "reason": "entry_correction",
            "flags": [],
        }
    ]
    assert codes_of(document) == dict.fromkeys(PROFILES, "62367")
    assert document["codes"]["rate-dose"]["counterfactual"] == (
        "under rate-dose this visit is 62367 because the only changes, of drug1_daily_dose, "
        "were changed back and there was no refill"
    )


def test_logged_changes_without_transmission_are_reverted_not_counted() -> None:
    session = make_session(events=[change("drug1_daily_dose", 2000, 2500, "efficacy")])
    document = derive(session)
    assert [(c["parameter"], c["when"], c["before"], c["after"]) for c in document["changes"]] == [
        ("drug1_daily_dose", "reverted_in_session", 2000, 2000)
    ]
    assert codes_of(document) == dict.fromkeys(PROFILES, "62367")


def test_transmission_that_changes_nothing_is_not_reprogramming() -> None:
    session = make_session(
        role="physician",
        programmed={"drug1_daily_dose": 2000, "infusion_rate": 200, "reservoir_volume": 3400},
    )
    document = derive(session)
    assert document["changes"] == []
    assert codes_of(document) == dict.fromkeys(PROFILES, "62367")
    assert "transmission changed no setting" in document["codes"]["any-setting"]["counterfactual"]


def test_changes_between_sessions_are_never_counted() -> None:
    prior = make_session("S0", start=T0 - timedelta(days=28))
    current = make_session(
        "S1",
        interrogated=base_state(drug1_daily_dose=2400, infusion_rate=240),
    )
    document = derive(current, prior)
    assert [c["when"] for c in document["changes"]] == ["between_sessions", "between_sessions"]
    assert codes_of(document) == dict.fromkeys(PROFILES, "62367")
    assert document["codes"]["rate-dose"]["counterfactual"].endswith(
        "; drug1_daily_dose and infusion_rate changed outside recorded sessions, which never counts"
    )


def test_device_setting_never_counts() -> None:
    session = make_session(
        programmed={"catheter_volume": 180, "reservoir_capacity": 20000},
        events=[change("catheter_volume", 150, 180, "entry_correction")],
    )
    document = derive(session)
    assert [c["when"] for c in document["changes"]] == ["in_session", "in_session"]
    assert codes_of(document) == dict.fromkeys(PROFILES, "62367")


def test_qhp_roles_come_from_the_rules(tmp_path: Path) -> None:
    extra = tmp_path
    (extra / "roles.toml").write_text('qhp_roles = ["physician"]\n', "utf-8")
    session = refill_visit(role="qhp")
    assert derive(session)["codes"]["rate-dose"]["procedure"] == "95991"
    assert derive(session, rules=load_rules(extra))["codes"]["rate-dose"]["procedure"] == "95990"


def test_refill_with_nothing_added_is_not_a_refill() -> None:
    session = make_session(role="physician", events=[refill(added=0, new_volume=3100)])
    document = derive(session)
    assert codes_of(document) == dict.fromkeys(PROFILES, "62367")
    assert document["refill"] is not None
    assert all(entry["refill"] is False for entry in document["codes"].values())
