"""Signed audit checkpoints: the audit log's proof anchored outside the database.

The hash chain in `db.audit` shows an edit, a deletion in the middle or a re-link,
but someone who can write the database can also drop the append-only triggers,
delete the newest entries, or rewrite and re-hash the whole chain. A checkpoint
closes that gap: after every commit that appended audit entries, the head of the
chain (entry id, its hash, the entry count, the time) is signed with the clinic's
key (`db.signing`) and

- appended, one JSON line each, to `<data_dir>/audit-checkpoints.jsonl`
  (opened with O_APPEND, flushed with fsync before the call returns), and
- sent to syslog / the system journal under the identifier `pumptrail-audit`,
  so that a clinic's log collector keeps a copy the service cannot rewrite.

A group commit (several import transactions made durable together) yields one
checkpoint, written once the group is on disk.

`verify_checkpoints` checks every line's signature against the clinic's
certificate and that every checkpointed head is still in the chain with the
same hash: a deleted tail, a rewritten chain, or a forged line each show as the
first checkpoint that fails. What a checkpoint cannot show: entries appended
after the newest checkpoint that someone deleted before any checkpoint named
them, and anything done by whoever holds both the signing key and every copy
of the checkpoints (docs/auditing.md).

Line layout (`pumptrail-checkpoint/1`), keys sorted, compact separators; the
signature covers the line without its `signature` member:
``{"at": ISO-8601 UTC, "certificate": SHA-256 fingerprint, "entries": count,
"head_hash": hex, "head_id": int, "scheme": "pumptrail-checkpoint/1",
"signature": base64}``
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import json
import logging
import logging.handlers
import os
import socket
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from cryptography import x509
from sqlalchemy import Engine, event, select
from sqlalchemy.engine import Connection
from sqlalchemy.pool import ConnectionPoolEntry

from db.audit import PENDING_HEAD_KEY, audit_log
from db.engine import GROUP_COMMIT_OPTION, after_durable
from db.signing import SigningIdentity, ensure_identity, fingerprint_of, verify_signature

CHECKPOINT_SCHEME: Final = "pumptrail-checkpoint/1"
CHECKPOINT_FILE: Final = "audit-checkpoints.jsonl"
SYSLOG_IDENTIFIER: Final = "pumptrail-audit"
DEFAULT_SYSLOG_ADDRESS: Final = "/dev/log"

# Key in a pooled connection's `info`: the head of a commit in flight, written once
# the commit is known to have succeeded (the connection's return or next BEGIN).
_COMMITTING_KEY: Final = "pumptrail_audit_committing_head"

log = logging.getLogger(__name__)

_ANCHORED: weakref.WeakKeyDictionary[Engine, CheckpointWriter] = weakref.WeakKeyDictionary()


def checkpoint_path(data_dir: Path) -> Path:
    return data_dir / CHECKPOINT_FILE


@dataclass(frozen=True, slots=True)
class ChainHead:
    """The newest entry of the chain after a commit: what a checkpoint signs."""

    entry_id: int
    entry_hash: str
    entries: int


def _canonical(fields: Mapping[str, Any]) -> bytes:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def checkpoint_line(identity: SigningIdentity, head: ChainHead, at: datetime) -> str:
    """One signed checkpoint as a JSON line (no newline)."""
    fields: dict[str, Any] = {
        "scheme": CHECKPOINT_SCHEME,
        "head_id": head.entry_id,
        "head_hash": head.entry_hash,
        "entries": head.entries,
        "at": at.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
        "certificate": identity.fingerprint,
    }
    fields["signature"] = base64.b64encode(identity.sign(_canonical(fields))).decode("ascii")
    return _canonical(fields).decode("ascii")


def _syslog_handler(address: str) -> logging.Handler | None:
    """A handler that writes to the local syslog socket (journald reads it), or None."""
    if not address or not Path(address).exists():
        return None
    handler = logging.handlers.SysLogHandler(
        address=address,
        facility=logging.handlers.SysLogHandler.LOG_AUTHPRIV,
        socktype=socket.SOCK_DGRAM,
    )
    handler.ident = f"{SYSLOG_IDENTIFIER}[{os.getpid()}]: "
    handler.setFormatter(logging.Formatter("%(message)s"))
    return handler


@dataclass
class CheckpointWriter:
    """Writes signed checkpoints for one data folder; shared by every engine of a process."""

    identity: SigningIdentity
    path: Path
    syslog_address: str = DEFAULT_SYSLOG_ADDRESS
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _last: ChainHead | None = field(default=None, init=False, repr=False)
    _syslog: logging.Handler | None = field(default=None, init=False, repr=False)
    _syslog_ready: bool = field(default=False, init=False, repr=False)

    def write(self, head: ChainHead) -> None:
        """Append and fsync the checkpoint of `head`, then send it to syslog.

        A head this writer checkpointed last is not written again. A failure to
        write the file is raised (the caller logs it); a syslog failure is logged
        once per process and does not stop the file write.
        """
        with self._lock:
            if self._last == head:
                return
            line = checkpoint_line(self.identity, head, datetime.now(UTC))
            self.path.parent.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(
                self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600
            )
            try:
                os.fchmod(descriptor, 0o600)
                fcntl.flock(descriptor, fcntl.LOCK_EX)
                os.write(descriptor, (line + "\n").encode("ascii"))
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
            self._last = head
            self._send_to_syslog(line)

    def _send_to_syslog(self, line: str) -> None:
        if not self._syslog_ready:
            self._syslog_ready = True
            try:
                self._syslog = _syslog_handler(self.syslog_address)
            except OSError as exc:
                log.warning("audit checkpoints: syslog unavailable (%s)", exc.strerror)
            if self._syslog is None and self.syslog_address:
                log.info(
                    "audit checkpoints: no syslog socket at %s; the file is the only copy",
                    self.syslog_address,
                )
        if self._syslog is None:
            return
        record = logging.LogRecord(SYSLOG_IDENTIFIER, logging.INFO, "", 0, line, None, None)
        self._syslog.emit(record)


def install(engine: Engine, writer: CheckpointWriter) -> None:
    """Checkpoint every commit of `engine` that appended audit entries.

    A plain commit is checkpointed when its connection goes back to the pool (the
    commit has then succeeded); a group commit (`GROUP_COMMIT_OPTION`) waits for
    `make_durable`, and the group's newest head is checkpointed once.
    """
    if engine in _ANCHORED:
        return  # one writer per engine (the demo shares its engine with the web view)
    _ANCHORED[engine] = writer
    deferred: list[ChainHead] = []
    deferred_lock = threading.Lock()

    def newest(heads: Iterable[ChainHead]) -> ChainHead | None:
        return max(heads, key=lambda head: head.entry_id, default=None)

    def on_commit(connection: Connection) -> None:
        pending = connection.info.pop(PENDING_HEAD_KEY, None)
        if pending is None:
            return
        # Ids run 1, 2, 3... without holes (db.audit), so the head's id is the count.
        head = ChainHead(pending[0], pending[1], pending[0])
        if connection.get_execution_options().get(GROUP_COMMIT_OPTION):
            with deferred_lock:
                deferred.append(head)
        else:
            connection.info[_COMMITTING_KEY] = head

    def on_rollback(connection: Connection) -> None:
        connection.info.pop(PENDING_HEAD_KEY, None)
        connection.info.pop(_COMMITTING_KEY, None)

    def on_error(context: Any) -> None:
        connection = context.connection
        if connection is not None and not connection.closed:
            connection.info.pop(_COMMITTING_KEY, None)
            connection.info.pop(PENDING_HEAD_KEY, None)

    def on_begin(connection: Connection) -> None:
        head = connection.info.pop(_COMMITTING_KEY, None)
        if head is not None:
            _write_logged(writer, head)

    def on_checkin(_dbapi: Any, record: ConnectionPoolEntry) -> None:
        head = record.info.pop(_COMMITTING_KEY, None)
        if head is not None:
            _write_logged(writer, head)

    def on_durable() -> None:
        with deferred_lock:
            head = newest(deferred)
            deferred.clear()
        if head is not None:
            _write_logged(writer, head)

    event.listen(engine, "begin", on_begin)
    event.listen(engine, "commit", on_commit)
    event.listen(engine, "rollback", on_rollback)
    event.listen(engine, "handle_error", on_error)
    event.listen(engine.pool, "checkin", on_checkin)
    after_durable(engine, on_durable)


def _write_logged(writer: CheckpointWriter, head: ChainHead) -> None:
    try:
        writer.write(head)
    except OSError as exc:
        # The commit stands; the next checkpoint covers it. Loud: the proof has a hole.
        log.error(
            "audit checkpoint for entry %d not written to %s: %s",
            head.entry_id,
            writer.path,
            exc.strerror,
        )


# ---------------------------------------------------------------------------
# Verification


@dataclass(frozen=True, slots=True)
class CheckpointFailure:
    """The first checkpoint that does not hold: its line, the entry it names, why."""

    line: int
    entry_id: int | None
    problem: str
    message: str

    def __str__(self) -> str:
        where = f"checkpoint line {self.line}"
        if self.entry_id is not None:
            where += f" (entry {self.entry_id})"
        return f"{where}: {self.problem}: {self.message}"


@dataclass(frozen=True, slots=True)
class CheckpointSummary:
    """What the checkpoints covered: how many were read and the newest head they name."""

    checkpoints: int
    newest_head_id: int | None
    newest_at: str | None


@dataclass(frozen=True, slots=True)
class Checkpoint:
    line: int
    head_id: int
    head_hash: str
    entries: int
    at: str
    certificate: str
    signature: bytes
    signed: bytes


def _parse(number: int, text: str) -> Checkpoint | CheckpointFailure:
    try:
        fields = json.loads(text)
    except ValueError:
        return CheckpointFailure(number, None, "unreadable", "not a JSON line")
    if not isinstance(fields, dict) or fields.get("scheme") != CHECKPOINT_SCHEME:
        return CheckpointFailure(
            number, None, "unreadable", f"expected scheme {CHECKPOINT_SCHEME!r}"
        )
    try:
        signature = base64.b64decode(str(fields.pop("signature")), validate=True)
        checkpoint = Checkpoint(
            line=number,
            head_id=int(fields["head_id"]),
            head_hash=str(fields["head_hash"]),
            entries=int(fields["entries"]),
            at=str(fields["at"]),
            certificate=str(fields["certificate"]),
            signature=signature,
            signed=_canonical(fields),
        )
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        return CheckpointFailure(number, None, "unreadable", f"missing or bad field ({exc})")
    return checkpoint


def read_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of every non-empty line; OSError when the file cannot be read."""
    with path.open("r", encoding="ascii", errors="replace") as handle:
        for number, text in enumerate(handle, start=1):
            if text.strip():
                yield number, text.strip()


def verify_checkpoints(
    connection: Connection,
    lines: Iterable[tuple[int, str]],
    certificate: x509.Certificate,
    *,
    on_checkpoint: Callable[[Checkpoint], None] | None = None,
) -> tuple[CheckpointFailure | None, CheckpointSummary]:
    """Check each checkpoint's signature and that its head is in the chain unchanged."""
    fingerprint = fingerprint_of(certificate)
    count = 0
    newest: Checkpoint | None = None
    for number, text in lines:
        parsed = _parse(number, text)
        if isinstance(parsed, CheckpointFailure):
            return parsed, CheckpointSummary(count, None, None)
        if parsed.certificate != fingerprint:
            return (
                CheckpointFailure(
                    number,
                    parsed.head_id,
                    "foreign_signer",
                    f"signed by certificate {parsed.certificate[:23]}..., "
                    f"expected {fingerprint[:23]}...",
                ),
                CheckpointSummary(count, None, None),
            )
        if not verify_signature(certificate, parsed.signature, parsed.signed):
            return (
                CheckpointFailure(
                    number,
                    parsed.head_id,
                    "bad_signature",
                    "the signature does not match the line (forged or edited)",
                ),
                CheckpointSummary(count, None, None),
            )
        stored = connection.execute(
            select(audit_log.c.entry_hash).where(audit_log.c.id == parsed.head_id)
        ).scalar()
        if stored is None:
            last = connection.execute(
                select(audit_log.c.id).order_by(audit_log.c.id.desc())
            ).first()
            ends = "the log is empty" if last is None else f"the log ends at entry {last[0]}"
            return (
                CheckpointFailure(
                    number,
                    parsed.head_id,
                    "head_missing",
                    f"entry {parsed.head_id} was checkpointed at {parsed.at} and is gone; "
                    f"{ends} (entries deleted)",
                ),
                CheckpointSummary(count, None, None),
            )
        if stored != parsed.head_hash:
            return (
                CheckpointFailure(
                    number,
                    parsed.head_id,
                    "head_mismatch",
                    f"checkpointed hash {parsed.head_hash[:16]}... at {parsed.at}, the chain "
                    f"holds {str(stored)[:16]}... (the log was rewritten)",
                ),
                CheckpointSummary(count, None, None),
            )
        count += 1
        if newest is None or parsed.head_id >= newest.head_id:
            newest = parsed
        if on_checkpoint is not None:
            on_checkpoint(parsed)
    return None, CheckpointSummary(
        count,
        newest.head_id if newest else None,
        newest.at if newest else None,
    )


# ---------------------------------------------------------------------------
# Wiring: one call per engine that may append audit entries


@dataclass(frozen=True)
class AnchorConfig:
    """Where a process finds its signing identity and writes its checkpoints.

    `signing_key` None: `<data_dir>/keys/clinic-signing.pem`, created on first use.
    `syslog_address` empty: no syslog copy.
    """

    data_dir: Path
    signing_key: Path | None = None
    clinic_name: str = "pumptrail clinic"
    syslog_address: str = DEFAULT_SYSLOG_ADDRESS


def open_identity(config: AnchorConfig) -> SigningIdentity:
    """The identity of `config`, created at the default place on first use (and said
    so, with its fingerprint, at WARNING so it reaches a terminal and the journal)."""
    identity, created = ensure_identity(config.data_dir, config.signing_key, config.clinic_name)
    if created:
        log.warning(
            "created the clinic signing identity %s; certificate SHA-256 %s "
            "(publish it with `pumptrail keys show`)",
            identity.path,
            identity.fingerprint,
        )
    return identity


def anchor_engine(
    engine: Engine, config: AnchorConfig, identity: SigningIdentity | None = None
) -> CheckpointWriter:
    """Checkpoint every audit commit of `engine` into `<data_dir>/audit-checkpoints.jsonl`,
    signed with `identity` (default: `open_identity(config)`)."""
    writer = CheckpointWriter(
        identity if identity is not None else open_identity(config),
        checkpoint_path(config.data_dir),
        config.syslog_address,
    )
    install(engine, writer)
    return writer
