"""The billing interface's outbox: DFT^P03 messages waiting for, or answered by, billing.

docs/interfaces.md ("Outbox"): a sign-off writes its message here in the same
transaction that stores the decision version (`enqueue_for`), so a stored decision
always has its message and a rolled-back one never has. The sender
(`ingest.billing`) sends the pending messages in `id` order over MLLP.

A row's `status`:

- `pending`: not yet acknowledged. `attempts` 0: never sent (the Charges page shows
  `ready`); more: sent at least once without an answer (`sent`), and sent again with
  the same control ID until billing answers;
- `acknowledged`: billing answered `AA` (never sent again);
- `rejected`: billing answered `AE` or `AR`; `ack_text` holds its reason. It waits
  for `resend` (after the cause is fixed at billing) and is not sent until then;
- `superseded`: a newer decision version replaced it before billing booked it (never
  sent, or rejected); it is never sent.

When a visit is revised after its charges went out (sent at least once, or
acknowledged), the new version yields a reversal of the earlier lines (FT1-6 `CD`)
and then the new charges, in that order.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import (
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Mapped, mapped_column

from db.decisions import DecisionVersion, decision_versions_table
from db.models import Base, sessions, table_of, utc_now
from evidence.charges import charge_lines
from evidence.decision import decision_from_json
from evidence.dft import CHARGE, CONTROL_ID_LEN, CREDIT, Hl7Settings, Patient, dft_p03
from parsers.errors import PumptrailError

PENDING: Final = "pending"
ACKNOWLEDGED: Final = "acknowledged"
REJECTED: Final = "rejected"
SUPERSEDED: Final = "superseded"
STATUSES: Final = (PENDING, ACKNOWLEDGED, REJECTED, SUPERSEDED)
# What the Charges page and `pumptrail charges list` show.
READY: Final = "ready"
SENT: Final = "sent"

CHARGES: Final = "charges"
REVERSAL: Final = "reversal"
ACK_TEXT_LEN: Final = 2000


class OutboxError(PumptrailError):
    """Raised by `resend` when the message does not exist or was not rejected."""


class OutboxRow(Base):
    """One DFT^P03 message for billing (rows are never deleted)."""

    __tablename__ = "hl7_outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_pk: Mapped[int] = mapped_column(ForeignKey("sessions.id"))
    # The decision version whose lines the message charges (or reverses).
    version: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(8))
    control_id: Mapped[str] = mapped_column(String(CONTROL_ID_LEN), unique=True)
    message: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    last_sent_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    answered_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    ack_code: Mapped[str | None] = mapped_column(String(2), nullable=True)
    ack_text: Mapped[str | None] = mapped_column(Text, nullable=True)

    __table_args__ = (
        Index("ix_hl7_outbox_status", "status", "id"),
        Index("ix_hl7_outbox_session", "session_pk", "id"),
    )


outbox_table = table_of(OutboxRow)


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """One outbox row as the sender, the CLI and the Charges page read it."""

    id: int
    session_id: str
    version: int
    kind: str
    control_id: str
    message: str
    status: str
    attempts: int
    created_at: datetime
    last_sent_at: datetime | None
    answered_at: datetime | None
    ack_code: str | None
    ack_text: str | None

    @property
    def shown_status(self) -> str:
        """ready / sent / acknowledged / rejected / superseded."""
        if self.status == PENDING:
            return SENT if self.attempts else READY
        return self.status


_COLUMNS = (
    outbox_table.c.id,
    sessions.c.session_id,
    outbox_table.c.version,
    outbox_table.c.kind,
    outbox_table.c.control_id,
    outbox_table.c.message,
    outbox_table.c.status,
    outbox_table.c.attempts,
    outbox_table.c.created_at,
    outbox_table.c.last_sent_at,
    outbox_table.c.answered_at,
    outbox_table.c.ack_code,
    outbox_table.c.ack_text,
)


def _select() -> Any:
    return select(*_COLUMNS).join(sessions, sessions.c.id == outbox_table.c.session_pk)


def _patient(connection: Connection, session_pk: int) -> Patient:
    row = connection.execute(
        select(sessions.c.patient_id, sessions.c.patient_name, sessions.c.patient_birth_date).where(
            sessions.c.id == session_pk
        )
    ).one()
    return Patient(str(row[0] or ""), row[1], row[2])


def _insert(
    connection: Connection,
    session_pk: int,
    version: DecisionVersion,
    kind: str,
    *,
    patient: Patient,
    settings: Hl7Settings,
) -> None:
    lines = charge_lines(
        decision_from_json(version.session_id, patient.patient_id, version.decision)
    )
    now = utc_now()
    built = dft_p03(
        lines,
        patient,
        settings,
        signed_at=version.created_at,
        created_at=now,
        transaction_type=CHARGE if kind == CHARGES else CREDIT,
    )
    connection.execute(
        insert(outbox_table).values(
            session_pk=session_pk,
            version=version.version,
            kind=kind,
            control_id=built.control_id,
            message=built.text,
            status=PENDING,
            attempts=0,
            created_at=now,
        )
    )


def _stored_version(connection: Connection, session_pk: int, version: int) -> DecisionVersion:
    table = decision_versions_table
    row = connection.execute(
        select(
            sessions.c.session_id,
            table.c.version,
            table.c.procedure,
            table.c.decision,
            table.c.author,
            table.c.created_at,
        )
        .join(sessions, sessions.c.id == table.c.session_pk)
        .where(table.c.session_pk == session_pk, table.c.version == version)
    ).one()
    return DecisionVersion(
        str(row[0]), int(row[1]), str(row[2]), json.loads(row[3]), str(row[4]), row[5]
    )


def enqueue_for(connection: Connection, version: DecisionVersion, settings: Hl7Settings) -> None:
    """Write the messages a newly stored decision version causes (caller's transaction).

    The version's charges; before them, when the session's previous charges went out
    (sent at least once, or acknowledged), their reversal. Previous charges that
    billing never saw (never sent) or refused (rejected) are superseded instead.
    """
    session_pk = connection.execute(
        select(sessions.c.id).where(sessions.c.session_id == version.session_id)
    ).scalar_one()
    patient = _patient(connection, session_pk)
    # The sender claims a row (attempts + 1) in its own transaction; the row lock
    # makes this decision wait for that claim (PostgreSQL; SQLite has one writer).
    previous = connection.execute(
        select(
            outbox_table.c.id,
            outbox_table.c.version,
            outbox_table.c.status,
            outbox_table.c.attempts,
        )
        .where(
            outbox_table.c.session_pk == session_pk,
            outbox_table.c.kind == CHARGES,
            outbox_table.c.status != SUPERSEDED,
            outbox_table.c.version < version.version,
        )
        .order_by(outbox_table.c.id.desc())
        .limit(1)
        .with_for_update()
    ).first()
    if previous is not None:
        row_id, old_version, status, attempts = previous
        went_out = status == ACKNOWLEDGED or (status == PENDING and attempts > 0)
        if went_out:
            old = _stored_version(connection, session_pk, int(old_version))
            _insert(connection, session_pk, old, REVERSAL, patient=patient, settings=settings)
        else:
            connection.execute(
                update(outbox_table).where(outbox_table.c.id == row_id).values(status=SUPERSEDED)
            )
    _insert(connection, session_pk, version, CHARGES, patient=patient, settings=settings)


# ---------------------------------------------------------------------------
# The sender's side


def next_pending(connection: Connection, *, after: int = 0) -> OutboxMessage | None:
    """The oldest pending message with an id above `after`."""
    row = connection.execute(
        _select()
        .where(outbox_table.c.status == PENDING, outbox_table.c.id > after)
        .order_by(outbox_table.c.id)
        .limit(1)
    ).first()
    return None if row is None else OutboxMessage(*row)


def claim(connection: Connection, message_id: int) -> bool:
    """Count a send attempt before the bytes go out; False when the message is no
    longer pending (superseded or answered meanwhile): then it is not sent."""
    result = connection.execute(
        update(outbox_table)
        .where(outbox_table.c.id == message_id, outbox_table.c.status == PENDING)
        .values(attempts=outbox_table.c.attempts + 1, last_sent_at=utc_now())
    )
    return result.rowcount == 1


def record_answer(connection: Connection, message_id: int, code: str, text: str) -> None:
    """Store billing's answer: `AA` acknowledges, `AE`/`AR` rejects with its text."""
    status = ACKNOWLEDGED if code == "AA" else REJECTED
    connection.execute(
        update(outbox_table)
        .where(outbox_table.c.id == message_id, outbox_table.c.status == PENDING)
        .values(status=status, ack_code=code, ack_text=text[:ACK_TEXT_LEN], answered_at=utc_now())
    )


def resend(connection: Connection, message_id: int) -> OutboxMessage:
    """Put a rejected message back in the queue, with its control ID unchanged."""
    found = get(connection, message_id)
    if found is None:
        raise OutboxError(f"no outbox message {message_id}")
    if found.status != REJECTED:
        raise OutboxError(
            f"outbox message {message_id} is {found.shown_status}: only a rejected one is resent"
        )
    connection.execute(
        update(outbox_table)
        .where(outbox_table.c.id == message_id, outbox_table.c.status == REJECTED)
        .values(status=PENDING)
    )
    return found


# ---------------------------------------------------------------------------
# Reading


def get(connection: Connection, message_id: int) -> OutboxMessage | None:
    row = connection.execute(_select().where(outbox_table.c.id == message_id)).first()
    return None if row is None else OutboxMessage(*row)


def list_messages(
    connection: Connection, *, status: str | None = None, limit: int = 1000
) -> list[OutboxMessage]:
    """Messages, oldest first; `status` one of STATUSES keeps only those."""
    query = _select()
    if status is not None:
        query = query.where(outbox_table.c.status == status)
    return [
        OutboxMessage(*row)
        for row in connection.execute(query.order_by(outbox_table.c.id).limit(limit))
    ]


def charges_status(
    connection: Connection, versions: Iterable[tuple[str, int]]
) -> Mapping[tuple[str, int], OutboxMessage]:
    """The charges message of each (session ID, version) that has one."""
    wanted = set(versions)
    if not wanted:
        return {}
    rows = connection.execute(
        _select()
        .where(
            outbox_table.c.kind == CHARGES,
            sessions.c.session_id.in_(sorted({s for s, _ in wanted})),
        )
        .order_by(outbox_table.c.id)
    )
    found: dict[tuple[str, int], OutboxMessage] = {}
    for row in rows:
        message = OutboxMessage(*row)
        key = (message.session_id, message.version)
        if key in wanted:
            found[key] = message
    return found


__all__: Sequence[str] = (
    "ACKNOWLEDGED",
    "PENDING",
    "REJECTED",
    "SUPERSEDED",
    "OutboxError",
    "OutboxMessage",
    "charges_status",
    "claim",
    "enqueue_for",
    "get",
    "list_messages",
    "next_pending",
    "record_answer",
    "resend",
)
