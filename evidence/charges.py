"""Charge lines of a signed-off decision, and their CSV form for practice-management import.

docs/coding-rules.md §9.6: one line per procedure code and one per drug code, plus a JW
line for the units discarded from a single-dose container (§9.5), each with the date of
service, units, modifiers, diagnosis pointers (1-based indexes into the decision's
diagnoses, at most four; the first four when the coder named none) and the rendering
NPI. Lines are numbered from 1 in this order: the procedures as the decision lists them,
then each drug line followed by its JW line.

`charges_csv` writes RFC 4180 CSV (CRLF line ends, quoting as needed) with the columns of
`CSV_COLUMNS`, always in that order and always with the header row.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Final

from evidence.decision import JW, MAX_POINTERS, Decision, ndc11


@dataclass(frozen=True, slots=True)
class ChargeLine:
    """One claim line (§9.6)."""

    session_id: str
    patient_id: str | None
    date_of_service: date
    line: int
    code: str
    units: int
    modifiers: tuple[str, ...]
    # 1-based indexes into `diagnoses`.
    diagnosis_pointers: tuple[int, ...]
    diagnoses: tuple[str, ...]
    rendering_npi: str
    # The 11-digit billing form (5-4-2), or None.
    ndc: str | None

    @property
    def pointed_diagnoses(self) -> tuple[str, ...]:
        """The diagnosis codes the line points to, in pointer order."""
        return tuple(self.diagnoses[p - 1] for p in self.diagnosis_pointers)


def _pointers(chosen: Sequence[int], n_diagnoses: int) -> tuple[int, ...]:
    if chosen:
        return tuple(chosen)
    return tuple(range(1, min(n_diagnoses, MAX_POINTERS) + 1))


def charge_lines(decision: Decision) -> tuple[ChargeLine, ...]:
    """The charge lines of a signed-off decision, numbered from 1 (§9.6).

    The decision is taken as validated (`evidence.decision.validate_decision`).
    """
    n = len(decision.diagnoses)
    lines: list[ChargeLine] = []

    def add(
        code: str,
        units: int,
        modifiers: tuple[str, ...],
        pointers: Sequence[int],
        ndc: str | None,
    ) -> None:
        lines.append(
            ChargeLine(
                session_id=decision.session_id,
                patient_id=decision.patient_id,
                date_of_service=decision.date_of_service,
                line=len(lines) + 1,
                code=code,
                units=units,
                modifiers=modifiers,
                diagnosis_pointers=_pointers(pointers, n),
                diagnoses=decision.diagnoses,
                rendering_npi=decision.rendering_npi,
                ndc=None if ndc is None else ndc11(ndc),
            )
        )

    for procedure in decision.procedures:
        add(
            procedure.code, procedure.units, procedure.modifiers, procedure.diagnosis_pointers, None
        )
    for drug in decision.drugs:
        add(drug.hcpcs, drug.units, drug.modifiers, drug.diagnosis_pointers, drug.ndc)
        if drug.waste_units > 0:
            add(drug.hcpcs, drug.waste_units, (JW,), drug.diagnosis_pointers, drug.ndc)
    return tuple(lines)


# The CSV columns, in order. `modifier_1`-`modifier_4` and `diagnosis_1`-`diagnosis_4`
# are empty when the line has fewer; `diagnosis_pointers` joins the 1-based pointers
# with commas ("1,2"); `ndc` is the 11-digit form or empty.
CSV_COLUMNS: Final = (
    "date_of_service",
    "patient_id",
    "session_id",
    "line",
    "code",
    "modifier_1",
    "modifier_2",
    "modifier_3",
    "modifier_4",
    "units",
    "diagnosis_pointers",
    "diagnosis_1",
    "diagnosis_2",
    "diagnosis_3",
    "diagnosis_4",
    "rendering_npi",
    "ndc",
)

# A cell a spreadsheet would read as a formula (OWASP "CSV injection"); only the free
# text patient ID can start so, every other cell is a validated code or number.
_FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")


def _cell(text: str) -> str:
    return "'" + text if text.startswith(_FORMULA_START) else text


def _padded(values: Sequence[str], width: int) -> list[str]:
    return [*values, *([""] * (width - len(values)))][:width]


def charges_csv(rows: Iterable[ChargeLine]) -> str:
    """The charge lines as RFC 4180 CSV with the `CSV_COLUMNS` header."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow(
            [
                row.date_of_service.isoformat(),
                _cell(row.patient_id or ""),
                _cell(row.session_id),
                str(row.line),
                row.code,
                *_padded(row.modifiers, 4),
                str(row.units),
                ",".join(str(p) for p in row.diagnosis_pointers),
                *_padded(row.pointed_diagnoses, 4),
                row.rendering_npi,
                row.ndc or "",
            ]
        )
    return out.getvalue()
