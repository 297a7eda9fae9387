"""The documentation checklist (docs/coding-rules.md §5, §7.15)."""

from __future__ import annotations

from datetime import date
from typing import Any

from tests.evidence.builders import (
    base_state,
    bolus,
    change,
    derive,
    doc_status,
    make_session,
    refill,
    refill_visit,
)

P, M, N = "proven_by_log", "missing_from_log", "note_must_state"

ANALYSIS = [
    "device_model_serial",
    "reservoir_status",
    "alarm_status",
    "drug_prescription_status",
    "interpretation",
    "performer_credentials",
    "programmer_report_attached",
]
REFILL = [
    "residual_expected_aspirated",
    "discrepancy_evaluation",
    "drug_concentration_volume_injected",
    "drug_lot_ndc",
    "access_technique_port_confirmation",
    "new_reservoir_volume",
    "new_alarm_or_refill_date",
]
REPROGRAMMING = [
    "changed_settings_before_after",
    "change_reasons",
    "boluses_given",
    "program_accepted_confirmation",
]
PHYSICIAN = ["physician_personally_performed", "physician_skill_reason"]


def _physician_refill_and_dose_change() -> dict[str, Any]:
    return derive(
        refill_visit(
            role="physician",
            extra_programmed={"drug1_daily_dose": 2200, "infusion_rate": 220},
            extra_events=[
                change("drug1_daily_dose", 2000, 2200, "efficacy"),
                change("infusion_rate", 200, 220, "efficacy"),
                bolus(250),
            ],
        )
    )


def test_all_groups_in_order_with_statuses() -> None:
    document = _physician_refill_and_dose_change()
    rows = [(d["item"], d["group"], d["status"]) for d in document["documentation"]]
    assert rows == [
        ("device_model_serial", "analysis", P),
        ("reservoir_status", "analysis", P),
        ("alarm_status", "analysis", P),
        ("drug_prescription_status", "analysis", P),
        ("interpretation", "analysis", N),
        ("performer_credentials", "analysis", P),
        ("programmer_report_attached", "analysis", N),
        ("residual_expected_aspirated", "refill", P),
        ("discrepancy_evaluation", "refill", N),
        ("drug_concentration_volume_injected", "refill", P),
        ("drug_lot_ndc", "refill", N),
        ("access_technique_port_confirmation", "refill", N),
        ("new_reservoir_volume", "refill", P),
        ("new_alarm_or_refill_date", "refill", P),
        ("changed_settings_before_after", "reprogramming", P),
        ("change_reasons", "reprogramming", P),
        ("boluses_given", "reprogramming", P),
        ("program_accepted_confirmation", "reprogramming", P),
        ("physician_personally_performed", "physician", N),
        ("physician_skill_reason", "physician", N),
    ]


def test_analysis_only_visit_has_only_analysis_items() -> None:
    document = derive(make_session(role="qhp"))
    assert list(doc_status(document)) == ANALYSIS


def test_staff_refill_has_no_physician_items_but_any_setting_reprogramming() -> None:
    # A nurse refill: any-setting finds reprogramming (reservoir volume), so the
    # reprogramming items apply; no QHP, so no physician items.
    document = derive(refill_visit(role="nurse"))
    assert list(doc_status(document)) == ANALYSIS + REFILL + REPROGRAMMING


def test_physician_items_need_a_refill() -> None:
    session = make_session(
        role="physician",
        programmed={"drug1_daily_dose": 2200},
        events=[change("drug1_daily_dose", 2000, 2200)],
    )
    assert list(doc_status(derive(session))) == ANALYSIS + REPROGRAMMING


def test_analysis_items_missing_from_log() -> None:
    state = base_state()
    del state["low_reservoir_alarm_date"]
    del state["drug1_daily_dose"]
    session = make_session(role="unknown", pump_model="", interrogated=state, battery=None)
    status = doc_status(derive(session))
    assert status == {
        "device_model_serial": M,
        "reservoir_status": M,
        "alarm_status": M,
        "drug_prescription_status": M,
        "interpretation": N,
        "performer_credentials": M,
        "programmer_report_attached": N,
    }


def test_alarm_status_proven_by_an_alarm_record_without_pump_status() -> None:
    from tests.evidence.builders import alarm

    session = make_session(battery=None, events=[alarm("low_reservoir")])
    assert doc_status(derive(session))["alarm_status"] == P


def test_flex_mode_prescription_needs_the_schedule() -> None:
    flex = base_state(infusion_mode="flex")
    assert doc_status(derive(make_session(interrogated=flex)))["drug_prescription_status"] == M
    from parsers.params import FlexStep

    flex["flex_step_0"] = FlexStep(0, 200)
    assert doc_status(derive(make_session(interrogated=flex)))["drug_prescription_status"] == P


def test_refill_items_missing_from_log() -> None:
    # Aspirate not measured, no transmission: no new volume or dates in the log.
    session = make_session(role="nurse", events=[refill(aspirated=None)])
    status = doc_status(derive(session))
    assert {item: status[item] for item in REFILL} == {
        "residual_expected_aspirated": M,
        "discrepancy_evaluation": N,
        "drug_concentration_volume_injected": P,
        "drug_lot_ndc": N,
        "access_technique_port_confirmation": N,
        "new_reservoir_volume": M,
        "new_alarm_or_refill_date": M,
    }


def test_new_reservoir_volume_must_match_the_refill() -> None:
    session = make_session(
        role="nurse",
        programmed={"reservoir_volume": 39000, "refill_date": date(2026, 9, 1)},
        events=[refill(new_volume=40000)],
    )
    status = doc_status(derive(session))
    assert status["new_reservoir_volume"] == M
    assert status["new_alarm_or_refill_date"] == P


def test_drug_injected_missing_without_a_named_drug() -> None:
    state = base_state()
    del state["drug1_name"]
    session = make_session(role="nurse", interrogated=state, events=[refill()])
    assert doc_status(derive(session))["drug_concentration_volume_injected"] == M


def test_reprogramming_items_missing_from_log() -> None:
    # An unlogged write of a never-interrogated PTM setting: no before, no reason.
    session = make_session(
        programmed={"ptm_lockout": 120, "drug1_daily_dose": 2200},
        events=[change("drug1_daily_dose", 2000, 2200, "unspecified")],
    )
    status = doc_status(derive(session))
    assert {item: status[item] for item in REPROGRAMMING} == {
        "changed_settings_before_after": M,
        "change_reasons": M,
        "boluses_given": P,
        "program_accepted_confirmation": P,
    }


def test_change_reasons_only_concern_counted_changes() -> None:
    # The alarm change has no reason but rate-dose-alarms counts it: missing.
    session = make_session(
        programmed={"drug1_daily_dose": 2200, "low_reservoir_alarm_volume": 3000},
        events=[change("drug1_daily_dose", 2000, 2200, "efficacy")],
    )
    assert doc_status(derive(session))["change_reasons"] == M
    # A device change (never counted) without a reason does not matter.
    session = make_session(
        programmed={"drug1_daily_dose": 2200, "catheter_volume": 170},
        events=[change("drug1_daily_dose", 2000, 2200, "efficacy")],
    )
    assert doc_status(derive(session))["change_reasons"] == P
