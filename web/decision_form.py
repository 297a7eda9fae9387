"""The evidence page's sign-off form: what it shows, and a submitted form as a body.

docs/web.md "Sign-off", docs/coding-rules.md §9.2 (decision, diagnoses), §9.5 (drug
waste). The form starts from `web.signoff.proposal` (the applicable code or the
current version, the rendering NPI, the refill's drug lines, the edits it hits); a
refused submission comes back with the submitted values, each field's error next to
it and the blocking edit's text. `form_body` turns the posted fields into the body
`web.signoff.sign_off` takes, the same body the API's PUT sends.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from evidence.codes import PROCEDURE_CODES
from evidence.decision import Decision
from evidence.edits import EditResult
from web.signoff import Proposal, SignOffRefused

# docs/coding-rules.md §9.2: the diagnoses of intrathecal therapy, offered first.
COMMON_DIAGNOSES: Final = (
    ("G89.4", "chronic pain syndrome"),
    ("G89.29", "other chronic pain"),
    ("G89.3", "neoplasm-related pain"),
    ("G80.1", "spastic diplegic cerebral palsy"),
    ("R25.2", "cramp and spasm"),
    ("Z45.1", "adjustment and management of an infusion pump"),
)


@dataclass(frozen=True)
class DrugRow:
    """One drug line of the form, as text the fields show."""

    hcpcs: str
    units: str
    discarded_units: str
    ndc: str
    drug: str = ""
    single_dose: bool = True

    @property
    def waste_note(self) -> str:
        """The modifier the line is billed with: JZ (nothing discarded), JW, or none."""
        if not self.single_dose:
            return "multi-dose: no JW/JZ"
        try:
            discarded = int(self.discarded_units or 0)
        except ValueError:
            return ""
        return f"JW line of {discarded}" if discarded > 0 else "JZ (nothing discarded)"


@dataclass(frozen=True)
class VersionRow:
    version: int
    author: str
    signed_at: str
    procedure: str
    diagnoses: str
    reason: str
    rendering_npi: str
    drugs: str


@dataclass
class DecisionForm:
    """The decision section of the evidence page."""

    session_id: str
    applicable: str | None
    procedures: Sequence[str]
    procedure: str
    reason: str
    diagnoses: str
    modifiers: str
    rendering_npi: str
    drugs: list[DrugRow]
    specialty_pharmacy_supplied: bool
    warnings: list[EditResult]
    current: VersionRow | None
    versions: list[VersionRow]
    can_sign: bool
    errors: dict[str, str] = field(default_factory=dict)
    blocking: list[EditResult] = field(default_factory=list)
    common_diagnoses: Sequence[tuple[str, str]] = COMMON_DIAGNOSES

    @property
    def other_errors(self) -> list[tuple[str, str]]:
        """Errors of fields the form has no place for (E/M codes, pointers)."""
        shown = {"procedure", "reason", "diagnoses", "modifiers", "rendering_npi", "drugs"}
        return [
            (name, message)
            for name, message in self.errors.items()
            if name.split("[")[0].split(".")[0] not in shown
        ]

    def error(self, name: str) -> str:
        """The messages of `name` and of its items (`diagnoses` covers `diagnoses[1]`)."""
        return "; ".join(
            message
            for key, message in self.errors.items()
            if key == name or (key.startswith(name + "[") and name != "drugs")
        )


def _join(values: Sequence[str]) -> str:
    return ", ".join(values)


def _version_row(number: int, author: str, signed_at: str, stored: Any) -> VersionRow:
    drugs = [
        f"{d.get('hcpcs')} × {d.get('units')}"
        + (f" + JW {d.get('discarded_units')}" if d.get("discarded_units") else "")
        + (f" {' '.join(d.get('modifiers') or [])}" if d.get("modifiers") else "")
        for d in stored.get("drugs", ())
    ]
    return VersionRow(
        version=number,
        author=author,
        signed_at=signed_at,
        procedure=" ".join(
            [str(stored.get("procedure", "")), *(stored.get("modifiers") or [])]
        ).strip(),
        diagnoses=_join(stored.get("diagnoses") or []),
        reason=str(stored.get("reason") or ""),
        rendering_npi=str(stored.get("rendering_npi") or ""),
        drugs="; ".join(drugs) or "none",
    )


def _drug_rows(decision: Decision) -> list[DrugRow]:
    return [
        DrugRow(
            hcpcs=d.hcpcs,
            units=str(d.units),
            discarded_units=str(d.discarded_units),
            ndc=d.ndc or "",
            drug=d.drug,
            single_dose=d.single_dose,
        )
        for d in decision.drugs
    ]


def decision_form(found: Proposal, *, can_sign: bool) -> DecisionForm:
    """The section as the proposal (or the current version) fills it."""
    decision = found.decision
    visit = decision.procedures[0]
    versions = [
        _version_row(v.version, v.author, v.created_at.strftime("%Y-%m-%d %H:%M UTC"), v.decision)
        for v in found.versions
    ]
    return DecisionForm(
        session_id=found.facts.session_id,
        applicable=found.facts.applicable_procedure,
        procedures=PROCEDURE_CODES,
        procedure=visit.code or (found.facts.applicable_procedure or ""),
        reason=decision.reason or "",
        diagnoses=_join(decision.diagnoses),
        modifiers=_join(visit.modifiers),
        rendering_npi=decision.rendering_npi,
        drugs=_drug_rows(decision),
        specialty_pharmacy_supplied=decision.specialty_pharmacy_supplied,
        warnings=list(found.edits),
        current=versions[-1] if versions else None,
        versions=versions,
        can_sign=can_sign,
    )


def refused_form(form: DecisionForm, body: dict[str, Any], refused: SignOffRefused) -> DecisionForm:
    """The section after a refused submission: the values sent, each field's error."""
    errors: dict[str, str] = {}
    for problem in refused.errors:
        errors[problem.field] = (
            f"{errors[problem.field]}; {problem.message}"
            if problem.field in errors
            else problem.message
        )
    drugs = [
        DrugRow(
            hcpcs=str(d.get("hcpcs", "")),
            units=str(d.get("units", "")),
            discarded_units=str(d.get("discarded_units", "")),
            ndc=str(d.get("ndc") or ""),
            drug=next((r.drug for r in form.drugs if r.hcpcs == d.get("hcpcs")), ""),
            single_dose=next(
                (r.single_dose for r in form.drugs if r.hcpcs == d.get("hcpcs")), True
            ),
        )
        for d in body.get("drugs", [])
    ]
    form.procedure = str(body.get("procedure", ""))
    form.reason = str(body.get("reason") or "")
    form.diagnoses = str(body.get("diagnoses", ""))
    form.modifiers = str(body.get("modifiers", ""))
    form.rendering_npi = str(body.get("rendering_npi", ""))
    form.drugs = drugs
    form.specialty_pharmacy_supplied = bool(body.get("specialty_pharmacy_supplied"))
    form.errors = errors
    form.blocking = list(refused.edits)
    return form


def form_body(
    *,
    procedure: str,
    reason: str,
    diagnoses: str,
    modifiers: str,
    rendering_npi: str,
    drug_hcpcs: Sequence[str],
    drug_units: Sequence[str],
    drug_discarded_units: Sequence[str],
    drug_ndc: Sequence[str],
    specialty_pharmacy_supplied: bool,
) -> dict[str, Any]:
    """The sign-off body of a posted form (drug lines come as parallel field lists).

    A visit whose drug a specialty pharmacy supplied bills no drug line (§6), so the
    checkbox drops the lines shown.
    """
    count = len(drug_hcpcs)

    def at(values: Sequence[str], index: int) -> str:
        return values[index].strip() if index < len(values) else ""

    return {
        "procedure": procedure.strip(),
        "reason": reason.strip() or None,
        "diagnoses": diagnoses,
        "modifiers": modifiers,
        "rendering_npi": rendering_npi.strip(),
        "drugs": [
            {
                "hcpcs": at(drug_hcpcs, i),
                "units": at(drug_units, i),
                "discarded_units": at(drug_discarded_units, i) or "0",
                "ndc": at(drug_ndc, i) or None,
            }
            for i in range(count)
            if at(drug_hcpcs, i) and not specialty_pharmacy_supplied
        ],
        "specialty_pharmacy_supplied": specialty_pharmacy_supplied,
    }
