"""The stored tables: pumps, sessions, settings snapshots, events, raw files, evidence.

SQLAlchemy 2.0 declarative models; the Alembic migrations in
`db/migrations/versions` create exactly these tables, and a test compares the
two. Bulk rows (settings, events, evidence flags) are written with Core
`insert()` executemany, not through the ORM unit of work.

What lives where:

- `sessions` holds one row per session ID however many exports of it arrived
  (docs/coding-rules.md §7.16), with the normalized document (docs/session-json.md) of the
  export in use, plus the columns a list of 1,000,000 sessions filters on:
  start (UTC), pump, patient ID and name (with `patient_names`, each distinct
  name, for a search by part of a name), and through `evidence` the
  default-profile procedure and the flags. `(pump_id, session_start_utc, session_id)` is the
  chain index (§7.5): the prior session is one index probe.
- `setting_values` and `events` are the document's snapshots and events as rows,
  with what the document leaves out (byte offset or CSV line of each event, the
  raw pump-clock times), so a session can be rebuilt exactly.
- `raw_files` has one row per distinct file content (SHA-256), refused files
  included with their error; the bytes live in the raw store (`ingest.rawstore`).
- `evidence` and `evidence_flags` hold the derived evidence document per session,
  with the parser and rules versions that produced it.

Instants are naive UTC (`*_utc`) or programmer-local (`*_local`) datetimes.
Documents and values are JSON text (not a JSON column type): both backends
then store and return the same text, and documents keep their key order.
An append-only audit table is added by a later migration.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy import (
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Constraint names fixed by convention, so migrations name them the same on
# SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Field widths: ASCII header fields are 12 bytes, text fields at most 64 bytes of
# UTF-8 (docs/formats.md §2.1, §2.3); a little room is left above each.
SERIAL_LEN = 32
TEXT_LEN = 64
SHA256_LEN = 64
UUID_LEN = 36
VERSION_LEN = 40


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class PumpRow(Base):
    """One implanted pump, by serial: the key of the chain (docs/coding-rules.md §7.5)."""

    __tablename__ = "pumps"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    serial: Mapped[str] = mapped_column(String(SERIAL_LEN), unique=True)
    model: Mapped[str] = mapped_column(String(SERIAL_LEN))

    # The list's pump filter in any case (migration 0010).
    __table_args__ = (Index("ix_pumps_serial_upper", func.upper(serial)),)


class SessionRow(Base):
    """One programming session, stored once per session ID (docs/coding-rules.md §7.16)."""

    __tablename__ = "sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[str] = mapped_column(String(UUID_LEN), unique=True)
    pump_id: Mapped[int] = mapped_column(ForeignKey("pumps.id"))
    session_start_utc: Mapped[datetime] = mapped_column(DateTime)
    session_start_local: Mapped[datetime] = mapped_column(DateTime)
    utc_offset_min: Mapped[int] = mapped_column(SmallInteger)
    pump_model: Mapped[str] = mapped_column(String(SERIAL_LEN))
    programmer_model: Mapped[str] = mapped_column(String(SERIAL_LEN))
    programmer_serial: Mapped[str] = mapped_column(String(SERIAL_LEN))
    programmer_software: Mapped[str] = mapped_column(String(SERIAL_LEN))
    operator_id: Mapped[str] = mapped_column(String(TEXT_LEN))
    operator_role: Mapped[str] = mapped_column(String(16))
    clinic_id: Mapped[str] = mapped_column(String(TEXT_LEN))
    # Patient identifiers: stored for the coder, never logged.
    patient_id: Mapped[str | None] = mapped_column(String(TEXT_LEN))
    patient_name: Mapped[str | None] = mapped_column(String(TEXT_LEN))
    patient_birth_date: Mapped[date | None] = mapped_column(Date)
    # At least one REFILL record: where the refill arithmetic's history starts (§7.11).
    has_refill: Mapped[bool] = mapped_column(Boolean)
    # The raw pump clock at interrogation (PUMP_STATUS.pump_clock), not in the document.
    pump_clock_local: Mapped[datetime | None] = mapped_column(DateTime)
    # The export whose document is in use (the binary one after a conflict, §7.16).
    source_sha256: Mapped[str] = mapped_column(String(SHA256_LEN))
    source_name: Mapped[str] = mapped_column(Text)
    source_format: Mapped[str] = mapped_column(String(16))
    format_version: Mapped[str] = mapped_column(String(8))
    document: Mapped[str] = mapped_column(Text)
    conflicting_exports: Mapped[bool] = mapped_column(Boolean, default=False)
    parser_version: Mapped[str] = mapped_column(String(VERSION_LEN))
    imported_at: Mapped[datetime] = mapped_column(DateTime)

    __table_args__ = (
        # The chain (§7.5): prior session = one backwards probe of this index.
        Index("ix_sessions_chain", "pump_id", "session_start_utc", "session_id"),
        Index("ix_sessions_start", "session_start_utc"),
        Index("ix_sessions_patient", "patient_id", "session_start_utc"),
        # The list's patient filter (migration 0010): an ID in any case, and the
        # sessions of the names `patient_names` finds for a part of a name (the
        # ID and primary key too: the list reads them from the index alone).
        Index("ix_sessions_patient_lower", func.lower(patient_id)),
        Index("ix_sessions_patient_name", "patient_name", "patient_id", "id"),
    )


class PatientNameRow(Base):
    """Each distinct patient name of `sessions`, kept by triggers (migration 0010).

    The list finds a patient by a part of the name (`lower(name) LIKE '%part%'`,
    which no B-tree index serves) by reading this table, one row per name, then
    the sessions of the names found through `ix_sessions_patient_name`, instead of
    reading every session. `name_key` is the name in lower case, written by the
    triggers with the database's own `lower()`, so the read compares it as it is. Triggers on `sessions` add a name when a session is
    written with it (insert, or an update of `patient_name`); nothing removes one,
    so the table holds every name in use and perhaps some no longer used, which
    match no session.
    """

    __tablename__ = "patient_names"

    name: Mapped[str] = mapped_column(String(TEXT_LEN), primary_key=True)
    # Text: lower case may take more characters than the name (a dotted capital I).
    name_key: Mapped[str] = mapped_column(Text)


class SettingValueRow(Base):
    """One parameter of a session's interrogated (phase 0) or programmed (phase 1) snapshot."""

    __tablename__ = "setting_values"

    session_pk: Mapped[int] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True
    )
    phase: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    param: Mapped[str] = mapped_column(String(SERIAL_LEN), primary_key=True)
    # The value as docs/session-json.md writes it (JSON text).
    value: Mapped[str] = mapped_column(Text)


class EventRow(Base):
    """One event of a session (alarm, refill, bolus, change, note) in file order."""

    __tablename__ = "events"

    session_pk: Mapped[int] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    type: Mapped[str] = mapped_column(String(8))
    time_utc: Mapped[datetime | None] = mapped_column(DateTime)
    # Where the event sits in the export in use: "offset" (binary) or "line" (CSV).
    position_kind: Mapped[str] = mapped_column(String(8))
    position_value: Mapped[int] = mapped_column(Integer)
    # An alarm's time on the pump's own clock, as logged (docs/formats.md §5).
    pump_clock_local: Mapped[datetime | None] = mapped_column(DateTime)
    # The event as docs/session-json.md writes it (JSON text).
    data: Mapped[str] = mapped_column(Text)


class RawFileRow(Base):
    """One distinct file content ever offered for import, imported or refused."""

    __tablename__ = "raw_files"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(SHA256_LEN), unique=True)
    size: Mapped[int] = mapped_column(Integer)
    # The name it first arrived under (a path or a serial-transfer label).
    name: Mapped[str] = mapped_column(Text)
    source_format: Mapped[str | None] = mapped_column(String(16))
    # "imported" or "refused".
    status: Mapped[str] = mapped_column(String(10))
    error_code: Mapped[str | None] = mapped_column(String(TEXT_LEN))
    # The decode error as JSON (`DecodeError.as_dict()` plus the one-line text).
    error: Mapped[str | None] = mapped_column(Text)
    session_pk: Mapped[int | None] = mapped_column(ForeignKey("sessions.id"))
    parser_version: Mapped[str] = mapped_column(String(VERSION_LEN))
    received_at: Mapped[datetime] = mapped_column(DateTime)

    __table_args__ = (Index("ix_raw_files_session", "session_pk"),)


class EvidenceRow(Base):
    """The evidence document of one session (docs/session-json.md "Evidence")."""

    __tablename__ = "evidence"

    session_pk: Mapped[int] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True
    )
    prior_session_pk: Mapped[int | None] = mapped_column(ForeignKey("sessions.id"))
    # CPT code under the default profile (`rate-dose`), for list filters.
    procedure: Mapped[str | None] = mapped_column(String(16))
    # Session flags, space-separated with a space at both ends (" a b ").
    flags: Mapped[str] = mapped_column(Text)
    document: Mapped[str] = mapped_column(Text)
    rules_version: Mapped[str] = mapped_column(String(VERSION_LEN))
    parser_version: Mapped[str] = mapped_column(String(VERSION_LEN))
    derived_at: Mapped[datetime] = mapped_column(DateTime)

    __table_args__ = (Index("ix_evidence_procedure", "procedure", "session_pk"),)


class EvidenceFlagRow(Base):
    """One session flag of an evidence document: `WHERE flag = ?` through an index."""

    __tablename__ = "evidence_flags"

    session_pk: Mapped[int] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True
    )
    flag: Mapped[str] = mapped_column(String(TEXT_LEN), primary_key=True)

    __table_args__ = (Index("ix_evidence_flags_flag", "flag", "session_pk"),)


def utc_now() -> datetime:
    """Now, as naive UTC: how every `*_utc` and `*_at` column stores an instant."""
    return datetime.now(UTC).replace(tzinfo=None)


def table_of(model: type[Base]) -> Table:
    """The Core table of a mapped class, for Core statements (bulk inserts, queries)."""
    table = model.__table__
    if not isinstance(table, Table):  # pragma: no cover - declarative always makes a Table
        raise TypeError(f"{model.__name__} is not mapped to a table")
    return table


# The tables, for Core statements (bulk inserts, queries).
pumps = table_of(PumpRow)
sessions = table_of(SessionRow)
setting_values = table_of(SettingValueRow)
events = table_of(EventRow)
raw_files = table_of(RawFileRow)
evidence = table_of(EvidenceRow)
evidence_flags = table_of(EvidenceFlagRow)
patient_names = table_of(PatientNameRow)
