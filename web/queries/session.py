"""One stored session as the evidence page reads it: its record, raw files and event positions.

`session_record` gives the session row, its evidence document (docs/session-json.md
"Evidence"), the document of the session before it in its pump's chain and the
ID of the one after it (chain order, docs/coding-rules.md §7.5); `raw_files_of`
every export file kept for it; `event_positions` where each event sits in the
export in use.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    and_,
    or_,
    select,
)
from sqlalchemy.engine import Connection

from db.codec import loads
from db.models import events, evidence, pumps, raw_files, sessions


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """Everything the evidence page reads of one stored session."""

    pk: int
    session_id: str
    pump_serial: str
    start_utc: datetime
    start_local: datetime
    utc_offset_min: int
    patient_id: str | None
    patient_name: str | None
    patient_birth_date: date | None
    operator_id: str
    operator_role: str
    clinic_id: str
    source_name: str
    source_sha256: str
    source_format: str
    parser_version: str
    imported_at: datetime
    conflicting_exports: bool
    document: Mapping[str, Any]
    evidence: Mapping[str, Any] | None
    rules_version: str | None
    evidence_parser_version: str | None
    derived_at: datetime | None
    prior_session_id: str | None
    prior_document: Mapping[str, Any] | None
    next_session_id: str | None


@dataclass(frozen=True, slots=True)
class RawFile:
    sha256: str
    size: int
    name: str
    source_format: str | None
    status: str
    error_code: str | None
    error: Mapping[str, Any] | None
    parser_version: str
    received_at: datetime
    session_id: str | None = None


@dataclass(frozen=True, slots=True)
class EventPosition:
    seq: int
    kind: str
    value: int


def session_record(connection: Connection, session_id: str) -> SessionRecord | None:
    """The stored session, its evidence, its prior session's document and its next session."""
    row = connection.execute(
        select(
            sessions.c.id,
            sessions.c.session_id,
            pumps.c.serial,
            sessions.c.session_start_utc,
            sessions.c.session_start_local,
            sessions.c.utc_offset_min,
            sessions.c.patient_id,
            sessions.c.patient_name,
            sessions.c.patient_birth_date,
            sessions.c.operator_id,
            sessions.c.operator_role,
            sessions.c.clinic_id,
            sessions.c.source_name,
            sessions.c.source_sha256,
            sessions.c.source_format,
            sessions.c.parser_version,
            sessions.c.imported_at,
            sessions.c.conflicting_exports,
            sessions.c.document,
            sessions.c.pump_id,
        )
        .select_from(sessions.join(pumps, pumps.c.id == sessions.c.pump_id))
        .where(sessions.c.session_id == session_id)
    ).first()
    if row is None:
        return None
    pk = int(row[0])
    ev = connection.execute(
        select(
            evidence.c.document,
            evidence.c.rules_version,
            evidence.c.parser_version,
            evidence.c.derived_at,
            evidence.c.prior_session_pk,
        ).where(evidence.c.session_pk == pk)
    ).first()
    prior_id = prior_doc = None
    if ev is not None and ev[4] is not None:
        prior = connection.execute(
            select(sessions.c.session_id, sessions.c.document).where(sessions.c.id == ev[4])
        ).first()
        if prior is not None:
            prior_id, prior_doc = prior[0], loads(prior[1])
    next_id = connection.execute(
        select(sessions.c.session_id)
        .where(
            sessions.c.pump_id == row[19],
            or_(
                sessions.c.session_start_utc > row[3],
                and_(
                    sessions.c.session_start_utc == row[3],
                    sessions.c.session_id > row[1],
                ),
            ),
        )
        .order_by(sessions.c.session_start_utc, sessions.c.session_id)
        .limit(1)
    ).scalar()
    return SessionRecord(
        pk=pk,
        session_id=row[1],
        pump_serial=row[2],
        start_utc=row[3],
        start_local=row[4],
        utc_offset_min=int(row[5]),
        patient_id=row[6],
        patient_name=row[7],
        patient_birth_date=row[8],
        operator_id=row[9],
        operator_role=row[10],
        clinic_id=row[11],
        source_name=row[12],
        source_sha256=row[13],
        source_format=row[14],
        parser_version=row[15],
        imported_at=row[16],
        conflicting_exports=bool(row[17]),
        document=loads(row[18]),
        evidence=None if ev is None else loads(ev[0]),
        rules_version=None if ev is None else ev[1],
        evidence_parser_version=None if ev is None else ev[2],
        derived_at=None if ev is None else ev[3],
        prior_session_id=prior_id,
        prior_document=prior_doc,
        next_session_id=next_id,
    )


def raw_file_from_row(row: Any) -> RawFile:
    error = None
    if row[6]:
        try:
            parsed = loads(row[6])
        except ValueError:
            parsed = None
        error = parsed if isinstance(parsed, Mapping) else None
    return RawFile(
        sha256=row[0],
        size=int(row[1]),
        name=row[2],
        source_format=row[3],
        status=row[4],
        error_code=row[5],
        error=error,
        parser_version=row[7],
        received_at=row[8],
        session_id=row[9] if len(row) > 9 else None,
    )


RAW_COLUMNS = (
    raw_files.c.sha256,
    raw_files.c.size,
    raw_files.c.name,
    raw_files.c.source_format,
    raw_files.c.status,
    raw_files.c.error_code,
    raw_files.c.error,
    raw_files.c.parser_version,
    raw_files.c.received_at,
)


def raw_files_of(connection: Connection, session_pk: int) -> list[RawFile]:
    """Every export file stored for a session (both formats, conflicting ones too)."""
    rows = connection.execute(
        select(*RAW_COLUMNS)
        .where(raw_files.c.session_pk == session_pk)
        .order_by(raw_files.c.received_at, raw_files.c.id)
    )
    return [raw_file_from_row(row) for row in rows]


def raw_file(connection: Connection, sha256: str) -> RawFile | None:
    """One raw file by SHA-256, with the session ID it holds (None when refused)."""
    row = connection.execute(
        select(*RAW_COLUMNS, sessions.c.session_id)
        .select_from(raw_files.outerjoin(sessions, sessions.c.id == raw_files.c.session_pk))
        .where(raw_files.c.sha256 == sha256)
    ).first()
    return None if row is None else raw_file_from_row(row)


def event_positions(connection: Connection, session_pk: int) -> list[EventPosition]:
    """Where each event sits in the export in use (byte offset or CSV line), in order."""
    rows = connection.execute(
        select(events.c.seq, events.c.position_kind, events.c.position_value)
        .where(events.c.session_pk == session_pk)
        .order_by(events.c.seq)
    )
    return [EventPosition(int(seq), str(kind), int(value)) for seq, kind, value in rows]
