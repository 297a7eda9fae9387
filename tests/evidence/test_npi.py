"""The NPI check digit (docs/coding-rules.md §9.3)."""

from __future__ import annotations

import pytest

from evidence.npi import npi_check_digit, npi_valid


def test_documented_example() -> None:
    assert npi_check_digit("123456789") == 3
    assert npi_valid("1234567893")


@pytest.mark.parametrize("last", [d for d in "0123456789" if d != "3"])
def test_every_other_check_digit_is_refused(last: str) -> None:
    assert not npi_valid("123456789" + last)


def test_a_swapped_pair_is_refused() -> None:
    assert not npi_valid("2134567893")


@pytest.mark.parametrize(
    "text", ["", "123456789", "12345678930", "123456789a", " 1234567893", "١٢٣٤٥٦٧٨٩٣"]
)
def test_shape(text: str) -> None:
    assert not npi_valid(text)


def test_check_digit_zero() -> None:
    # A Luhn sum already a multiple of ten gives check digit 0, not 10.
    first_nine = next(
        f"{n:09d}" for n in range(100000000, 100000100) if npi_check_digit(f"{n:09d}") == 0
    )
    assert npi_valid(first_nine + "0")
    assert not npi_valid(first_nine + "1")
