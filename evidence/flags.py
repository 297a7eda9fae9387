"""The session flags an evidence document may carry, enumerated once.

docs/session-json.md "Evidence" (`flags`), docs/coding-rules.md §7.14 and §8: the
order here is the order in which a document lists them (critical_alarm,
battery_eri and the safety flags reservoir_depleted and refill_overdue first,
§8.3; then the session-json order). `evidence.derive` raises them;
the web list's filter and the JSON API's `flag` parameter offer exactly these.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

SessionFlag = Literal[
    "critical_alarm",
    "battery_eri",
    "reservoir_depleted",
    "refill_overdue",
    "changed_outside_sessions",
    "discrepancy_over_threshold",
    "no_prior_session",
    "chain_gap",
    "conflicting_exports",
    # Read time, not stored with the evidence: no coverage on the date of service
    # (docs/coding-rules.md §9.1; `evidence.payers.with_applicable`).
    "no_payer_on_file",
]
SESSION_FLAGS: Final[tuple[SessionFlag, ...]] = get_args(SessionFlag)
