"""The audit log: an append-only, hash-chained table of who did what (docs/auditing.md).

Imports, quarantines, replays, evidence views and exports, logins and user changes
each append one entry. Every entry carries the SHA-256 of the entry before it
(`prev_hash`; the first one carries 64 zeros) and its own `entry_hash`, the
SHA-256 of a canonical serialization of (scheme, id, at, actor, action, target,
detail, prev_hash). Ids are assigned here, one more than the last entry's, never
by a sequence: a rolled-back transaction leaves no hole, so a hole means a
deleted entry. `prev_hash` is unique, so the chain cannot fork.

`verify` walks the chain and names the first broken entry: an edited entry (its
hash no longer matches its content), a replaced or re-chained one (its
`prev_hash` is not the hash of the entry before), a deleted one (a gap in the
ids). Deleting the *newest* entries leaves a valid shorter chain: an auditor
notes the head (`pumptrail audit verify` prints it) and checks it next time
with `--head ID:HASH`.

Append-only from the software's side: this module has no UPDATE or DELETE, and
migration 0002 adds triggers refusing both (and TRUNCATE on PostgreSQL), so
tampering needs someone who drops or disables them first.

No patient identifiers ever go into an entry: `target` is a session ID, a
SHA-256, a user name or a pump's row number; `detail` is refused when it holds
a key that names patient data. File names stay out too (they may carry names).
"""

from __future__ import annotations

import getpass
import hashlib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import DateTime, Index, Integer, String, Text, func, insert, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.orm import Session as OrmSession

from db.bulk import RowInserter
from db.engine import WRITE_OPTION
from db.models import SHA256_LEN, Base, table_of, utc_now

# Part of every hashed serialization: a later change of the serialization gets a
# new scheme name, so old entries still verify under the scheme they were made with.
HASH_SCHEME: Final = "pumptrail-audit/1"
GENESIS_HASH: Final = "0" * 64

ACTOR_LEN: Final = 128
ACTION_LEN: Final = 32
TARGET_LEN: Final = 128

# The actions pumptrail writes (others may be added; each is snake_case).
IMPORT: Final = "import"
QUARANTINE: Final = "quarantine"
REPLAY_VERIFY: Final = "replay_verify"
REPLAY_APPLY: Final = "replay_apply"
VIEW_SESSION: Final = "view_session"
# Views of pages or API answers listing patient data (the detail names the IDs shown).
VIEW_SESSIONS: Final = "view_sessions"
VIEW_TIMELINE: Final = "view_timeline"
VIEW_DUE: Final = "view_due"
VIEW_IMPORTS: Final = "view_imports"
VIEW_AUDIT: Final = "view_audit"
VIEW_REPLAY: Final = "view_replay"
EXPORT_RAW: Final = "export_raw"
EXPORT_PACKET: Final = "export_packet"
EXPORT_API: Final = "export_api"
LOGIN: Final = "login"
LOGIN_FAILED: Final = "login_failed"
LOGOUT: Final = "logout"
USER_ADD: Final = "user_add"
USER_CHANGE: Final = "user_change"
TOKEN_CREATE: Final = "token_create"  # noqa: S105 - an action name
TOKEN_REVOKE: Final = "token_revoke"  # noqa: S105 - an action name
REQUEUE: Final = "requeue"
SIGN_OFF: Final = "sign_off"
EXPORT_CHARGES: Final = "export_charges"
CHARGES_RESEND: Final = "charges_resend"
VIEW_CHARGES: Final = "view_charges"
RAW_MIGRATE: Final = "raw_migrate"
DISMISS: Final = "quarantine_dismiss"
# Payers, coverage periods and providers (`db.payers`); a coverage entry's target is
# `coverage:<row>`, never the patient ID.
PAYER_ADD: Final = "payer_add"
COVERAGE_ADD: Final = "coverage_add"
COVERAGE_END: Final = "coverage_end"
PROVIDER_ADD: Final = "provider_add"
VIEW_PAYERS: Final = "view_payers"

SYSTEM_ACTOR: Final = "system"

# Key in the pooled connection's `info`: (id, hash) of the newest entry this
# transaction appended, for the checkpoint written after its commit (db.checkpoints).
PENDING_HEAD_KEY: Final = "pumptrail_audit_pending_head"

_ACTION_RE: Final = re.compile(r"[a-z][a-z0-9_]*")
# Keys a detail must never carry: they name patient data (or file names, which may).
FORBIDDEN_DETAIL_KEYS: Final = frozenset(
    {
        "patient",
        "patient_id",
        "patient_name",
        "patient_birth_date",
        "birth_date",
        "mrn",
        "name",
        "file",
        "filename",
        "path",
    }
)


class AuditLogRow(Base):
    """One audit entry; rows are only ever inserted (migration 0002 adds the triggers)."""

    __tablename__ = "audit_log"

    # Assigned by `append` (last id + 1), not by a sequence: a gap is a deletion.
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    # Naive UTC, microseconds kept (both backends store them).
    at: Mapped[datetime] = mapped_column(DateTime)
    actor: Mapped[str] = mapped_column(String(ACTOR_LEN))
    action: Mapped[str] = mapped_column(String(ACTION_LEN))
    target: Mapped[str] = mapped_column(String(TARGET_LEN))
    # Canonical JSON text (sorted keys, compact): hashed exactly as stored.
    detail: Mapped[str] = mapped_column(Text)
    # Unique: two entries can never follow the same one (no fork of the chain).
    prev_hash: Mapped[str] = mapped_column(String(SHA256_LEN), unique=True)
    entry_hash: Mapped[str] = mapped_column(String(SHA256_LEN))

    __table_args__ = (
        Index("ix_audit_log_action", "action", "id"),
        Index("ix_audit_log_actor", "actor", "id"),
        Index("ix_audit_log_target", "target", "id"),
        Index("ix_audit_log_at", "at"),
    )


audit_log = table_of(AuditLogRow)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One stored entry, `detail` parsed."""

    id: int
    at: datetime
    actor: str
    action: str
    target: str
    detail: Mapping[str, Any]
    prev_hash: str
    entry_hash: str


@dataclass(frozen=True, slots=True)
class AuditBreak:
    """The first entry where the chain does not hold, and what is wrong there.

    `problem` is one of `hash_mismatch` (the entry was edited), `prev_hash_mismatch`
    (the entry does not follow the one before: replaced or re-chained),
    `entry_missing` (a gap in the ids: entries deleted), `head_missing` or
    `head_mismatch` (the head an auditor noted is gone or different).
    """

    entry_id: int
    problem: str
    message: str

    def __str__(self) -> str:
        return f"entry {self.entry_id}: {self.problem}: {self.message}"


@dataclass(frozen=True, slots=True)
class AuditHead:
    """The newest entry: what an auditor writes down to detect a truncated log later."""

    count: int
    entry_id: int
    entry_hash: str

    def __str__(self) -> str:
        return f"{self.entry_id}:{self.entry_hash}"


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """What `show` selects; None matches anything. `limit` keeps the newest entries."""

    action: str | None = None
    actor: str | None = None
    target: str | None = None
    since: datetime | None = None
    limit: int | None = 100


# ---------------------------------------------------------------------------
# Canonical form and hash


def cli_actor() -> str:
    """The actor of a command run from a shell: `cli:<os user>`."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no LOGNAME/USER in containers
        user = "unknown"
    return f"cli:{user}"


def _check_detail_keys(value: object, where: str) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"audit detail {where}: keys must be text, found {key!r}")
            if key.lower() in FORBIDDEN_DETAIL_KEYS:
                raise ValueError(
                    f"audit detail {where}{key}: may name a patient; audit entries never "
                    "carry patient identifiers or file names"
                )
            _check_detail_keys(item, f"{where}{key}.")
    elif isinstance(value, list | tuple):
        for item in value:
            _check_detail_keys(item, where)


def detail_text(detail: Mapping[str, object] | None) -> str:
    """The stored (and hashed) form of a detail: JSON, sorted keys, compact, UTF-8 kept."""
    value: Mapping[str, object] = {} if detail is None else detail
    _check_detail_keys(value, "")
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"audit detail is not JSON: {exc}") from exc


def at_text(at: datetime) -> str:
    """The instant as hashed: ISO 8601 UTC with microseconds and `Z`."""
    return at.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def compute_hash(
    *,
    entry_id: int,
    at: datetime,
    actor: str,
    action: str,
    target: str,
    detail: str,
    prev_hash: str,
) -> str:
    """SHA-256 hex of the canonical serialization: a JSON array of the fields in order."""
    canonical = json.dumps(
        [HASH_SCHEME, entry_id, at_text(at), actor, action, target, detail, prev_hash],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------
# Append


def _as_connection(conn: Connection | OrmSession) -> Connection:
    return conn.connection() if isinstance(conn, OrmSession) else conn


_PG_APPEND_LOCK = text("SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.audit_log'))")


def _lock_for_append(connection: Connection) -> None:
    """Serialize appenders before the last hash is read (no two entries share a parent).

    PostgreSQL: a transaction-scoped advisory lock named after the schema's audit
    table (readers go on, other appenders wait until this transaction ends). A
    table lock would need UPDATE or DELETE rights, which the runtime role does not
    have on the audit log (db.grants). SQLite: a write statement that changes nothing takes
    the database write lock now, waiting on the busy timeout, when the caller's
    transaction has not taken it yet (a `BEGIN IMMEDIATE` transaction already has).
    """
    if connection.dialect.name == "postgresql":
        connection.execute(_PG_APPEND_LOCK)
    elif connection.dialect.name == "sqlite" and not connection.get_execution_options().get(
        WRITE_OPTION
    ):
        # A `write_transaction` began with BEGIN IMMEDIATE and holds the lock already.
        connection.execute(
            insert(audit_log).from_select(
                [c.name for c in audit_log.columns],
                select(*audit_log.columns).where(text("0")),
            )
        )


# Built once: every import appends an entry (db.queries explains why).
_LAST_ENTRY = (
    select(audit_log.c.id, audit_log.c.entry_hash).order_by(audit_log.c.id.desc()).limit(1)
)
_INSERT_ENTRY = insert(audit_log)
_ENTRY_ROWS = RowInserter(audit_log)


@dataclass(frozen=True, slots=True)
class NewEntry:
    """An audit entry to append: who did what to which target, and the detail."""

    actor: str
    action: str
    target: str = ""
    detail: Mapping[str, object] | None = None


def append(
    conn: Connection | OrmSession,
    *,
    actor: str,
    action: str,
    target: str = "",
    detail: Mapping[str, object] | None = None,
) -> AuditEntry:
    """Append one entry inside the caller's (write) transaction; returns it.

    The entry commits or rolls back with the caller's transaction, so an import and
    its audit entry are stored together or not at all. `detail` is JSON with no
    patient identifiers (a key naming patient data raises ValueError).
    """
    return append_many(conn, [NewEntry(actor, action, target, detail)])[0]


def append_many(conn: Connection | OrmSession, entries: Sequence[NewEntry]) -> list[AuditEntry]:
    """Append entries in order inside the caller's (write) transaction; returns them.

    What `append` does for each, with one lock, one read of the last entry and one
    INSERT for them all (a parallel import's group writes a group's entries so).
    """
    connection = _as_connection(conn)
    if not connection.in_transaction():
        raise RuntimeError("audit.append must run inside the caller's transaction")
    details = [_checked_detail(entry) for entry in entries]
    if not entries:
        return []
    _lock_for_append(connection)
    last = connection.execute(_LAST_ENTRY).first()
    entry_id, prev_hash = (1, GENESIS_HASH) if last is None else (int(last[0]) + 1, str(last[1]))
    rows: list[dict[str, object]] = []
    appended: list[AuditEntry] = []
    for entry, stored_detail in zip(entries, details, strict=True):
        at = utc_now()
        entry_hash = compute_hash(
            entry_id=entry_id,
            at=at,
            actor=entry.actor,
            action=entry.action,
            target=entry.target,
            detail=stored_detail,
            prev_hash=prev_hash,
        )
        rows.append(
            {
                "id": entry_id,
                "at": at,
                "actor": entry.actor,
                "action": entry.action,
                "target": entry.target,
                "detail": stored_detail,
                "prev_hash": prev_hash,
                "entry_hash": entry_hash,
            }
        )
        appended.append(
            AuditEntry(
                entry_id,
                at,
                entry.actor,
                entry.action,
                entry.target,
                json.loads(stored_detail),
                prev_hash,
                entry_hash,
            )
        )
        entry_id, prev_hash = entry_id + 1, entry_hash
    if len(rows) == 1:
        connection.execute(_INSERT_ENTRY, rows[0])
    else:  # a group's entries: one COPY on PostgreSQL
        _ENTRY_ROWS.insert(connection, rows)
    last_entry = appended[-1]
    connection.info[PENDING_HEAD_KEY] = (last_entry.id, last_entry.entry_hash)
    return appended


def _checked_detail(entry: NewEntry) -> str:
    """The entry's detail as stored, after checking every field's shape."""
    actor, action, target = entry.actor, entry.action, entry.target
    if not actor or len(actor) > ACTOR_LEN:
        raise ValueError(f"audit actor must be 1-{ACTOR_LEN} characters, found {actor!r}")
    if len(action) > ACTION_LEN or not _ACTION_RE.fullmatch(action):
        raise ValueError(
            f"audit action must be snake_case (at most {ACTION_LEN}), found {action!r}"
        )
    if len(target) > TARGET_LEN:
        raise ValueError(f"audit target longer than {TARGET_LEN} characters")
    return detail_text(entry.detail)


# ---------------------------------------------------------------------------
# Reading


_COLUMNS = (
    audit_log.c.id,
    audit_log.c.at,
    audit_log.c.actor,
    audit_log.c.action,
    audit_log.c.target,
    audit_log.c.detail,
    audit_log.c.prev_hash,
    audit_log.c.entry_hash,
)


def _entry(row: Any) -> AuditEntry:
    try:
        detail = json.loads(row[5])
    except ValueError:
        detail = {"unreadable_detail": row[5]}
    return AuditEntry(row[0], row[1], row[2], row[3], row[4], detail, row[6], row[7])


def _rows(connection: Connection) -> Iterator[Any]:
    """Every entry in id order, fetched in batches (the log grows without bound)."""
    result = connection.execution_options(yield_per=2000).execute(
        select(*_COLUMNS).order_by(audit_log.c.id)
    )
    yield from result


def verify(connection: Connection, *, head: tuple[int, str] | None = None) -> AuditBreak | None:
    """Walk the chain from the first entry; the first broken entry, or None when intact.

    `head` (id, entry hash), noted by an auditor earlier, must still be in the chain
    with that hash: without it, deleting the newest entries cannot be noticed.
    """
    expected_id = 1
    prev_hash = GENESIS_HASH
    head_seen = False
    for row in _rows(connection):
        entry_id, at, actor, action, target, detail, stored_prev, stored_hash = row
        if entry_id != expected_id:
            missing = (
                f"entry {expected_id} is missing"
                if entry_id == expected_id + 1
                else f"entries {expected_id}-{entry_id - 1} are missing"
            )
            return AuditBreak(
                expected_id, "entry_missing", f"{missing} (deleted); the next entry is {entry_id}"
            )
        if stored_prev != prev_hash:
            return AuditBreak(
                entry_id,
                "prev_hash_mismatch",
                f"prev_hash is {stored_prev[:16]}..., the entry before hashes to "
                f"{prev_hash[:16]}... (an entry was replaced or the chain re-linked)",
            )
        recomputed = compute_hash(
            entry_id=entry_id,
            at=at,
            actor=actor,
            action=action,
            target=target,
            detail=detail,
            prev_hash=stored_prev,
        )
        if recomputed != stored_hash:
            return AuditBreak(
                entry_id,
                "hash_mismatch",
                f"content hashes to {recomputed[:16]}..., entry_hash says "
                f"{stored_hash[:16]}... (the entry was edited)",
            )
        if head is not None and entry_id == head[0]:
            head_seen = True
            if stored_hash != head[1]:
                return AuditBreak(
                    entry_id,
                    "head_mismatch",
                    f"the noted head hash {head[1][:16]}... differs from the stored "
                    f"{stored_hash[:16]}... (the log was rewritten from here on)",
                )
        expected_id = entry_id + 1
        prev_hash = stored_hash
    if head is not None and not head_seen:
        return AuditBreak(
            head[0],
            "head_missing",
            f"the noted head entry {head[0]} is gone: the log ends at entry "
            f"{expected_id - 1} (the newest entries were deleted)",
        )
    return None


def current_head(connection: Connection) -> AuditHead | None:
    """The newest entry and how many there are; None for an empty log."""
    row = connection.execute(
        select(audit_log.c.id, audit_log.c.entry_hash).order_by(audit_log.c.id.desc()).limit(1)
    ).first()
    if row is None:
        return None
    count = connection.execute(select(func.count()).select_from(audit_log)).scalar()
    return AuditHead(int(count or 0), int(row[0]), str(row[1]))


def parse_head(value: str) -> tuple[int, str]:
    """`ID:HASH` as printed by `pumptrail audit verify`."""
    entry_id, sep, digest = value.partition(":")
    if not sep or not entry_id.isdigit() or not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise ValueError(f"expected ID:SHA256 (as `audit verify` prints it), found {value!r}")
    return int(entry_id), digest


def show(connection: Connection, filters: AuditFilter | None = None) -> list[AuditEntry]:
    """Entries matching the filters, oldest first; with a limit, the newest `limit` of them."""
    f = filters or AuditFilter()
    query = select(*_COLUMNS)
    if f.action is not None:
        query = query.where(audit_log.c.action == f.action)
    if f.actor is not None:
        query = query.where(audit_log.c.actor == f.actor)
    if f.target is not None:
        query = query.where(audit_log.c.target == f.target)
    if f.since is not None:
        query = query.where(audit_log.c.at >= f.since)
    query = query.order_by(audit_log.c.id.desc())
    if f.limit is not None:
        query = query.limit(f.limit)
    entries = [_entry(row) for row in connection.execute(query)]
    entries.reverse()
    return entries
