"""The rules tables and their extension from a clinic folder (evidence/rules.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from evidence import RulesError, default_rules, load_rules
from tests.evidence.builders import codes_of, derive, refill_visit


def test_builtin_tables() -> None:
    rules = load_rules()
    assert [p.name for p in rules.profiles] == ["rate-dose", "rate-dose-alarms", "any-setting"]
    assert rules.default_profile == "rate-dose"
    assert rules.profile("rate-dose").categories == ("prescription", "ptm")
    assert rules.profile("rate-dose-alarms").categories == ("prescription", "ptm", "alarms")
    assert rules.profile("any-setting").categories == (
        "prescription",
        "ptm",
        "alarms",
        "reservoir",
        "schedule",
    )
    assert all(p.held_by and p.description for p in rules.profiles)
    assert rules.qhp_roles == ("physician", "qhp")
    assert rules.thresholds.for_capacity(20000) == 1000
    assert rules.thresholds.for_capacity(40000) == 2000
    assert rules.thresholds.for_capacity(None) == 2000
    codes = {d.name: (d.hcpcs, d.unit_dose_ug) for d in rules.drugs}
    assert codes == {
        "morphine": ("J2274", 10000),
        "hydromorphone": ("J1170", 4000),
        "baclofen": ("J0475", 10000),
        "ziconotide": ("J2278", 1),
        "clonidine": ("J0735", 1000),
        "fentanyl": ("J3010", 100),
    }
    drug = rules.drug_for(" infumorph ")
    assert drug is not None and drug.hcpcs == "J2274"
    assert rules.drug_for("Bupivacaine") is None


def test_version_names_the_tables() -> None:
    rules = load_rules()
    assert re.fullmatch(r"evidence-rules/2\+[0-9a-f]{12}", rules.version)
    assert load_rules().version == rules.version
    assert default_rules().version == rules.version


def test_payer_profile_adds_a_fourth_code_entry(tmp_path: Path) -> None:
    (tmp_path / "profiles.toml").write_text(
        "[[profile]]\n"
        'name = "payer-x"\n'
        'categories = ["prescription", "ptm", "reservoir"]\n'
        'held_by = "Payer X policy 12"\n'
        'description = "reservoir volume counts, dates do not"\n',
        "utf-8",
    )
    rules = load_rules(tmp_path)
    assert [p.name for p in rules.profiles][-1] == "payer-x"
    assert rules.default_profile == "rate-dose"
    document = derive(refill_visit(role="nurse"), rules=rules)
    assert codes_of(document) == {
        "rate-dose": "95990",
        "rate-dose-alarms": "95990",
        "any-setting": "62369",
        "payer-x": "62369",
    }
    assert document["rules_version"] == rules.version != load_rules().version


@pytest.mark.parametrize(
    ("file", "text"),
    [
        ("profiles.toml", '[[profile]]\nname = "p"\ncategories = ["ptm"]\n'),
        ("profiles.toml", 'default = "any-setting"\n'),
        ("roles.toml", 'qhp_roles = ["physician", "qhp", "nurse"]\n'),
        ("thresholds.toml", "default_ul = 1500\n"),
        ("thresholds.toml", "[[capacity]]\ncapacity_ul = 40000\nthreshold_ul = 2500\n"),
        ("drugs.toml", '[[drug]]\nname = "baclofen"\naliases = ["Ozobax"]\n'),
        ("drugs.toml", '[[drug]]\nname = "bupivacaine"\nhcpcs = "J3490"\nunit_dose_ug = 1000\n'),
    ],
)
def test_version_changes_when_a_table_changes(tmp_path: Path, file: str, text: str) -> None:
    (tmp_path / file).write_text(text, "utf-8")
    assert load_rules(tmp_path).version != load_rules().version


def test_version_unchanged_by_formatting_or_role_order(tmp_path: Path) -> None:
    (tmp_path / "roles.toml").write_text('# ours\nqhp_roles = [ "qhp",  "physician" ]\n', "utf-8")
    assert load_rules(tmp_path).version == load_rules().version


def test_roles_and_thresholds_override(tmp_path: Path) -> None:
    (tmp_path / "roles.toml").write_text('qhp_roles = ["physician"]\n', "utf-8")
    (tmp_path / "thresholds.toml").write_text(
        "default_ul = 1500\n[[capacity]]\ncapacity_ul = 40000\nthreshold_ul = 2500\n", "utf-8"
    )
    rules = load_rules(tmp_path)
    assert rules.qhp_roles == ("physician",)
    assert not rules.is_qhp("qhp")
    assert rules.thresholds.for_capacity(20000) == 1000  # kept
    assert rules.thresholds.for_capacity(40000) == 2500
    assert rules.thresholds.for_capacity(10000) == 1500


def test_drug_aliases_are_added(tmp_path: Path) -> None:
    (tmp_path / "drugs.toml").write_text(
        '[[drug]]\nname = "Baclofen"\naliases = ["Ozobax", "lioresal"]\n', "utf-8"
    )
    rules = load_rules(tmp_path)
    baclofen = rules.drug_for("ozobax")
    assert baclofen is not None and baclofen.hcpcs == "J0475"
    assert baclofen.aliases.count("Lioresal") == 1
    assert "Ozobax" in baclofen.aliases


def test_missing_extra_dir_files_change_nothing(tmp_path: Path) -> None:
    (tmp_path / "unrelated.toml").write_text("x = 1\n", "utf-8")
    assert load_rules(tmp_path) == load_rules()


@pytest.mark.parametrize(
    ("file", "text", "key", "message"),
    [
        ("profiles.toml", "[[profile]\n", "", "not valid TOML"),
        (
            "profiles.toml",
            '[[profile]]\nname = "x"\ncategories = ["prescription", "dose"]\n',
            "profile[0].categories[1]",
            "unknown category 'dose'",
        ),
        (
            "profiles.toml",
            '[[profile]]\nname = "x"\ncategories = ["device"]\n',
            "profile[0].categories[0]",
            "device settings never count",
        ),
        (
            "profiles.toml",
            '[[profile]]\nname = "rate-dose"\ncategories = ["ptm"]\n',
            "profile[0].name",
            "already defined",
        ),
        ("profiles.toml", '[[profile]]\ncategories = ["ptm"]\n', "profile[0].name", "missing"),
        (
            "profiles.toml",
            '[[profile]]\nname = "x"\ncategories = ["ptm"]\ncategory = "ptm"\n',
            "profile[0].category",
            "unknown key",
        ),
        ("profiles.toml", 'default = "payer-z"\n', "default", "names no defined profile"),
        (
            "roles.toml",
            'qhp_roles = ["physician", "PA"]\n',
            "qhp_roles[1]",
            "unknown operator role",
        ),
        ("roles.toml", 'qhp_roles = "physician"\n', "qhp_roles", "expected a list of strings"),
        ("roles.toml", "roles = []\n", "roles", "unknown key"),
        ("thresholds.toml", 'default_ul = "2 mL"\n', "default_ul", "expected an integer"),
        (
            "thresholds.toml",
            "default_ul = 1.5\n",
            "default_ul",
            "expected an integer, found a float",
        ),
        (
            "thresholds.toml",
            "[[capacity]]\ncapacity_ul = 20000\nthreshold_ul = 0\n",
            "capacity[0].threshold_ul",
            "greater than 0",
        ),
        (
            "drugs.toml",
            '[[drug]]\nname = "sufentanil"\nhcpcs = "J3490"\n',
            "drug[0].unit_dose_ug",
            "missing",
        ),
        (
            "drugs.toml",
            '[[drug]]\nname = "morphine"\nunit_dose_ug = 1000\n',
            "drug[0].unit_dose_ug",
            "may only add aliases",
        ),
        (
            "drugs.toml",
            '[[drug]]\nname = "hydromorphone"\naliases = ["Infumorph"]\n',
            "drug[0].aliases[0]",
            "'Infumorph' already names drug 'morphine'",
        ),
        (
            "drugs.toml",
            '[[drug]]\nname = "prialt"\nhcpcs = "J3490"\nunit_dose_ug = 1\n',
            "drug[0].name",
            "already names drug 'ziconotide'",
        ),
    ],
)
def test_errors_name_file_and_key(
    tmp_path: Path, file: str, text: str, key: str, message: str
) -> None:
    path = tmp_path / file
    path.write_text(text, "utf-8")
    with pytest.raises(RulesError) as caught:
        load_rules(tmp_path)
    error = caught.value
    assert error.file == str(path)
    assert error.key == key
    assert message in str(error)
    assert str(error).startswith(f"{path}: {key}: " if key else f"{path}: ")
