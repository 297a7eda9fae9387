"""Which profile a session is coded under, and who performed it: payers, coverage, NPIs.

docs/coding-rules.md §9.1: a payer's definition of reprogramming is one profile; the
patient's coverage on the date of service picks the payer. Without coverage the
default profile applies and the session is flagged `no_payer_on_file`.

The evidence document holds the code under every profile (`codes`), so the
applicable code is a lookup: `applicable` picks the entry of the covering payer's
profile (docs/session-json.md "Evidence", `applicable`). The coverage itself is
stored by `db.payers`; this module only decides.

docs/coding-rules.md §9.3: an NPI is ten digits whose last is a Luhn check digit
over `80840` followed by the first nine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, Final

from parsers.errors import PumptrailError

NO_PAYER_ON_FILE: Final = "no_payer_on_file"
# The roles a provider may hold (`pumptrail provider add --role`).
PROVIDER_ROLES: Final = ("physician", "qhp", "nurse", "technician")


class CoverageError(PumptrailError, ValueError):
    """Raised when a payer, a coverage period or a provider cannot be recorded: an
    unknown payer or profile, a date range that ends before it starts, a period
    overlapping the patient's other coverage, a bad NPI or role, or a bad line of a
    coverage file (the message names the line)."""


@dataclass(frozen=True, slots=True)
class Payer:
    """A payer: its name, an optional payer ID and the profile it codes under."""

    name: str
    profile: str
    payer_id: str | None = None


@dataclass(frozen=True, slots=True)
class Period:
    """One coverage period of a patient: a payer from a date, optionally to a date."""

    patient_id: str
    payer: str
    starts_on: date
    ends_on: date | None = None

    def covers(self, day: date) -> bool:
        return self.starts_on <= day and (self.ends_on is None or day <= self.ends_on)

    def overlaps(self, other: Period) -> bool:
        """Whether two periods share a day (an open end runs for ever)."""
        self_end = self.ends_on or date.max
        other_end = other.ends_on or date.max
        return self.starts_on <= other_end and other.starts_on <= self_end


def check_period(starts_on: date, ends_on: date | None) -> None:
    """A period must not end before it starts."""
    if ends_on is not None and ends_on < starts_on:
        raise CoverageError(
            f"the period ends ({ends_on.isoformat()}) before it starts ({starts_on.isoformat()})"
        )


def check_no_overlap(new: Period, existing: Sequence[Period]) -> None:
    """A patient has at most one payer on a date: refuse a period sharing a day with another."""
    for held in existing:
        if held.patient_id == new.patient_id and held.overlaps(new):
            end = held.ends_on.isoformat() if held.ends_on else "open end"
            raise CoverageError(
                f"overlaps the patient's coverage by {held.payer} "
                f"({held.starts_on.isoformat()} to {end}); end that period first"
            )


@dataclass(frozen=True, slots=True)
class Applicable:
    """The payer, profile and code that apply to one session (§9.1)."""

    payer: str | None
    payer_id: str | None
    profile: str
    procedure: str | None

    def as_json(self) -> dict[str, Any]:
        return {
            "payer": self.payer,
            "payer_id": self.payer_id,
            "profile": self.profile,
            "procedure": self.procedure,
        }


def applicable(codes: Mapping[str, Any], payer: Payer | None, default_profile: str) -> Applicable:
    """The covering payer's profile and its code from `codes`; the default without payer.

    `codes` is the evidence document's `codes` (profile -> {"procedure": ...}). A
    payer whose profile the rules no longer define falls back to the default
    profile (its code is then the default's).
    """
    profile = default_profile
    if payer is not None and payer.profile in codes:
        profile = payer.profile
    entry = codes.get(profile)
    procedure = entry.get("procedure") if isinstance(entry, Mapping) else None
    return Applicable(
        payer=None if payer is None else payer.name,
        payer_id=None if payer is None else payer.payer_id,
        profile=profile,
        procedure=None if procedure is None else str(procedure),
    )


def with_applicable(
    document: Mapping[str, Any], payer: Payer | None, default_profile: str
) -> dict[str, Any]:
    """The evidence document with `applicable` (before `refill`) and, without coverage,
    the flag `no_payer_on_file` at the end of `flags` (docs/session-json.md "Evidence")."""
    found = applicable(document.get("codes") or {}, payer, default_profile)
    result: dict[str, Any] = {}
    for key, value in document.items():
        if key == "applicable":
            continue
        if key == "refill":
            result["applicable"] = found.as_json()
        result[key] = value
    if "applicable" not in result:
        result["applicable"] = found.as_json()
    flags = [str(f) for f in document.get("flags") or () if f != NO_PAYER_ON_FILE]
    if payer is None:
        flags.append(NO_PAYER_ON_FILE)
    result["flags"] = flags
    return result


def without_applicable(document: Mapping[str, Any]) -> dict[str, Any]:
    """The stored evidence document again: `applicable` and `no_payer_on_file` removed."""
    result = {key: value for key, value in document.items() if key != "applicable"}
    if isinstance(result.get("flags"), list):
        result["flags"] = [f for f in result["flags"] if f != NO_PAYER_ON_FILE]
    return result
