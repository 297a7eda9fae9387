"""The container type of a drug code (`single_dose` in drugs.toml, docs/coding-rules.md §9.5)."""

from __future__ import annotations

from pathlib import Path

import pytest

from evidence import RulesError, load_rules


def test_builtin_drugs_are_single_dose() -> None:
    rules = load_rules()
    assert {d.name: d.single_dose for d in rules.drugs} == {
        "morphine": True,
        "hydromorphone": True,
        "baclofen": True,
        "ziconotide": True,
        "clonidine": True,
        "fentanyl": True,
    }


def test_clinic_marks_a_builtin_drug_multi_dose(tmp_path: Path) -> None:
    (tmp_path / "drugs.toml").write_text(
        '[[drug]]\nname = "Clonidine"\nsingle_dose = false\n', "utf-8"
    )
    rules = load_rules(tmp_path)
    clonidine = rules.drug_for("clonidine")
    assert clonidine is not None and clonidine.single_dose is False
    assert clonidine.hcpcs == "J0735"
    assert rules.version != load_rules().version
    morphine = rules.drug_for("morphine")
    assert morphine is not None and morphine.single_dose is True


def test_added_drug_defaults_to_single_dose(tmp_path: Path) -> None:
    (tmp_path / "drugs.toml").write_text(
        '[[drug]]\nname = "bupivacaine"\nhcpcs = "J3490"\nunit_dose_ug = 1000\n'
        '[[drug]]\nname = "sufentanil"\nhcpcs = "J3590"\nunit_dose_ug = 1\nsingle_dose = false\n',
        "utf-8",
    )
    rules = load_rules(tmp_path)
    bupivacaine = rules.drug_for("Bupivacaine")
    sufentanil = rules.drug_for("sufentanil")
    assert bupivacaine is not None and bupivacaine.single_dose is True
    assert sufentanil is not None and sufentanil.single_dose is False


def test_stating_the_default_keeps_the_version(tmp_path: Path) -> None:
    (tmp_path / "drugs.toml").write_text(
        '[[drug]]\nname = "morphine"\nsingle_dose = true\n', "utf-8"
    )
    assert load_rules(tmp_path).version == load_rules().version


def test_drug_by_hcpcs() -> None:
    rules = load_rules()
    drug = rules.drug_by_hcpcs(" j2278 ")
    assert drug is not None and drug.name == "ziconotide"
    assert rules.drug_by_hcpcs("J3490") is None


def test_single_dose_must_be_a_boolean(tmp_path: Path) -> None:
    path = tmp_path / "drugs.toml"
    path.write_text('[[drug]]\nname = "morphine"\nsingle_dose = "yes"\n', "utf-8")
    with pytest.raises(RulesError) as caught:
        load_rules(tmp_path)
    assert caught.value.key == "drug[0].single_dose"
    assert "expected true or false" in str(caught.value)
