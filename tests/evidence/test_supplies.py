"""Drug supply lines (docs/coding-rules.md §6, §7.13)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from evidence import load_rules
from parsers.params import ParamValue
from tests.evidence.builders import base_state, derive, make_session, refill


def _supplies(
    added: int | None,
    interrogated: Mapping[str, ParamValue] | None = None,
    programmed: Mapping[str, ParamValue] | None = None,
    rules_dir: Path | None = None,
) -> list[dict[str, Any]]:
    """The supply lines of a session with one REFILL adding `added` uL (None: no REFILL)."""
    session = make_session(
        interrogated=interrogated or base_state(),
        programmed=programmed,
        events=[refill(added=added)] if added is not None else [],
    )
    rules = None if rules_dir is None else load_rules(rules_dir)
    lines: list[dict[str, Any]] = derive(session, rules=rules)["supplies"]
    return lines


def test_morphine_units_round_up() -> None:
    # 36900 uL x 10000 ug/mL = 369000 ug = 36.9 x 10 mg -> 37 units of J2274.
    assert _supplies(36900) == [
        {"hcpcs": "J2274", "units": 37, "drug": "Morphine", "amount_ug": 369000}
    ]


def test_exact_multiple_is_not_rounded_up() -> None:
    assert _supplies(40000)[0]["units"] == 40


@pytest.mark.parametrize(
    ("name", "hcpcs"),
    [
        ("Infumorph", "J2274"),
        ("  DURAMORPH ", "J2274"),
        ("morphine sulfate", "J2274"),
        ("Lioresal", "J0475"),
        ("gablofen", "J0475"),
        ("Prialt", "J2278"),
        ("Hydromorphone", "J1170"),
        ("Clonidine", "J0735"),
        ("FENTANYL", "J3010"),
    ],
)
def test_names_and_aliases_match_trimmed_case_insensitive(name: str, hcpcs: str) -> None:
    (line,) = _supplies(10000, base_state(drug1_name=name))
    assert line["hcpcs"] == hcpcs
    assert line["drug"] == name.strip()


def test_unit_doses() -> None:
    def units(name: str, concentration: int, added: int) -> Any:
        state = base_state(drug1_name=name, drug1_concentration=concentration)
        return _supplies(added, state)[0]["units"]

    assert units("hydromorphone", 10000, 1000) == 3  # 10 mg / 4 mg = 2.5 -> 3
    assert units("ziconotide", 100, 20000) == 2000  # 2000 mcg / 1 mcg
    assert units("clonidine", 1500, 1000) == 2  # 1.5 mg / 1 mg -> 2
    assert units("fentanyl", 1500, 333) == 5  # 499.5 ug -> 500 ug / 0.1 mg
    assert units("baclofen", 2000, 20000) == 4  # 40 mg / 10 mg


def test_units_come_from_the_exact_amount_not_the_rounded_one() -> None:
    # 18.29 mL of 25 ug/mL = 457.25 ug: printed 457, billed 458 units of 1 mcg (§7.13).
    (line,) = _supplies(18290, base_state(drug1_name="ziconotide", drug1_concentration=25))
    assert (line["amount_ug"], line["units"]) == (457, 458)
    # 100.005 ug prints as 100 but is more than one 0.1 mg unit: two units.
    (below,) = _supplies(20001, base_state(drug1_name="fentanyl", drug1_concentration=5))
    assert (below["amount_ug"], below["units"]) == (100, 2)


def test_fractional_amount_rounds_to_nearest_ug() -> None:
    (line,) = _supplies(333, base_state(drug1_name="fentanyl", drug1_concentration=1500))
    assert line["amount_ug"] == 500  # 499.5 ug, halves up


def test_unmatched_drug_gets_a_line_without_code_or_units() -> None:
    assert _supplies(20000, base_state(drug1_name="Bupivacaine", drug1_concentration=5000)) == [
        {"hcpcs": None, "units": None, "drug": "Bupivacaine", "amount_ug": 100000}
    ]


def test_no_refill_no_lines() -> None:
    assert _supplies(None) == []
    # A REFILL that adds nothing is not a refill (§7.8).
    assert _supplies(0) == []


def test_concentration_of_the_new_solution_is_used() -> None:
    lines = _supplies(
        20000,
        programmed={"drug1_concentration": 25000, "infusion_rate": 80},
    )
    assert lines == [{"hcpcs": "J2274", "units": 50, "drug": "Morphine", "amount_ug": 500000}]


def test_one_line_per_named_drug() -> None:
    state = base_state(drug2_name="Clonidine", drug2_concentration=500, drug2_daily_dose=100)
    assert _supplies(20000, state) == [
        {"hcpcs": "J2274", "units": 20, "drug": "Morphine", "amount_ug": 200000},
        {"hcpcs": "J0735", "units": 10, "drug": "Clonidine", "amount_ug": 10000},
    ]


def test_empty_drug_name_gets_no_line_and_unknown_concentration_no_units() -> None:
    state = base_state(drug2_name="  ")
    assert len(_supplies(20000, state)) == 1
    no_conc = base_state()
    del no_conc["drug1_concentration"]
    assert _supplies(20000, no_conc) == [
        {"hcpcs": "J2274", "units": None, "drug": "Morphine", "amount_ug": None}
    ]


def test_clinic_alias_and_drug_from_rules_folder(tmp_path: Path) -> None:
    (tmp_path / "drugs.toml").write_text(
        "[[drug]]\n"
        'name = "morphine"\n'
        'aliases = ["MS PF"]\n'
        "\n"
        "[[drug]]\n"
        'name = "sufentanil"\n'
        'hcpcs = "J3490"\n'
        "unit_dose_ug = 1\n",
        "utf-8",
    )
    assert (
        _supplies(1000, base_state(drug1_name="ms pf"), rules_dir=tmp_path)[0]["hcpcs"] == "J2274"
    )
    line = _supplies(
        1000, base_state(drug1_name="Sufentanil", drug1_concentration=50), rules_dir=tmp_path
    )[0]
    assert (line["hcpcs"], line["units"]) == ("J3490", 50)


def test_units_come_from_the_exact_amount() -> None:
    # 18.29 mL x 25 ug/mL = 457.25 ug: printed as 457 ug, billed as 458 units of the
    # per-1-mcg code, never short of the drug injected.
    state = base_state(drug1_name="ziconotide", drug1_concentration=25)
    (line,) = _supplies(18290, state)
    assert line == {"hcpcs": "J2278", "units": 458, "drug": "ziconotide", "amount_ug": 457}
