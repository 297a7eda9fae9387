"""The evidence room: diff, classify, code per profile, refill arithmetic, checklist, drug units.

Pure functions of a pump's chain of decoded `Session`s (docs/coding-rules.md §3-§7); no
database, web or CLI code. The tables a clinic may extend (profiles, QHP roles,
discrepancy thresholds, HCPCS drug codes) are TOML data loaded by
`evidence.rules.load_rules`.
"""

from evidence.alarms import AlarmEntry
from evidence.checklist import (
    MISSING_FROM_LOG,
    NOTE_MUST_STATE,
    PROVEN_BY_LOG,
    ChecklistItem,
)
from evidence.codes import DECISION_TABLE, CodeResult, procedure_code
from evidence.derive import Evidence, chain_key, derive_evidence, evidence_document
from evidence.diff import Change
from evidence.refill import RateInterval, Recomputation, RefillSummary
from evidence.rules import (
    DrugCode,
    Profile,
    Rules,
    RulesError,
    Thresholds,
    default_rules,
    load_rules,
)
from evidence.supplies import SupplyLine

__all__ = [
    "DECISION_TABLE",
    "MISSING_FROM_LOG",
    "NOTE_MUST_STATE",
    "PROVEN_BY_LOG",
    "AlarmEntry",
    "Change",
    "ChecklistItem",
    "CodeResult",
    "DrugCode",
    "Evidence",
    "Profile",
    "RateInterval",
    "Recomputation",
    "RefillSummary",
    "Rules",
    "RulesError",
    "SupplyLine",
    "Thresholds",
    "chain_key",
    "default_rules",
    "derive_evidence",
    "evidence_document",
    "load_rules",
    "procedure_code",
]
