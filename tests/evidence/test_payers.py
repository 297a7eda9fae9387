"""Payer decisions without a database: NPI check digits, the applicable profile (§9.1, §9.3)."""

from __future__ import annotations

from datetime import date

import pytest

from evidence.npi import npi_check_digit, npi_valid
from evidence.payers import (
    NO_PAYER_ON_FILE,
    CoverageError,
    Payer,
    Period,
    applicable,
    check_no_overlap,
    check_period,
    with_applicable,
)


@pytest.mark.parametrize("npi", ["1234567893", "1245319599", "1003000126"])
def test_valid_npis(npi: str) -> None:
    assert npi_valid(npi)


@pytest.mark.parametrize(
    "npi",
    [
        "1234567890",  # wrong check digit
        "1234567894",
        "123456789",  # nine digits
        "12345678930",  # eleven
        "12345678a3",
        " 1234567893",
        "",
    ],
)
def test_invalid_npis(npi: str) -> None:
    assert not npi_valid(npi)


def test_the_check_digit_covers_the_80840_prefix() -> None:
    # Luhn over the nine digits alone would give 7; with 80840 in front it is 3.
    assert npi_check_digit("123456789") == 3
    assert not npi_valid("1234567897")


def test_periods_cover_inclusive_days() -> None:
    closed = Period("P1", "Acme", date(2026, 1, 1), date(2026, 3, 31))
    assert closed.covers(date(2026, 1, 1)) and closed.covers(date(2026, 3, 31))
    assert not closed.covers(date(2025, 12, 31)) and not closed.covers(date(2026, 4, 1))
    open_ended = Period("P1", "Acme", date(2026, 4, 1))
    assert open_ended.covers(date(2099, 1, 1))


def test_overlapping_periods_are_refused_adjacent_ones_are_not() -> None:
    held = [Period("P1", "Acme", date(2026, 1, 1), date(2026, 3, 31))]
    check_no_overlap(Period("P1", "Other", date(2026, 4, 1)), held)  # the day after: fine
    check_no_overlap(Period("P2", "Other", date(2026, 2, 1)), held)  # another patient
    with pytest.raises(CoverageError, match="overlaps the patient's coverage by Acme"):
        check_no_overlap(Period("P1", "Other", date(2026, 3, 31)), held)
    with pytest.raises(CoverageError, match="overlaps"):
        check_no_overlap(Period("P1", "Other", date(2025, 1, 1)), held)  # open end runs on


def test_a_reversed_period_says_so() -> None:
    with pytest.raises(CoverageError, match=r"ends \(2026-01-01\) before it starts"):
        check_period(date(2026, 2, 1), date(2026, 1, 1))


CODES = {
    "rate-dose": {"procedure": "95991"},
    "rate-dose-alarms": {"procedure": "95991"},
    "any-setting": {"procedure": "62370"},
}


def test_the_payers_profile_picks_the_code() -> None:
    found = applicable(CODES, Payer("Acme", "any-setting", "A1"), "rate-dose")
    assert found.as_json() == {
        "payer": "Acme",
        "payer_id": "A1",
        "profile": "any-setting",
        "procedure": "62370",
    }


def test_without_coverage_the_default_applies() -> None:
    found = applicable(CODES, None, "rate-dose")
    assert (found.payer, found.profile, found.procedure) == (None, "rate-dose", "95991")


def test_a_profile_the_rules_lost_falls_back_to_the_default() -> None:
    found = applicable(CODES, Payer("Acme", "gone"), "rate-dose")
    assert (found.payer, found.profile, found.procedure) == ("Acme", "rate-dose", "95991")


def test_the_document_gets_applicable_before_refill_and_the_flag_without_payer() -> None:
    document = {"session_id": "s", "refill": None, "codes": CODES, "flags": ["chain_gap"]}
    uncovered = with_applicable(document, None, "rate-dose")
    assert list(uncovered) == ["session_id", "applicable", "refill", "codes", "flags"]
    assert uncovered["flags"] == ["chain_gap", NO_PAYER_ON_FILE]
    covered = with_applicable(uncovered, Payer("Acme", "any-setting"), "rate-dose")
    assert covered["flags"] == ["chain_gap"]
    assert covered["applicable"]["procedure"] == "62370"
    assert list(covered) == list(uncovered)
