"""The coder's decision: validation with field-named errors, default drug lines (§9.2-§9.5)."""

from __future__ import annotations

import dataclasses
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from evidence import load_rules
from evidence.decision import (
    Decision,
    DrugLine,
    FieldError,
    ProcedureLine,
    default_drug_lines,
    diagnosis_valid,
    drug_line,
    ndc11,
    validate_decision,
)
from tests.evidence.builders import base_state, derive, make_session, refill

DOS = date(2026, 3, 2)
NPI = "1234567893"


def decision(**changes: object) -> Decision:
    base = Decision(
        session_id="S-1",
        date_of_service=DOS,
        procedures=(ProcedureLine("95991"),),
        diagnoses=("G89.4", "Z45.1"),
        rendering_npi=NPI,
        drugs=(DrugLine("J2274", 37),),
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def fields(errors: list[FieldError]) -> list[str]:
    return [e.field for e in errors]


def test_a_complete_decision_has_no_errors() -> None:
    assert validate_decision(decision(), applicable="95991") == []


@pytest.mark.parametrize(
    "code", ["G89.4", "G89.29", "G89.3", "G80.1", "R25.2", "Z45.1", "G89", "S06.0X1A", "C7A.0"]
)
def test_diagnosis_format_accepts(code: str) -> None:
    assert diagnosis_valid(code)


@pytest.mark.parametrize(
    "code",
    [
        "",
        "g89.4",  # capitals
        "G8",  # three characters at least
        "GG9.4",  # the second is a digit
        "1G9.4",  # the first is a letter
        "G89.",  # a dot needs one to four characters after it
        "G89.12345",  # at most four after the dot
        "G894",  # no dot: exactly three characters
        "G89.4 ",
        "G89-4",
    ],
)
def test_diagnosis_format_refuses(code: str) -> None:
    assert not diagnosis_valid(code)
    errors = validate_decision(decision(diagnoses=("G89.4", code)))
    assert fields(errors) == ["diagnoses[1]"]
    assert "ICD-10-CM" in errors[0].message


def test_diagnoses_required_unique_and_at_most_twelve() -> None:
    assert fields(validate_decision(decision(diagnoses=()))) == ["diagnoses"]
    assert fields(validate_decision(decision(diagnoses=("G89.4", "Z45.1", "G89.4")))) == [
        "diagnoses[2]"
    ]
    twelve = tuple(f"G89.{n}" for n in range(12))
    assert validate_decision(decision(diagnoses=twelve)) == []
    assert fields(validate_decision(decision(diagnoses=(*twelve, "Z45.1")))) == ["diagnoses"]


def test_npi_is_checked() -> None:
    errors = validate_decision(decision(rendering_npi="1234567890"))
    assert fields(errors) == ["rendering_npi"]
    assert "Luhn" in errors[0].message


def test_procedure_codes() -> None:
    assert fields(validate_decision(decision(procedures=()))) == ["procedures"]
    bad = (ProcedureLine("9599"), ProcedureLine("J2274"))
    assert fields(validate_decision(decision(procedures=bad))) == [
        "procedures[0].code",
        "procedures[1].code",
    ]
    twice = (ProcedureLine("95991"), ProcedureLine("95991"))
    assert fields(validate_decision(decision(procedures=twice))) == ["procedures[1].code"]
    assert fields(validate_decision(decision(procedures=(ProcedureLine("95991", units=0),)))) == [
        "procedures[0].units"
    ]


def test_modifiers() -> None:
    em = ProcedureLine("99213", modifiers=("25",))
    assert validate_decision(decision(procedures=(ProcedureLine("95991"), em))) == []
    cases = {
        ("2",): "procedures[1].modifiers[0]",
        ("25", "25"): "procedures[1].modifiers",
        ("25", "59", "XU", "76", "77"): "procedures[1].modifiers",
        ("jw",): "procedures[1].modifiers[0]",
        ("JW",): "procedures[1].modifiers",
    }
    for modifiers, field in cases.items():
        line = ProcedureLine("99213", modifiers=modifiers)
        errors = validate_decision(decision(procedures=(ProcedureLine("95991"), line)))
        assert fields(errors) == [field], modifiers


def test_diagnosis_pointers() -> None:
    ok = ProcedureLine("95991", diagnosis_pointers=(2, 1))
    assert validate_decision(decision(procedures=(ok,))) == []
    out_of_range = ProcedureLine("95991", diagnosis_pointers=(1, 3))
    assert fields(validate_decision(decision(procedures=(out_of_range,)))) == [
        "procedures[0].diagnosis_pointers[1]"
    ]
    zero = DrugLine("J2274", 37, diagnosis_pointers=(0,))
    assert fields(validate_decision(decision(drugs=(zero,)))) == ["drugs[0].diagnosis_pointers[0]"]
    five = ProcedureLine("95991", diagnosis_pointers=(1, 2, 3, 4, 5))
    diagnoses = ("G89.4", "Z45.1", "G89.29", "G89.3", "R25.2")
    assert fields(validate_decision(decision(procedures=(five,), diagnoses=diagnoses))) == [
        "procedures[0].diagnosis_pointers"
    ]


def test_drug_lines() -> None:
    cases: dict[DrugLine, str] = {
        DrugLine("2274", 37): "drugs[0].hcpcs",
        DrugLine("J2274", 0): "drugs[0].units",
        DrugLine("J2274", 37, discarded_units=-1): "drugs[0].discarded_units",
        DrugLine("J0735", 3, single_dose=False, discarded_units=1): "drugs[0].discarded_units",
        DrugLine("J2274", 37, ndc="0409-1234"): "drugs[0].ndc",
    }
    for line, field in cases.items():
        assert fields(validate_decision(decision(drugs=(line,)))) == [field], line
    twice = (DrugLine("J2274", 37), DrugLine("J2274", 2))
    assert fields(validate_decision(decision(drugs=twice))) == ["drugs[1].hcpcs"]


def test_specialty_pharmacy_bills_no_drug_line() -> None:
    assert validate_decision(decision(drugs=(), specialty_pharmacy_supplied=True)) == []
    assert fields(validate_decision(decision(specialty_pharmacy_supplied=True))) == ["drugs"]


def test_override_needs_a_reason() -> None:
    errors = validate_decision(decision(), applicable="95990")
    assert fields(errors) == ["reason"]
    assert "95990" in errors[0].message
    assert validate_decision(decision(reason="   "), applicable="95990") != []
    assert (
        validate_decision(decision(reason="physician refilled: pocket fill"), applicable="95990")
        == []
    )
    # Accepting the applicable code needs no reason.
    assert validate_decision(decision(), applicable="95991") == []
    assert fields(validate_decision(decision(reason=""))) == ["reason"]


def test_errors_accumulate_in_field_order() -> None:
    bad = decision(
        procedures=(ProcedureLine("x"),),
        diagnoses=("bad",),
        rendering_npi="1",
        drugs=(DrugLine("J2274", 0),),
    )
    assert fields(validate_decision(bad)) == [
        "procedures[0].code",
        "diagnoses[0]",
        "rendering_npi",
        "drugs[0].units",
    ]


@pytest.mark.parametrize(
    ("text", "billing"),
    [
        ("00409123401", "00409123401"),
        ("00409-1234-01", "00409123401"),
        ("0409-1234-01", "00409123401"),
        ("00409-123-01", "00409012301"),
        ("00409-1234-1", "00409123401"),
        ("0409123401", None),  # ten digits without hyphens are ambiguous
        ("00409-1234-001", None),
        ("", None),
    ],
)
def test_ndc_billing_form(text: str, billing: str | None) -> None:
    assert ndc11(text) == billing


# ---------------------------------------------------------------------------
# Default drug lines from the evidence


def _supplies(drug: str, concentration: int, added_ul: int) -> list[dict[str, object]]:
    session = make_session(
        interrogated=base_state(drug1_name=drug, drug1_concentration=concentration),
        events=[refill(added=added_ul)],
    )
    supplies: list[dict[str, object]] = derive(session)["supplies"]
    return supplies


def test_ziconotide_units_round_up_from_the_exact_amount() -> None:
    # 18.29 mL x 25 ug/mL = 457.25 ug -> 458 units of J2278 (per 1 mcg).
    (line,) = default_drug_lines(_supplies("Prialt", 25, 18290), load_rules())
    assert (line.hcpcs, line.units) == ("J2278", 458)
    assert line.modifiers == ("JZ",)
    assert line.waste_units == 0
    assert line.drug == "Prialt"


def test_discarded_units_take_jw_instead_of_jz() -> None:
    (line,) = default_drug_lines(
        _supplies("morphine", 10000, 36900), load_rules(), discarded={"J2274": 3}
    )
    assert (line.hcpcs, line.units, line.discarded_units) == ("J2274", 37, 3)
    assert line.modifiers == ()
    assert line.waste_units == 3


def test_multi_dose_takes_neither(tmp_path: Path) -> None:
    (tmp_path / "drugs.toml").write_text(
        '[[drug]]\nname = "morphine"\nsingle_dose = false\n', "utf-8"
    )
    (line,) = default_drug_lines(_supplies("morphine", 10000, 36900), load_rules(tmp_path))
    assert line.single_dose is False
    assert line.modifiers == ()
    assert line.waste_units == 0


def test_unmatched_drug_yields_no_line_and_same_code_lines_sum() -> None:
    supplies: list[dict[str, Any]] = [
        {"hcpcs": None, "units": None, "drug": "bupivacaine", "amount_ug": 5000},
        {"hcpcs": "J2274", "units": 20, "drug": "Morphine", "amount_ug": 200000},
        {"hcpcs": "J2274", "units": 3, "drug": "Infumorph", "amount_ug": 25000},
    ]
    (line,) = default_drug_lines(supplies, load_rules())
    assert (line.hcpcs, line.units, line.drug) == ("J2274", 23, "Morphine, Infumorph")


def test_no_refill_no_drug_lines() -> None:
    session = make_session(interrogated=base_state())
    assert default_drug_lines(derive(session)["supplies"], load_rules()) == ()


def test_drug_line_looks_up_the_container(tmp_path: Path) -> None:
    (tmp_path / "drugs.toml").write_text(
        '[[drug]]\nname = "clonidine"\nsingle_dose = false\n', "utf-8"
    )
    rules = load_rules(tmp_path)
    clonidine = drug_line("J0735", 2, rules)
    assert (clonidine.single_dose, clonidine.drug, clonidine.modifiers) == (False, "clonidine", ())
    compounded = drug_line("J3490", 1, rules, ndc="00409-1234-01", drug="bupivacaine")
    assert (compounded.single_dose, compounded.modifiers) == (True, ("JZ",))
    assert validate_decision(decision(drugs=(clonidine, compounded))) == []
