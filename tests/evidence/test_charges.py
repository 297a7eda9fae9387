"""Charge lines of a decision and their CSV export (docs/coding-rules.md §9.6)."""

from __future__ import annotations

import csv
import io
from datetime import date

from evidence.charges import CSV_COLUMNS, ChargeLine, charge_lines, charges_csv
from evidence.decision import Decision, DrugLine, ProcedureLine

DOS = date(2026, 3, 2)
NPI = "1234567893"


def visit(**kw: object) -> Decision:
    fields: dict[str, object] = {
        "session_id": "S-1",
        "date_of_service": DOS,
        "procedures": (ProcedureLine("95991"), ProcedureLine("99213", ("25",))),
        "diagnoses": ("G89.4", "Z45.1", "G89.29", "G89.3", "R25.2"),
        "rendering_npi": NPI,
        "drugs": (
            DrugLine("J2274", 37, discarded_units=3, ndc="0409-1234-01"),
            DrugLine("J2278", 458),
            DrugLine("J0735", 2, single_dose=False),
        ),
        "patient_id": "MRN-0042",
    }
    fields.update(kw)
    return Decision(**fields)  # type: ignore[arg-type]


def rows(decision: Decision) -> list[tuple[int, str, int, tuple[str, ...]]]:
    return [(c.line, c.code, c.units, c.modifiers) for c in charge_lines(decision)]


def test_one_line_per_code_plus_the_jw_line() -> None:
    assert rows(visit()) == [
        (1, "95991", 1, ()),
        (2, "99213", 1, ("25",)),
        (3, "J2274", 37, ()),  # something discarded: no JZ
        (4, "J2274", 3, ("JW",)),
        (5, "J2278", 458, ("JZ",)),  # nothing discarded, single-dose
        (6, "J0735", 2, ()),  # multi-dose: neither
    ]


def test_every_line_carries_the_claim_facts() -> None:
    lines = charge_lines(visit())
    for line in lines:
        assert (line.session_id, line.patient_id, line.date_of_service) == ("S-1", "MRN-0042", DOS)
        assert line.rendering_npi == NPI
        # No pointers chosen: the first four diagnoses, never more.
        assert line.diagnosis_pointers == (1, 2, 3, 4)
        assert line.pointed_diagnoses == ("G89.4", "Z45.1", "G89.29", "G89.3")
    assert [line.ndc for line in lines] == [None, None, "00409123401", "00409123401", None, None]


def test_chosen_pointers_and_few_diagnoses() -> None:
    decision = visit(
        procedures=(ProcedureLine("95991", diagnosis_pointers=(5, 2)),),
        drugs=(DrugLine("J2274", 37, discarded_units=1, diagnosis_pointers=(1,)),),
    )
    lines = charge_lines(decision)
    assert [(c.code, c.diagnosis_pointers, c.pointed_diagnoses) for c in lines] == [
        ("95991", (5, 2), ("R25.2", "Z45.1")),
        ("J2274", (1,), ("G89.4",)),
        ("J2274", (1,), ("G89.4",)),
    ]
    (line,) = charge_lines(
        visit(diagnoses=("Z45.1",), drugs=(), procedures=(ProcedureLine("62367"),))
    )
    assert line.diagnosis_pointers == (1,)


def test_specialty_pharmacy_visit_has_only_procedure_lines() -> None:
    decision = visit(drugs=(), specialty_pharmacy_supplied=True)
    assert [c.code for c in charge_lines(decision)] == ["95991", "99213"]


def test_csv_columns_and_rows() -> None:
    text = charges_csv(charge_lines(visit()))
    assert text.startswith(",".join(CSV_COLUMNS) + "\r\n")
    assert text.endswith("\r\n") and "\n" not in text.replace("\r\n", "")
    parsed = list(csv.DictReader(io.StringIO(text, newline="")))
    assert tuple(parsed[0]) == CSV_COLUMNS
    assert len(parsed) == 6
    assert parsed[1] == {
        "date_of_service": "2026-03-02",
        "patient_id": "MRN-0042",
        "session_id": "S-1",
        "line": "2",
        "code": "99213",
        "modifier_1": "25",
        "modifier_2": "",
        "modifier_3": "",
        "modifier_4": "",
        "units": "1",
        "diagnosis_pointers": "1,2,3,4",
        "diagnosis_1": "G89.4",
        "diagnosis_2": "Z45.1",
        "diagnosis_3": "G89.29",
        "diagnosis_4": "G89.3",
        "rendering_npi": NPI,
        "ndc": "",
    }
    assert (parsed[3]["code"], parsed[3]["modifier_1"], parsed[3]["units"], parsed[3]["ndc"]) == (
        "J2274",
        "JW",
        "3",
        "00409123401",
    )
    # The pointer list holds a comma, so RFC 4180 quotes it.
    assert '"1,2,3,4"' in text


def test_csv_of_nothing_is_the_header() -> None:
    assert charges_csv([]) == ",".join(CSV_COLUMNS) + "\r\n"


def test_csv_quotes_and_defuses_free_text() -> None:
    line = ChargeLine(
        session_id='S "1", left',
        patient_id="=HYPERLINK(1)",
        date_of_service=DOS,
        line=1,
        code="95991",
        units=1,
        modifiers=(),
        diagnosis_pointers=(1,),
        diagnoses=("G89.4",),
        rendering_npi=NPI,
        ndc=None,
    )
    (parsed,) = list(csv.DictReader(io.StringIO(charges_csv([line]), newline="")))
    assert parsed["session_id"] == 'S "1", left'
    assert parsed["patient_id"] == "'=HYPERLINK(1)"
    assert parsed["diagnosis_pointers"] == "1"
    assert parsed["diagnosis_2"] == ""


def test_several_decisions_export_in_order() -> None:
    first = charge_lines(visit(drugs=()))
    second = charge_lines(
        visit(session_id="S-2", patient_id=None, procedures=(ProcedureLine("62367"),), drugs=())
    )
    parsed = list(csv.DictReader(io.StringIO(charges_csv([*first, *second]), newline="")))
    assert [(r["session_id"], r["line"], r["code"], r["patient_id"]) for r in parsed] == [
        ("S-1", "1", "95991", "MRN-0042"),
        ("S-1", "2", "99213", "MRN-0042"),
        ("S-2", "1", "62367", ""),
    ]
