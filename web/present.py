"""What the pages show, in words and units a billing coder reads at a glance.

Pure functions from the stored documents (docs/session-json.md: the normalized session
and its evidence) to small view models: value formatting in the parameter
table's units (docs/formats.md §4; volumes in mL, exact, by Decimal), labels of
the words docs/session-json.md fixes, the three-column settings table (prior
programmed | interrogated | programmed, docs/coding-rules.md §7.1 and §7.6) with each
changed cell marked by category, the change list with the reason, time and
operator of each change, the codes per profile, the checklist split, the
alarms critical first. No rule is decided here: every verdict comes from the
evidence document.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Final

from parsers.params import PARAMS, PARAMS_BY_NAME, ValueType

DASH: Final = "—"

CATEGORY_LABELS: Final = {
    "prescription": "prescription",
    "ptm": "PTM",
    "alarms": "alarms",
    "reservoir": "reservoir",
    "schedule": "schedule",
    "device": "device",
}
REASON_LABELS: Final = {
    "unspecified": "unspecified",
    "efficacy": "efficacy",
    "side_effects": "side effects",
    "refill_bookkeeping": "refill bookkeeping",
    "drug_change": "drug change",
    "entry_correction": "entry correction",
    "patient_request": "patient request",
}
WHEN_LABELS: Final = {
    "in_session": "in this session",
    "between_sessions": "outside recorded sessions",
    "reverted_in_session": "changed and reverted (not counted)",
}
ROLE_LABELS: Final = {
    "physician": "physician",
    "qhp": "QHP (NP/PA)",
    "nurse": "nurse",
    "technician": "technician",
    "unknown": "unknown role",
}
# (label, level): level is "danger", "warn" or "info" (the banner's colour).
FLAG_LABELS: Final[Mapping[str, tuple[str, str]]] = {
    "critical_alarm": ("Critical alarm or battery at end of service", "danger"),
    "battery_eri": ("Battery at elective replacement (ERI/EOS)", "danger"),
    "reservoir_depleted": (
        "Reservoir empty or nearly empty at the interrogation: the patient may have gone "
        "without drug (baclofen withdrawal is an emergency)",
        "danger",
    ),
    "refill_overdue": (
        "Refill overdue: the visit came after the refill date the last session set",
        "danger",
    ),
    "changed_outside_sessions": ("Settings changed outside recorded sessions", "warn"),
    "discrepancy_over_threshold": ("Refill discrepancy over threshold", "warn"),
    "no_prior_session": ("No prior session on record", "info"),
    "chain_gap": ("Gap in the chain: prescription or PTM changed between sessions", "warn"),
    "conflicting_exports": ("Exports of this session disagree: the binary one is used", "warn"),
    "no_payer_on_file": (
        "No payer on file for the date of service: the default profile applies",
        "info",
    ),
    "concentration_only": ("Concentration changed with an unchanged daily dose: review", "warn"),
    "unlogged_change": ("No logged change explains this value", "warn"),
}
CHECKLIST_LABELS: Final = {
    "device_model_serial": "Device model and serial",
    "reservoir_status": "Reservoir status: volume, alarm threshold, alarm date",
    "alarm_status": "Alarm status: active and logged alarms",
    "drug_prescription_status": "Drug prescription: drugs, concentrations, doses, mode, PTM",
    "interpretation": "Interpretation of the analysis",
    "performer_credentials": "Performer and credentials",
    "programmer_report_attached": "Programmer report attached",
    "residual_expected_aspirated": "Expected and aspirated residual volume",
    "discrepancy_evaluation": "Evaluation of the residual discrepancy",
    "drug_concentration_volume_injected": "Drug, concentration and volume injected",
    "drug_lot_ndc": "Drug lot number and NDC",
    "access_technique_port_confirmation": "Access technique and port confirmation",
    "new_reservoir_volume": "New reservoir volume",
    "new_alarm_or_refill_date": "New alarm date or refill date",
    "changed_settings_before_after": "Before and after value of every changed setting",
    "change_reasons": "Reason for each change",
    "boluses_given": "Boluses given",
    "program_accepted_confirmation": "The pump accepted the program",
    "physician_personally_performed": "Physician/QHP personally performed the refill",
    "physician_skill_reason": (
        "Why physician skill was needed (difficult access, imaging, high-risk drug "
        "or concentration change, previous pocket fill, unstable patient)"
    ),
}
GROUP_LABELS: Final = {
    "analysis": "Analysis",
    "refill": "Refill",
    "reprogramming": "Reprogramming",
    "physician": "Physician/QHP",
}
ALARM_LABELS: Final = {
    "low_reservoir": "Low reservoir",
    "empty_reservoir": "Empty reservoir",
    "elective_replacement": "Elective replacement",
    "end_of_service": "End of service",
    "motor_stall": "Motor stall",
    "motor_stall_recovery": "Motor stall recovery",
    "pump_memory_error": "Pump memory error",
    "catheter_access_port_warning": "Catheter access port warning",
}
MODE_LABELS: Final = {
    "simple_continuous": "simple continuous",
    "flex": "flex",
    "minimum_rate": "minimum rate",
}
UNIT_LABELS: Final = {
    "ug/mL": "µg/mL",
    "ug/day": "µg/day",
    "ug": "µg",
    "uL/day": "µL/day",
    "min": "min",
}


# ---------------------------------------------------------------------------
# Values


def grouped(value: int) -> str:
    """An integer with thousands separators: 10000 -> 10,000."""
    return f"{value:,}"


def ml(microlitres: int | None) -> str:
    """µL as mL, exact (Decimal, no float): 3400 -> "3.4 mL", 20000 -> "20 mL"."""
    if microlitres is None:
        return DASH
    value = Decimal(microlitres) / Decimal(1000)
    text = format(value.normalize(), "f")
    return f"{text} mL"


def ul(microlitres: int | None) -> str:
    return DASH if microlitres is None else f"{grouped(microlitres)} µL"


def minutes_of_day(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def param_label(name: str) -> str:
    definition = PARAMS_BY_NAME.get(name)
    return definition.csv_label if definition is not None else name


def param_category(name: str) -> str:
    definition = PARAMS_BY_NAME.get(name)
    return definition.category if definition is not None else "device"


def format_value(name: str, value: Any) -> str:
    """A setting value in its unit (docs/session-json.md "Values"); null is a dash."""
    if value is None:
        return DASH
    definition = PARAMS_BY_NAME.get(name)
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, Mapping):
        if "start_minute" in value and "rate_ul_per_day" in value:
            start, rate = value.get("start_minute"), value.get("rate_ul_per_day")
            if isinstance(start, int) and isinstance(rate, int):
                return f"from {minutes_of_day(start)}: {grouped(rate)} µL/day"
        return ", ".join(f"{k} {v}" for k, v in value.items())
    if definition is None:
        return str(value)
    if definition.value_type is ValueType.ENUM and isinstance(value, str):
        return MODE_LABELS.get(value, value)
    if isinstance(value, int):
        if definition.unit == "uL":
            return ml(value)
        unit = UNIT_LABELS.get(definition.unit, definition.unit)
        return f"{grouped(value)} {unit}".strip()
    return str(value)


def local_time(utc_text: Any, offset_min: int) -> datetime | None:
    """A docs/session-json.md UTC instant (`...Z`) on the programmer's local clock."""
    if not isinstance(utc_text, str) or not utc_text.endswith("Z"):
        return None
    try:
        instant = datetime.fromisoformat(utc_text[:-1])
    except ValueError:
        return None
    return instant + timedelta(minutes=offset_min)


def offset_text(offset_min: int) -> str:
    sign = "+" if offset_min >= 0 else "−"
    hours, minutes = divmod(abs(offset_min), 60)
    return f"UTC{sign}{hours:02d}:{minutes:02d}"


def when_text(moment: datetime | None, *, seconds: bool = False) -> str:
    if moment is None:
        return DASH
    return moment.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


# ---------------------------------------------------------------------------
# Changes and the three-column table


@dataclass(frozen=True, slots=True)
class ChangeView:
    parameter: str
    label: str
    category: str
    before: str
    after: str
    when: str
    when_label: str
    reason: str
    flags: tuple[str, ...]
    # The time of the change on the programmer's clock and who made it.
    time: str
    operator: str
    edits: int


def _change_events(document: Mapping[str, Any], parameter: str) -> list[Mapping[str, Any]]:
    return [
        e
        for e in document.get("events") or ()
        if isinstance(e, Mapping) and e.get("type") == "change" and e.get("parameter") == parameter
    ]


def change_views(document: Mapping[str, Any], evidence: Mapping[str, Any]) -> list[ChangeView]:
    """The evidence's changes with the time and operator of each (docs/session-json.md)."""
    offset = int(document.get("utc_offset_min") or 0)
    operator = document.get("operator") or {}
    who = f"{operator.get('id', '?')} ({ROLE_LABELS.get(str(operator.get('role')), operator.get('role'))})"
    programmed_at = local_time(document.get("programmed_at_utc"), offset)
    views = []
    for change in evidence.get("changes") or ():
        name = str(change.get("parameter"))
        category = str(change.get("category") or param_category(name))
        when = str(change.get("when"))
        logged = _change_events(document, name)
        flags = tuple(str(f) for f in change.get("flags") or ())
        if when == "between_sessions":
            time, by = "between sessions", "not in a recorded session"
        elif logged:
            time = when_text(local_time(logged[-1].get("time_utc"), offset), seconds=True)
            by = who
        else:
            # An unlogged change reached the pump with the transmission.
            time = when_text(programmed_at, seconds=True) + " (transmission)"
            by = who
        reason = change.get("reason")
        views.append(
            ChangeView(
                parameter=name,
                label=param_label(name),
                category=category,
                before=format_value(name, change.get("before")),
                after=format_value(name, change.get("after")),
                when=when,
                when_label=WHEN_LABELS.get(when, when),
                reason=DASH if reason is None else REASON_LABELS.get(str(reason), str(reason)),
                flags=flags,
                time=time,
                operator=by,
                edits=len(logged),
            )
        )
    return views


@dataclass(frozen=True, slots=True)
class Cell:
    text: str
    # "" (unchanged), "changed" or "reverted".
    mark: str = ""
    category: str = ""
    note: str = ""
    muted: bool = False


@dataclass(frozen=True, slots=True)
class StateRow:
    parameter: str
    label: str
    category: str
    prior: Cell
    interrogated: Cell
    programmed: Cell

    @property
    def changed(self) -> bool:
        return any(c.mark for c in (self.prior, self.interrogated, self.programmed))


@dataclass(frozen=True, slots=True)
class StateTable:
    rows: list[StateRow]
    has_prior: bool
    has_programmed: bool
    prior_session_id: str | None


def end_state(document: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Interrogated values overlaid with the programmed ones (docs/coding-rules.md §7.1)."""
    if document is None:
        return None
    state = dict(document.get("interrogated") or {})
    state.update(document.get("programmed") or {})
    return state


def state_table(
    document: Mapping[str, Any],
    evidence: Mapping[str, Any] | None,
    prior_document: Mapping[str, Any] | None,
    prior_session_id: str | None,
    changes: Sequence[ChangeView],
) -> StateTable:
    """Prior programmed | interrogated | programmed, in parameter-table order."""
    prior = end_state(prior_document)
    interrogated = document.get("interrogated") or {}
    programmed_doc = document.get("programmed")
    programmed = programmed_doc if isinstance(programmed_doc, Mapping) else None
    by_name = {c.parameter: c for c in changes}
    names = [p.name for p in PARAMS]
    seen = set(names)
    for source in (prior or {}, interrogated, programmed or {}):
        for name in source:
            if name not in seen:
                names.append(name)
                seen.add(name)
    rows = []
    for name in names:
        in_prior = prior is not None and name in prior
        in_interrogated = name in interrogated
        in_programmed = programmed is not None and name in programmed
        if not (in_prior or in_interrogated or in_programmed or name in by_name):
            continue
        category = param_category(name)
        change = by_name.get(name)
        prior_cell = Cell(format_value(name, prior[name]) if in_prior and prior else DASH)
        interrogated_cell = Cell(
            format_value(name, interrogated[name]) if in_interrogated else DASH
        )
        if in_programmed and programmed is not None:
            programmed_cell = Cell(format_value(name, programmed[name]))
        elif programmed is not None and in_interrogated:
            programmed_cell = Cell(
                format_value(name, interrogated[name]), note="not written: unchanged", muted=True
            )
        else:
            programmed_cell = Cell(DASH, muted=True)
        if change is not None:
            note = f"{change.when_label}; reason: {change.reason}; {change.time}; {change.operator}"
            if change.when == "between_sessions":
                interrogated_cell = Cell(interrogated_cell.text, "changed", change.category, note)
            elif change.when == "reverted_in_session":
                programmed_cell = Cell(programmed_cell.text, "reverted", change.category, note)
            else:
                programmed_cell = Cell(programmed_cell.text, "changed", change.category, note)
        rows.append(
            StateRow(
                name, param_label(name), category, prior_cell, interrogated_cell, programmed_cell
            )
        )
    return StateTable(rows, prior is not None, programmed is not None, prior_session_id)


# ---------------------------------------------------------------------------
# Codes, checklist, alarms, flags


@dataclass(frozen=True, slots=True)
class CodeView:
    profile: str
    procedure: str
    reprogrammed: bool
    refill: bool
    counterfactual: str
    description: str
    held_by: str
    default: bool
    # What a coder reads beside the profile's key (`evidence.rules.Profile.label`).
    label: str = ""


def code_views(
    evidence: Mapping[str, Any],
    profile_info: Mapping[str, tuple[str, str]],
    default_profile: str,
    labels: Mapping[str, str] | None = None,
) -> list[CodeView]:
    """The code under every profile, in the evidence's order (default profile first)."""
    views = []
    for name, code in (evidence.get("codes") or {}).items():
        if not isinstance(code, Mapping):
            continue
        description, held_by = profile_info.get(name, ("", ""))
        views.append(
            CodeView(
                profile=str(name),
                procedure=str(code.get("procedure") or DASH),
                reprogrammed=bool(code.get("reprogrammed")),
                refill=bool(code.get("refill")),
                counterfactual=str(code.get("counterfactual") or ""),
                description=description,
                held_by=held_by,
                default=name == default_profile,
                label=(labels or {}).get(str(name), ""),
            )
        )
    views.sort(key=lambda v: not v.default)
    return views


def codes_agree(codes: Sequence[CodeView]) -> bool:
    return len({c.procedure for c in codes}) <= 1


@dataclass(frozen=True, slots=True)
class ChecklistView:
    item: str
    label: str
    group: str
    status: str
    detail: str


@dataclass(frozen=True, slots=True)
class Checklist:
    proven: list[ChecklistView] = field(default_factory=list)
    note_must_state: list[ChecklistView] = field(default_factory=list)


def checklist(evidence: Mapping[str, Any]) -> Checklist:
    """Split into "proven by the log" and "the note must state" (missing items go there too)."""
    result = Checklist()
    for entry in evidence.get("documentation") or ():
        item = str(entry.get("item"))
        view = ChecklistView(
            item=item,
            label=CHECKLIST_LABELS.get(item, item.replace("_", " ")),
            group=GROUP_LABELS.get(str(entry.get("group")), str(entry.get("group") or "")),
            status=str(entry.get("status")),
            detail=str(entry.get("detail") or ""),
        )
        if view.status == "proven_by_log":
            result.proven.append(view)
        else:
            result.note_must_state.append(view)
    return result


@dataclass(frozen=True, slots=True)
class AlarmView:
    alarm: str
    label: str
    severity: str
    state: str
    critical: bool
    occurred: str
    read_at: str


def alarm_views(evidence: Mapping[str, Any], offset_min: int) -> list[AlarmView]:
    """The evidence's alarms (already critical first, docs/coding-rules.md §4)."""
    views = []
    for alarm in evidence.get("alarms") or ():
        code = str(alarm.get("alarm"))
        views.append(
            AlarmView(
                alarm=code,
                label=ALARM_LABELS.get(code, code),
                severity=str(alarm.get("severity", "")).replace("_", "-"),
                state=str(alarm.get("state", "")),
                critical=bool(alarm.get("critical")),
                occurred=when_text(local_time(alarm.get("occurred_at_utc"), offset_min)),
                read_at=when_text(local_time(alarm.get("time_utc"), offset_min)),
            )
        )
    views.sort(key=lambda a: not a.critical)
    return views


@dataclass(frozen=True, slots=True)
class FlagView:
    flag: str
    label: str
    level: str


def flag_views(flags: Sequence[str]) -> list[FlagView]:
    order = {"danger": 0, "warn": 1, "info": 2}
    views = [
        FlagView(flag, *FLAG_LABELS.get(flag, (flag.replace("_", " "), "warn"))) for flag in flags
    ]
    views.sort(key=lambda f: order.get(f.level, 3))
    return views


# ---------------------------------------------------------------------------
# Refill arithmetic and the session log


@dataclass(frozen=True, slots=True)
class RefillView:
    expected: str
    recomputed: str
    aspirated: str
    discrepancy: str
    threshold: str
    added: str
    new_volume: str
    over_threshold: bool
    direction: str


def refill_view(evidence: Mapping[str, Any]) -> RefillView | None:
    refill = evidence.get("refill")
    if not isinstance(refill, Mapping):
        return None
    discrepancy = refill.get("discrepancy_ul")
    threshold = refill.get("discrepancy_threshold_ul")
    over = "discrepancy_over_threshold" in (evidence.get("flags") or ())
    direction = ""
    if isinstance(discrepancy, int) and discrepancy != 0:
        # docs/coding-rules.md §4: less aspirated than expected suggests over-infusion or a
        # previous pocket fill; more suggests under-infusion or a stall.
        direction = (
            "less aspirated than expected: over-infusion or a previous pocket fill?"
            if discrepancy > 0
            else "more aspirated than expected: under-infusion or a stall?"
        )
    return RefillView(
        expected=ml(refill.get("expected_residual_ul")),
        recomputed=ml(refill.get("recomputed_expected_ul")),
        aspirated="not measured"
        if refill.get("aspirated_ul") is None
        else ml(refill.get("aspirated_ul")),
        discrepancy=ml(discrepancy) if isinstance(discrepancy, int) else DASH,
        threshold=ml(threshold) if isinstance(threshold, int) else DASH,
        added=ml(refill.get("added_ul")),
        new_volume=ml(refill.get("new_volume_ul")),
        over_threshold=over,
        direction=direction,
    )


@dataclass(frozen=True, slots=True)
class EventView:
    kind: str
    time: str
    text: str
    position: str


def position_text(kind: str, value: int) -> str:
    """Where an event sits in its export: `offset 0x1A4` (binary) or `line 17` (CSV)."""
    return f"offset 0x{value:X}" if kind == "offset" else f"line {value}"


def event_views(
    document: Mapping[str, Any], positions: Sequence[tuple[str, int]] | None
) -> list[EventView]:
    """The session's events in file order, each with its place in the export."""
    offset = int(document.get("utc_offset_min") or 0)
    views = []
    for index, event in enumerate(document.get("events") or ()):
        kind = str(event.get("type"))
        if kind == "change":
            name = str(event.get("parameter"))
            text = (
                f"{param_label(name)}: {format_value(name, event.get('old'))} → "
                f"{format_value(name, event.get('new'))} "
                f"({REASON_LABELS.get(str(event.get('reason')), event.get('reason'))})"
            )
        elif kind == "refill":
            aspirated = event.get("aspirated_ul")
            text = (
                f"expected residual {ml(event.get('expected_residual_ul'))}, aspirated "
                f"{'not measured' if aspirated is None else ml(aspirated)}, added "
                f"{ml(event.get('added_ul'))}, new volume {ml(event.get('new_volume_ul'))}"
            )
        elif kind == "bolus":
            text = (
                f"{event.get('kind')} bolus {ml(event.get('volume_ul'))} over "
                f"{event.get('duration_min')} min"
            )
        elif kind == "alarm":
            code = str(event.get("alarm"))
            text = (
                f"{ALARM_LABELS.get(code, code)} ({str(event.get('severity')).replace('_', '-')}, "
                f"{event.get('state')}), occurred "
                f"{when_text(local_time(event.get('occurred_at_utc'), offset))}"
            )
        elif kind == "note":
            text = str(event.get("text", ""))
        else:
            text = kind
        where = ""
        if positions is not None and index < len(positions):
            where = position_text(*positions[index])
        views.append(
            EventView(
                kind=kind,
                time=when_text(local_time(event.get("time_utc"), offset), seconds=True),
                text=text,
                position=where,
            )
        )
    return views


@dataclass(frozen=True, slots=True)
class SupplyView:
    hcpcs: str
    drug: str
    amount: str
    units: str


def supply_views(evidence: Mapping[str, Any]) -> list[SupplyView]:
    views = []
    for line in evidence.get("supplies") or ():
        amount = line.get("amount_ug")
        units = line.get("units")
        views.append(
            SupplyView(
                hcpcs=str(line.get("hcpcs") or "no code: J3490/J7799 with NDC"),
                drug=str(line.get("drug") or ""),
                amount=f"{grouped(amount)} µg" if isinstance(amount, int) else DASH,
                units=DASH if units is None else str(units),
            )
        )
    return views
