"""What replay reads and rewrites: stored sessions with their rows, refused files, the audit trail.

Replay (`ingest.replay`) re-decodes every raw file and compares the rows the import
pipeline would write with the stored ones. This module holds its database side:
each pump's sessions in chain order (docs/coding-rules.md §7.5: session start UTC,
then session ID) with every row derived from them (`setting_values`, `events`,
`evidence`, `evidence_flags`) and the imported raw files linked to them; the
refused raw files; the audit log's `import` and `quarantine` entries and what of
them is stored; and the few writes `--apply` makes besides the importer's own.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from sqlalchemy import Engine, select, update
from sqlalchemy.engine import Connection

from db.audit import IMPORT, QUARANTINE, audit_log
from db.models import events, evidence, evidence_flags, pumps, raw_files, sessions, setting_values

# Values per IN (...) list: well below every backend's bound-parameter limit.
IN_CHUNK: Final = 500


@dataclass(frozen=True, slots=True)
class RawFileRef:
    """A `raw_files` row as replay reads it back: row ID, SHA-256 (its raw store name), file name."""

    id: int
    sha256: str
    name: str


@dataclass(frozen=True, slots=True)
class RefusedFile:
    """A refused raw file and the error code it was refused with."""

    raw: RawFileRef
    error_code: str | None


@dataclass
class StoredRows:
    """One stored session and every row derived from it."""

    pk: int
    session_id: str
    pump_id: int
    start_utc: datetime
    has_refill: bool
    row: Mapping[str, Any]
    raws: list[RawFileRef] = field(default_factory=list)
    # (phase, param) -> the stored value text.
    settings: dict[tuple[int, str], str] = field(default_factory=dict)
    # seq -> the `events` row.
    events: dict[int, Mapping[str, Any]] = field(default_factory=dict)
    evidence: Mapping[str, Any] | None = None
    flags: set[str] = field(default_factory=set)


@contextmanager
def snapshot(engine: Engine) -> Iterator[Connection]:
    """A read transaction: one consistent view on both backends (REPEATABLE READ on PostgreSQL)."""
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            connection.execution_options(isolation_level="REPEATABLE READ")
        with connection.begin():
            yield connection


def pump_serials(connection: Connection, pump_ids: Sequence[int]) -> dict[int, str]:
    """The serial of each of these pumps, by pump row ID."""
    rows = connection.execute(select(pumps.c.id, pumps.c.serial).where(pumps.c.id.in_(pump_ids)))
    return {int(pump_id): str(serial) for pump_id, serial in rows}


def pump_sessions(connection: Connection, pump_ids: Sequence[int]) -> dict[int, list[StoredRows]]:
    """Every stored session of these pumps with its rows, each pump's in chain order (§7.5)."""
    in_pumps = sessions.c.pump_id.in_(pump_ids)
    by_pk: dict[int, StoredRows] = {}
    by_pump: dict[int, list[StoredRows]] = {pump_id: [] for pump_id in pump_ids}
    query = select(sessions).where(in_pumps)
    query = query.order_by(sessions.c.pump_id, sessions.c.session_start_utc, sessions.c.session_id)
    for row in connection.execute(query).mappings():
        stored = StoredRows(
            row["id"],
            row["session_id"],
            row["pump_id"],
            row["session_start_utc"],
            bool(row["has_refill"]),
            dict(row),
        )
        by_pk[stored.pk] = stored
        by_pump[stored.pump_id].append(stored)
    if not by_pk:
        return by_pump

    def joined(table: Any, *columns: Any) -> Any:
        return (
            select(*columns)
            .select_from(table.join(sessions, sessions.c.id == table.c.session_pk))
            .where(in_pumps)
        )

    raw_query = joined(
        raw_files, raw_files.c.id, raw_files.c.sha256, raw_files.c.name, raw_files.c.session_pk
    ).where(raw_files.c.status == "imported")
    for raw_id, digest, name, session_pk in connection.execute(raw_query.order_by(raw_files.c.id)):
        by_pk[session_pk].raws.append(RawFileRef(raw_id, digest, name))
    setting_query = joined(
        setting_values,
        setting_values.c.session_pk,
        setting_values.c.phase,
        setting_values.c.param,
        setting_values.c.value,
    )
    for session_pk, phase, param, value in connection.execute(setting_query):
        by_pk[session_pk].settings[(phase, param)] = value
    names = [column.name for column in events.columns]
    for values in connection.execute(joined(events, *events.columns)):
        event = dict(zip(names, values, strict=True))
        by_pk[event["session_pk"]].events[event["seq"]] = event
    for row in connection.execute(joined(evidence, *evidence.columns)).mappings():
        by_pk[row["session_pk"]].evidence = dict(row)
    flag_query = joined(evidence_flags, evidence_flags.c.session_pk, evidence_flags.c.flag)
    for session_pk, flag in connection.execute(flag_query):
        by_pk[session_pk].flags.add(flag)
    return by_pump


def refused_files(connection: Connection, since: datetime | None) -> list[RefusedFile]:
    """Every refused raw file (received on or after `since`, when given), in arrival order."""
    query = select(raw_files.c.id, raw_files.c.sha256, raw_files.c.name, raw_files.c.error_code)
    query = query.where(raw_files.c.status == "refused")
    if since is not None:
        query = query.where(raw_files.c.received_at >= since)
    return [
        RefusedFile(RawFileRef(raw_id, digest, name), error_code)
        for raw_id, digest, name, error_code in connection.execute(query.order_by(raw_files.c.id))
    ]


def rewrite_refusal(
    connection: Connection, raw_id: int, *, error_code: str, error: str, parser_version: str
) -> None:
    """Record the error a refused file gives now (`error`: the stored JSON text)."""
    connection.execute(
        update(raw_files)
        .where(raw_files.c.id == raw_id)
        .values(error_code=error_code, error=error, parser_version=parser_version)
    )


def set_conflicting_exports(connection: Connection, session_pk: int, value: bool) -> None:
    """Set a stored session's `conflicting_exports` column."""
    connection.execute(
        update(sessions).where(sessions.c.id == session_pk).values(conflicting_exports=value)
    )


def import_entries(connection: Connection) -> list[tuple[str, str, str]]:
    """(action, target, detail text) of the audit log's import and quarantine entries, in order."""
    rows = connection.execute(
        select(audit_log.c.action, audit_log.c.target, audit_log.c.detail)
        .where(audit_log.c.action.in_((IMPORT, QUARANTINE)))
        .order_by(audit_log.c.id)
    )
    return [(action, target, detail) for action, target, detail in rows]


def stored_session_ids(connection: Connection, session_ids: Sequence[str]) -> set[str]:
    """Which of these session IDs are stored."""
    found: set[str] = set()
    column = sessions.c.session_id
    for first in range(0, len(session_ids), IN_CHUNK):
        chunk = session_ids[first : first + IN_CHUNK]
        found.update(connection.execute(select(column).where(column.in_(chunk))).scalars())
    return found


def stored_raw_digests(connection: Connection) -> list[tuple[int, str]]:
    """(row ID, SHA-256) of every `raw_files` row, in arrival order."""
    rows = connection.execute(select(raw_files.c.id, raw_files.c.sha256).order_by(raw_files.c.id))
    return [(int(raw_id), str(digest)) for raw_id, digest in rows]
