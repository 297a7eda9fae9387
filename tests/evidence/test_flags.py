"""The one enumeration of session flags and CPT codes (docs/session-json.md, docs/coding-rules.md §2)."""

from __future__ import annotations

from evidence import derive, diff, payers
from evidence.codes import DECISION_TABLE, PROCEDURE_CODES
from evidence.flags import SESSION_FLAGS


def test_every_flag_the_evidence_room_raises_is_enumerated() -> None:
    raised = {
        derive.CRITICAL_ALARM,
        derive.BATTERY_ERI,
        derive.RESERVOIR_DEPLETED,
        derive.REFILL_OVERDUE,
        diff.CHANGED_OUTSIDE_SESSIONS,
        derive.DISCREPANCY_OVER_THRESHOLD,
        derive.NO_PRIOR_SESSION,
        derive.CHAIN_GAP,
        derive.CONFLICTING_EXPORTS,
        # Raised when the evidence is read, from the coverage on file (§9.1).
        payers.NO_PAYER_ON_FILE,
    }
    assert raised == set(SESSION_FLAGS)
    assert derive.SESSION_FLAG_ORDER == SESSION_FLAGS
    assert SESSION_FLAGS[:2] == ("critical_alarm", "battery_eri")
    # The safety flags of docs/coding-rules.md §8.3 come right after them.
    assert SESSION_FLAGS[:4] == (
        "critical_alarm",
        "battery_eri",
        "reservoir_depleted",
        "refill_overdue",
    )
    assert SESSION_FLAGS[4:] == (
        "changed_outside_sessions",
        "discrepancy_over_threshold",
        "no_prior_session",
        "chain_gap",
        "conflicting_exports",
        "no_payer_on_file",
    )


def test_the_decision_table_gives_every_code_and_no_other() -> None:
    assert sorted(set(DECISION_TABLE.values())) == list(PROCEDURE_CODES)
    assert "96522" not in PROCEDURE_CODES
