"""`pumptrail replay`: the stored sessions and evidence checked against their raw files.

`replayer` holds the work (`Replayer`), `comparison` what is compared field by
field, `report` the findings and how they print with patient data masked; the
database side is `db.replay_queries`, the choice between two exports of a session
`ingest.exports` (docs/coding-rules.md §7.16). `ingest.replay.fixtures` checks a
case folder of exports without a database. Callers import from this package.
"""

from __future__ import annotations

from ingest.exports import Resolved, decode_export, export_in_use
from ingest.replay.comparison import (
    compare_evidence,
    compare_session,
    field_counts,
    json_differences,
    same_value,
)
from ingest.replay.replayer import PUMP_BATCH, Replayer, chain_walk
from ingest.replay.report import (
    ABSENT,
    EVENT,
    EVIDENCE,
    EVIDENCE_MISSING,
    HIDDEN,
    NO_RAW_FILE,
    NOT_STORED,
    RAW_KINDS,
    RAW_MISSING,
    RAW_NOT_STORED,
    REFUSAL,
    SESSION,
    SETTING,
    TAMPERED,
    UNAUDITED,
    UNDECODABLE,
    UNREPAIRABLE,
    Difference,
    ReplayReport,
    counted,
    show_value,
)

__all__ = [
    "ABSENT",
    "EVENT",
    "EVIDENCE",
    "EVIDENCE_MISSING",
    "HIDDEN",
    "NOT_STORED",
    "NO_RAW_FILE",
    "PUMP_BATCH",
    "RAW_KINDS",
    "RAW_MISSING",
    "RAW_NOT_STORED",
    "REFUSAL",
    "SESSION",
    "SETTING",
    "TAMPERED",
    "UNAUDITED",
    "UNDECODABLE",
    "UNREPAIRABLE",
    "Difference",
    "ReplayReport",
    "Replayer",
    "Resolved",
    "chain_walk",
    "compare_evidence",
    "compare_session",
    "counted",
    "decode_export",
    "export_in_use",
    "field_counts",
    "json_differences",
    "same_value",
    "show_value",
]
