"""The imports page: counts, latest files, the inbox, the quarantine; admins re-queue.

Quarantine records are read and re-queued through `ingest.quarantine`; a
re-queue is recorded in the audit log in the write transaction that moves the
file (a move that fails records nothing). Files are named by SHA-256 prefix in
the log, never by file name.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response

from db import audit
from db.engine import write_transaction
from ingest.quarantine import quarantined_file, quarantined_files
from ingest.quarantine import requeue as requeue_file
from web import present
from web.context import app_state, check_csrf, current_user, record_view, render, require
from web.queries import import_counts, recent_imports
from web.users import User
from web.views.common import MESSAGES, not_found, redirect

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)

INBOX_LIMIT = 200
QUARANTINE_LIMIT = 500


# Imports


@dataclass(frozen=True)
class FolderFile:
    name: str
    size: int
    modified: str


def _mtime(path: Path) -> str:
    try:
        return datetime.fromtimestamp(path.stat().st_mtime, UTC).strftime("%Y-%m-%d %H:%M:%S")
    except OSError:
        return present.DASH


def inbox_files(folder: Path, limit: int) -> tuple[list[FolderFile], bool]:
    """Files waiting in the inbox (dot files and temporary names left out)."""
    found: list[FolderFile] = []
    if not folder.is_dir():
        return found, False
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for filename in sorted(filenames):
            if filename.startswith("."):
                continue
            path = Path(dirpath) / filename
            if len(found) >= limit:
                return found, True
            try:
                size = path.stat().st_size
            except OSError:
                continue
            found.append(FolderFile(str(path.relative_to(folder)), size, _mtime(path)))
    return found, False


@dataclass(frozen=True)
class QuarantineRow:
    """A quarantined file as the imports page shows it."""

    name: str
    sha256: str
    code: str
    message: str
    where: str
    when: str


def quarantine_rows(folder: Path, limit: int) -> list[QuarantineRow]:
    """Quarantined files with the reason from their `<name>.error.json` (`ingest.quarantine`)."""
    rows = []
    for item in quarantined_files(folder, limit):
        where = ""
        if item.offset is not None:
            where = present.position_text("offset", item.offset)
        elif item.line is not None:
            where = present.position_text("line", item.line)
        when = item.quarantined_at_utc or _mtime(item.path)
        rows.append(
            QuarantineRow(
                name=item.name,
                sha256=item.sha256,
                code=item.code,
                message=item.message,
                where=where or present.DASH,
                when=when.replace("T", " ").rstrip("Z"),
            )
        )
    return rows


@router.get("/imports")
def imports_page(request: Request, *, user: Annotated[User, Depends(current_user)]) -> Response:
    state = app_state(request)
    with state.engine.connect() as connection:
        counts = import_counts(connection)
        recent = recent_imports(connection, limit=50)
    inbox, more = inbox_files(state.config.inbox, INBOX_LIMIT)
    quarantine = quarantine_rows(state.config.quarantine, QUARANTINE_LIMIT)
    record_view(
        request,
        user,
        audit.VIEW_IMPORTS,
        target="imports",
        session_ids=[item.session_id for item in recent if item.session_id],
        raw_sha256s=[item.sha256 for item in recent],
        quarantined=len(quarantine),
        inbox=len(inbox),
    )
    return render(
        request,
        "imports.html",
        {
            "nav": "imports",
            "counts": counts,
            "recent": recent,
            "inbox": inbox,
            "inbox_more": more,
            "inbox_path": str(state.config.inbox),
            "quarantine": quarantine,
            "quarantine_path": str(state.config.quarantine),
            "message": MESSAGES.get(str(request.query_params.get("done", "")), ""),
        },
    )


@router.post("/imports/requeue")
def requeue(
    request: Request,
    *,
    user: Annotated[User, Depends(require("admin"))],
    name: Annotated[str, Form(max_length=1024)] = "",
    csrf_token: Annotated[str, Form(max_length=256)] = "",
) -> Response:
    check_csrf(request, csrf_token)
    state = app_state(request)
    item = quarantined_file(state.config.quarantine, name)
    if item is None:
        return not_found(request, "No such file in the quarantine.")

    @contextmanager
    def audited() -> Iterator[None]:
        with write_transaction(state.engine) as connection:
            audit.append(
                connection,
                actor=user.username,
                action=audit.REQUEUE,
                target=item.sha256[:64],
                detail={"code": item.code},
            )
            yield

    requeue_file(item, state.config.inbox, during=audited)
    log.info("requeued a quarantined file (%s) by %s", (item.sha256 or "?")[:12], user.username)
    return redirect("/imports?done=requeued")
