"""Billing edits: data-driven checks of a decision before sign-off.

docs/coding-rules.md §9.4: the edits are data (`evidence/data/edits.toml`), each with an
id, the text shown to the coder, its source, the dates it is in force and a severity. A
`warning` shows before sign-off; a `blocking` edit refuses it with its text. A clinic's
`edits.toml` in its rules folder adds edits and replaces the ones whose `id` it reuses
(docs/payer-profiles.md); every file is validated and a problem raises `RulesError`
naming the file and the key.

The kinds of rule:

- `mutually_exclusive`: at most one of `codes` on one visit (one decision), §2;
- `units_per_day`: each of `codes` at most `max_units` units a day for the patient,
  counted over the decision and the patient's other signed-off decisions of that day
  (the CMS medically unlikely edits);
- `modifier_required`: each of `codes` billed on a day with any of `with_codes` (on this
  decision or another of that day) carries `modifier` (E/M + 25);
- `drug_line_required`: a decision with any of `codes` has a drug line, unless it is
  marked as supplied by a specialty pharmacy (§6);
- `drug_code_missing`: the evidence shows a refill whose drug has no entry in the drug
  code table (a supply line with `hcpcs` null, §7.13).

`check` is a pure function of the decision, the patient's other decisions of the day,
the evidence document (docs/session-json.md "Evidence") and the edits in force.
"""

from __future__ import annotations

import functools
import hashlib
import json
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Any, Final, Literal, get_args

from evidence.decision import CPT_PATTERN, MODIFIER_PATTERN, Decision
from evidence.rules import RulesError

EDITS_FILE: Final = "edits.toml"
# Bumped when the shape of the edits table (not its content) changes.
EDITS_SCHEMA: Final = 1
_HASH_CHARS: Final = 12

Severity = Literal["warning", "blocking"]
SEVERITIES: Final[tuple[Severity, ...]] = get_args(Severity)
WARNING: Final[Severity] = "warning"
BLOCKING: Final[Severity] = "blocking"

Kind = Literal[
    "mutually_exclusive",
    "units_per_day",
    "modifier_required",
    "drug_line_required",
    "drug_code_missing",
]
KINDS: Final[tuple[Kind, ...]] = get_args(Kind)

# The keys each kind takes beyond the common ones, and which of them it requires.
_COMMON_KEYS: Final = ("id", "kind", "text", "source", "effective_from", "effective_to", "severity")
_KIND_KEYS: Final[Mapping[str, tuple[str, ...]]] = {
    "mutually_exclusive": ("codes",),
    "units_per_day": ("codes", "max_units"),
    "modifier_required": ("codes", "with_codes", "modifier"),
    "drug_line_required": ("codes",),
    "drug_code_missing": (),
}


@dataclass(frozen=True, slots=True)
class Edit:
    """One billing edit (§9.4) as the data file states it."""

    id: str
    kind: Kind
    text: str
    source: str
    effective_from: date
    effective_to: date | None
    severity: Severity
    codes: tuple[str, ...] = ()
    with_codes: tuple[str, ...] = ()
    modifier: str | None = None
    max_units: int | None = None

    def in_force(self, on: date) -> bool:
        """Whether the edit applies on a date: from `effective_from` to `effective_to`,
        both inclusive.
        """
        if on < self.effective_from:
            return False
        return self.effective_to is None or on <= self.effective_to


@dataclass(frozen=True, slots=True)
class Edits:
    """The edits in force for a clinic, in file order, and the version naming them."""

    edits: tuple[Edit, ...]
    version: str

    def edit(self, edit_id: str) -> Edit:
        for edit in self.edits:
            if edit.id == edit_id:
                return edit
        raise KeyError(edit_id)


@dataclass(frozen=True, slots=True)
class EditResult:
    """One edit a decision hits: the rule's text, and what in the decision hit it."""

    edit_id: str
    severity: Severity
    text: str
    detail: str
    codes: tuple[str, ...]

    @property
    def blocking(self) -> bool:
        return self.severity == BLOCKING


def blocking(results: Iterable[EditResult]) -> list[EditResult]:
    """The results that refuse the sign-off."""
    return [r for r in results if r.blocking]


# ---------------------------------------------------------------------------
# Checking


def check(
    decision: Decision,
    other_decisions_same_day: Sequence[Decision],
    evidence_document: Mapping[str, Any] | None,
    edits: Edits,
    on: date | None = None,
) -> list[EditResult]:
    """Every edit in force `on` (default: the date of service) that the decision hits,
    in the order of the edits table.

    `other_decisions_same_day` are the patient's other signed-off decisions with the same
    date of service (never the decision itself); `evidence_document` is the session's
    evidence (docs/session-json.md "Evidence"), None when there is none.
    """
    when = decision.date_of_service if on is None else on
    others = [d for d in other_decisions_same_day if d.session_id != decision.session_id]
    results: list[EditResult] = []
    for edit in edits.edits:
        if not edit.in_force(when):
            continue
        results.extend(_CHECKS[edit.kind](edit, decision, others, evidence_document))
    return results


def _result(edit: Edit, detail: str, codes: Sequence[str]) -> EditResult:
    return EditResult(edit.id, edit.severity, edit.text, detail, tuple(codes))


def _mutually_exclusive(
    edit: Edit,
    decision: Decision,
    _others: Sequence[Decision],
    _evidence: Mapping[str, Any] | None,
) -> list[EditResult]:
    found = [code for code in decision.codes if code in edit.codes]
    if len(set(found)) <= 1:
        return []
    return [_result(edit, f"{', '.join(found)} on one visit", found)]


def _units_per_day(
    edit: Edit,
    decision: Decision,
    others: Sequence[Decision],
    _evidence: Mapping[str, Any] | None,
) -> list[EditResult]:
    limit = edit.max_units or 0
    results: list[EditResult] = []
    for code in dict.fromkeys(c for c in decision.codes if c in edit.codes):
        units = sum(p.units for p in decision.procedures if p.code == code)
        elsewhere = [d.session_id for d in others if any(p.code == code for p in d.procedures)]
        units += sum(p.units for d in others for p in d.procedures if p.code == code)
        if units > limit:
            where = f" (also on {', '.join(elsewhere)})" if elsewhere else ""
            results.append(
                _result(
                    edit,
                    f"{code}: {units} units on {decision.date_of_service.isoformat()}, "
                    f"at most {limit}{where}",
                    (code,),
                )
            )
    return results


def _modifier_required(
    edit: Edit,
    decision: Decision,
    others: Sequence[Decision],
    _evidence: Mapping[str, Any] | None,
) -> list[EditResult]:
    day_codes = {*decision.codes, *(c for d in others for c in d.codes)}
    partners = sorted(day_codes.intersection(edit.with_codes))
    if not partners:
        return []
    return [
        _result(
            edit,
            f"{line.code} without modifier {edit.modifier} on a day with {', '.join(partners)}",
            (line.code, *partners),
        )
        for line in decision.procedures
        if line.code in edit.codes and edit.modifier not in line.modifiers
    ]


def _drug_line_required(
    edit: Edit,
    decision: Decision,
    _others: Sequence[Decision],
    _evidence: Mapping[str, Any] | None,
) -> list[EditResult]:
    if decision.drugs or decision.specialty_pharmacy_supplied:
        return []
    found = [code for code in decision.codes if code in edit.codes]
    if not found:
        return []
    return [
        _result(
            edit,
            f"{', '.join(found)} without a drug line and not marked as supplied by a "
            "specialty pharmacy",
            found,
        )
    ]


def _drug_code_missing(
    edit: Edit,
    decision: Decision,
    _others: Sequence[Decision],
    evidence: Mapping[str, Any] | None,
) -> list[EditResult]:
    if evidence is None or decision.specialty_pharmacy_supplied:
        return []
    supplies = evidence.get("supplies") or []
    unmatched = [
        str(s.get("drug") or "")
        for s in supplies
        if isinstance(s, Mapping) and s.get("hcpcs") is None
    ]
    if not unmatched:
        return []
    names = ", ".join(repr(name) for name in unmatched)
    return [_result(edit, f"refilled drug without a code: {names}", ())]


_CHECKS: Final = {
    "mutually_exclusive": _mutually_exclusive,
    "units_per_day": _units_per_day,
    "modifier_required": _modifier_required,
    "drug_line_required": _drug_line_required,
    "drug_code_missing": _drug_code_missing,
}


# ---------------------------------------------------------------------------
# Loading


def load_edits(extra_dir: Path | None = None) -> Edits:
    """The built-in edits, with a clinic's `edits.toml` from `extra_dir` laid over them:
    an entry reusing an id replaces that edit in place, a new id is added at the end.
    """
    builtin = resources.files("evidence.data").joinpath(EDITS_FILE).read_text("utf-8")
    edits = _edits(f"evidence/data/{EDITS_FILE}", builtin, base=())
    if extra_dir is not None:
        path = extra_dir / EDITS_FILE
        if path.is_file():
            try:
                text = path.read_text("utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise RulesError(str(path), "", f"cannot read: {exc}") from exc
            edits = _edits(str(path), text, base=edits)
    return Edits(edits, edits_version(edits))


@functools.cache
def default_edits() -> Edits:
    """The built-in edits, loaded once."""
    return load_edits()


def edits_version(edits: Sequence[Edit]) -> str:
    """`billing-edits/<N>+<sha256 prefix>` of the canonical JSON of the edits."""
    canonical = {
        "schema": EDITS_SCHEMA,
        "edits": [
            {
                "id": e.id,
                "kind": e.kind,
                "text": e.text,
                "source": e.source,
                "effective_from": e.effective_from.isoformat(),
                "effective_to": None if e.effective_to is None else e.effective_to.isoformat(),
                "severity": e.severity,
                "codes": list(e.codes),
                "with_codes": list(e.with_codes),
                "modifier": e.modifier,
                "max_units": e.max_units,
            }
            for e in edits
        ],
    }
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:_HASH_CHARS]
    return f"billing-edits/{EDITS_SCHEMA}+{digest}"


def _edits(file: str, text: str, *, base: Sequence[Edit]) -> tuple[Edit, ...]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(file, "", f"not valid TOML: {exc}") from exc
    for key in data:
        if key != "edit":
            raise RulesError(file, key, "unknown key; expected edit")
    entries = data.get("edit", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise RulesError(file, "edit", "expected an array of tables ([[edit]])")
    edits = list(base)
    index = {e.id: k for k, e in enumerate(edits)}
    listed: set[str] = set()
    for i, entry in enumerate(entries):
        edit = _edit(file, f"edit[{i}]", entry)
        if edit.id in listed:
            raise RulesError(file, f"edit[{i}].id", f"edit {edit.id!r} is listed twice")
        listed.add(edit.id)
        if edit.id in index:
            edits[index[edit.id]] = edit
        else:
            index[edit.id] = len(edits)
            edits.append(edit)
    return tuple(edits)


def _edit(file: str, where: str, entry: Mapping[str, Any]) -> Edit:
    kind = _text(file, f"{where}.kind", _required(file, where, entry, "kind"))
    if kind not in KINDS:
        raise RulesError(
            file, f"{where}.kind", f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}"
        )
    allowed = (*_COMMON_KEYS, *_KIND_KEYS[kind])
    for key in entry:
        if key not in allowed:
            raise RulesError(
                file,
                f"{where}.{key}",
                f"unknown key for kind {kind!r}; expected one of {', '.join(allowed)}",
            )
    edit_id = _text(file, f"{where}.id", _required(file, where, entry, "id"))
    if edit_id != edit_id.strip() or any(ch.isspace() for ch in edit_id):
        raise RulesError(file, f"{where}.id", f"edit id {edit_id!r} must not contain spaces")
    severity = _text(file, f"{where}.severity", _required(file, where, entry, "severity"))
    if severity not in SEVERITIES:
        raise RulesError(
            file,
            f"{where}.severity",
            f"unknown severity {severity!r}; expected one of {', '.join(SEVERITIES)}",
        )
    effective_from = _date(
        file, f"{where}.effective_from", _required(file, where, entry, "effective_from")
    )
    effective_to = None
    if "effective_to" in entry:
        effective_to = _date(file, f"{where}.effective_to", entry["effective_to"])
        if effective_to < effective_from:
            raise RulesError(file, f"{where}.effective_to", "is before effective_from")
    codes: tuple[str, ...] = ()
    with_codes: tuple[str, ...] = ()
    modifier: str | None = None
    max_units: int | None = None
    if "codes" in _KIND_KEYS[kind]:
        codes = _codes(file, f"{where}.codes", _required(file, where, entry, "codes"))
        if kind == "mutually_exclusive" and len(codes) < 2:
            raise RulesError(file, f"{where}.codes", "expected at least two codes")
    if kind == "modifier_required":
        with_codes = _codes(
            file, f"{where}.with_codes", _required(file, where, entry, "with_codes")
        )
        modifier = _text(file, f"{where}.modifier", _required(file, where, entry, "modifier"))
        if MODIFIER_PATTERN.fullmatch(modifier) is None:
            raise RulesError(
                file,
                f"{where}.modifier",
                f"{modifier!r} is not a modifier (two capitals or digits)",
            )
    if kind == "units_per_day":
        value = _required(file, where, entry, "max_units")
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RulesError(
                file, f"{where}.max_units", f"expected an integer of at least 1, found {value!r}"
            )
        max_units = value
    return Edit(
        id=edit_id,
        kind=kind,
        text=_text(file, f"{where}.text", _required(file, where, entry, "text")),
        source=_text(file, f"{where}.source", _required(file, where, entry, "source")),
        effective_from=effective_from,
        effective_to=effective_to,
        severity=severity,
        codes=codes,
        with_codes=with_codes,
        modifier=modifier,
        max_units=max_units,
    )


def _required(file: str, where: str, entry: Mapping[str, Any], key: str) -> Any:
    if key not in entry:
        raise RulesError(file, f"{where}.{key}", "missing")
    return entry[key]


def _text(file: str, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise RulesError(file, key, f"expected a non-empty string, found {value!r}")
    return value


def _date(file: str, key: str, value: Any) -> date:
    # TOML has a date type (2023-07-01); a date-time or a string is refused so that
    # an edit is never in force from a time of day or a misread text.
    if not isinstance(value, date) or hasattr(value, "hour"):
        raise RulesError(file, key, f"expected a date such as 2023-07-01, found {value!r}")
    return value


def _codes(file: str, key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise RulesError(file, key, "expected a non-empty list of CPT codes")
    codes: list[str] = []
    for k, code in enumerate(value):
        if not isinstance(code, str) or CPT_PATTERN.fullmatch(code) is None:
            raise RulesError(file, f"{key}[{k}]", f"{code!r} is not a CPT code (five digits)")
        if code in codes:
            raise RulesError(file, f"{key}[{k}]", f"{code} is listed twice")
        codes.append(code)
    return tuple(codes)
