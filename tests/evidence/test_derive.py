"""derive_evidence and the evidence document (docs/session-json.md "Evidence", docs/coding-rules.md §7.14)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evidence import default_rules, derive_evidence, evidence_document
from evidence.derive import SESSION_FLAG_ORDER
from parsers.model import Event, Session
from parsers.params import (
    INFUSION_MODES,
    PARAMS,
    FlexStep,
    ParamDef,
    ParamValue,
    ValueType,
)
from tests.evidence.builders import (
    T0,
    alarm,
    bolus,
    change,
    derive,
    make_session,
    note,
    refill,
    refill_visit,
)

PROCEDURES = {"62367", "62368", "62369", "62370", "95990", "95991"}


def test_document_has_exactly_the_spec_fields() -> None:
    document = derive(refill_visit(role="physician"))
    assert list(document) == [
        "session_id",
        "pump_serial",
        "session_start_utc",
        "prior_session_id",
        "operator_role",
        "refill",
        "changes",
        "codes",
        "supplies",
        "documentation",
        "alarms",
        "flags",
        "rules_version",
    ]
    assert document["session_id"] == "S1"
    assert document["pump_serial"] == "ITP40-000001"
    assert document["operator_role"] == "physician"
    assert document["rules_version"] == default_rules().version
    assert set(document["codes"]["rate-dose"]) == {
        "procedure",
        "reprogrammed",
        "refill",
        "counterfactual",
    }
    json.dumps(document)  # plain JSON values only


def test_session_start_is_utc() -> None:
    session = make_session(start=datetime(2026, 3, 14, 9, 32, 10), utc_offset_min=-300)
    assert derive(session)["session_start_utc"] == "2026-03-14T14:32:10Z"


def test_alarms_critical_first_and_flags() -> None:
    session = make_session(
        events=[
            alarm("low_reservoir", "non_critical", "active"),
            alarm("catheter_access_port_warning", "informational", "logged"),
            alarm("motor_stall", "non_critical", "cleared"),
            alarm("unknown:0x0042", "critical", "logged"),
            alarm("motor_stall_recovery", "informational", "logged"),
        ]
    )
    document = derive(session)
    assert [(a["alarm"], a["critical"]) for a in document["alarms"]] == [
        ("motor_stall", True),
        ("unknown:0x0042", True),
        ("low_reservoir", False),
        ("catheter_access_port_warning", False),
        ("motor_stall_recovery", False),
    ]
    assert document["flags"] == ["critical_alarm", "no_prior_session"]


@pytest.mark.parametrize(
    ("events", "battery", "flags"),
    [
        ([alarm("empty_reservoir", "non_critical", "cleared")], "ok", ["critical_alarm"]),
        ([alarm("end_of_service", "informational")], "ok", ["critical_alarm"]),
        ([alarm("pump_memory_error", "non_critical")], "ok", ["critical_alarm"]),
        ([alarm("elective_replacement", "non_critical")], "ok", ["battery_eri"]),
        ([], "eri", ["battery_eri"]),
        ([], "eos", ["critical_alarm", "battery_eri"]),
        ([alarm("low_reservoir")], "ok", []),
        ([], None, []),
    ],
)
def test_critical_alarm_and_battery_flags(
    events: list[Event], battery: str | None, flags: list[str]
) -> None:
    prior = make_session("S0", start=T0 - timedelta(days=30))
    document = derive(make_session(events=events, battery=battery), prior)
    assert document["flags"] == flags


def test_session_flag_order() -> None:
    prior = make_session("S0", start=T0 - timedelta(days=30))
    session = make_session(
        interrogated=dict(prior.end_state, ptm_lockout=30),
        battery="eos",
        events=[refill(expected=9000, aspirated=1000), alarm("low_reservoir")],
    )
    # The prior session never read ptm_lockout: compare a setting it did read.
    session = replace(session, interrogated=dict(session.interrogated, infusion_rate=210))
    document = derive(session, prior, conflicting_exports=True)
    assert document["flags"] == [
        "critical_alarm",
        "battery_eri",
        "changed_outside_sessions",
        "discrepancy_over_threshold",
        "chain_gap",
        "conflicting_exports",
    ]
    assert derive(make_session(), conflicting_exports=True)["flags"] == [
        "no_prior_session",
        "conflicting_exports",
    ]


def test_prior_is_the_last_strictly_earlier_session() -> None:
    current = make_session("S5")
    earlier = make_session("S1", start=T0 - timedelta(days=10))
    same_start = make_session("S0", start=T0)
    document = derive(current, earlier, same_start)
    assert document["prior_session_id"] == "S1"
    # History is put in chain order whatever order it comes in.
    older = make_session("S2", start=T0 - timedelta(days=40))
    assert derive(current, earlier, older)["prior_session_id"] == "S1"


def test_history_of_another_pump_is_refused() -> None:
    other = make_session("X", start=T0 - timedelta(days=10), pump_serial="ITP20-999")
    with pytest.raises(ValueError, match="history session X is of pump ITP20-999"):
        derive_evidence(make_session(), [other], default_rules())


def test_evidence_object_keeps_provenance_for_the_web_view() -> None:
    session = make_session(
        programmed={"drug1_daily_dose": 2200},
        events=[note("pain 7/10"), change("drug1_daily_dose", 2000, 2200, "efficacy")],
    )
    evidence = derive_evidence(session, [], default_rules())
    (entry,) = evidence.changes
    assert entry.position is not None and entry.position.value == 11
    assert evidence.code("rate-dose").counted == ("drug1_daily_dose",)
    with pytest.raises(KeyError):
        evidence.code("payer-z")


# ---------------------------------------------------------------------------
# Property: deterministic and never raising on generated consistent sessions.

_TEXT = st.sampled_from(
    ["Morphine", " morphine ", "MORPHINE", "Baclofen", "Prialt", "Bupivacaine", "", "T10"]
)


def _value(param: ParamDef) -> st.SearchStrategy[ParamValue]:
    if param.value_type in (ValueType.U32, ValueType.MINUTES):
        return st.integers(0, 60000)
    if param.value_type == ValueType.I32:
        return st.integers(-1000, 1000)
    if param.value_type == ValueType.TEXT:
        return _TEXT
    if param.value_type == ValueType.BOOL:
        return st.booleans()
    if param.value_type == ValueType.ENUM:
        return st.sampled_from(sorted(INFUSION_MODES.values()))
    if param.value_type == ValueType.DATE:
        return st.none() | st.dates(date(2020, 1, 1), date(2030, 12, 31))
    return st.builds(FlexStep, st.integers(0, 1439), st.integers(0, 5000))


@st.composite
def _state(draw: st.DrawFn) -> dict[str, ParamValue]:
    chosen = draw(st.lists(st.sampled_from(PARAMS), max_size=12, unique_by=lambda p: p.name))
    return {p.name: draw(_value(p)) for p in chosen}


@st.composite
def _session(draw: st.DrawFn, session_id: str, start: datetime, offset: int) -> Session:
    interrogated = draw(_state())
    events: list[Event] = []
    current: dict[str, ParamValue] = dict(interrogated)
    for param in draw(st.lists(st.sampled_from(PARAMS), max_size=4)):
        old = current.get(param.name, draw(_value(param)))
        new = draw(_value(param))
        events.append(
            change(param.name, old, new, draw(st.sampled_from(["efficacy", "unspecified"])))
        )
        current[param.name] = new
    for _ in range(draw(st.integers(0, 2))):
        events.append(
            refill(
                expected=draw(st.integers(0, 40000)),
                aspirated=draw(st.none() | st.integers(0, 40000)),
                added=draw(st.integers(0, 40000)),
                new_volume=draw(st.integers(0, 40000)),
            )
        )
    for _ in range(draw(st.integers(0, 2))):
        events.append(bolus(draw(st.integers(0, 2000))))
    for _ in range(draw(st.integers(0, 2))):
        events.append(
            alarm(
                draw(st.sampled_from(["low_reservoir", "motor_stall", "unknown:0x0099"])),
                draw(st.sampled_from(["critical", "non_critical", "informational"])),
                draw(st.sampled_from(["active", "logged", "cleared"])),
            )
        )
    # Interleave: changes keep their relative order (they chain), the rest anywhere.
    logged = iter([e for e in events if e.type == "change"])
    events = [next(logged) if e.type == "change" else e for e in draw(st.permutations(events))]
    programmed: dict[str, ParamValue] | None = None
    if draw(st.booleans()):
        written = draw(st.lists(st.sampled_from(list(current)), unique=True)) if current else []
        programmed = {name: current[name] for name in written}
        programmed.update(draw(_state()))
    session = make_session(
        session_id,
        start=start,
        utc_offset_min=offset,
        role=draw(st.sampled_from(["physician", "qhp", "nurse", "technician", "unknown"])),
        interrogated=interrogated,
        programmed=programmed,
        events=events,
        battery=draw(st.sampled_from([None, "ok", "eri", "eos"])),
    )
    if draw(st.booleans()):
        # Unknown instants ("not applicable" times) must not break anything.
        session = replace(session, interrogated_at_local=None, programmed_at_local=None)
    return session


@st.composite
def _chain(draw: st.DrawFn) -> list[Session]:
    sessions: list[Session] = []
    start = datetime(2026, 1, 1, 8, 0)
    for index in range(draw(st.integers(1, 4))):
        start += timedelta(days=draw(st.integers(0, 40)), minutes=draw(st.integers(0, 600)))
        offset = draw(st.sampled_from([-300, -240, 0, 60]))
        sessions.append(draw(_session(f"S{index}", start, offset)))
    return sessions


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_chain())
def test_derive_is_deterministic_and_total(chain: list[Session]) -> None:
    *history, session = chain
    rules = default_rules()
    first = evidence_document(derive_evidence(session, history, rules))
    second = evidence_document(derive_evidence(session, list(history), rules))
    assert first == second
    assert json.loads(json.dumps(first)) == first

    assert list(first["codes"]) == [p.name for p in rules.profiles]
    for entry in first["codes"].values():
        assert entry["procedure"] in PROCEDURES
    assert first["flags"] == [f for f in SESSION_FLAG_ORDER if f in first["flags"]]
    whens = [c["when"] for c in first["changes"]]
    assert whens == sorted(whens, key=lambda w: w != "between_sessions")
    for change_doc in first["changes"]:
        if change_doc["when"] == "between_sessions":
            assert change_doc["flags"] == ["changed_outside_sessions"]
            assert change_doc["parameter"] != "reservoir_volume"
    refill_doc: dict[str, Any] | None = first["refill"]
    if refill_doc is not None and refill_doc["recomputed_expected_ul"] is not None:
        assert refill_doc["recomputed_expected_ul"] >= 0
    if not any(c["when"] == "in_session" for c in first["changes"]):
        assert not any(entry["reprogrammed"] for entry in first["codes"].values())
