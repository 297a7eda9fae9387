"""The documentation checklist: what the note must show, and what the log already proves.

docs/coding-rules.md §5 and §7.15. Items come in four groups:

- analysis (every session): device_model_serial, reservoir_status, alarm_status,
  drug_prescription_status, interpretation, performer_credentials,
  programmer_report_attached;
- refill (a refill, §7.8): residual_expected_aspirated, discrepancy_evaluation,
  drug_concentration_volume_injected, drug_lot_ndc,
  access_technique_port_confirmation, new_reservoir_volume,
  new_alarm_or_refill_date;
- reprogramming (when any profile finds reprogramming):
  changed_settings_before_after, change_reasons, boluses_given,
  program_accepted_confirmation;
- physician (a refill by a QHP role): physician_personally_performed,
  physician_skill_reason.

Items only the clinical note can hold are always `note_must_state`; the others
are `proven_by_log` when the log holds what they name, else `missing_from_log`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from evidence.codes import CodeResult, is_refill
from evidence.diff import IN_SESSION, Change
from evidence.refill import RefillSummary
from evidence.rules import Rules
from parsers.model import AlarmEvent, BolusEvent, Session
from parsers.params import ParamValue

PROVEN_BY_LOG: Final = "proven_by_log"
MISSING_FROM_LOG: Final = "missing_from_log"
NOTE_MUST_STATE: Final = "note_must_state"

ANALYSIS: Final = "analysis"
REFILL: Final = "refill"
REPROGRAMMING: Final = "reprogramming"
PHYSICIAN: Final = "physician"


@dataclass(frozen=True, slots=True)
class ChecklistItem:
    group: str
    item: str
    status: str
    # A sentence for people: what the log holds, or what the note must add.
    detail: str


def _proven(group: str, item: str, ok: bool, proven: str, missing: str) -> ChecklistItem:
    if ok:
        return ChecklistItem(group, item, PROVEN_BY_LOG, proven)
    return ChecklistItem(group, item, MISSING_FROM_LOG, missing)


def _note(group: str, item: str, detail: str) -> ChecklistItem:
    return ChecklistItem(group, item, NOTE_MUST_STATE, detail)


def _has(state: Mapping[str, ParamValue], *names: str) -> bool:
    return all(name in state for name in names)


def _missing(state: Mapping[str, ParamValue], *names: str) -> str:
    return ", ".join(name for name in names if name not in state)


def _prescription_fields(state: Mapping[str, ParamValue]) -> tuple[str, ...]:
    """What "drug prescription status" names for this pump (§5)."""
    fields = [
        "drug1_name",
        "drug1_concentration",
        "drug1_daily_dose",
        "infusion_mode",
        "infusion_rate",
        "ptm_enabled",
    ]
    if "drug2_name" in state:
        fields += ["drug2_concentration", "drug2_daily_dose"]
    if state.get("infusion_mode") == "flex":
        fields.append("flex_step_0")
    return tuple(fields)


def checklist(
    session: Session,
    changes: Sequence[Change],
    codes: Sequence[CodeResult],
    refill: RefillSummary | None,
    rules: Rules,
) -> tuple[ChecklistItem, ...]:
    """Every applicable item, grouped and in §7.15 order."""
    items: list[ChecklistItem] = []
    interrogated = session.interrogated
    end_state = session.end_state

    # Analysis: every session.
    pump = session.pump
    items.append(
        _proven(
            ANALYSIS,
            "device_model_serial",
            bool(pump.model.strip()) and bool(pump.serial.strip()),
            f"pump {pump.model} serial {pump.serial}",
            "the pump model or serial is missing from the export",
        )
    )
    reservoir = ("reservoir_volume", "low_reservoir_alarm_volume", "low_reservoir_alarm_date")
    items.append(
        _proven(
            ANALYSIS,
            "reservoir_status",
            _has(interrogated, *reservoir),
            "reservoir volume, alarm threshold and alarm date interrogated",
            f"not interrogated: {_missing(interrogated, *reservoir)}",
        )
    )
    alarms = [e for e in session.events if isinstance(e, AlarmEvent)]
    items.append(
        _proven(
            ANALYSIS,
            "alarm_status",
            session.pump_status is not None or bool(alarms),
            f"pump status read; {len(alarms)} alarm record(s)",
            "no pump status and no alarm record: the note must state the alarm status",
        )
    )
    prescription = _prescription_fields(interrogated)
    items.append(
        _proven(
            ANALYSIS,
            "drug_prescription_status",
            _has(interrogated, *prescription),
            "drugs, concentrations, daily doses, mode, rate and PTM interrogated",
            f"not interrogated: {_missing(interrogated, *prescription)}",
        )
    )
    items.append(
        _note(ANALYSIS, "interpretation", "the clinician's interpretation of the analysis")
    )
    operator = session.operator
    items.append(
        _proven(
            ANALYSIS,
            "performer_credentials",
            bool(operator.id.strip()) and operator.role != "unknown",
            f"operator {operator.id} ({operator.role})",
            "the operator's identity or role is not in the log",
        )
    )
    items.append(
        _note(ANALYSIS, "programmer_report_attached", "attach the programmer's session report")
    )

    # Refill.
    if is_refill(session) and refill is not None:
        items.append(
            _proven(
                REFILL,
                "residual_expected_aspirated",
                refill.aspirated_ul is not None,
                f"expected {refill.expected_residual_ul} uL, aspirated {refill.aspirated_ul} uL",
                "the aspirated residual volume was not measured",
            )
        )
        items.append(
            _note(
                REFILL,
                "discrepancy_evaluation",
                "the evaluation of the discrepancy between expected and aspirated volume",
            )
        )
        named = [
            slot
            for slot in (1, 2)
            if isinstance(end_state.get(f"drug{slot}_name"), str)
            and str(end_state.get(f"drug{slot}_name")).strip()
        ]
        solution = [f"drug{slot}_concentration" for slot in named]
        items.append(
            _proven(
                REFILL,
                "drug_concentration_volume_injected",
                bool(named) and _has(end_state, *solution),
                f"drug, concentration and {refill.added_ul} uL added are in the log",
                "the programmed drug or concentration of the new solution is not in the log",
            )
        )
        items.append(_note(REFILL, "drug_lot_ndc", "the drug lot number and NDC"))
        items.append(
            _note(
                REFILL,
                "access_technique_port_confirmation",
                "the access technique and how port placement was confirmed",
            )
        )
        programmed = session.programmed or {}
        items.append(
            _proven(
                REFILL,
                "new_reservoir_volume",
                programmed.get("reservoir_volume") == refill.new_volume_ul,
                f"reservoir volume {refill.new_volume_ul} uL transmitted to the pump",
                "no transmission holding the new reservoir volume",
            )
        )
        dates = ("low_reservoir_alarm_date", "refill_date")
        items.append(
            _proven(
                REFILL,
                "new_alarm_or_refill_date",
                any(programmed.get(name) is not None for name in dates),
                "a new alarm or refill date was transmitted to the pump",
                "no transmission holding a new alarm or refill date",
            )
        )

    # Reprogramming: when any profile finds it.
    if any(code.reprogrammed for code in codes):
        counted_names = {name for code in codes for name in code.counted}
        counted = [c for c in changes if c.when == IN_SESSION and c.parameter in counted_names]
        in_session = [c for c in changes if c.when == IN_SESSION]
        unknown_before = [c.parameter for c in in_session if not c.before_known]
        items.append(
            _proven(
                REPROGRAMMING,
                "changed_settings_before_after",
                not unknown_before,
                "before and after values of every changed setting are in the log",
                f"value before the change unknown: {', '.join(unknown_before)}",
            )
        )
        unexplained = [c.parameter for c in counted if c.reason in (None, "unspecified")]
        items.append(
            _proven(
                REPROGRAMMING,
                "change_reasons",
                not unexplained,
                "every counted change carries a reason",
                f"no reason logged for: {', '.join(unexplained)}",
            )
        )
        boluses = [e for e in session.events if isinstance(e, BolusEvent)]
        # The programmer logs every bolus it delivers, so an empty list is a fact too.
        items.append(
            _proven(
                REPROGRAMMING,
                "boluses_given",
                True,
                f"{len(boluses)} bolus(es) logged, {sum(b.volume_ul for b in boluses)} uL",
                "",
            )
        )
        items.append(
            _proven(
                REPROGRAMMING,
                "program_accepted_confirmation",
                session.programmed is not None,
                "the programmed (phase-1) snapshot confirms the pump accepted the program",
                "no programmed snapshot",
            )
        )

    # Physician/QHP: a refill by a QHP role.
    if is_refill(session) and rules.is_qhp(session.operator.role):
        items.append(
            _note(
                PHYSICIAN,
                "physician_personally_performed",
                "a statement that the physician or QHP personally performed the refill "
                "(and any reprogramming)",
            )
        )
        items.append(
            _note(
                PHYSICIAN,
                "physician_skill_reason",
                "why the skill of a physician or QHP was needed (difficult access, imaging "
                "guidance, high-risk drug or concentration change, previous pocket fill, "
                "unstable patient)",
            )
        )
    return tuple(items)
