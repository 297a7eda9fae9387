"""The coder's decision at sign-off, its validation, and the drug lines a refill yields.

docs/coding-rules.md §9.2 (decision, diagnoses), §9.3 (NPI), §9.5 (drug waste), §6 and
§7.13 (units): a `Decision` holds the visit's procedure code and any E/M codes billed the
same day (each with its modifiers), the diagnoses, the rendering provider's NPI, the drug
lines, the reason for overriding the applicable code, and the date of service.

`validate_decision` returns field-named errors (`diagnoses[1]`, `drugs[0].units`, ...)
so a caller can answer each one against the field that caused it; it never raises.
`default_drug_lines` turns the evidence document's `supplies` into drug lines: units
from the exact amount (already rounded up in the evidence), JZ when nothing was
discarded from a single-dose container, a JW line for discarded units, neither for a
multi-dose container (the container type comes from the drug code table).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, Final

from evidence.npi import npi_valid
from evidence.rules import Rules

# §9.2: a letter, a digit, a letter or digit, then optionally a dot and one to four
# letters or digits. ICD-10-CM codes are written in capitals.
ICD10_PATTERN: Final = re.compile(r"[A-Z][0-9][A-Z0-9](?:\.[A-Z0-9]{1,4})?")
# CPT codes are five digits; Category II/III codes end in F or T. HCPCS Level II
# codes are a letter and four digits (J2274).
CPT_PATTERN: Final = re.compile(r"[0-9]{4}[0-9FT]")
HCPCS_PATTERN: Final = re.compile(r"[A-V][0-9]{4}")
# A modifier is two letters or digits (25, JW, JZ, 59).
MODIFIER_PATTERN: Final = re.compile(r"[A-Z0-9]{2}")
# The 11-digit billing form of an NDC (5-4-2), or its hyphenated 10-digit label forms.
_NDC_FORMS: Final = (
    (re.compile(r"([0-9]{5})([0-9]{4})([0-9]{2})"), (5, 4, 2)),
    (re.compile(r"([0-9]{5})-([0-9]{4})-([0-9]{2})"), (5, 4, 2)),
    (re.compile(r"([0-9]{4})-([0-9]{4})-([0-9]{2})"), (5, 4, 2)),
    (re.compile(r"([0-9]{5})-([0-9]{3})-([0-9]{2})"), (5, 4, 2)),
    (re.compile(r"([0-9]{5})-([0-9]{4})-([0-9])"), (5, 4, 2)),
)

# Drug waste modifiers (§9.5).
JW: Final = "JW"
JZ: Final = "JZ"
WASTE_MODIFIERS: Final = frozenset({JW, JZ})

# A claim line carries at most four modifiers and four diagnosis pointers (CMS-1500
# items 24D and 24E; the 837P SV1 composite).
MAX_MODIFIERS: Final = 4
MAX_POINTERS: Final = 4
# A claim carries at most twelve diagnoses (CMS-1500 item 21, A-L).
MAX_DIAGNOSES: Final = 12


@dataclass(frozen=True, slots=True)
class ProcedureLine:
    """One procedure code of the decision: the visit's CPT code or a same-day E/M code.

    `diagnosis_pointers` are 1-based indexes into the decision's diagnoses; empty means
    the first four.
    """

    code: str
    modifiers: tuple[str, ...] = ()
    units: int = 1
    diagnosis_pointers: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class DrugLine:
    """One drug billed at a refill (§6, §9.5).

    `units` are the units administered; `discarded_units` the units the coder says were
    discarded from a single-dose container, billed on a separate JW line. The JZ
    modifier is not stored: it follows from the container and the discarded units.
    """

    hcpcs: str
    units: int
    single_dose: bool = True
    discarded_units: int = 0
    ndc: str | None = None
    drug: str = ""
    diagnosis_pointers: tuple[int, ...] = ()

    @property
    def modifiers(self) -> tuple[str, ...]:
        """JZ when nothing was discarded from a single-dose container (§9.5)."""
        return (JZ,) if self.single_dose and self.discarded_units == 0 else ()

    @property
    def waste_units(self) -> int:
        """The units of the JW line: discarded units of a single-dose container."""
        return self.discarded_units if self.single_dose else 0


@dataclass(frozen=True, slots=True)
class Decision:
    """The coder's sign-off of one session (§9.2).

    `procedures[0]` is the visit's pump code; E/M codes billed the same day follow.
    `reason` explains an override of the applicable code. `specialty_pharmacy_supplied`
    marks a refill whose drug a specialty pharmacy bills, so the practice bills no drug
    line (§6).
    """

    session_id: str
    date_of_service: date
    procedures: tuple[ProcedureLine, ...]
    diagnoses: tuple[str, ...]
    rendering_npi: str
    drugs: tuple[DrugLine, ...] = ()
    reason: str | None = None
    specialty_pharmacy_supplied: bool = False
    patient_id: str | None = None

    @property
    def codes(self) -> tuple[str, ...]:
        """Every procedure code of the decision, in order."""
        return tuple(p.code for p in self.procedures)


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem with a decision, naming the field (dotted, with list indexes)."""

    field: str
    message: str


def diagnosis_valid(code: str) -> bool:
    """Whether `code` has the ICD-10-CM shape of §9.2 (capitals, e.g. G89.4, Z45.1)."""
    return ICD10_PATTERN.fullmatch(code) is not None


def ndc11(ndc: str) -> str | None:
    """The 11-digit (5-4-2) billing form of an NDC; None when `ndc` is no NDC form.

    A hyphenated 10-digit label form is padded with a leading zero in its short segment.
    """
    text = ndc.strip()
    for pattern, widths in _NDC_FORMS:
        match = pattern.fullmatch(text)
        if match is not None:
            return "".join(
                part.zfill(width) for part, width in zip(match.groups(), widths, strict=True)
            )
    return None


# ---------------------------------------------------------------------------
# Validation


def validate_decision(decision: Decision, *, applicable: str | None = None) -> list[FieldError]:
    """Every problem of a decision, each naming its field; empty when it is complete.

    `applicable` is the code the evidence proposes under the patient's payer profile:
    a decision whose procedures do not include it needs a `reason` (an override, §9.2).
    """
    errors: list[FieldError] = []
    n_diagnoses = len(decision.diagnoses)

    if not decision.session_id.strip():
        errors.append(FieldError("session_id", "missing"))

    if not decision.procedures:
        errors.append(FieldError("procedures", "at least one procedure code is required"))
    seen_codes: dict[str, int] = {}
    for i, line in enumerate(decision.procedures):
        where = f"procedures[{i}]"
        if CPT_PATTERN.fullmatch(line.code) is None:
            errors.append(
                FieldError(f"{where}.code", f"{line.code!r} is not a CPT code (five digits)")
            )
        elif line.code in seen_codes:
            errors.append(
                FieldError(
                    f"{where}.code",
                    f"{line.code} is already procedures[{seen_codes[line.code]}]; "
                    "bill units on one line",
                )
            )
        else:
            seen_codes[line.code] = i
        errors.extend(_modifier_errors(where, line.modifiers))
        if any(m in WASTE_MODIFIERS for m in line.modifiers):
            errors.append(FieldError(f"{where}.modifiers", "JW and JZ belong to drug lines (§9.5)"))
        errors.extend(_units_errors(f"{where}.units", line.units, minimum=1))
        errors.extend(_pointer_errors(where, line.diagnosis_pointers, n_diagnoses))

    if not decision.diagnoses:
        errors.append(FieldError("diagnoses", "at least one diagnosis is required"))
    if n_diagnoses > MAX_DIAGNOSES:
        errors.append(
            FieldError("diagnoses", f"at most {MAX_DIAGNOSES} diagnoses, found {n_diagnoses}")
        )
    first_seen: dict[str, int] = {}
    for i, code in enumerate(decision.diagnoses):
        if not diagnosis_valid(code):
            errors.append(
                FieldError(
                    f"diagnoses[{i}]",
                    f"{code!r} is not an ICD-10-CM code: a capital letter, a digit, a letter "
                    "or digit, then optionally a dot and up to four letters or digits "
                    "(G89.4)",
                )
            )
        elif code in first_seen:
            errors.append(
                FieldError(f"diagnoses[{i}]", f"{code} is already diagnoses[{first_seen[code]}]")
            )
        else:
            first_seen[code] = i

    if not npi_valid(decision.rendering_npi):
        errors.append(
            FieldError(
                "rendering_npi",
                f"{decision.rendering_npi!r} is not an NPI: ten digits, the last a Luhn "
                "check digit over 80840 and the first nine (§9.3)",
            )
        )

    seen_drugs: dict[str, int] = {}
    for i, drug in enumerate(decision.drugs):
        where = f"drugs[{i}]"
        if HCPCS_PATTERN.fullmatch(drug.hcpcs) is None:
            errors.append(
                FieldError(
                    f"{where}.hcpcs", f"{drug.hcpcs!r} is not an HCPCS code (a letter, 4 digits)"
                )
            )
        elif drug.hcpcs in seen_drugs:
            errors.append(
                FieldError(
                    f"{where}.hcpcs",
                    f"{drug.hcpcs} is already drugs[{seen_drugs[drug.hcpcs]}]; one line per "
                    "drug code",
                )
            )
        else:
            seen_drugs[drug.hcpcs] = i
        errors.extend(_units_errors(f"{where}.units", drug.units, minimum=1))
        errors.extend(_units_errors(f"{where}.discarded_units", drug.discarded_units, minimum=0))
        if drug.discarded_units > 0 and not drug.single_dose:
            errors.append(
                FieldError(
                    f"{where}.discarded_units",
                    "a multi-dose container takes no JW line (§9.5)",
                )
            )
        if drug.ndc is not None and ndc11(drug.ndc) is None:
            errors.append(
                FieldError(
                    f"{where}.ndc",
                    f"{drug.ndc!r} is not an NDC: 11 digits (5-4-2) or a hyphenated "
                    "10-digit form (4-4-2, 5-3-2, 5-4-1)",
                )
            )
        errors.extend(_pointer_errors(where, drug.diagnosis_pointers, n_diagnoses))
    if decision.specialty_pharmacy_supplied and decision.drugs:
        errors.append(
            FieldError(
                "drugs",
                "a drug a specialty pharmacy supplied is billed by the pharmacy: no drug line (§6)",
            )
        )

    reason = decision.reason
    if reason is not None and not reason.strip():
        errors.append(FieldError("reason", "an empty reason; leave it out or explain"))
    if (
        applicable is not None
        and applicable not in decision.codes
        and (reason is None or not reason.strip())
    ):
        errors.append(
            FieldError(
                "reason",
                f"the applicable code is {applicable}; overriding it needs a reason",
            )
        )
    return errors


def _modifier_errors(where: str, modifiers: Sequence[str]) -> list[FieldError]:
    errors: list[FieldError] = []
    if len(modifiers) > MAX_MODIFIERS:
        errors.append(
            FieldError(
                f"{where}.modifiers", f"at most {MAX_MODIFIERS} modifiers, found {len(modifiers)}"
            )
        )
    for k, modifier in enumerate(modifiers):
        if MODIFIER_PATTERN.fullmatch(modifier) is None:
            errors.append(
                FieldError(
                    f"{where}.modifiers[{k}]",
                    f"{modifier!r} is not a modifier (two capital letters or digits)",
                )
            )
    if len(set(modifiers)) != len(modifiers):
        errors.append(FieldError(f"{where}.modifiers", "a modifier is listed twice"))
    return errors


def _units_errors(field: str, units: int, *, minimum: int) -> list[FieldError]:
    if isinstance(units, bool) or not isinstance(units, int):
        return [FieldError(field, f"expected a whole number, found {units!r}")]
    if units < minimum:
        return [FieldError(field, f"expected at least {minimum}, found {units}")]
    return []


def _pointer_errors(where: str, pointers: Sequence[int], n_diagnoses: int) -> list[FieldError]:
    errors: list[FieldError] = []
    field = f"{where}.diagnosis_pointers"
    if len(pointers) > MAX_POINTERS:
        errors.append(
            FieldError(field, f"at most {MAX_POINTERS} diagnosis pointers, found {len(pointers)}")
        )
    for k, pointer in enumerate(pointers):
        if isinstance(pointer, bool) or not isinstance(pointer, int):
            errors.append(FieldError(f"{field}[{k}]", f"expected a number, found {pointer!r}"))
        elif not 1 <= pointer <= n_diagnoses:
            errors.append(
                FieldError(
                    f"{field}[{k}]",
                    f"points to diagnosis {pointer}; the decision has {n_diagnoses}",
                )
            )
    if len(set(pointers)) != len(pointers):
        errors.append(FieldError(field, "a diagnosis is pointed to twice"))
    return errors


# ---------------------------------------------------------------------------
# Default drug lines


def default_drug_lines(
    supplies: Sequence[Mapping[str, Any]],
    rules: Rules,
    *,
    discarded: Mapping[str, int] | None = None,
) -> tuple[DrugLine, ...]:
    """The drug lines a refill yields from the evidence document's `supplies` (§7.13).

    One line per drug code, in supply order; a drug the code table does not know
    (`hcpcs` null) yields none (the coder picks J3490/J7799 and adds the NDC). Supply
    lines of one code are summed. `discarded` maps an HCPCS code to the units the coder
    says were discarded (billed with JW on a separate line); the container type comes
    from the drug code table, single-dose for a code it does not hold.
    """
    waste = dict(discarded or {})
    units_by_code: dict[str, int] = {}
    names: dict[str, list[str]] = {}
    for supply in supplies:
        hcpcs = supply.get("hcpcs")
        units = supply.get("units")
        if not isinstance(hcpcs, str) or isinstance(units, bool) or not isinstance(units, int):
            continue
        units_by_code[hcpcs] = units_by_code.get(hcpcs, 0) + units
        drug = supply.get("drug")
        if isinstance(drug, str) and drug not in names.setdefault(hcpcs, []):
            names[hcpcs].append(drug)
    lines: list[DrugLine] = []
    for hcpcs, units in units_by_code.items():
        code = rules.drug_by_hcpcs(hcpcs)
        lines.append(
            DrugLine(
                hcpcs=hcpcs,
                units=units,
                single_dose=True if code is None else code.single_dose,
                discarded_units=waste.get(hcpcs, 0),
                drug=", ".join(names.get(hcpcs, [])),
            )
        )
    return tuple(lines)


def drug_line(
    hcpcs: str,
    units: int,
    rules: Rules,
    *,
    discarded_units: int = 0,
    ndc: str | None = None,
    drug: str = "",
    diagnosis_pointers: tuple[int, ...] = (),
) -> DrugLine:
    """A drug line the coder enters, its container type looked up in the drug code table
    (single-dose for a code the table does not hold, §9.5).
    """
    code = rules.drug_by_hcpcs(hcpcs)
    return DrugLine(
        hcpcs=hcpcs,
        units=units,
        single_dose=True if code is None else code.single_dose,
        discarded_units=discarded_units,
        ndc=ndc,
        drug=drug or ("" if code is None else code.name),
        diagnosis_pointers=diagnosis_pointers,
    )


# ---------------------------------------------------------------------------
# The JSON a decision is stored and answered as (docs/web.md "Sign-off")


def decision_json(decision: Decision) -> dict[str, Any]:
    visit, *others = decision.procedures
    return {
        "procedure": visit.code,
        "modifiers": list(visit.modifiers),
        "em_codes": [
            {"code": p.code, "modifiers": list(p.modifiers), "units": p.units} for p in others
        ],
        "diagnoses": list(decision.diagnoses),
        "rendering_npi": decision.rendering_npi,
        "drugs": [
            {
                "hcpcs": d.hcpcs,
                "units": d.units,
                "discarded_units": d.discarded_units,
                "single_dose": d.single_dose,
                "modifiers": list(d.modifiers),
                "ndc": d.ndc,
                "drug": d.drug,
            }
            for d in decision.drugs
        ],
        "reason": decision.reason,
        "specialty_pharmacy_supplied": decision.specialty_pharmacy_supplied,
        "date_of_service": decision.date_of_service.isoformat(),
    }


def decision_from_json(
    session_id: str, patient_id: str | None, stored: Mapping[str, Any]
) -> Decision:
    procedures = [ProcedureLine(str(stored["procedure"]), tuple(stored.get("modifiers", ())))] + [
        ProcedureLine(str(p["code"]), tuple(p.get("modifiers", ())), int(p.get("units", 1)))
        for p in stored.get("em_codes", ())
    ]
    return Decision(
        session_id=session_id,
        date_of_service=date.fromisoformat(str(stored["date_of_service"])),
        procedures=tuple(procedures),
        diagnoses=tuple(stored.get("diagnoses", ())),
        rendering_npi=str(stored.get("rendering_npi", "")),
        drugs=tuple(
            DrugLine(
                hcpcs=str(d["hcpcs"]),
                units=int(d["units"]),
                single_dose=bool(d.get("single_dose", True)),
                discarded_units=int(d.get("discarded_units", 0)),
                ndc=d.get("ndc"),
                drug=str(d.get("drug", "")),
            )
            for d in stored.get("drugs", ())
        ),
        reason=stored.get("reason"),
        specialty_pharmacy_supplied=bool(stored.get("specialty_pharmacy_supplied", False)),
        patient_id=patient_id,
    )
