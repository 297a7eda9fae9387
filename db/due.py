"""The refill-due report's database side: the latest stored session of every pump.

A pump's latest session is the last of its chain (docs/coding-rules.md §7.5:
session start UTC, then session ID). Its stored document (docs/session-json.md)
holds the interrogated state and the phase-1 entries, whose overlay is the end
state that carries the programmed `low_reservoir_alarm_date` and `refill_date`
(docs/formats.md §4, category `schedule`). `latest_sessions`
fetches them, one row per pump, in one query; the rule that decides which pumps
are due and in what order is `evidence.due`; `due_report` joins the two.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import Engine, func, select
from sqlalchemy.engine import Connection

from db.models import pumps, sessions
from evidence.due import RefillDue, refills_due
from evidence.rules import Rules


@dataclass(frozen=True, slots=True)
class LatestSession:
    """A pump and the document of its latest session."""

    pump_serial: str
    pump_model: str
    session_id: str
    session_start_utc: datetime
    document: str
    # Patient identifiers, for the clinic's own report only (never logged).
    patient_id: str | None
    patient_name: str | None


def latest_sessions(connection: Connection) -> list[LatestSession]:
    """One row per pump with at least one session: its latest session, by pump serial."""
    rank = (
        func.row_number()
        .over(
            partition_by=sessions.c.pump_id,
            order_by=(sessions.c.session_start_utc.desc(), sessions.c.session_id.desc()),
        )
        .label("rank")
    )
    ranked = select(
        sessions.c.pump_id,
        sessions.c.session_id,
        sessions.c.session_start_utc,
        sessions.c.document,
        sessions.c.patient_id,
        sessions.c.patient_name,
        rank,
    ).subquery()
    rows = connection.execute(
        select(
            pumps.c.serial,
            pumps.c.model,
            ranked.c.session_id,
            ranked.c.session_start_utc,
            ranked.c.document,
            ranked.c.patient_id,
            ranked.c.patient_name,
        )
        .select_from(ranked.join(pumps, pumps.c.id == ranked.c.pump_id))
        .where(ranked.c.rank == 1)
        .order_by(pumps.c.serial)
    )
    return [LatestSession(*row) for row in rows]


def due_report(engine: Engine, *, today: date, within_days: int, rules: Rules) -> list[RefillDue]:
    """The refill-due report of the database, as of `today` (the clinic's local date)."""
    with engine.connect() as connection:
        latest = latest_sessions(connection)
    return refills_due(latest, today=today, within_days=within_days, rules=rules)
