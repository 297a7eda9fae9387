"""The audit log page and the list of replay runs (auditors and admins).

Entries are read newest first, filtered by date range (UTC days), action, actor,
target and patient-or-pump (a patient ID, pump serial or session ID resolved to
the IDs entries carry, `web.queries.subjects`), and paged by entry ID
(`before`); the page shows the current head of the hash chain (`db.audit`).
Each view of the page and of the replay runs is itself recorded.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import date, datetime, time, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy import false, or_, select

from db import audit
from web.context import app_state, record_view, render, require
from web.queries.subjects import AuditSubjects, audit_subjects
from web.users import User

router = APIRouter(include_in_schema=False)


def _detail_text(detail: Mapping[str, Any]) -> str:
    return json.dumps(detail, sort_keys=True, ensure_ascii=False) if detail else ""


# LIKE terms per query of the patient-or-pump filter.
LIKE_CHUNK = 200


def _like_text(value: str) -> str:
    """A LIKE pattern matching `value` as a JSON string anywhere in a detail."""
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f'%"{escaped}"%'


def audit_entries(
    request: Request,
    *,
    actions: tuple[str, ...] = (),
    actor: str | None = None,
    target: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    subjects: AuditSubjects | None = None,
    before: int | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Audit entries newest first, as the audit and replay pages list them.

    `since` is inclusive, `until` exclusive (UTC). `subjects`: entries whose target
    is one of its IDs, or whose detail names one of its session IDs or serials.
    """
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
    if since is not None:
        query = query.where(table.c.at >= since)
    if until is not None:
        query = query.where(table.c.at < until)
    if before is not None:
        query = query.where(table.c.id < before)
    queries = [query]
    if subjects is not None:
        # One query per chunk of LIKE terms (SQLite parses a long OR chain into a
        # tree deeper than it allows), merged newest first below.
        named = (*subjects.session_ids, *subjects.pump_serials)
        chunks = [named[i : i + LIKE_CHUNK] for i in range(0, len(named), LIKE_CHUNK)] or [()]
        queries = [
            query.where(
                or_(
                    table.c.target.in_(subjects.values()),
                    *(table.c.detail.like(_like_text(value), escape="\\") for value in chunk),
                )
                if subjects.values()
                else false()
            )
            for chunk in chunks
        ]
    found: dict[int, Any] = {}
    with app_state(request).engine.connect() as connection:
        for each in queries:
            for row in connection.execute(each.order_by(table.c.id.desc()).limit(limit)):
                found[int(row[0])] = row
    rows = [found[key] for key in sorted(found, reverse=True)[:limit]]
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
    runs = audit_entries(request, actions=REPLAY_ACTIONS)
    record_view(
        request, user, audit.VIEW_REPLAY, target="replay", entry_ids=[run["id"] for run in runs]
    )
    return render(request, "replay.html", {"nav": "replay", "result": None, "runs": runs})


# Audit log


def _day(text: str, errors: list[str], label: str) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        errors.append(f"{label}: not a date (YYYY-MM-DD); ignored")
        return None


KNOWN_ACTIONS = (
    audit.VIEW_SESSION,
    audit.VIEW_SESSIONS,
    audit.VIEW_TIMELINE,
    audit.VIEW_DUE,
    audit.VIEW_IMPORTS,
    audit.VIEW_AUDIT,
    audit.VIEW_REPLAY,
    audit.EXPORT_PACKET,
    audit.EXPORT_API,
    audit.EXPORT_RAW,
    audit.LOGIN,
    audit.LOGIN_FAILED,
    audit.LOGOUT,
    audit.USER_ADD,
    audit.USER_CHANGE,
    audit.REQUEUE,
    audit.DISMISS,
    audit.RAW_MIGRATE,
    audit.IMPORT,
    audit.QUARANTINE,
    audit.REPLAY_VERIFY,
    audit.REPLAY_APPLY,
)


@router.get("/audit")
def audit_page(request: Request, *, user: Annotated[User, Depends(require("auditor"))]) -> Response:
    params = request.query_params
    form = {
        name: str(params.get(name, "")).strip()[:size]
        for name, size in (
            ("date_from", 10),
            ("date_to", 10),
            ("action", 32),
            ("actor", 128),
            ("subject", 128),
            ("target", 128),
        )
    }
    errors: list[str] = []
    day_from = _day(form["date_from"], errors, "From")
    day_to = _day(form["date_to"], errors, "To")
    before = None
    if str(params.get("before", "")).isdigit():
        before = int(params["before"])
    subjects = None
    if form["subject"]:
        with app_state(request).engine.connect() as connection:
            subjects = audit_subjects(connection, form["subject"])
        if not subjects.found:
            errors.append("no stored session has this patient ID, pump serial or session ID")
    limit = 100
    entries = audit_entries(
        request,
        actions=(form["action"],) if form["action"] else (),
        actor=form["actor"] or None,
        target=form["target"] or None,
        since=None if day_from is None else datetime.combine(day_from, time()),
        until=None if day_to is None else datetime.combine(day_to + timedelta(days=1), time()),
        subjects=subjects,
        before=before,
        limit=limit,
    )
    # The filters as recorded: the subject text may be a patient ID, so only the
    # session IDs and serials it stands for are kept.
    recorded: dict[str, object] = {
        k: v for k, v in form.items() if v and k not in ("subject", "date_from", "date_to")
    }
    if day_from is not None:
        recorded["date_from"] = day_from.isoformat()
    if day_to is not None:
        recorded["date_to"] = day_to.isoformat()
    if before is not None:
        recorded["before"] = before
    shown: dict[str, object] = {"entry_ids": [entry["id"] for entry in entries]}
    if subjects is not None:
        recorded["subject_filter"] = True
        shown["session_ids"] = list(subjects.session_ids)
        shown["pump_serials"] = list(subjects.pump_serials)
    record_view(request, user, audit.VIEW_AUDIT, target="audit", filters=recorded, **shown)
    with app_state(request).engine.connect() as connection:
        head = audit.current_head(connection)
    older = None
    if len(entries) == limit:
        pairs = [(k, v) for k, v in form.items() if v]
        older = "/audit?" + urlencode([*pairs, ("before", str(entries[-1]["id"]))])
    return render(
        request,
        "audit.html",
        {
            "nav": "audit",
            "entries": entries,
            "actions": KNOWN_ACTIONS,
            "form": form,
            "error": "; ".join(errors),
            "head": None if head is None else f"{head.entry_id}:{head.entry_hash[:16]}…",
            "older_url": older,
        },
    )
