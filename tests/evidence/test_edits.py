"""Billing edits (docs/coding-rules.md §9.4): every rule, its dates, its severity, its file."""

from __future__ import annotations

import dataclasses
import re
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from evidence import RulesError
from evidence.decision import Decision, DrugLine, ProcedureLine
from evidence.edits import (
    BLOCKING,
    WARNING,
    EditResult,
    Edits,
    blocking,
    check,
    default_edits,
    load_edits,
)

DOS = date(2026, 3, 2)
PUMP_CODES = ("62367", "62368", "62369", "62370", "95990", "95991")
REFILL_CODES = ("62369", "62370", "95990", "95991")
EM_CODES = ("99202", "99203", "99204", "99205", "99211", "99212", "99213", "99214", "99215")
EVIDENCE: dict[str, Any] = {
    "supplies": [{"hcpcs": "J2274", "units": 37, "drug": "Morphine", "amount_ug": 369000}]
}


def decision(*codes: str | ProcedureLine, session_id: str = "S-1", **changes: Any) -> Decision:
    base = Decision(
        session_id=session_id,
        date_of_service=DOS,
        procedures=tuple(c if isinstance(c, ProcedureLine) else ProcedureLine(c) for c in codes),
        diagnoses=("G89.4",),
        rendering_npi="1234567893",
        drugs=(DrugLine("J2274", 37),),
    )
    return dataclasses.replace(base, **changes)


def hits(
    d: Decision,
    others: list[Decision] | None = None,
    evidence: dict[str, Any] | None = EVIDENCE,
    edits: Edits | None = None,
    on: date | None = None,
) -> list[str]:
    return [r.edit_id for r in check(d, others or [], evidence, edits or default_edits(), on=on)]


def test_builtin_edits() -> None:
    edits = load_edits()
    assert [e.id for e in edits.edits] == [
        "pump-codes-one-per-visit",
        "pump-codes-mue-1",
        "em-same-day-modifier-25",
        "refill-needs-drug-line",
        "refill-drug-not-in-code-table",
    ]
    for edit in edits.edits:
        assert edit.text and edit.source
        assert edit.effective_to is None
    assert edits.edit("pump-codes-one-per-visit").codes == PUMP_CODES
    assert edits.edit("pump-codes-mue-1").max_units == 1
    assert edits.edit("em-same-day-modifier-25").codes == EM_CODES
    assert edits.edit("em-same-day-modifier-25").modifier == "25"
    assert edits.edit("refill-needs-drug-line").codes == REFILL_CODES
    assert re.fullmatch(r"billing-edits/1\+[0-9a-f]{12}", edits.version)
    assert default_edits() == edits


def test_a_clean_visit_hits_nothing() -> None:
    assert hits(decision("95991")) == []
    assert hits(decision("62367", drugs=())) == []


# --- one pump code per visit -------------------------------------------------


@pytest.mark.parametrize("first", PUMP_CODES)
@pytest.mark.parametrize("second", PUMP_CODES)
def test_two_pump_codes_on_one_visit(first: str, second: str) -> None:
    if first == second:
        return
    results = check(decision(first, second), [], EVIDENCE, default_edits())
    exclusive = [r for r in results if r.edit_id == "pump-codes-one-per-visit"]
    assert len(exclusive) == 1
    assert exclusive[0].blocking
    assert exclusive[0].codes == (first, second)
    assert first in exclusive[0].detail and second in exclusive[0].detail


def test_one_pump_code_with_other_codes_is_not_exclusive() -> None:
    assert "pump-codes-one-per-visit" not in hits(
        decision("95991", ProcedureLine("99213", ("25",)))
    )
    # Separate visits of one day are the MUE's business, not this edit's.
    assert "pump-codes-one-per-visit" not in hits(
        decision("95990"), [decision("62367", session_id="S-2")]
    )


# --- MUE 1 per code per day ----------------------------------------------------


@pytest.mark.parametrize("code", PUMP_CODES)
def test_mue_two_units_on_one_decision(code: str) -> None:
    assert "pump-codes-mue-1" not in hits(decision(ProcedureLine(code, units=1)))
    results = check(decision(ProcedureLine(code, units=2)), [], EVIDENCE, default_edits())
    (mue,) = [r for r in results if r.edit_id == "pump-codes-mue-1"]
    assert mue.severity == BLOCKING
    assert mue.codes == (code,)
    assert "2 units" in mue.detail


def test_mue_counts_the_patients_other_decisions_of_the_day() -> None:
    other = decision("95991", session_id="S-2")
    results = check(decision("95991"), [other], EVIDENCE, default_edits())
    (mue,) = [r for r in results if r.edit_id == "pump-codes-mue-1"]
    assert "S-2" in mue.detail
    # A different code the same day is within its own MUE.
    assert "pump-codes-mue-1" not in hits(decision("95991"), [decision("62367", session_id="S-2")])
    # The decision itself among the others (re-sign-off) is not counted twice.
    assert "pump-codes-mue-1" not in hits(decision("95991"), [decision("95991")])


def test_mue_limit_from_data(tmp_path: Path) -> None:
    (tmp_path / "edits.toml").write_text(
        _edit_toml(
            "pump-codes-mue-1", 'kind = "units_per_day"\ncodes = ["95991"]\nmax_units = 2\n'
        ),
        "utf-8",
    )
    edits = load_edits(tmp_path)
    assert "pump-codes-mue-1" not in hits(decision(ProcedureLine("95991", units=2)), edits=edits)
    assert "pump-codes-mue-1" in hits(decision(ProcedureLine("95991", units=3)), edits=edits)
    assert "pump-codes-mue-1" in hits(
        decision(ProcedureLine("95991", units=2)),
        [decision("95991", session_id="S-2")],
        edits=edits,
    )


# --- E/M the same day needs 25 ---------------------------------------------------


@pytest.mark.parametrize("em", EM_CODES)
def test_em_without_25_on_a_pump_day(em: str) -> None:
    results = check(decision("95991", em), [], EVIDENCE, default_edits())
    (result,) = [r for r in results if r.edit_id == "em-same-day-modifier-25"]
    assert result.severity == WARNING
    assert result.codes == (em, "95991")
    assert hits(decision("95991", ProcedureLine(em, ("25",)))) == []
    assert hits(decision("95991", ProcedureLine(em, ("59", "25")))) == []


def test_em_on_another_decision_of_the_day() -> None:
    pump_visit = decision("95991", session_id="S-2")
    em_only = decision("99213", drugs=())
    assert hits(em_only, [pump_visit]) == ["em-same-day-modifier-25"]
    assert hits(em_only) == []  # no pump service that day
    assert hits(decision("99213", drugs=()), [decision("99214", session_id="S-2")]) == []


def test_em_neighbours_and_other_modifiers() -> None:
    # 99201 and 99216 are no E/M codes of the table; modifier 59 is not 25.
    assert hits(decision("95991", "99201")) == []
    assert hits(decision("95991", "99216")) == []
    assert hits(decision("95991", ProcedureLine("99213", ("59",)))) == ["em-same-day-modifier-25"]


# --- refill codes need a drug line -----------------------------------------------


@pytest.mark.parametrize("code", PUMP_CODES)
def test_refill_code_without_drug_line(code: str) -> None:
    found = hits(decision(code, drugs=()))
    if code in REFILL_CODES:
        assert found == ["refill-needs-drug-line"]
        result = check(decision(code, drugs=()), [], EVIDENCE, default_edits())[0]
        assert result.severity == WARNING and not result.blocking
    else:
        assert found == []
    assert hits(decision(code)) == []


def test_specialty_pharmacy_needs_no_drug_line() -> None:
    assert hits(decision("95991", drugs=(), specialty_pharmacy_supplied=True)) == []


# --- a refilled drug without a code ------------------------------------------------


def test_refill_drug_not_in_code_table() -> None:
    evidence = {
        "supplies": [
            {"hcpcs": "J2274", "units": 37, "drug": "Morphine", "amount_ug": 369000},
            {"hcpcs": None, "units": None, "drug": "bupivacaine", "amount_ug": 50000},
        ]
    }
    results = check(decision("95991"), [], evidence, default_edits())
    assert [r.edit_id for r in results] == ["refill-drug-not-in-code-table"]
    assert "'bupivacaine'" in results[0].detail
    assert results[0].severity == WARNING
    assert hits(decision("95991"), evidence=EVIDENCE) == []
    assert hits(decision("62367", drugs=()), evidence={"supplies": []}) == []
    assert hits(decision("95991"), evidence=None) == []
    assert (
        hits(decision("95991", drugs=(), specialty_pharmacy_supplied=True), evidence=evidence) == []
    )


# --- effective dates and severity ----------------------------------------------------


def _edit_toml(edit_id: str, body: str, *, severity: str = "blocking", dates: str = "") -> str:
    return (
        "[[edit]]\n"
        f'id = "{edit_id}"\n'
        f"{body}"
        'text = "local rule"\n'
        'source = "clinic billing lead, memo 2026-01"\n'
        f"{dates or 'effective_from = 2020-01-01'}\n"
        f'severity = "{severity}"\n'
    )


def test_effective_dates_are_inclusive(tmp_path: Path) -> None:
    (tmp_path / "edits.toml").write_text(
        _edit_toml(
            "pump-codes-one-per-visit",
            'kind = "mutually_exclusive"\ncodes = ["95990", "95991"]\n',
            dates="effective_from = 2026-03-02\neffective_to = 2026-06-30",
        ),
        "utf-8",
    )
    edits = load_edits(tmp_path)
    visit = decision("95990", "95991")

    def fired(on: date) -> bool:
        return "pump-codes-one-per-visit" in hits(visit, edits=edits, on=on)

    assert not fired(date(2026, 3, 1))
    assert fired(date(2026, 3, 2))
    assert fired(date(2026, 6, 30))
    assert not fired(date(2026, 7, 1))
    # Without `on`, the date of service decides.
    assert "pump-codes-one-per-visit" in hits(visit, edits=edits)
    late = dataclasses.replace(visit, date_of_service=date(2026, 7, 1))
    assert "pump-codes-one-per-visit" not in hits(late, edits=edits)


def test_builtin_edits_start_before_any_visit() -> None:
    assert hits(decision("95990", "95991"), on=date(2009, 1, 1)) != []
    assert "pump-codes-one-per-visit" not in hits(decision("95990", "95991"), on=date(2008, 12, 31))


def test_clinic_turns_a_warning_into_blocking_in_place(tmp_path: Path) -> None:
    (tmp_path / "edits.toml").write_text(
        _edit_toml(
            "refill-needs-drug-line",
            'kind = "drug_line_required"\ncodes = ["95990", "95991"]\n',
            severity="blocking",
        ),
        "utf-8",
    )
    edits = load_edits(tmp_path)
    assert [e.id for e in edits.edits] == [e.id for e in load_edits().edits]
    (result,) = check(decision("95991", drugs=()), [], EVIDENCE, edits)
    assert result == EditResult(
        "refill-needs-drug-line",
        BLOCKING,
        "local rule",
        "95991 without a drug line and not marked as supplied by a specialty pharmacy",
        ("95991",),
    )
    assert blocking([result]) == [result]
    assert hits(decision("62369", drugs=()), edits=edits) == []  # no longer listed
    assert edits.version != load_edits().version


def test_clinic_adds_an_edit(tmp_path: Path) -> None:
    (tmp_path / "edits.toml").write_text(
        _edit_toml(
            "payer-x-no-62370-with-e-m",
            'kind = "mutually_exclusive"\ncodes = ["62370", "99213"]\n',
            severity="warning",
        ),
        "utf-8",
    )
    edits = load_edits(tmp_path)
    assert edits.edits[-1].id == "payer-x-no-62370-with-e-m"
    results = check(decision("62370", ProcedureLine("99213", ("25",))), [], EVIDENCE, edits)
    assert [(r.edit_id, r.blocking) for r in results] == [("payer-x-no-62370-with-e-m", False)]
    assert blocking(results) == []


def test_results_follow_the_table_order() -> None:
    visit = decision(ProcedureLine("95990", units=2), "95991", "99213", drugs=())
    assert hits(visit) == [
        "pump-codes-one-per-visit",
        "pump-codes-mue-1",
        "em-same-day-modifier-25",
        "refill-needs-drug-line",
    ]


def test_missing_file_changes_nothing(tmp_path: Path) -> None:
    assert load_edits(tmp_path) == load_edits()


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        ("[[edit]\n", "", "not valid TOML"),
        ('rule = "x"\n', "rule", "unknown key"),
        ("edit = 1\n", "edit", "array of tables"),
        (
            _edit_toml("x", 'kind = "bundled"\ncodes = ["95991", "95990"]\n'),
            "edit[0].kind",
            "unknown kind",
        ),
        (_edit_toml("x", 'kind = "mutually_exclusive"\n'), "edit[0].codes", "missing"),
        (
            _edit_toml("x", 'kind = "mutually_exclusive"\ncodes = ["95991"]\n'),
            "edit[0].codes",
            "at least two",
        ),
        (
            _edit_toml("x", 'kind = "mutually_exclusive"\ncodes = ["95991", "9599"]\n'),
            "edit[0].codes[1]",
            "not a CPT code",
        ),
        (
            _edit_toml("x", 'kind = "mutually_exclusive"\ncodes = ["95991", "95991"]\n'),
            "edit[0].codes[1]",
            "listed twice",
        ),
        (
            _edit_toml("x", 'kind = "units_per_day"\ncodes = ["95991"]\nmax_units = 0\n'),
            "edit[0].max_units",
            "at least 1",
        ),
        (
            _edit_toml("x", 'kind = "drug_code_missing"\ncodes = ["95991"]\n'),
            "edit[0].codes",
            "unknown key",
        ),
        (
            _edit_toml(
                "x",
                'kind = "modifier_required"\ncodes = ["99213"]\nwith_codes = ["95991"]\n'
                'modifier = "025"\n',
            ),
            "edit[0].modifier",
            "not a modifier",
        ),
        (
            _edit_toml("x", 'kind = "drug_code_missing"\n', severity="error"),
            "edit[0].severity",
            "unknown severity",
        ),
        (
            _edit_toml("x", 'kind = "drug_code_missing"\n', dates='effective_from = "2026-01-01"'),
            "edit[0].effective_from",
            "expected a date",
        ),
        (
            _edit_toml(
                "x", 'kind = "drug_code_missing"\n', dates="effective_from = 2026-01-01T00:00:00"
            ),
            "edit[0].effective_from",
            "expected a date",
        ),
        (
            _edit_toml(
                "x",
                'kind = "drug_code_missing"\n',
                dates="effective_from = 2026-01-02\neffective_to = 2026-01-01",
            ),
            "edit[0].effective_to",
            "before effective_from",
        ),
        (
            _edit_toml("x", 'kind = "drug_code_missing"\n').replace('text = "local rule"\n', ""),
            "edit[0].text",
            "missing",
        ),
        (
            _edit_toml("x y", 'kind = "drug_code_missing"\n'),
            "edit[0].id",
            "must not contain spaces",
        ),
        (
            _edit_toml("x", 'kind = "drug_code_missing"\n') * 2,
            "edit[1].id",
            "listed twice",
        ),
    ],
)
def test_errors_name_file_and_key(tmp_path: Path, text: str, key: str, message: str) -> None:
    path = tmp_path / "edits.toml"
    path.write_text(text, "utf-8")
    with pytest.raises(RulesError) as caught:
        load_edits(tmp_path)
    assert caught.value.file == str(path)
    assert caught.value.key == key
    assert message in str(caught.value)
