"""The imports page's numbers: files offered for import by status, the latest ones."""

from __future__ import annotations

from sqlalchemy import (
    func,
    select,
)
from sqlalchemy.engine import Connection

from db.models import raw_files, sessions
from web.queries.session import RAW_COLUMNS, RawFile, raw_file_from_row


def recent_imports(connection: Connection, *, limit: int = 50) -> list[RawFile]:
    """The latest files offered for import, imported or refused, newest first."""
    rows = connection.execute(
        select(*RAW_COLUMNS, sessions.c.session_id)
        .select_from(raw_files.outerjoin(sessions, sessions.c.id == raw_files.c.session_pk))
        .order_by(raw_files.c.id.desc())
        .limit(limit)
    )
    return [raw_file_from_row(row) for row in rows]


def import_counts(connection: Connection) -> dict[str, int]:
    """Files by status (`imported`, `refused`) and stored sessions."""
    counts = {
        str(status): int(n)
        for status, n in connection.execute(
            select(raw_files.c.status, func.count()).group_by(raw_files.c.status)
        )
    }
    counts["sessions"] = int(
        connection.execute(select(func.count()).select_from(sessions)).scalar_one()
    )
    return counts
