"""Sessions for evidence tests, built directly from the parsers.model dataclasses.

`make_session()` gives a plausible session of a 40 mL morphine pump with every
field defaulted; tests override what they are about. Event helpers (`change`,
`refill`, `bolus`, `alarm`, `note`) leave time and position to `make_session`,
which places them one minute apart after the interrogation, in the order given,
unless a test passes `at=`. All data is synthetic.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, datetime, timedelta
from typing import Any

from evidence import Rules, default_rules, derive_evidence, evidence_document
from parsers.model import (
    AlarmEvent,
    BolusEvent,
    ChangeEvent,
    Event,
    NoteEvent,
    Operator,
    Patient,
    Position,
    Programmer,
    Pump,
    PumpStatus,
    RefillEvent,
    Session,
)
from parsers.params import ParamValue

T0 = datetime(2026, 3, 2, 9, 0, 0)
PUMP_SERIAL = "ITP40-000001"
_NOWHERE = Position("line", 0)


def base_state(**overrides: ParamValue) -> dict[str, ParamValue]:
    """A consistent interrogated state: morphine 10 mg/mL at 200 uL/day = 2 mg/day."""
    state: dict[str, ParamValue] = {
        "drug1_name": "Morphine",
        "drug1_concentration": 10000,
        "drug1_daily_dose": 2000,
        "infusion_mode": "simple_continuous",
        "infusion_rate": 200,
        "ptm_enabled": False,
        "low_reservoir_alarm_volume": 2000,
        "low_reservoir_alarm_enabled": True,
        "reservoir_volume": 3400,
        "reservoir_capacity": 40000,
        "low_reservoir_alarm_date": date(2026, 3, 30),
        "refill_date": date(2026, 3, 25),
        "catheter_volume": 150,
    }
    state.update(overrides)
    return state


def change(
    parameter: str,
    old: ParamValue,
    new: ParamValue,
    reason: str = "efficacy",
    *,
    at: datetime | None = None,
) -> ChangeEvent:
    return ChangeEvent(at, _NOWHERE, parameter, old, new, reason)


def refill(
    *,
    expected: int = 3400,
    aspirated: int | None = 3100,
    added: int = 36900,
    new_volume: int = 40000,
    at: datetime | None = None,
) -> RefillEvent:
    return RefillEvent(at, _NOWHERE, expected, aspirated, added, new_volume)


def bolus(
    volume_ul: int, kind: str = "bridge", duration_min: int = 30, *, at: datetime | None = None
) -> BolusEvent:
    return BolusEvent(at, _NOWHERE, kind, volume_ul, duration_min)


def alarm(
    name: str,
    severity: str = "non_critical",
    state: str = "logged",
    *,
    at: datetime | None = None,
    occurred: datetime | None = None,
) -> AlarmEvent:
    return AlarmEvent(at, _NOWHERE, name, severity, state, occurred, occurred)


def note(text: str, *, at: datetime | None = None) -> NoteEvent:
    return NoteEvent(at, _NOWHERE, text)


def make_session(
    session_id: str = "S1",
    *,
    start: datetime = T0,
    utc_offset_min: int = 0,
    role: str = "physician",
    operator_id: str = "dr.lee",
    pump_serial: str = PUMP_SERIAL,
    pump_model: str = "IT-40",
    interrogated: Mapping[str, ParamValue] | None = None,
    programmed: Mapping[str, ParamValue] | None = None,
    events: Iterable[Event] = (),
    battery: str | None = "ok",
    interrogated_at: datetime | None = None,
    programmed_at: datetime | None = None,
) -> Session:
    """A session; `programmed=None` means no transmission, `{}` an empty phase-1 snapshot.

    Times: interrogation one minute after `start`, events one minute apart after
    it, the phase-1 snapshot one minute after the last event. Positions are the
    CSV lines 10, 11, ... in event order.
    """
    interrogated_at = interrogated_at or start + timedelta(minutes=1)
    placed: list[Event] = []
    clock = interrogated_at
    for index, event in enumerate(events):
        clock = event.time_local or clock + timedelta(minutes=1)
        placed.append(event._replace(time_local=clock, position=Position("line", 10 + index)))
    if programmed is not None and programmed_at is None:
        programmed_at = clock + timedelta(minutes=1)
    return Session(
        source=f"{session_id}.psl",
        source_format="psl-binary",
        format_version="1.0",
        session_id=session_id,
        session_start_local=start,
        utc_offset_min=utc_offset_min,
        programmer=Programmer("PX-200", "PX2-0000001", "3.1.2045"),
        pump=Pump(pump_model, pump_serial),
        operator=Operator(operator_id, role),
        clinic_id="CLINIC-01",
        patient=Patient("SYNTH-0001", "Test, Patient", date(1960, 1, 1)),
        interrogated_at_local=interrogated_at,
        interrogated=dict(base_state() if interrogated is None else interrogated),
        programmed_at_local=programmed_at if programmed is not None else None,
        programmed=None if programmed is None else dict(programmed),
        pump_status=None if battery is None else PumpStatus(interrogated_at, 0, "2.3", battery),
        events=tuple(placed),
    )


def refill_visit(
    session_id: str = "S1",
    *,
    role: str = "nurse",
    new_volume: int = 40000,
    extra_programmed: Mapping[str, ParamValue] | None = None,
    extra_events: Iterable[Event] = (),
    **kwargs: Any,
) -> Session:
    """A routine refill: REFILL, the new dates logged, then volume and dates transmitted.

    The reservoir volume has no PARAM_CHANGE (the REFILL accounts for it); the
    alarm and refill dates are logged as refill bookkeeping.
    """
    interrogated = kwargs.pop("interrogated", None) or base_state()
    new_dates = {
        "low_reservoir_alarm_date": date(2026, 9, 10),
        "refill_date": date(2026, 9, 1),
    }
    programmed: dict[str, ParamValue] = {"reservoir_volume": new_volume, **new_dates}
    programmed.update(extra_programmed or {})
    date_changes = [
        change(name, interrogated.get(name), value, "refill_bookkeeping")
        for name, value in new_dates.items()
    ]
    return make_session(
        session_id,
        role=role,
        interrogated=interrogated,
        programmed=programmed,
        events=[refill(new_volume=new_volume), *date_changes, *extra_events],
        **kwargs,
    )


def derive(
    session: Session,
    *history: Session,
    rules: Rules | None = None,
    conflicting_exports: bool = False,
) -> dict[str, Any]:
    """The evidence document of `session` after `history`."""
    evidence = derive_evidence(
        session, history, rules or default_rules(), conflicting_exports=conflicting_exports
    )
    return evidence_document(evidence)


def codes_of(document: Mapping[str, Any]) -> dict[str, str]:
    """profile -> procedure."""
    return {profile: entry["procedure"] for profile, entry in document["codes"].items()}


def change_rows(document: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(parameter, when) of every change, in document order."""
    return [(c["parameter"], c["when"]) for c in document["changes"]]


def doc_status(document: Mapping[str, Any]) -> dict[str, str]:
    """item -> status of the documentation checklist."""
    return {d["item"]: d["status"] for d in document["documentation"]}
