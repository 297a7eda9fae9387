"""Replay from the web: an auditor re-checks one session's pump against its kept bytes.

The work is `ingest.replay.Replayer` in verify mode (read-only), run for the pump of
the session the auditor is looking at: every raw file of the pump read back and
hash-checked, decoded again with today's parser, the stored rows and the evidence
(derived again with today's rules) compared field by field. The replayer records
its own `replay_verify` audit entry, with the auditor as actor. Report lines mask
patient fields (`Difference.line`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Engine

from evidence import Rules
from ingest.rawstore import RawStorage
from ingest.replay import RAW_KINDS, Replayer
from parsers.registry import PARSER_VERSION


@dataclass(frozen=True, slots=True)
class ReplayLine:
    subject: str
    kind: str
    text: str
    this_session: bool


@dataclass(frozen=True, slots=True)
class SessionReplay:
    session_id: str
    pump_serial: str
    parser_version: str
    rules_version: str
    summary: str
    raw_files: int
    sessions: int
    lines: list[ReplayLine] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.lines

    @property
    def session_ok(self) -> bool:
        return not any(line.this_session for line in self.lines)


def replay_pump_of(
    engine: Engine,
    store: RawStorage,
    rules: Rules,
    *,
    session_id: str,
    pump_serial: str,
    raw_sha256s: set[str],
    actor: str,
) -> SessionReplay:
    """Verify the pump holding `session_id`; lines about this session come first."""
    report = Replayer(engine, store, rules, actor=actor).run(pump=pump_serial)
    lines = [
        ReplayLine(
            subject=d.subject,
            kind=d.kind,
            text=d.line(),
            this_session=d.subject == session_id
            or (d.kind in RAW_KINDS and d.subject in raw_sha256s),
        )
        for d in report.differences
    ]
    lines.sort(key=lambda line: not line.this_session)
    return SessionReplay(
        session_id=session_id,
        pump_serial=pump_serial,
        parser_version=PARSER_VERSION,
        rules_version=rules.version,
        summary=report.summary(),
        raw_files=report.raw_files,
        sessions=report.sessions,
        lines=lines,
    )
