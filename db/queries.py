"""Queries of the stored chain: prior session, history window, later sessions, evidence.

The chain of a pump (docs/coding-rules.md §7.5): same pump serial, ordered by session
start (UTC) then session ID; the prior session of a session is the latest one of
its pump that starts strictly earlier, whatever order the files were imported in.
Every chain query walks the composite index `(pump_id, session_start_utc,
session_id)`; none of them holds a business rule.

The history a derivation needs: the earlier sessions from the latest earlier one
holding a REFILL record (the refill arithmetic starts there, §7.11; nothing older
is read); with no earlier refill, only the prior session (the between-sessions
diff, §7.6).

Statements used once per imported file are built once, at import time, with bound
parameters: building a SQLAlchemy statement costs several times its execution.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Protocol, TypeVar

from sqlalchemy import ColumnElement, Select, and_, bindparam, delete, func, insert, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Connection

from db.bulk import RowInserter
from db.codec import StoredEvent, loads, session_from_document
from db.models import events, evidence, evidence_flags, pumps, sessions
from db.users import evidence_codes
from parsers.model import Position, Session


@dataclass(frozen=True, slots=True)
class ChainEntry:
    """A session's place in its pump's chain."""

    pk: int
    session_id: str
    start_utc: datetime
    has_refill: bool

    @property
    def key(self) -> tuple[datetime, str]:
        return (self.start_utc, self.session_id)


@dataclass(frozen=True, slots=True)
class StoredSession:
    """What a derivation reads of a stored session."""

    pk: int
    session_id: str
    pump_id: int
    start_utc: datetime
    has_refill: bool
    conflicting_exports: bool
    source_name: str
    document: str

    @property
    def key(self) -> tuple[datetime, str]:
        return (self.start_utc, self.session_id)


_CHAIN_COLUMNS = (
    sessions.c.id,
    sessions.c.session_id,
    sessions.c.session_start_utc,
    sessions.c.has_refill,
)
_STORED_COLUMNS = (
    sessions.c.id,
    sessions.c.session_id,
    sessions.c.pump_id,
    sessions.c.session_start_utc,
    sessions.c.has_refill,
    sessions.c.conflicting_exports,
    sessions.c.source_name,
    sessions.c.document,
)
_OF_PUMP = sessions.c.pump_id == bindparam("pump_id")
_BEFORE = sessions.c.session_start_utc < bindparam("start")
_CHAIN_DESC = (sessions.c.session_start_utc.desc(), sessions.c.session_id.desc())
_CHAIN_ASC = (sessions.c.session_start_utc, sessions.c.session_id)

PUMP_BY_SERIAL: Final = select(pumps.c.id).where(pumps.c.serial == bindparam("serial"))
PUMP_FOR_UPDATE: Final = PUMP_BY_SERIAL.with_for_update()
LOCK_PUMP: Final = select(pumps.c.id).where(pumps.c.id == bindparam("pump_id")).with_for_update()
INSERT_PUMP: Final = insert(pumps)
PRIOR: Final = select(*_CHAIN_COLUMNS).where(_OF_PUMP, _BEFORE).order_by(*_CHAIN_DESC).limit(1)
LATEST_REFILL_BEFORE: Final = (
    select(*_CHAIN_COLUMNS)
    .where(_OF_PUMP, _BEFORE, sessions.c.has_refill.is_(True))
    .order_by(*_CHAIN_DESC)
    .limit(1)
)
_REFILL_CUT = (
    select(sessions.c.session_start_utc)
    .where(_OF_PUMP, _BEFORE, sessions.c.has_refill.is_(True))
    .order_by(*_CHAIN_DESC)
    .limit(1)
    .scalar_subquery()
)
_PRIOR_CUT = (
    select(sessions.c.session_start_utc)
    .where(_OF_PUMP, _BEFORE)
    .order_by(*_CHAIN_DESC)
    .limit(1)
    .scalar_subquery()
)
HISTORY: Final = (
    select(*_STORED_COLUMNS)
    .where(
        _OF_PUMP,
        _BEFORE,
        sessions.c.session_start_utc >= func.coalesce(_REFILL_CUT, _PRIOR_CUT),
    )
    .order_by(*_CHAIN_ASC)
)
FORWARD: Final = (
    select(*_STORED_COLUMNS)
    .where(_OF_PUMP, sessions.c.session_start_utc >= bindparam("start"))
    .order_by(*_CHAIN_ASC)
)
CHAIN: Final = select(*_CHAIN_COLUMNS).where(_OF_PUMP).order_by(*_CHAIN_ASC)
SESSION_BY_ID: Final = select(*_STORED_COLUMNS).where(
    sessions.c.session_id == bindparam("session_id")
)
# Evidence rows by the driver (COPY on PostgreSQL: one round trip for a group's rows).
_EVIDENCE_ROWS: Final = RowInserter(evidence)
_FLAG_ROWS: Final = RowInserter(evidence_flags)
_CODE_ROWS: Final = RowInserter(evidence_codes)
EVIDENCE_OF_SESSION: Final = (
    select(evidence.c.document)
    .select_from(evidence.join(sessions, sessions.c.id == evidence.c.session_pk))
    .where(sessions.c.session_id == bindparam("session_id"))
)


def _chain_entry(row: Any) -> ChainEntry:
    return ChainEntry(row[0], row[1], row[2], bool(row[3]))


def _stored(row: Any) -> StoredSession:
    return StoredSession(row[0], row[1], row[2], row[3], bool(row[4]), bool(row[5]), row[6], row[7])


def _at_or_after(key: tuple[datetime, str]) -> ColumnElement[bool]:
    """Chain order (start, session ID) at or after `key`; spelled out for the index."""
    start, session_id = key
    return or_(
        sessions.c.session_start_utc > start,
        and_(sessions.c.session_start_utc == start, sessions.c.session_id >= session_id),
    )


# ---------------------------------------------------------------------------
# Pumps


def pump_pk(connection: Connection, serial: str) -> int | None:
    return connection.execute(PUMP_BY_SERIAL, {"serial": serial}).scalar()


def get_or_create_pump(connection: Connection, serial: str, model: str) -> int:
    """The pump's row id, inserting the pump on first sight, locked for this transaction.

    Writers of one pump's chain take turns: on PostgreSQL the pump row is locked
    (`SELECT ... FOR UPDATE`) until commit, so a concurrent import of the same pump
    waits, then sees this one's sessions before deriving. SQLite needs no lock
    here: a write transaction holds the database's only write lock.
    """
    found = connection.execute(PUMP_FOR_UPDATE, {"serial": serial}).scalar()
    if found is not None:
        return int(found)
    if connection.dialect.name == "postgresql":
        # Another transaction may be inserting the same pump: wait for it, then use its row.
        connection.execute(
            pg_insert(pumps).values(serial=serial, model=model).on_conflict_do_nothing()
        )
        return int(connection.execute(PUMP_FOR_UPDATE, {"serial": serial}).scalar_one())
    key = connection.execute(INSERT_PUMP, {"serial": serial, "model": model}).inserted_primary_key
    if key is None:  # pragma: no cover - an insert always returns its key here
        raise RuntimeError("pump insert returned no key")
    return int(key[0])


def lock_pump(connection: Connection, pump_id: int) -> None:
    """Lock a pump's row until commit (PostgreSQL; a no-op on SQLite)."""
    connection.execute(LOCK_PUMP, {"pump_id": pump_id})


def all_pump_ids(connection: Connection) -> list[int]:
    return list(connection.execute(select(pumps.c.id).order_by(pumps.c.serial)).scalars())


# ---------------------------------------------------------------------------
# The chain


def prior_session(connection: Connection, pump_id: int, start_utc: datetime) -> ChainEntry | None:
    """The latest session of the pump starting strictly before `start_utc` (§7.5)."""
    row = connection.execute(PRIOR, {"pump_id": pump_id, "start": start_utc}).first()
    return None if row is None else _chain_entry(row)


def latest_refill_before(
    connection: Connection, pump_id: int, start_utc: datetime
) -> ChainEntry | None:
    """The latest session of the pump with a REFILL record, starting strictly earlier."""
    row = connection.execute(LATEST_REFILL_BEFORE, {"pump_id": pump_id, "start": start_utc}).first()
    return None if row is None else _chain_entry(row)


def history_start(connection: Connection, pump_id: int, start_utc: datetime) -> ChainEntry | None:
    """Where a derivation's history begins: the latest earlier refill session, else the prior."""
    refill = latest_refill_before(connection, pump_id, start_utc)
    if refill is not None:
        return refill
    return prior_session(connection, pump_id, start_utc)


def chain(connection: Connection, pump_id: int) -> list[ChainEntry]:
    """Every session of a pump in chain order."""
    return [_chain_entry(row) for row in connection.execute(CHAIN, {"pump_id": pump_id})]


def history_before(
    connection: Connection, pump_id: int, start_utc: datetime
) -> list[StoredSession]:
    """The stored history of a session starting at `start_utc`, in chain order.

    From the latest earlier session holding a REFILL record (§7.11); with none, the
    prior session (§7.6); empty when nothing is earlier. One query: the cut is found
    by two backward probes of the chain index on the server. Sessions sharing the
    cut's start instant come along (callers truncate in chain order).
    """
    return [
        _stored(row)
        for row in connection.execute(HISTORY, {"pump_id": pump_id, "start": start_utc})
    ]


class HasRefill(Protocol):
    """A chain item that knows whether its session holds a REFILL record."""

    @property
    def has_refill(self) -> bool: ...


ChainItem = TypeVar("ChainItem", bound=HasRefill)


def truncate_history(earlier: Sequence[ChainItem]) -> list[ChainItem]:
    """Strictly earlier sessions (chain order) cut to what a derivation reads (§7.11, §7.6)."""
    for index in range(len(earlier) - 1, -1, -1):
        if earlier[index].has_refill:
            return list(earlier[index:])
    return list(earlier[-1:])


def sessions_from(connection: Connection, pump_id: int, start_utc: datetime) -> list[StoredSession]:
    """Stored sessions starting at `start_utc`, and the later ones whose evidence reads them.

    Sessions starting strictly later (§7.5) up to the first of them that holds a
    REFILL record, and any starting at that same instant: every session after
    that instant has a history starting at or after that refill session. In chain
    order; read forwards along the index, stopping there.
    """
    found: list[StoredSession] = []
    stop: datetime | None = None
    result = connection.execute(FORWARD, {"pump_id": pump_id, "start": start_utc})
    try:
        for row in result:
            stored = _stored(row)
            if stop is not None and stored.start_utc > stop:
                break
            found.append(stored)
            if stop is None and stored.has_refill and stored.start_utc > start_utc:
                stop = stored.start_utc
    finally:
        result.close()
    return found


def later_affected(connection: Connection, pump_id: int, start_utc: datetime) -> list[ChainEntry]:
    """The sessions of `sessions_from` that start strictly later, as chain entries."""
    return [
        ChainEntry(s.pk, s.session_id, s.start_utc, s.has_refill)
        for s in sessions_from(connection, pump_id, start_utc)
        if s.start_utc > start_utc
    ]


def stored_window(
    connection: Connection,
    pump_id: int,
    first: tuple[datetime, str],
    last_start: datetime,
) -> list[StoredSession]:
    """Stored sessions of a pump from chain key `first` to start `last_start`, in chain order."""
    rows = connection.execute(
        select(*_STORED_COLUMNS)
        .where(
            sessions.c.pump_id == pump_id,
            _at_or_after(first),
            sessions.c.session_start_utc <= last_start,
        )
        .order_by(*_CHAIN_ASC)
    )
    return [_stored(row) for row in rows]


# ---------------------------------------------------------------------------
# Sessions


def stored_session(connection: Connection, session_id: str) -> StoredSession | None:
    row = connection.execute(SESSION_BY_ID, {"session_id": session_id}).first()
    return None if row is None else _stored(row)


def load_session(connection: Connection, session_id: str) -> Session | None:
    """A stored session rebuilt exactly: document plus event positions and pump clocks."""
    row = connection.execute(
        select(
            sessions.c.id, sessions.c.document, sessions.c.source_name, sessions.c.pump_clock_local
        ).where(sessions.c.session_id == session_id)
    ).first()
    if row is None:
        return None
    pk, document, source_name, pump_clock = row
    stored = [
        StoredEvent(Position(kind, value), clock)
        for kind, value, clock in connection.execute(
            select(events.c.position_kind, events.c.position_value, events.c.pump_clock_local)
            .where(events.c.session_pk == pk)
            .order_by(events.c.seq)
        )
    ]
    return session_from_document(
        loads(document), source=source_name, stored_events=stored, pump_clock_local=pump_clock
    )


# ---------------------------------------------------------------------------
# Evidence


@dataclass(frozen=True, slots=True)
class EvidenceRecord:
    """A derived evidence document, ready to store."""

    session_pk: int
    prior_session_pk: int | None
    procedure: str | None
    flags: tuple[str, ...]
    document: str
    rules_version: str
    parser_version: str
    derived_at: datetime
    # (profile, procedure) for every configured profile: the `evidence_codes` rows.
    codes: tuple[tuple[str, str | None], ...] = ()


def flags_text(flags: Sequence[str]) -> str:
    """Flags as stored in `evidence.flags`: " a b " (a space at both ends, for LIKE '% a %')."""
    return " " + " ".join(flags) + " " if flags else ""


def replace_evidence(
    connection: Connection,
    records: Sequence[EvidenceRecord],
    *,
    fresh: frozenset[int] = frozenset(),
) -> None:
    """Store evidence documents, replacing what was derived before for those sessions.

    `fresh` names sessions inserted in this transaction: they have nothing to replace.
    """
    if not records:
        return
    stale = [record.session_pk for record in records if record.session_pk not in fresh]
    if stale:
        connection.execute(delete(evidence_flags).where(evidence_flags.c.session_pk.in_(stale)))
        connection.execute(delete(evidence).where(evidence.c.session_pk.in_(stale)))
    _EVIDENCE_ROWS.insert(
        connection,
        [
            {
                "session_pk": r.session_pk,
                "prior_session_pk": r.prior_session_pk,
                "procedure": r.procedure,
                "flags": flags_text(r.flags),
                "document": r.document,
                "rules_version": r.rules_version,
                "parser_version": r.parser_version,
                "derived_at": r.derived_at,
            }
            for r in records
        ],
    )
    _FLAG_ROWS.insert(
        connection,
        [{"session_pk": r.session_pk, "flag": flag} for r in records for flag in r.flags],
    )
    # The old code rows went with the old evidence rows (ON DELETE CASCADE).
    _CODE_ROWS.insert(
        connection,
        [
            {"session_pk": r.session_pk, "profile": profile, "procedure": procedure}
            for r in records
            for profile, procedure in r.codes
        ],
    )


def evidence_query(*, session_id: str | None = None, pump_serial: str | None = None) -> Select[Any]:
    """Stored evidence documents, ordered by pump serial then session start (docs/session-json.md)."""
    query = (
        select(evidence.c.document, sessions.c.session_id)
        .select_from(
            evidence.join(sessions, sessions.c.id == evidence.c.session_pk).join(
                pumps, pumps.c.id == sessions.c.pump_id
            )
        )
        .order_by(pumps.c.serial, sessions.c.session_start_utc, sessions.c.session_id)
    )
    if session_id is not None:
        query = query.where(sessions.c.session_id == session_id)
    if pump_serial is not None:
        query = query.where(pumps.c.serial == pump_serial)
    return query


def evidence_documents(
    connection: Connection, *, session_id: str | None = None, pump_serial: str | None = None
) -> list[str]:
    """The stored evidence JSON texts matching the filters, in docs/session-json.md order."""
    rows = connection.execute(evidence_query(session_id=session_id, pump_serial=pump_serial))
    return [row[0] for row in rows]


def evidence_document_text(connection: Connection, session_id: str) -> str | None:
    """The stored evidence JSON of one session: one index probe and one primary-key probe."""
    return connection.execute(EVIDENCE_OF_SESSION, {"session_id": session_id}).scalar()
