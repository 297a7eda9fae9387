"""Payers, patients' coverage and providers (migration 0006; docs/coding-rules.md §9.1, §9.3).

- `payers`: a payer's name (unique without regard to case), an optional payer ID
  and the profile it codes under (a built-in or a clinic's own profile).
- `coverage`: a patient ID has a payer from a date (`starts_on`), optionally to a
  date (`ends_on`, inclusive). A patient has at most one payer on a date: a
  period overlapping another of the same patient is refused
  (`evidence.payers.check_no_overlap`).
- `providers`: a programmer's operator ID mapped to a person with an NPI (check
  digit validated) and a role.

The applicable payer of a session is looked up when the evidence is read (by
patient ID and the programmer-local date of the session start), never stored
with the evidence: a coverage change applies at once (docs/session-json.md
"Evidence", `applicable`). Patient IDs are stored here for that lookup and never
go into the audit log: coverage entries are named by their row number.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.expression import Exists

from db.codec import loads
from db.models import TEXT_LEN, Base, evidence, sessions, table_of, utc_now
from evidence.npi import npi_valid
from evidence.payers import (
    PROVIDER_ROLES,
    CoverageError,
    Payer,
    Period,
    check_no_overlap,
    check_period,
    with_applicable,
)

PAYER_NAME_LEN = 128
PAYER_ID_LEN = 32
PROFILE_LEN = 64
NPI_LEN = 10
ROLE_LEN = 16


class PayerRow(Base):
    """One payer and the profile it codes under."""

    __tablename__ = "payers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(PAYER_NAME_LEN))
    # The name in lower case: payer names are unique without regard to case.
    name_key: Mapped[str] = mapped_column(String(PAYER_NAME_LEN), unique=True)
    payer_id: Mapped[str | None] = mapped_column(String(PAYER_ID_LEN))
    profile: Mapped[str] = mapped_column(String(PROFILE_LEN))
    created_at: Mapped[datetime] = mapped_column(DateTime)


class CoverageRow(Base):
    """A patient's payer from a date, optionally to a date (inclusive)."""

    __tablename__ = "coverage"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[str] = mapped_column(String(TEXT_LEN))
    payer_pk: Mapped[int] = mapped_column(ForeignKey("payers.id"))
    starts_on: Mapped[date] = mapped_column(Date)
    ends_on: Mapped[date | None] = mapped_column(Date)
    created_at: Mapped[datetime] = mapped_column(DateTime)

    __table_args__ = (Index("ix_coverage_patient", "patient_id", "starts_on"),)


class ProviderRow(Base):
    """A programmer operator ID mapped to a person with an NPI."""

    __tablename__ = "providers"

    operator_id: Mapped[str] = mapped_column(String(TEXT_LEN), primary_key=True)
    npi: Mapped[str] = mapped_column(String(NPI_LEN))
    name: Mapped[str] = mapped_column(String(TEXT_LEN))
    role: Mapped[str] = mapped_column(String(ROLE_LEN))
    created_at: Mapped[datetime] = mapped_column(DateTime)


payers = table_of(PayerRow)
coverage = table_of(CoverageRow)
providers = table_of(ProviderRow)


@dataclass(frozen=True, slots=True)
class StoredPayer:
    pk: int
    name: str
    payer_id: str | None
    profile: str

    def payer(self) -> Payer:
        return Payer(self.name, self.profile, self.payer_id)


@dataclass(frozen=True, slots=True)
class StoredCoverage:
    pk: int
    patient_id: str
    payer: str
    profile: str
    starts_on: date
    ends_on: date | None
    payer_id: str | None = None

    def period(self) -> Period:
        return Period(self.patient_id, self.payer, self.starts_on, self.ends_on)


@dataclass(frozen=True, slots=True)
class Provider:
    operator_id: str
    npi: str
    name: str
    role: str


# ---------------------------------------------------------------------------
# Payers


def _stored_payer(row: Any) -> StoredPayer:
    pk, name, payer_id, profile = row
    return StoredPayer(int(pk), str(name), payer_id, str(profile))


_PAYER_COLUMNS = (payers.c.id, payers.c.name, payers.c.payer_id, payers.c.profile)


def add_payer(
    connection: Connection,
    name: str,
    profile: str,
    profiles: Sequence[str],
    *,
    payer_id: str | None = None,
) -> StoredPayer:
    """Add a payer coding under `profile`, one of `profiles` (the rules in force)."""
    name = name.strip()
    if not name:
        raise CoverageError("a payer needs a name")
    if len(name) > PAYER_NAME_LEN:
        raise CoverageError(f"a payer name has at most {PAYER_NAME_LEN} characters")
    if profile not in profiles:
        raise CoverageError(f"unknown profile {profile!r}; expected one of {', '.join(profiles)}")
    payer_id = (payer_id or "").strip() or None
    if payer_id is not None and len(payer_id) > PAYER_ID_LEN:
        raise CoverageError(f"a payer ID has at most {PAYER_ID_LEN} characters")
    if find_payer(connection, name) is not None:
        raise CoverageError(f"a payer named {name!r} exists already")
    pk = connection.execute(
        insert(payers).values(
            name=name,
            name_key=name.casefold(),
            payer_id=payer_id,
            profile=profile,
            created_at=utc_now(),
        )
    ).inserted_primary_key
    return StoredPayer(int(pk[0]) if pk else 0, name, payer_id, profile)


def find_payer(connection: Connection, name: str) -> StoredPayer | None:
    """The payer of this name, in any case; None when there is none."""
    row = connection.execute(
        select(*_PAYER_COLUMNS).where(payers.c.name_key == name.strip().casefold())
    ).first()
    return None if row is None else _stored_payer(row)


def list_payers(connection: Connection) -> list[StoredPayer]:
    rows = connection.execute(select(*_PAYER_COLUMNS).order_by(payers.c.name_key))
    return [_stored_payer(row) for row in rows]


# ---------------------------------------------------------------------------
# Coverage


_COVERAGE_COLUMNS = (
    coverage.c.id,
    coverage.c.patient_id,
    payers.c.name,
    payers.c.profile,
    coverage.c.starts_on,
    coverage.c.ends_on,
    payers.c.payer_id,
)


def _stored_coverage(row: Any) -> StoredCoverage:
    pk, patient_id, payer, profile, starts_on, ends_on, payer_id = row
    return StoredCoverage(
        int(pk), str(patient_id), str(payer), str(profile), starts_on, ends_on, payer_id
    )


def coverage_of(connection: Connection, patient_ids: Iterable[str]) -> list[StoredCoverage]:
    """Every coverage period of these patients, by patient and start."""
    wanted = sorted(set(patient_ids))
    if not wanted:
        return []
    query = (
        select(*_COVERAGE_COLUMNS)
        .select_from(coverage.join(payers, payers.c.id == coverage.c.payer_pk))
        .where(coverage.c.patient_id.in_(wanted))
        .order_by(coverage.c.patient_id, coverage.c.starts_on)
    )
    return [_stored_coverage(row) for row in connection.execute(query)]


def list_coverage(connection: Connection, *, limit: int = 500) -> list[StoredCoverage]:
    """Coverage periods, newest start first (at most `limit`)."""
    query = (
        select(*_COVERAGE_COLUMNS)
        .select_from(coverage.join(payers, payers.c.id == coverage.c.payer_pk))
        .order_by(coverage.c.starts_on.desc(), coverage.c.id.desc())
        .limit(limit)
    )
    return [_stored_coverage(row) for row in connection.execute(query)]


def get_coverage(connection: Connection, pk: int) -> StoredCoverage | None:
    row = connection.execute(
        select(*_COVERAGE_COLUMNS)
        .select_from(coverage.join(payers, payers.c.id == coverage.c.payer_pk))
        .where(coverage.c.id == pk)
    ).first()
    return None if row is None else _stored_coverage(row)


def assign_coverage(
    connection: Connection,
    patient_id: str,
    payer_name: str,
    starts_on: date,
    ends_on: date | None = None,
) -> StoredCoverage:
    """Give a patient a payer from `starts_on` (to `ends_on`); overlaps are refused."""
    patient_id = patient_id.strip()
    if not patient_id:
        raise CoverageError("a coverage period needs a patient ID")
    if len(patient_id) > TEXT_LEN:
        raise CoverageError(f"a patient ID has at most {TEXT_LEN} characters")
    check_period(starts_on, ends_on)
    payer = find_payer(connection, payer_name)
    if payer is None:
        raise CoverageError(
            f"no payer named {payer_name.strip()!r}: add it first (`pumptrail payer add`)"
        )
    new = Period(patient_id, payer.name, starts_on, ends_on)
    check_no_overlap(new, [c.period() for c in coverage_of(connection, [patient_id])])
    pk = connection.execute(
        insert(coverage).values(
            patient_id=patient_id,
            payer_pk=payer.pk,
            starts_on=starts_on,
            ends_on=ends_on,
            created_at=utc_now(),
        )
    ).inserted_primary_key
    return StoredCoverage(
        int(pk[0]) if pk else 0,
        patient_id,
        payer.name,
        payer.profile,
        starts_on,
        ends_on,
        payer.payer_id,
    )


def end_coverage(connection: Connection, pk: int, ends_on: date) -> StoredCoverage:
    """End an open (or later-ending) coverage period on `ends_on`, inclusive."""
    found = get_coverage(connection, pk)
    if found is None:
        raise CoverageError(f"no coverage period {pk}")
    check_period(found.starts_on, ends_on)
    connection.execute(update(coverage).where(coverage.c.id == pk).values(ends_on=ends_on))
    return StoredCoverage(
        found.pk,
        found.patient_id,
        found.payer,
        found.profile,
        found.starts_on,
        ends_on,
        found.payer_id,
    )


def payers_on(
    connection: Connection, visits: Iterable[tuple[str | None, date]]
) -> dict[tuple[str, date], Payer]:
    """The payer covering each (patient ID, date of service); absent keys have none."""
    wanted = [(p, d) for p, d in visits if p]
    periods = coverage_of(connection, [p for p, _ in wanted])
    found: dict[tuple[str, date], Payer] = {}
    by_patient: dict[str, list[StoredCoverage]] = {}
    for period in periods:
        by_patient.setdefault(period.patient_id, []).append(period)
    for patient_id, day in wanted:
        for period in by_patient.get(patient_id or "", ()):
            if period.period().covers(day):
                found[(patient_id or "", day)] = Payer(
                    period.payer, period.profile, period.payer_id
                )
                break
    return found


def payer_on(connection: Connection, patient_id: str | None, day: date) -> Payer | None:
    """The payer covering one patient on one date of service; None without coverage."""
    if not patient_id:
        return None
    return payers_on(connection, [(patient_id, day)]).get((patient_id, day))


def covered_condition(patient_column: Any, local_start_column: Any) -> Exists:
    """SQL: a coverage period of this session's patient holds its programmer-local date."""
    day = func.date(local_start_column)
    return (
        select(coverage.c.id)
        .where(
            coverage.c.patient_id == patient_column,
            func.date(coverage.c.starts_on) <= day,
            or_(coverage.c.ends_on.is_(None), func.date(coverage.c.ends_on) >= day),
        )
        .exists()
    )


@dataclass(frozen=True, slots=True)
class CoverageLine:
    """One line of a coverage file: `patient_id,payer,from,to`."""

    line: int
    patient_id: str
    payer: str
    starts_on: date
    ends_on: date | None


def import_coverage(connection: Connection, lines: Sequence[CoverageLine]) -> list[StoredCoverage]:
    """Store every line, or (on the first bad one) raise naming its line number.

    The caller's transaction makes it all or nothing: nothing of the file is stored
    when a line is refused.
    """
    stored: list[StoredCoverage] = []
    for entry in lines:
        try:
            stored.append(
                assign_coverage(
                    connection, entry.patient_id, entry.payer, entry.starts_on, entry.ends_on
                )
            )
        except CoverageError as exc:
            raise CoverageError(f"line {entry.line}: {exc}") from exc
    return stored


# ---------------------------------------------------------------------------
# Providers


def add_provider(
    connection: Connection, operator_id: str, *, npi: str, name: str, role: str
) -> Provider:
    """Map an operator ID to a person; the NPI's check digit is validated (§9.3)."""
    operator_id = operator_id.strip()
    name = name.strip()
    npi = npi.strip()
    if not operator_id or len(operator_id) > TEXT_LEN:
        raise CoverageError(f"an operator ID has 1 to {TEXT_LEN} characters")
    if not name or len(name) > TEXT_LEN:
        raise CoverageError(f"a provider name has 1 to {TEXT_LEN} characters")
    if role not in PROVIDER_ROLES:
        raise CoverageError(f"unknown role {role!r}; expected one of {', '.join(PROVIDER_ROLES)}")
    if not npi_valid(npi):
        raise CoverageError(
            f"{npi!r} is not a valid NPI: ten digits whose last is the Luhn check digit "
            "over 80840 and the first nine (docs/coding-rules.md §9.3)"
        )
    if find_provider(connection, operator_id) is not None:
        raise CoverageError(f"operator {operator_id!r} is mapped already")
    connection.execute(
        insert(providers).values(
            operator_id=operator_id, npi=npi, name=name, role=role, created_at=utc_now()
        )
    )
    return Provider(operator_id, npi, name, role)


def find_provider(connection: Connection, operator_id: str) -> Provider | None:
    row = connection.execute(
        select(providers.c.operator_id, providers.c.npi, providers.c.name, providers.c.role).where(
            providers.c.operator_id == operator_id
        )
    ).first()
    return None if row is None else Provider(*row)


def list_providers(connection: Connection) -> list[Provider]:
    rows = connection.execute(
        select(
            providers.c.operator_id, providers.c.npi, providers.c.name, providers.c.role
        ).order_by(providers.c.operator_id)
    )
    return [Provider(*row) for row in rows]


def evidence_with_applicable(
    connection: Connection, session_id: str, default_profile: str
) -> dict[str, Any] | None:
    """The stored evidence document of a session with `applicable` and, without coverage
    on its date of service, the flag `no_payer_on_file` (docs/session-json.md
    "Evidence"); None when the session has no stored evidence."""
    row = connection.execute(
        select(evidence.c.document, sessions.c.patient_id, sessions.c.session_start_local)
        .select_from(evidence.join(sessions, sessions.c.id == evidence.c.session_pk))
        .where(sessions.c.session_id == session_id)
    ).first()
    if row is None:
        return None
    text, patient_id, start_local = row
    payer = payer_on(connection, patient_id, start_local.date())
    return with_applicable(loads(text), payer, default_profile)
