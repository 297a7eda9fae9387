"""The evidence of one session: a pure function of the pump's chain of sessions.

`derive_evidence(session, history, rules)` puts the rooms of this package
together (docs/coding-rules.md §3-§8): the two diffs, the code under every profile,
the refill arithmetic, the drug supply lines, the alarms, the documentation
checklist and the session flags, the safety flags of §8 among them.
`evidence_document` gives the JSON object of docs/session-json.md "Evidence" (plus `counterfactual` per code, `alarms` and
`rules_version`).

`history` is the earlier sessions of the same pump in chain order (§7.5: session
start UTC, then session ID); the prior session is the last one that starts
strictly earlier. The caller may truncate it to start at the latest earlier
session holding a REFILL record: nothing older is read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from evidence.alarms import AlarmEntry, alarm_entries, has_battery_eri, has_critical_alarm
from evidence.checklist import ChecklistItem, checklist
from evidence.codes import CodeResult, code_session
from evidence.diff import (
    BETWEEN_SESSIONS,
    CHANGED_OUTSIDE_SESSIONS,
    Change,
    all_changes,
)
from evidence.flags import SESSION_FLAGS
from evidence.refill import RefillSummary, refill_summary
from evidence.rules import Rules
from evidence.safety import is_refill_overdue, is_reservoir_depleted
from evidence.supplies import SupplyLine, supply_lines
from parsers.model import Session
from parsers.session_json import utc_text, value_json

CRITICAL_ALARM: Final = "critical_alarm"
BATTERY_ERI: Final = "battery_eri"
RESERVOIR_DEPLETED: Final = "reservoir_depleted"
REFILL_OVERDUE: Final = "refill_overdue"
DISCREPANCY_OVER_THRESHOLD: Final = "discrepancy_over_threshold"
NO_PRIOR_SESSION: Final = "no_prior_session"
CHAIN_GAP: Final = "chain_gap"
CONFLICTING_EXPORTS: Final = "conflicting_exports"
# Session flags in document order (§7.14, §8.3): the one enumeration of `evidence.flags`.
SESSION_FLAG_ORDER: Final = SESSION_FLAGS
# Categories whose change outside sessions breaks the chain (§7.6).
CHAIN_GAP_CATEGORIES: Final = frozenset({"prescription", "ptm"})


@dataclass(frozen=True, slots=True)
class Evidence:
    """Everything the coder needs about one session (docs/session-json.md "Evidence")."""

    session_id: str
    pump_serial: str
    session_start_utc: datetime
    prior_session_id: str | None
    operator_id: str
    operator_role: str
    refill: RefillSummary | None
    changes: tuple[Change, ...]
    codes: tuple[CodeResult, ...]
    supplies: tuple[SupplyLine, ...]
    documentation: tuple[ChecklistItem, ...]
    alarms: tuple[AlarmEntry, ...]
    flags: tuple[str, ...]
    rules_version: str

    def code(self, profile: str) -> CodeResult:
        for result in self.codes:
            if result.profile == profile:
                return result
        raise KeyError(profile)


def chain_key(session: Session) -> tuple[datetime, str]:
    """Chain order of a pump's sessions (§7.5)."""
    return (session.session_start_utc, session.session_id)


def derive_evidence(
    session: Session,
    history: Sequence[Session],
    rules: Rules,
    *,
    conflicting_exports: bool = False,
) -> Evidence:
    """The evidence of `session`, given the earlier sessions of its pump.

    Raises ValueError when `history` holds another pump's session (a caller bug);
    sessions that do not start strictly earlier are not prior sessions (§7.5) and
    are ignored.
    """
    serial = session.pump.serial
    for earlier in history:
        if earlier.pump.serial != serial:
            raise ValueError(
                f"history session {earlier.session_id} is of pump {earlier.pump.serial}, "
                f"not {serial}"
            )
    start = session.session_start_utc
    chain = sorted((s for s in history if s.session_start_utc < start), key=chain_key)
    prior = chain[-1] if chain else None

    changes = all_changes(session, prior)
    codes = code_session(session, changes, rules)
    refill = refill_summary(session, chain, rules)
    supplies = supply_lines(session, rules)
    documentation = checklist(session, changes, codes, refill, rules)
    alarms = alarm_entries(session)

    raised: set[str] = set()
    if has_critical_alarm(session):
        raised.add(CRITICAL_ALARM)
    if has_battery_eri(session):
        raised.add(BATTERY_ERI)
    if is_reservoir_depleted(session):
        raised.add(RESERVOIR_DEPLETED)
    if is_refill_overdue(session, prior):
        raised.add(REFILL_OVERDUE)
    if any(CHANGED_OUTSIDE_SESSIONS in c.flags for c in changes):
        raised.add(CHANGED_OUTSIDE_SESSIONS)
    if refill is not None and refill.over_threshold:
        raised.add(DISCREPANCY_OVER_THRESHOLD)
    if prior is None:
        raised.add(NO_PRIOR_SESSION)
    if any(c.when == BETWEEN_SESSIONS and c.category in CHAIN_GAP_CATEGORIES for c in changes):
        raised.add(CHAIN_GAP)
    if conflicting_exports:
        raised.add(CONFLICTING_EXPORTS)

    return Evidence(
        session_id=session.session_id,
        pump_serial=serial,
        session_start_utc=start,
        prior_session_id=None if prior is None else prior.session_id,
        operator_id=session.operator.id,
        operator_role=session.operator.role,
        refill=refill,
        changes=changes,
        codes=codes,
        supplies=supplies,
        documentation=documentation,
        alarms=alarms,
        flags=tuple(flag for flag in SESSION_FLAG_ORDER if flag in raised),
        rules_version=rules.version,
    )


def evidence_document(ev: Evidence) -> dict[str, Any]:
    """The JSON object of docs/session-json.md "Evidence" for one session."""
    refill = ev.refill
    return {
        "session_id": ev.session_id,
        "pump_serial": ev.pump_serial,
        "session_start_utc": utc_text(ev.session_start_utc),
        "prior_session_id": ev.prior_session_id,
        "operator_role": ev.operator_role,
        "refill": None
        if refill is None
        else {
            "expected_residual_ul": refill.expected_residual_ul,
            "recomputed_expected_ul": refill.recomputed_expected_ul,
            "aspirated_ul": refill.aspirated_ul,
            "added_ul": refill.added_ul,
            "new_volume_ul": refill.new_volume_ul,
            "discrepancy_ul": refill.discrepancy_ul,
            "discrepancy_threshold_ul": refill.threshold_ul,
        },
        "changes": [
            {
                "parameter": c.parameter,
                "category": c.category,
                "before": value_json(c.before),
                "after": value_json(c.after),
                "when": c.when,
                "reason": c.reason,
                "flags": list(c.flags),
            }
            for c in ev.changes
        ],
        "codes": {
            r.profile: {
                "procedure": r.procedure,
                "reprogrammed": r.reprogrammed,
                "refill": r.refill,
                "counterfactual": r.counterfactual,
            }
            for r in ev.codes
        },
        "supplies": [
            {"hcpcs": s.hcpcs, "units": s.units, "drug": s.drug, "amount_ug": s.amount_ug}
            for s in ev.supplies
        ],
        "documentation": [
            {"item": d.item, "status": d.status, "group": d.group} for d in ev.documentation
        ],
        "alarms": [
            {
                "alarm": a.alarm,
                "severity": a.severity,
                "state": a.state,
                "critical": a.critical,
                "time_utc": utc_text(a.time_utc),
                "occurred_at_utc": utc_text(a.occurred_at_utc),
            }
            for a in ev.alarms
        ],
        "flags": list(ev.flags),
        "rules_version": ev.rules_version,
    }
