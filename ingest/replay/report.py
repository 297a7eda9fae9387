"""Replay findings and how they are printed: differences, the report, patient redaction.

A `Difference` is one finding of `pumptrail replay` (docs/formats.md for the raw
files, docs/session-json.md for the documents compared): what is stored (`old`)
against what replay derives now (`new`), or a message where there are no values
(a raw file missing or edited, a refusal that changed). Reports name sessions by
ID and raw files by SHA-256 prefix. Values that may identify a patient (patient
fields, and note text a clinician typed) are never printed: `show_value` masks
them inside objects, and a difference on such a field prints no values at all.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Final

# Difference kinds.
SESSION: Final = "session"  # a `sessions` column or its normalized document
SETTING: Final = "setting"  # a `setting_values` row
EVENT: Final = "event"  # an `events` row
EVIDENCE: Final = "evidence"  # an `evidence` column, its document or its flags
EVIDENCE_MISSING: Final = "evidence_missing"
NO_RAW_FILE: Final = "no_raw_file"  # a stored session no raw file is linked to
TAMPERED: Final = "tampered"  # raw bytes that no longer hash to their name
RAW_MISSING: Final = "raw_missing"  # a raw file gone from the raw store
UNDECODABLE: Final = "undecodable"  # an imported raw file that no longer decodes
REFUSAL: Final = "refusal"  # a refused file whose error changed, or that decodes now
NOT_STORED: Final = "not_stored"  # the audit log names a session that is not stored
RAW_NOT_STORED: Final = "raw_not_stored"  # ... or a raw file `raw_files` has no row for
UNAUDITED: Final = "unaudited"  # a stored raw file the audit log does not name

RAW_KINDS: Final = frozenset(
    {TAMPERED, RAW_MISSING, UNDECODABLE, REFUSAL, RAW_NOT_STORED, UNAUDITED}
)
# Kinds --apply cannot repair from the raw bytes.
UNREPAIRABLE: Final = frozenset(
    {NO_RAW_FILE, TAMPERED, RAW_MISSING, UNDECODABLE, NOT_STORED, RAW_NOT_STORED, UNAUDITED}
)
HIDDEN: Final = "(not shown: may identify the patient)"
# Fields whose values may identify a patient: patient identifiers, and note text
# (free text a clinician typed). Reports print neither.
_HIDDEN_FIELD: Final = re.compile(r"patient|(^|\.)text$")
_HIDDEN_KEYS: Final = frozenset(
    {"patient", "patient_id", "patient_name", "patient_birth_date", "text"}
)


class _Absent:
    """A value on one side only (a row or key the other side does not have)."""

    def __repr__(self) -> str:
        return "(absent)"


ABSENT: Final = _Absent()


@dataclass(frozen=True, slots=True)
class Difference:
    """One finding: what is stored (`old`) against what replay derives (`new`).

    `subject` is a session ID, or for raw-file kinds the file's SHA-256.
    """

    kind: str
    subject: str
    field: str = ""
    old: Any = None
    new: Any = None
    message: str = ""

    @property
    def hidden(self) -> bool:
        """Whether the values may identify a patient (never printed)."""
        return _HIDDEN_FIELD.search(self.field) is not None

    def line(self) -> str:
        """One report line; values that may identify a patient are never printed."""
        if self.kind not in RAW_KINDS:
            where = f"session {self.subject}"
        elif re.fullmatch(r"[0-9a-f]{64}", self.subject):
            where = f"raw {self.subject[:12]}"
        else:  # a case folder's file (`--fixtures`)
            where = f"file {self.subject}"
        head = f"{where}: {self.kind}"
        if self.field:
            head += f": {self.field}"
        if self.message:
            return f"{head}: {self.message}"
        if self.hidden:
            return f"{head}: {HIDDEN}"
        return f"{head}: {show_value(self.old)} -> {show_value(self.new)}"


def show_value(value: Any) -> str:
    """A value as the report prints it: JSON, `(absent)` for a missing side.

    Inside objects (a whole event, say), patient data and note text are replaced.
    """
    if value is ABSENT:
        return "(absent)"
    if isinstance(value, datetime | date):
        return value.isoformat()
    return json.dumps(_redacted(value), ensure_ascii=False, default=str)


def _redacted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: HIDDEN if k in _HIDDEN_KEYS else _redacted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(item) for item in value]
    return value


@dataclass
class ReplayReport:
    """What a replay found (and, with --apply, did)."""

    raw_files: int = 0
    sessions: int = 0
    pumps: int = 0
    differences: list[Difference] = field(default_factory=list)
    # False when `--pump SERIAL` names no stored pump.
    pump_found: bool = True
    # Pumps whose evidence could not be derived again, and why.
    unchecked: list[str] = field(default_factory=list)
    # --apply: sessions whose rows or evidence were rewritten, pumps left alone and why.
    rewritten_sessions: int = 0
    rewritten_evidence: int = 0
    not_applied: list[str] = field(default_factory=list)

    @property
    def differing_sessions(self) -> int:
        return len({d.subject for d in self.differences if d.kind not in RAW_KINDS})

    def summary(self) -> str:
        line = (
            f"replayed {counted(self.raw_files, 'raw file')}, {counted(self.sessions, 'session')} "
            f"of {counted(self.pumps, 'pump')}"
        )
        if not self.differences:
            return line + ": no differences"
        kinds = Counter(d.kind for d in self.differences)
        differing = self.differing_sessions
        parts = [f"{differing} {'session differs' if differing == 1 else 'sessions differ'}"]
        parts += [f"{n} {kind}" for kind, n in sorted(kinds.items()) if kind in UNREPAIRABLE]
        parts.append(f"{counted(len(self.differences), 'difference')} in all")
        return line + ": " + ", ".join(parts)


def counted(n: int, one: str, many: str | None = None) -> str:
    """`1 pump`, `2 pumps`."""
    return f"{n} {one if n == 1 else many or one + 's'}"
