"""A pump's timeline: its latest sessions in chain order (docs/coding-rules.md §7.5)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    select,
)
from sqlalchemy.engine import Connection

from db.codec import loads
from db.models import evidence, pumps, sessions


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    session_id: str
    start_utc: datetime
    start_local: datetime
    utc_offset_min: int
    operator_id: str
    operator_role: str
    has_refill: bool
    document: Mapping[str, Any]
    procedure: str | None
    flags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PumpInfo:
    serial: str
    model: str
    patient_id: str | None
    patient_name: str | None


def pump_timeline(
    connection: Connection, serial: str, *, limit: int = 500
) -> tuple[PumpInfo, list[TimelineEntry]] | None:
    """The pump and its latest `limit` sessions in chain order (§7.5); None for no such pump."""
    pump = connection.execute(
        select(pumps.c.id, pumps.c.serial, pumps.c.model).where(pumps.c.serial == serial)
    ).first()
    if pump is None:
        return None
    rows = list(
        connection.execute(
            select(
                sessions.c.session_id,
                sessions.c.session_start_utc,
                sessions.c.session_start_local,
                sessions.c.utc_offset_min,
                sessions.c.operator_id,
                sessions.c.operator_role,
                sessions.c.has_refill,
                sessions.c.document,
                evidence.c.procedure,
                evidence.c.flags,
                sessions.c.patient_id,
                sessions.c.patient_name,
            )
            .select_from(sessions.outerjoin(evidence, evidence.c.session_pk == sessions.c.id))
            .where(sessions.c.pump_id == pump[0])
            .order_by(sessions.c.session_start_utc.desc(), sessions.c.session_id.desc())
            .limit(limit)
        )
    )
    rows.reverse()
    entries = [
        TimelineEntry(
            session_id=r[0],
            start_utc=r[1],
            start_local=r[2],
            utc_offset_min=int(r[3]),
            operator_id=r[4],
            operator_role=r[5],
            has_refill=bool(r[6]),
            document=loads(r[7]),
            procedure=r[8],
            flags=tuple((r[9] or "").split()),
        )
        for r in rows
    ]
    latest = rows[-1] if rows else None
    info = PumpInfo(
        serial=pump[1],
        model=pump[2],
        patient_id=None if latest is None else latest[10],
        patient_name=None if latest is None else latest[11],
    )
    return info, entries
