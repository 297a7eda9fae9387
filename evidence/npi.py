"""The National Provider Identifier check digit (docs/coding-rules.md §9.3).

An NPI is ten digits; the last is a Luhn check digit computed over the prefix 80840
followed by the first nine digits (1234567893 is valid).
"""

from __future__ import annotations

from typing import Final

# The card-issuer prefix the NPI standard puts in front of the nine identifier digits.
_NPI_PREFIX: Final = "80840"
_NPI_LENGTH: Final = 10


def npi_check_digit(first_nine: str) -> int:
    """The Luhn check digit of `80840` + the nine identifier digits."""
    total = 0
    # Luhn doubles every second digit counting from the right of the payload,
    # starting with its rightmost digit (the check digit comes after it).
    for position, char in enumerate(reversed(_NPI_PREFIX + first_nine)):
        digit = int(char)
        if position % 2 == 0:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return (10 - total % 10) % 10


def npi_valid(npi: str) -> bool:
    """Whether `npi` is ten ASCII digits whose last is the §9.3 check digit."""
    if len(npi) != _NPI_LENGTH or not (npi.isascii() and npi.isdigit()):
        return False
    return npi_check_digit(npi[:9]) == int(npi[9])
