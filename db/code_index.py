"""The per-profile code index (table `evidence_codes`): its writer and its repair thread.

`evidence_codes` holds the CPT code of each stored session under every payer
profile (docs/coding-rules.md §3), so the session list can filter by "code under
profile P" through an index (`ix_evidence_codes_profile`). The import pipeline
and replay --apply write the rows with the evidence, in the same transaction
(`db.queries.replace_evidence`). Storing evidence again deletes the old rows (ON
DELETE CASCADE from `evidence`), so a row can be missing but never stale.

This module fills in rows that something else left out (a database bulk-loaded
by hand or by a benchmark): `sync_codes` in one call, `CodeIndexer` now and then
in a daemon thread (the web app starts one). The web room only reads the table.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Engine, Select, delete, exists, func, insert, select
from sqlalchemy.engine import Connection

from db.codec import loads
from db.engine import write_transaction
from db.models import evidence
from db.users import evidence_codes

log = logging.getLogger(__name__)


def index_codes(
    connection: Connection, session_pk: int, evidence_document: Mapping[str, Any]
) -> None:
    """Write the `evidence_codes` rows of one session from its evidence document.

    Call it in the transaction that stores the evidence (after
    `db.queries.replace_evidence`): the rows hang off the `evidence` row, which
    must exist.
    """
    connection.execute(delete(evidence_codes).where(evidence_codes.c.session_pk == session_pk))
    rows = _code_rows(session_pk, evidence_document)
    if rows:
        connection.execute(insert(evidence_codes), rows)


def _code_rows(session_pk: int, document: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for profile, code in (document.get("codes") or {}).items():
        procedure = code.get("procedure") if isinstance(code, Mapping) else None
        rows.append(
            {
                "session_pk": session_pk,
                "profile": str(profile),
                "procedure": None if procedure is None else str(procedure),
            }
        )
    return rows


def unindexed_query(limit: int) -> Select[Any]:
    """Sessions whose evidence has no `evidence_codes` rows yet.

    Both sides are read through primary keys and `ix_evidence_procedure`, which
    covers `session_pk`: the check never reads an evidence document.
    """
    indexed = exists().where(evidence_codes.c.session_pk == evidence.c.session_pk)
    return select(evidence.c.session_pk).where(~indexed).limit(limit)


def code_index_counts(connection: Connection, profile: str) -> tuple[int, int]:
    """(evidence documents, sessions indexed under `profile`): two index-only counts.

    Equal when the index is complete (every evidence document codes the default
    profile); a cheap test before the anti-join of `unindexed_query`.
    """
    documents = connection.execute(select(func.count()).select_from(evidence)).scalar_one()
    indexed = connection.execute(
        select(func.count()).select_from(evidence_codes).where(evidence_codes.c.profile == profile)
    ).scalar_one()
    return int(documents), int(indexed)


def unindexed(connection: Connection, limit: int) -> list[int]:
    return [int(pk) for pk in connection.execute(unindexed_query(limit)).scalars()]


def index_sessions(connection: Connection, pks: Sequence[int]) -> None:
    """Write the `evidence_codes` rows of these sessions from their stored evidence."""
    if not pks:
        return
    connection.execute(delete(evidence_codes).where(evidence_codes.c.session_pk.in_(pks)))
    documents = connection.execute(
        select(evidence.c.session_pk, evidence.c.document).where(evidence.c.session_pk.in_(pks))
    )
    rows = [row for pk, text in documents for row in _code_rows(int(pk), loads(text))]
    if rows:
        connection.execute(insert(evidence_codes), rows)


def sync_codes(connection: Connection, *, batch: int = 5000) -> int:
    """Index the evidence that has no `evidence_codes` rows; returns sessions indexed.

    Reads at most `batch` sessions: call it again while it returns `batch`.
    """
    pks = unindexed(connection, batch)
    index_sessions(connection, pks)
    return len(pks)


class CodeIndexer:
    """Fills in `evidence_codes` now and then, in a daemon thread.

    Each round first compares two index-only counts (about 70 ms at 1,000,000
    sessions, no lock taken); only when they differ, and differ otherwise than at
    the end of the previous round, are the missing sessions looked up and indexed,
    in write transactions of `batch` sessions. `every_s`: seconds between rounds
    (0: one round at start; None: the thread never starts).
    """

    def __init__(
        self, engine: Engine, every_s: float | None, default_profile: str, batch: int = 2000
    ) -> None:
        self.engine = engine
        self.every_s = every_s
        self.default_profile = default_profile
        self.batch = batch
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._settled: tuple[int, int] | None = None

    def run_once(self) -> int:
        """One round; returns the sessions indexed."""
        with self.engine.connect() as connection:
            counts = code_index_counts(connection, self.default_profile)
        if counts[0] == counts[1] or counts == self._settled:
            return 0
        total = 0
        while not self._stop.is_set():
            with self.engine.connect() as connection:
                pks = unindexed(connection, self.batch)
            if pks:
                with write_transaction(self.engine) as connection:
                    index_sessions(connection, pks)
                total += len(pks)
            if len(pks) < self.batch:
                break
        with self.engine.connect() as connection:
            self._settled = code_index_counts(connection, self.default_profile)
        if total:
            log.info("code index: %d session(s) indexed", total)
        return total

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception as exc:  # the index is a convenience: never kill the app
                log.warning("code index repair failed: %s", type(exc).__name__)
            if not self.every_s:
                return
            self._stop.wait(self.every_s)

    def start(self) -> None:
        if self.every_s is None or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="pumptrail-code-index", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
