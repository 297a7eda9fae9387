"""`pumptrail replay`: re-decode every raw file with this version and compare with what is stored.

`pumptrail replay` answers an auditor's question: were the stored sessions and
their evidence derived from the programmer's own bytes by this software, and has
nothing been changed since? For every pump (or one, `--pump`), in chain order:

1. Every imported raw file of its sessions is read back from the raw store (on a
   shared PostgreSQL database, the database itself: every workstation checks
   every file, `ingest.rawstore.open_raw_store`) and its SHA-256 checked: a file whose bytes no longer match is *tampered*, a file
   gone from the store is *missing*.
2. Each file is decoded again (`parsers.registry.decode_bytes`) and the session's
   exports are resolved as the import pipeline resolves them, in arrival order
   (docs/coding-rules.md §7.16, `ingest.exports.export_in_use`): the first export
   is used unless a later one disagrees, which flags `conflicting_exports` and
   makes the binary one used.
3. The rows the pipeline would store (`db.codec`: the `sessions` columns and
   document, `setting_values`, `events`) are compared with the stored rows,
   field by field, old value against new (`ingest.replay.comparison`).
4. The evidence of each session is derived again from the re-decoded chain
   (§7.5, the history window of §7.11 as the pipeline takes it) and compared with
   the stored `evidence` row, its document and its `evidence_flags`; a missing
   row is reported.

Refused files are decoded again too: a changed error, or a file that decodes now,
is reported. Without filters, the audit log's `import` and `quarantine` entries
are checked against what is stored, both ways: a session deleted together with
its raw file row is still noticed, and so is a file added behind the importer.

`--verify` (the default) only reads, then appends one `replay_verify` audit entry.
`--apply` rewrites what differs (session rows, settings, events, evidence,
refused files' errors) in one transaction per pump, under a lock that keeps the
importer out, and appends a `replay_apply` entry per pump; a pump with an unusable
raw file is left as it is. Audit entries name sessions by ID and fields by name,
never values: values may be patient identifiers. The printed report masks
patient fields too (`ingest.replay.report`). What is read and written in the
database is `db.replay_queries`.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any, Final

from sqlalchemy import Engine

from db import audit, queries, replay_queries
from db.codec import dumps, loads
from db.engine import write_transaction
from db.models import utc_now
from db.replay_queries import RawFileRef, StoredRows
from evidence import Rules
from ingest.exports import Incoming, Resolved, decode_export, export_in_use
from ingest.pipeline import Importer, evidence_record
from ingest.rawstore import RawStorage, RawStoreError, sha256_hex
from ingest.replay.comparison import compare_evidence, compare_session, field_counts
from ingest.replay.report import (
    NO_RAW_FILE,
    NOT_STORED,
    RAW_MISSING,
    RAW_NOT_STORED,
    REFUSAL,
    TAMPERED,
    UNAUDITED,
    UNDECODABLE,
    Difference,
    ReplayReport,
)
from parsers.errors import DecodeError
from parsers.registry import PARSER_VERSION

# Pumps loaded per query batch in --verify (sessions of many pumps per round trip).
PUMP_BATCH: Final = 200


def chain_walk(
    items: Sequence[queries.ChainItem], start_of: Callable[[queries.ChainItem], datetime]
) -> Iterator[tuple[queries.ChainItem, queries.ChainItem | None, list[queries.ChainItem]]]:
    """Each item of one pump's chain (in chain order) with its prior and its history.

    The prior session starts strictly earlier (§7.5); the history is what the
    pipeline passes a derivation (`db.queries.truncate_history`, §7.11, §7.6).
    """
    starts = [start_of(item) for item in items]
    for item in items:
        earlier = items[: bisect_left(starts, start_of(item))]
        yield item, (earlier[-1] if earlier else None), queries.truncate_history(earlier)


@dataclass(frozen=True)
class _Rebuilt:
    """A stored session and what its raw files give now."""

    stored: StoredRows
    now: Resolved

    @property
    def has_refill(self) -> bool:
        return self.now.has_refill


@dataclass
class _PumpReplay:
    """A pump's findings and what --apply would write."""

    serial: str
    raw_files: int = 0
    sessions: int = 0
    differences: list[Difference] = field(default_factory=list)
    # Why the pump cannot be rewritten from its raw files (None: it can).
    blocked: str | None = None
    rewrite_sessions: list[_Rebuilt] = field(default_factory=list)
    rewrite_evidence: list[queries.EvidenceRecord] = field(default_factory=list)


class Replayer:
    """Replays one database against its raw store with the current parsers and rules."""

    def __init__(
        self,
        engine: Engine,
        store: RawStorage,
        rules: Rules,
        *,
        actor: str = audit.SYSTEM_ACTOR,
        decode: Callable[[bytes, str], Incoming] = decode_export,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.engine = engine
        self.store = store
        self.rules = rules
        self.actor = actor
        self._decode = decode
        self._clock = clock
        # Writes rows exactly as an import does (--apply).
        self._importer = Importer(engine, store, rules, clock=clock, actor=actor)

    # -- entry point ----------------------------------------------------------

    def run(
        self,
        *,
        pump: str | None = None,
        since: date | None = None,
        apply: bool = False,
        report: Callable[[Difference], None] | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> ReplayReport:
        """Replay every pump (or one serial), sessions starting on or after `since` (UTC).

        `report` sees each difference as it is found; `progress(done, total)` each pump done.
        """
        result = ReplayReport()
        since_utc = None if since is None else datetime.combine(since, time())

        def found(differences: Sequence[Difference]) -> None:
            result.differences.extend(differences)
            if report is not None:
                for difference in differences:
                    report(difference)

        with self.engine.connect() as connection:
            if pump is None:
                pump_ids = queries.all_pump_ids(connection)
            else:
                pk = queries.pump_pk(connection, pump)
                pump_ids = [] if pk is None else [pk]
                result.pump_found = pk is not None
        if apply:
            for done, pump_id in enumerate(pump_ids, 1):
                self._apply_pump(pump_id, since_utc, result, found)
                if progress is not None:
                    progress(done, len(pump_ids))
        else:
            for first in range(0, len(pump_ids), PUMP_BATCH):
                batch = pump_ids[first : first + PUMP_BATCH]
                with replay_queries.snapshot(self.engine) as connection:
                    serials = replay_queries.pump_serials(connection, batch)
                    for pump_id, stored in replay_queries.pump_sessions(connection, batch).items():
                        replayed = self._replay_pump(serials[pump_id], stored, since_utc)
                        self._count(result, replayed)
                        found(replayed.differences)
                if progress is not None:
                    progress(first + len(batch), len(pump_ids))
        found(self._refused(pump, since_utc, result, apply=apply))
        if pump is None and since is None:
            found(self._against_audit_log())
        self._record_run(result, pump=pump, since=since, apply=apply)
        return result

    # -- reading ----------------------------------------------------------------

    def _read(self, raw: RawFileRef, whose: str) -> tuple[bytes | None, Difference | None]:
        """The raw bytes checked against their SHA-256, or the finding why not.

        `whose` says what the file is, for the report: `stored session ID`, `refused`.
        """
        try:
            return self.store.get(raw.sha256), None
        except OSError as exc:
            return None, Difference(
                RAW_MISSING, raw.sha256, message=f"cannot be read ({whose}): {exc.strerror}"
            )
        except RawStoreError:
            data = self.store.read_unchecked(raw.sha256)
            if data is None:
                return None, Difference(
                    RAW_MISSING, raw.sha256, message=f"not in the raw store ({whose})"
                )
            return None, Difference(
                TAMPERED,
                raw.sha256,
                message=f"bytes hash to {sha256_hex(data)[:12]}, not to their name "
                f"({whose}): edited after import",
            )

    # -- one pump -----------------------------------------------------------------

    def _replay_pump(
        self, serial: str, chain: Sequence[StoredRows], since: datetime | None
    ) -> _PumpReplay:
        replayed = _PumpReplay(serial)
        in_scope = [s for s in chain if since is None or s.start_utc >= since]
        if not in_scope:
            return replayed
        first = chain.index(in_scope[0])
        scope = {s.pk for s in in_scope}
        replayed.sessions = len(in_scope)
        rebuilt: list[_Rebuilt] = []
        # The history the first session in scope reads (§7.11) is decoded too, newest
        # first back to the latest session whose file holds a refill; nothing older.
        for stored in reversed(chain[:first]):
            earlier = self._rebuild(stored, replayed)
            if earlier is not None:
                rebuilt.append(earlier)
            if earlier is None or earlier.has_refill:
                break
        for stored in chain[first:]:
            one = self._rebuild(stored, replayed)
            if one is None:
                continue
            rebuilt.append(one)
            session_diffs = compare_session(
                one.stored, one.now, serial, parser_version=PARSER_VERSION
            )
            replayed.differences.extend(session_diffs)
            if session_diffs:
                replayed.rewrite_sessions.append(one)
        if replayed.blocked is None:
            replayed.blocked = _moved(rebuilt, serial)
        if replayed.blocked is not None:
            return replayed
        rebuilt.sort(key=lambda r: (r.now.session.session_start_utc, r.now.session.session_id))
        now = self._clock()
        for item, prior, history in chain_walk(rebuilt, lambda r: r.now.session.session_start_utc):
            if item.stored.pk not in scope:
                continue
            record = evidence_record(
                item.now.session,
                [h.now.session for h in history],
                self.rules,
                session_pk=item.stored.pk,
                prior_session_pk=None if prior is None else prior.stored.pk,
                conflicting_exports=item.now.conflicting,
                derived_at=now,
            )
            evidence_diffs = compare_evidence(item.stored, record)
            replayed.differences.extend(evidence_diffs)
            if evidence_diffs:
                replayed.rewrite_evidence.append(record)
        return replayed

    def _rebuild(self, stored: StoredRows, replayed: _PumpReplay) -> _Rebuilt | None:
        """The session as the pipeline would store it from its raw files; None when it cannot."""
        if not stored.raws:
            replayed.differences.append(
                Difference(
                    NO_RAW_FILE,
                    stored.session_id,
                    message="no raw file is linked to this session: it cannot be replayed",
                )
            )
            replayed.blocked = "a session has no raw file"
            return None
        exports: list[Incoming] = []
        for raw in stored.raws:
            replayed.raw_files += 1
            data, problem = self._read(raw, f"stored session {stored.session_id}")
            if problem is not None:
                replayed.differences.append(problem)
                replayed.blocked = "a raw file is missing or tampered"
                continue
            try:
                exports.append(self._decode(data or b"", raw.name))
            except DecodeError as exc:
                replayed.differences.append(
                    Difference(
                        UNDECODABLE,
                        raw.sha256,
                        message=f"imported before, refused now (stored session "
                        f"{stored.session_id}): {exc.code}",
                    )
                )
                replayed.blocked = "a raw file no longer decodes"
        if len(exports) != len(stored.raws):
            return None
        return _Rebuilt(stored, export_in_use(exports))

    # -- --apply ----------------------------------------------------------------

    def _apply_pump(
        self,
        pump_id: int,
        since: datetime | None,
        result: ReplayReport,
        found: Callable[[Sequence[Difference]], None],
    ) -> None:
        """Replay one pump and rewrite what differs, in one write transaction."""
        with write_transaction(self.engine) as connection:
            # Importers of this pump wait until it is rewritten (as they wait for each other).
            queries.lock_pump(connection, pump_id)
            serial = replay_queries.pump_serials(connection, [pump_id])[pump_id]
            chain = replay_queries.pump_sessions(connection, [pump_id])[pump_id]
            replayed = self._replay_pump(serial, chain, since)
            self._count(result, replayed)
            found(replayed.differences)
            if not replayed.differences:
                return
            if replayed.blocked is not None:
                result.not_applied.append(f"pump {serial}: not rewritten: {replayed.blocked}")
                return
            for one in replayed.rewrite_sessions:
                self._importer.replace_session(
                    connection, one.stored.pk, one.now.export, one.stored.pump_id
                )
                replay_queries.set_conflicting_exports(
                    connection, one.stored.pk, one.now.conflicting
                )
            queries.replace_evidence(connection, replayed.rewrite_evidence)
            result.rewritten_sessions += len(replayed.rewrite_sessions)
            result.rewritten_evidence += len(replayed.rewrite_evidence)
            audit.append(
                connection,
                actor=self.actor,
                action=audit.REPLAY_APPLY,
                target=f"pump#{pump_id}",
                detail={
                    "sessions_rewritten": sorted(
                        r.stored.session_id for r in replayed.rewrite_sessions
                    ),
                    "evidence_rewritten": len(replayed.rewrite_evidence),
                    "fields": field_counts(replayed.differences),
                    "parser_version": PARSER_VERSION,
                    "rules_version": self.rules.version,
                },
            )

    @staticmethod
    def _count(result: ReplayReport, replayed: _PumpReplay) -> None:
        if replayed.sessions:
            result.pumps += 1
        result.sessions += replayed.sessions
        result.raw_files += replayed.raw_files
        if replayed.blocked is not None:
            result.unchecked.append(
                f"pump {replayed.serial}: evidence not derived again: {replayed.blocked}"
            )

    # -- refused files -------------------------------------------------------

    def _refused(
        self, pump: str | None, since: datetime | None, result: ReplayReport, *, apply: bool
    ) -> list[Difference]:
        """Refused files decoded again: a changed error or a file that decodes now."""
        with self.engine.connect() as connection:
            refused = replay_queries.refused_files(connection, since)
        found: list[Difference] = []
        for one in refused:
            raw, old_code = one.raw, one.error_code
            raw_id, digest, name = raw.id, raw.sha256, raw.name
            data, problem = self._read(raw, "a refused file")
            if problem is not None:
                if pump is None:
                    result.raw_files += 1
                    found.append(problem)
                continue
            try:
                export = self._decode(data or b"", name)
            except DecodeError as exc:
                if pump is not None:
                    continue
                result.raw_files += 1
                if exc.code != old_code:
                    found.append(Difference(REFUSAL, digest, "error_code", old_code, exc.code))
                    if apply:
                        self._rewrite_refusal(raw_id, digest, exc)
                continue
            if pump is not None and export.session.pump.serial != pump:
                continue
            result.raw_files += 1
            found.append(
                Difference(
                    REFUSAL,
                    digest,
                    message=f"refused before ({old_code}), decodes now to session "
                    f"{export.session.session_id}: replay does not import it",
                )
            )
            if apply:
                result.not_applied.append(f"raw {digest[:12]}: decodes now; not imported by replay")
        return found

    def _rewrite_refusal(self, raw_id: int, digest: str, exc: DecodeError) -> None:
        with write_transaction(self.engine) as connection:
            replay_queries.rewrite_refusal(
                connection,
                raw_id,
                error_code=exc.code,
                error=dumps({**exc.as_dict(), "text": str(exc)}),
                parser_version=PARSER_VERSION,
            )
            audit.append(
                connection,
                actor=self.actor,
                action=audit.REPLAY_APPLY,
                target=digest,
                detail={"refusal_rewritten": exc.code, "parser_version": PARSER_VERSION},
            )

    # -- the audit log against what is stored -------------------------------

    def _against_audit_log(self) -> list[Difference]:
        """The audit log's import and quarantine entries against what is stored, both ways.

        A session or raw file the log names must be stored (else it was deleted). A
        raw file stored after the first one the log names must be named by the log
        (else its row was added behind the importer's back); files stored before
        the log's first import predate the audit log and are not asked for.
        """
        with self.engine.connect() as connection:
            entries = replay_queries.import_entries(connection)
            audited_sessions: dict[str, None] = {}
            audited_raws: dict[str, None] = {}
            for action, target, detail_text in entries:
                digest = _detail(detail_text).get("sha256")
                if isinstance(digest, str):
                    audited_raws[digest] = None
                if action == audit.IMPORT and target:
                    audited_sessions[target] = None
            have_sessions = replay_queries.stored_session_ids(connection, list(audited_sessions))
            stored_raws = replay_queries.stored_raw_digests(connection)
        found = [
            Difference(
                NOT_STORED,
                session_id,
                message="the audit log records its import, but it is not stored (deleted)",
            )
            for session_id in audited_sessions
            if session_id not in have_sessions
        ]
        have_raws = {digest for _id, digest in stored_raws}
        found.extend(
            Difference(
                RAW_NOT_STORED,
                digest,
                message="the audit log records this raw file, but `raw_files` has no row "
                "for it (deleted)",
            )
            for digest in audited_raws
            if digest not in have_raws
        )
        first = next((raw_id for raw_id, digest in stored_raws if digest in audited_raws), None)
        if first is not None:
            found.extend(
                Difference(
                    UNAUDITED,
                    digest,
                    message="stored, but the audit log has no import or quarantine entry "
                    "for it (added outside pumptrail, or its entry was removed)",
                )
                for raw_id, digest in stored_raws
                if raw_id > first and digest not in audited_raws
            )
        return found

    def _record_run(
        self, result: ReplayReport, *, pump: str | None, since: date | None, apply: bool
    ) -> None:
        with write_transaction(self.engine) as connection:
            audit.append(
                connection,
                actor=self.actor,
                action=audit.REPLAY_APPLY if apply else audit.REPLAY_VERIFY,
                target="run",
                detail={
                    "pump_filter": pump is not None,
                    "since": None if since is None else since.isoformat(),
                    "raw_files": result.raw_files,
                    "sessions": result.sessions,
                    "pumps": result.pumps,
                    "differences": len(result.differences),
                    "sessions_differing": result.differing_sessions,
                    "kinds": dict(Counter(d.kind for d in result.differences)),
                    "rewritten_sessions": result.rewritten_sessions,
                    "rewritten_evidence": result.rewritten_evidence,
                    "parser_version": PARSER_VERSION,
                    "rules_version": self.rules.version,
                },
            )


def _detail(text_value: str) -> dict[str, Any]:
    try:
        value = loads(text_value)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _moved(rebuilt: Sequence[_Rebuilt], serial: str) -> str | None:
    """Why a pump's chain cannot be re-derived in place (a session changed pump or ID)."""
    for one in rebuilt:
        if one.now.session.pump.serial != serial:
            return f"session {one.stored.session_id} decodes to another pump now"
        if one.now.session.session_id != one.stored.session_id:
            return f"a raw file of session {one.stored.session_id} decodes to another session"
    return None
