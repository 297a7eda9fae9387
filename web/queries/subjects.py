"""What the audit page's patient-or-pump filter stands for (docs/web.md "What is recorded").

An auditor types a patient ID, a pump serial or a session ID; the audit log
never holds a patient ID, so the text is resolved here to what entries do hold:
the session IDs of that patient (or pump, or the one session), their pumps'
serials and row targets (`pump#<row>`, written by replay), and the SHA-256 of
every raw file offered for those sessions (import and re-queue entries). The
sessions are found through indexes: `ix_sessions_patient`, the unique session
ID, the pump's serial then `ix_sessions_chain`.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, union_all
from sqlalchemy.engine import Connection

from db.models import pumps, raw_files, sessions

# Bounds the filter (each subject is one comparison): a patient's or a pump's
# sessions over decades stay far below it.
MAX_SUBJECTS = 2000


@dataclass(frozen=True, slots=True)
class AuditSubjects:
    """The IDs an audit entry may carry for one patient, pump or session."""

    session_ids: tuple[str, ...]
    pump_serials: tuple[str, ...]
    # `pump#<row>` targets and raw-file SHA-256s: matched as entry targets only.
    other_targets: tuple[str, ...]

    @property
    def found(self) -> bool:
        return bool(self.session_ids or self.pump_serials)

    def values(self) -> tuple[str, ...]:
        """Every ID to look for, session IDs and serials first."""
        return (*self.session_ids, *self.pump_serials, *self.other_targets)


def audit_subjects(connection: Connection, text: str) -> AuditSubjects:
    """The sessions of a patient ID, pump serial or session ID, and what names them."""
    text = text.strip()
    if not text:
        return AuditSubjects((), (), ())
    # Three index reads (an OR across the join would read every session).
    named = union_all(
        select(sessions.c.id).where(sessions.c.patient_id == text),
        select(sessions.c.id).where(sessions.c.session_id == text),
        select(sessions.c.id).where(
            sessions.c.pump_id.in_(select(pumps.c.id).where(pumps.c.serial == text))
        ),
    )
    rows = connection.execute(
        select(sessions.c.id, sessions.c.session_id, pumps.c.id, pumps.c.serial)
        .select_from(sessions.join(pumps, pumps.c.id == sessions.c.pump_id))
        .where(sessions.c.id.in_(named))
        .order_by(sessions.c.session_start_utc, sessions.c.session_id)
        .limit(MAX_SUBJECTS)
    ).all()
    session_pks = [int(row[0]) for row in rows]
    session_ids = tuple(str(row[1]) for row in rows)
    pump_rows = dict.fromkeys((int(row[2]), str(row[3])) for row in rows)
    serials = tuple(dict.fromkeys(serial for _, serial in pump_rows))
    digests: list[str] = []
    if session_pks:
        digests = [
            str(digest)
            for digest in connection.execute(
                select(raw_files.c.sha256)
                .where(raw_files.c.session_pk.in_(session_pks))
                .order_by(raw_files.c.id)
                .limit(MAX_SUBJECTS)
            ).scalars()
        ]
    others = tuple(f"pump#{pk}" for pk, _ in pump_rows) + tuple(digests)
    return AuditSubjects(session_ids, serials, others)
