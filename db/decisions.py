"""The coder's decision on a visit, kept as versions: every change is a new row.

A sign-off stores the whole decision (procedure, diagnoses, modifiers, rendering
NPI, drug lines, override reason; docs/coding-rules.md §9) as canonical JSON text
in a new version of that session's decision: version 1, 2, 3... with its author
and time. Nothing is updated or deleted, so earlier versions stay readable and an
auditor sees who changed what (the audit log records each sign-off as well). The
current decision of a session is its highest version.

The JSON shape belongs to `evidence.decision`; this module stores and finds it:

- `sign_off` appends a version inside the caller's write transaction (the caller
  appends the audit entry in the same transaction);
- `current_decision`, `decision_versions` read one session's;
- `list_decisions` lists sessions with or without a decision, newest first;
- `decisions_on_day` gives the other signed-off decisions of one patient on one
  date of service, for the once-a-day billing edits.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Final

from sqlalchemy import (
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    insert,
    select,
)
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Mapped, mapped_column

from db.models import Base, sessions, table_of, utc_now
from parsers.errors import PumptrailError

AUTHOR_LEN: Final = 128
PROCEDURE_LEN: Final = 8


class UnknownSession(PumptrailError):
    """Raised by `sign_off` when no stored session has the given session ID."""


class DecisionVersionRow(Base):
    """One version of the coder's decision on one session (rows are only inserted)."""

    __tablename__ = "decision_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_pk: Mapped[int] = mapped_column(ForeignKey("sessions.id"))
    version: Mapped[int] = mapped_column(Integer)
    # The billed procedure code, for lists and filters; the decision holds it too.
    procedure: Mapped[str] = mapped_column(String(PROCEDURE_LEN))
    # Canonical JSON (sorted keys, compact) of the whole decision.
    decision: Mapped[str] = mapped_column(Text)
    author: Mapped[str] = mapped_column(String(AUTHOR_LEN))
    created_at: Mapped[datetime] = mapped_column(DateTime)

    __table_args__ = (
        UniqueConstraint("session_pk", "version"),
        Index("ix_decision_versions_created", "created_at"),
    )


decision_versions_table = table_of(DecisionVersionRow)


@dataclass(frozen=True, slots=True)
class DecisionVersion:
    """One stored version: whose decision on which session, when, and its content."""

    session_id: str
    version: int
    procedure: str
    decision: Mapping[str, Any]
    author: str
    created_at: datetime


def canonical(decision: Mapping[str, Any]) -> str:
    return json.dumps(decision, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _session_pk(connection: Connection, session_id: str) -> int | None:
    return connection.execute(
        select(sessions.c.id).where(sessions.c.session_id == session_id)
    ).scalar()


def sign_off(
    connection: Connection,
    session_id: str,
    decision: Mapping[str, Any],
    *,
    author: str,
) -> DecisionVersion:
    """Store `decision` as the session's next version (caller's transaction)."""
    pk = _session_pk(connection, session_id)
    if pk is None:
        raise UnknownSession(f"no stored session {session_id}")
    table = decision_versions_table
    latest = connection.execute(
        select(func.max(table.c.version)).where(table.c.session_pk == pk)
    ).scalar()
    version = int(latest or 0) + 1
    created = utc_now()
    procedure = str(decision.get("procedure", ""))[:PROCEDURE_LEN]
    connection.execute(
        insert(table).values(
            session_pk=pk,
            version=version,
            procedure=procedure,
            decision=canonical(decision),
            author=author[:AUTHOR_LEN],
            created_at=created,
        )
    )
    return DecisionVersion(session_id, version, procedure, dict(decision), author, created)


_COLUMNS = (
    sessions.c.session_id,
    decision_versions_table.c.version,
    decision_versions_table.c.procedure,
    decision_versions_table.c.decision,
    decision_versions_table.c.author,
    decision_versions_table.c.created_at,
)


def _version(row: Any) -> DecisionVersion:
    return DecisionVersion(
        str(row[0]), int(row[1]), str(row[2]), json.loads(row[3]), str(row[4]), row[5]
    )


def decision_versions(connection: Connection, session_id: str) -> list[DecisionVersion]:
    """Every version of the session's decision, oldest first."""
    table = decision_versions_table
    rows = connection.execute(
        select(*_COLUMNS)
        .join(sessions, sessions.c.id == table.c.session_pk)
        .where(sessions.c.session_id == session_id)
        .order_by(table.c.version)
    )
    return [_version(row) for row in rows]


def current_decision(connection: Connection, session_id: str) -> DecisionVersion | None:
    """The session's newest version, or None when nobody signed it off."""
    versions = decision_versions(connection, session_id)
    return versions[-1] if versions else None


@dataclass(frozen=True, slots=True)
class DecisionListRow:
    """A session in the decisions list: signed off (with its current version) or not."""

    session_id: str
    pump_serial: str
    session_start_local: datetime
    version: int | None
    procedure: str | None
    author: str | None
    signed_at: datetime | None

    @property
    def status(self) -> str:
        return "unsigned" if self.version is None else "signed"


def list_decisions(
    connection: Connection,
    *,
    since: date | None = None,
    status: str | None = None,
    limit: int = 1000,
) -> list[DecisionListRow]:
    """Sessions (started on or after `since`, local date) with their current decision,
    newest session first; `status` 'signed' or 'unsigned' keeps only those."""
    from db.models import pumps

    table = decision_versions_table
    newest = (
        select(table.c.session_pk, func.max(table.c.version).label("version"))
        .group_by(table.c.session_pk)
        .subquery()
    )
    current = table.alias("current_version")
    query = (
        select(
            sessions.c.session_id,
            pumps.c.serial,
            sessions.c.session_start_local,
            current.c.version,
            current.c.procedure,
            current.c.author,
            current.c.created_at,
        )
        .join(pumps, pumps.c.id == sessions.c.pump_id)
        .outerjoin(newest, newest.c.session_pk == sessions.c.id)
        .outerjoin(
            current,
            (current.c.session_pk == newest.c.session_pk) & (current.c.version == newest.c.version),
        )
    )
    if since is not None:
        query = query.where(
            sessions.c.session_start_local >= datetime.combine(since, datetime.min.time())
        )
    if status == "signed":
        query = query.where(current.c.version.is_not(None))
    elif status == "unsigned":
        query = query.where(current.c.version.is_(None))
    query = query.order_by(sessions.c.session_start_local.desc(), sessions.c.session_id).limit(
        limit
    )
    return [DecisionListRow(*row) for row in connection.execute(query)]


def current_decisions(
    connection: Connection, *, since: date | None = None
) -> list[tuple[DecisionVersion, str | None]]:
    """Every session's current decision (with the session's patient ID) whose date of
    service (the session's local start date) is on or after `since`, oldest first."""
    table = decision_versions_table
    newest = (
        select(table.c.session_pk, func.max(table.c.version).label("version"))
        .group_by(table.c.session_pk)
        .subquery()
    )
    query = (
        select(*_COLUMNS, sessions.c.patient_id)
        .select_from(table)
        .join(
            newest,
            (newest.c.session_pk == table.c.session_pk) & (newest.c.version == table.c.version),
        )
        .join(sessions, sessions.c.id == table.c.session_pk)
    )
    if since is not None:
        query = query.where(
            sessions.c.session_start_local >= datetime.combine(since, datetime.min.time())
        )
    query = query.order_by(sessions.c.session_start_local, sessions.c.session_id)
    return [(_version(row), row[6]) for row in connection.execute(query)]


def decisions_on_day(
    connection: Connection, patient_id: str, day: date, *, except_session: str | None = None
) -> list[DecisionVersion]:
    """The current decisions of the patient's other sessions on `day` (local date)."""
    start = datetime.combine(day, datetime.min.time())
    others = connection.execute(
        select(sessions.c.session_id).where(
            sessions.c.patient_id == patient_id,
            sessions.c.session_start_local >= start,
            sessions.c.session_start_local < start + timedelta(days=1),
        )
    ).scalars()
    found: list[DecisionVersion] = []
    for session_id in others:
        if session_id == except_session:
            continue
        decision = current_decision(connection, session_id)
        if decision is not None:
            found.append(decision)
    return found


__all__: Sequence[str] = (
    "DecisionListRow",
    "DecisionVersion",
    "UnknownSession",
    "current_decision",
    "current_decisions",
    "decision_versions",
    "decisions_on_day",
    "list_decisions",
    "sign_off",
)
