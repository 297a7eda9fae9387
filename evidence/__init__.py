"""The evidence room: diff, classify, code per profile, refill arithmetic, checklist, drug units.

Pure functions of a pump's chain of decoded `Session`s (docs/coding-rules.md §3-§7), and of
the coder's decision after it (§9: validation, billing edits, charge lines); no database,
web or CLI code. The tables a clinic may extend (profiles, QHP roles, discrepancy
thresholds, HCPCS drug codes) are TOML data loaded by `evidence.rules.load_rules`; the
billing edits by `evidence.edits.load_edits`.
"""

from evidence.alarms import AlarmEntry
from evidence.charges import CSV_COLUMNS, ChargeLine, charge_lines, charges_csv
from evidence.checklist import (
    MISSING_FROM_LOG,
    NOTE_MUST_STATE,
    PROVEN_BY_LOG,
    ChecklistItem,
)
from evidence.codes import DECISION_TABLE, CodeResult, procedure_code
from evidence.decision import (
    Decision,
    DrugLine,
    FieldError,
    ProcedureLine,
    default_drug_lines,
    drug_line,
    validate_decision,
)
from evidence.derive import Evidence, chain_key, derive_evidence, evidence_document
from evidence.diff import Change
from evidence.edits import Edit, EditResult, Edits, default_edits, load_edits
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
    "CSV_COLUMNS",
    "DECISION_TABLE",
    "MISSING_FROM_LOG",
    "NOTE_MUST_STATE",
    "PROVEN_BY_LOG",
    "AlarmEntry",
    "Change",
    "ChargeLine",
    "ChecklistItem",
    "CodeResult",
    "Decision",
    "DrugCode",
    "DrugLine",
    "Edit",
    "EditResult",
    "Edits",
    "Evidence",
    "FieldError",
    "ProcedureLine",
    "Profile",
    "RateInterval",
    "Recomputation",
    "RefillSummary",
    "Rules",
    "RulesError",
    "SupplyLine",
    "Thresholds",
    "chain_key",
    "charge_lines",
    "charges_csv",
    "default_drug_lines",
    "default_edits",
    "default_rules",
    "derive_evidence",
    "drug_line",
    "evidence_document",
    "load_edits",
    "load_rules",
    "procedure_code",
    "validate_decision",
]
