"""The audit log page and the list of replay runs (auditors and admins).

Entries are read newest first, filtered by action, actor or target, and paged
by entry ID (`before`); the page shows the current head of the hash chain
(`db.audit`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy import select

from db import audit
from web.context import app_state, render, require
from web.users import User

router = APIRouter(include_in_schema=False)


def _detail_text(detail: Mapping[str, Any]) -> str:
    return json.dumps(detail, sort_keys=True, ensure_ascii=False) if detail else ""


def audit_entries(
    request: Request,
    *,
    actions: tuple[str, ...] = (),
    actor: str | None = None,
    target: str | None = None,
    before: int | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Audit entries newest first, as the audit and replay pages list them."""
    table = audit.audit_log
    query = select(
        table.c.id, table.c.at, table.c.actor, table.c.action, table.c.target, table.c.detail
    )
    if actions:
        query = query.where(table.c.action.in_(actions))
    if actor:
        query = query.where(table.c.actor == actor)
    if target:
        query = query.where(table.c.target == target)
    if before is not None:
        query = query.where(table.c.id < before)
    query = query.order_by(table.c.id.desc()).limit(limit)
    with app_state(request).engine.connect() as connection:
        rows = list(connection.execute(query))
    entries = []
    for entry_id, at, who, action, tgt, detail in rows:
        try:
            parsed = json.loads(detail) if detail else {}
        except ValueError:
            parsed = {"unreadable": True}
        entries.append(
            {
                "id": entry_id,
                "at": at,
                "actor": who,
                "action": action,
                "target": tgt,
                "detail_text": _detail_text(parsed if isinstance(parsed, Mapping) else {}),
            }
        )
    return entries


REPLAY_ACTIONS = (audit.REPLAY_VERIFY, audit.REPLAY_APPLY)


@router.get("/replay")
def replay_runs(
    request: Request, *, user: Annotated[User, Depends(require("auditor"))]
) -> Response:
    return render(
        request,
        "replay.html",
        {"nav": "replay", "result": None, "runs": audit_entries(request, actions=REPLAY_ACTIONS)},
    )


# Audit log


@router.get("/audit")
def audit_page(request: Request, *, user: Annotated[User, Depends(require("auditor"))]) -> Response:
    params = request.query_params
    action = str(params.get("action", ""))[:32]
    actor = str(params.get("actor", ""))[:128]
    target = str(params.get("target", ""))[:128]
    before = None
    if str(params.get("before", "")).isdigit():
        before = int(params["before"])
    limit = 100
    entries = audit_entries(
        request,
        actions=(action,) if action else (),
        actor=actor or None,
        target=target or None,
        before=before,
        limit=limit,
    )
    with app_state(request).engine.connect() as connection:
        head = audit.current_head(connection)
    older = None
    if len(entries) == limit:
        pairs = [(k, v) for k, v in (("action", action), ("actor", actor), ("target", target)) if v]
        older = "/audit?" + urlencode([*pairs, ("before", str(entries[-1]["id"]))])
    known_actions = (
        audit.VIEW_SESSION,
        audit.EXPORT_PACKET,
        audit.EXPORT_API,
        "export_raw",
        audit.LOGIN,
        audit.LOGIN_FAILED,
        audit.LOGOUT,
        audit.USER_ADD,
        audit.USER_CHANGE,
        audit.REQUEUE,
        audit.IMPORT,
        audit.QUARANTINE,
        audit.REPLAY_VERIFY,
        audit.REPLAY_APPLY,
    )
    return render(
        request,
        "audit.html",
        {
            "nav": "audit",
            "entries": entries,
            "actions": known_actions,
            "form": {"action": action, "actor": actor, "target": target},
            "head": None if head is None else f"{head.entry_id}:{head.entry_hash[:16]}…",
            "older_url": older,
        },
    )
