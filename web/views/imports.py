"""The imports page: counts, latest files, the inbox, the quarantine; admins re-queue or dismiss.

Quarantine records are read, re-queued and dismissed through `ingest.quarantine`;
each reason is shown from the record's safe fields (code, offset or line, record,
kinds of the expected and found values: never text copied from the file). A
re-queue or a dismissal is recorded in the audit log in the write transaction that
moves or removes the file (one that fails records nothing); a dismissed file's
bytes stay in the raw store. A re-queue of the very bytes the current parser
version refused warns that the same outcome will follow. Files the service cannot
read or move for `unreadable_grace_seconds` are listed as needing attention, by
hash and reason, from the service's status file (`ingest.status`). Files are named
by SHA-256 prefix in the log, never by file name.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response

from db import audit
from db.engine import write_transaction
from ingest.quarantine import QuarantinedFile, quarantined_file, quarantined_files
from ingest.quarantine import dismiss as dismiss_file
from ingest.quarantine import requeue as requeue_file
from ingest.rawstore import open_raw_store
from ingest.status import read_status, status_path
from web import present
from web.context import AppState, app_state, check_csrf, current_user, record_view, render, require
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
    is_link: bool = False


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
                is_link=item.is_link,
            )
        )
    return rows


@dataclass(frozen=True)
class AttentionRow:
    """A file in the inbox the service cannot read or move, as the status file names it."""

    key: str
    reason: str
    error: str
    since: str
    attempts: str


def attention_rows(data_dir: Path) -> list[AttentionRow]:
    """Files needing attention from the service's status file (`ingest.status`)."""
    status = read_status(status_path(data_dir)) or {}
    rows = []
    for item in status.get("needing_attention") or []:
        if not isinstance(item, dict):
            continue
        rows.append(
            AttentionRow(
                key=str(item.get("key") or "?"),
                reason=str(item.get("reason") or "?").replace("_", " "),
                error=str(item.get("error") or ""),
                since=str(item.get("since_utc") or "").replace("T", " ").rstrip("Z"),
                attempts=str(item.get("attempts") or ""),
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
            "attention": attention_rows(state.config.data_dir),
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

    if item.is_link:
        return not_found(request, "A symbolic link cannot be re-queued; dismiss it.")
    same = item.same_outcome_expected()
    requeue_file(item, state.config.inbox, during=_audited(state, user, audit.REQUEUE, item))
    log.info("requeued a quarantined file (%s) by %s", (item.sha256 or "?")[:12], user.username)
    return redirect("/imports?done=requeued_same" if same else "/imports?done=requeued")


@router.post("/imports/dismiss")
def dismiss(
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
    # Kept durably where this database keeps raw exports (a folder, or PostgreSQL).
    store = open_raw_store(state.engine, state.config.raw_store, state.config.raw_store_mode)
    dismiss_file(item, store.put, during=_audited(state, user, audit.DISMISS, item))
    log.info("dismissed a quarantined file (%s) by %s", (item.sha256 or "?")[:12], user.username)
    return redirect("/imports?done=dismissed")


def _audited(
    state: AppState, user: User, action: str, item: QuarantinedFile
) -> Callable[[], AbstractContextManager[None]]:
    """A write transaction that appends the audit entry of `action` on `item`."""

    @contextmanager
    def audited() -> Iterator[None]:
        with write_transaction(state.engine) as connection:
            audit.append(
                connection,
                actor=user.username,
                action=action,
                target=item.sha256[:64],
                detail={"code": item.code},
            )
            yield

    return audited
