"""The pages: login, sessions list, evidence, packet, timeline, refills due, imports, audit, users.

Server-rendered (Jinja2, autoescaped), no JavaScript but the packet's Print button.
Every page but `/login` needs a login (`current_user` / `require`); every POST
checks the form's CSRF token first. Session views, packet exports, raw-file
downloads, logins, failed logins, logouts, user changes and re-queues are each
recorded in the audit log before the answer is sent. Patient identifiers appear
in pages and in the list's GET filter, never in logs or audit entries.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select

from db import audit
from db.due import due_report
from db.engine import write_transaction
from db.models import utc_now
from ingest.rawstore import RawStoreError
from web import present
from web.auth import LOGIN_COOKIE, cookie_flags
from web.charts import timeline_charts
from web.context import (
    app_state,
    check_csrf,
    clear_session_cookie,
    current_user,
    is_secure,
    optional_user,
    raw_store_of,
    record,
    render,
    require,
    set_session_cookie,
)
from web.packet import render_pdf
from web.pages import EvidenceView, build_evidence_view, generated_stamp
from web.queries import (
    DEFAULT_PAGE_SIZE,
    PAGE_SIZES,
    PROCEDURES,
    SESSION_FLAGS,
    SORTS,
    BadCursor,
    Cursor,
    SessionFilter,
    import_counts,
    list_sessions,
    pump_timeline,
    raw_file,
    raw_files_of,
    recent_imports,
    session_record,
)
from web.replay import replay_pump_of
from web.users import (
    ROLES,
    AccountError,
    User,
    add_user,
    authenticate,
    count_users,
    end_sessions,
    find_user,
    list_users,
    set_disabled,
    set_password,
    set_role,
)

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
INBOX_LIMIT = 200
QUARANTINE_LIMIT = 500
MESSAGES = {
    "added": "User added.",
    "changed": "User changed; their open sessions have ended.",
    "requeued": "File moved back to the inbox; it will be imported on the next poll.",
}


def safe_next(value: str | None) -> str:
    """A local path to go to after login (never another site)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/sessions"
    if any(ord(c) < 32 for c in value):
        return "/sessions"
    return value


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def _not_found(request: Request, what: str) -> Response:
    return render(
        request,
        "error.html",
        {"heading": "Not found", "message": what},
        status_code=404,
    )


# ---------------------------------------------------------------------------
# Login and logout


@router.get("/")
def home(request: Request, *, user: Annotated[User, Depends(current_user)]) -> Response:
    return _redirect("/sessions")


def _login_page(
    request: Request,
    *,
    next_url: str,
    username: str = "",
    error: str = "",
    status_code: int = 200,
) -> Response:
    state = app_state(request)
    cookie, token = state.codec.issue_login_form()
    with state.engine.connect() as connection:
        no_accounts = count_users(connection) == 0
    if no_accounts and not error:
        error = "No account exists yet: create one with `pumptrail user add NAME --role admin`."
    response = render(
        request,
        "login.html",
        {"login_csrf": token, "next_url": next_url, "username": username, "error": error},
        status_code=status_code,
    )
    response.set_cookie(
        LOGIN_COOKIE, cookie, **cookie_flags(secure=is_secure(request), max_age=3600)
    )
    return response


@router.get("/login")
def login_form(request: Request, next: str | None = None) -> Response:
    if optional_user(request) is not None:
        return _redirect(safe_next(next))
    return _login_page(request, next_url=safe_next(next))


@router.post("/login")
def login(
    request: Request,
    username: Annotated[str, Form(max_length=256)] = "",
    password: Annotated[str, Form(max_length=4096)] = "",
    csrf_token: Annotated[str, Form(max_length=256)] = "",
    next: Annotated[str, Form(max_length=2048)] = "/sessions",
) -> Response:
    check_csrf(request, csrf_token)
    state = app_state(request)
    username = username.strip()
    target = safe_next(next)
    if state.throttle.blocked(username):
        record(
            request,
            actor=username[:120] or "(empty)",
            action=audit.LOGIN_FAILED,
            detail={"reason": "throttled"},
        )
        return _login_page(
            request,
            next_url=target,
            username=username,
            error="Too many failed attempts for this user name: wait 15 minutes.",
            status_code=429,
        )
    with write_transaction(state.engine) as connection:
        user = authenticate(connection, username, password)
        if user is None:
            audit.append(
                connection,
                actor=username[:120] or "(empty)",
                action=audit.LOGIN_FAILED,
                detail={"reason": "bad_credentials"},
            )
        else:
            audit.append(connection, actor=user.username, action=audit.LOGIN, target=user.username)
    if user is None:
        state.throttle.failed(username)
        return _login_page(
            request,
            next_url=target,
            username=username,
            error="Unknown user name or wrong password (or the account is disabled).",
            status_code=401,
        )
    state.throttle.succeeded(username)
    response = _redirect(target)
    set_session_cookie(request, response, state.codec.issue(user.id, user.session_version))
    response.delete_cookie(
        LOGIN_COOKIE, path="/", secure=is_secure(request), httponly=True, samesite="strict"
    )
    return response


@router.post("/logout")
def logout(
    request: Request,
    *,
    user: Annotated[User, Depends(current_user)],
    csrf_token: Annotated[str, Form(max_length=256)] = "",
) -> Response:
    check_csrf(request, csrf_token)
    with write_transaction(app_state(request).engine) as connection:
        end_sessions(connection, user.id)
        audit.append(connection, actor=user.username, action=audit.LOGOUT, target=user.username)
    response = _redirect("/login")
    clear_session_cookie(request, response)
    request.state.set_cookie = None
    return response


# ---------------------------------------------------------------------------
# Sessions list


@dataclass
class ListForm:
    date_from: str = ""
    date_to: str = ""
    pump_serial: str = ""
    patient_id: str = ""
    profile: str = ""
    procedure: str = ""
    flags: tuple[str, ...] = ()
    flagged: bool = False
    sort: str = "newest"

    def query(self) -> list[tuple[str, str]]:
        pairs = [
            (name, getattr(self, name))
            for name in (
                "date_from",
                "date_to",
                "pump_serial",
                "patient_id",
                "profile",
                "procedure",
            )
            if getattr(self, name)
        ]
        pairs += [("flag", flag) for flag in self.flags]
        if self.flagged:
            pairs.append(("flagged", "1"))
        if self.sort != "newest":
            pairs.append(("sort", self.sort))
        return pairs


def _parse_date(text: str, label: str, errors: list[str]) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        errors.append(f"{label}: not a date (YYYY-MM-DD); ignored")
        return None


def parse_list_query(
    params: Mapping[str, Any], flags: list[str], profiles: list[str], default_profile: str
) -> tuple[ListForm, SessionFilter, list[str]]:
    """The list's filters from a query string; bad values are reported and ignored."""
    errors: list[str] = []
    form = ListForm(
        date_from=str(params.get("date_from", ""))[:10],
        date_to=str(params.get("date_to", ""))[:10],
        pump_serial=str(params.get("pump_serial", "")).strip()[:32],
        patient_id=str(params.get("patient_id", "")).strip()[:64],
        profile=str(params.get("profile", "")),
        procedure=str(params.get("procedure", "")),
        flags=tuple(f for f in dict.fromkeys(flags) if f in SESSION_FLAGS),
        flagged=str(params.get("flagged", "")) in ("1", "on", "true"),
        sort=str(params.get("sort", "newest")),
    )
    if form.profile and form.profile not in profiles:
        errors.append("unknown profile; the default is used")
        form.profile = ""
    if form.procedure and form.procedure not in PROCEDURES:
        errors.append("unknown code; ignored")
        form.procedure = ""
    if form.sort not in SORTS:
        form.sort = "newest"
    flt = SessionFilter(
        date_from=_parse_date(form.date_from, "From", errors),
        date_to=_parse_date(form.date_to, "To", errors),
        pump_serial=form.pump_serial or None,
        patient_id=form.patient_id or None,
        profile=form.profile or default_profile,
        procedure=form.procedure or None,
        flags=form.flags,
        flagged=form.flagged,
        sort=form.sort,  # type: ignore[arg-type]
    )
    return form, flt, errors


@router.get("/sessions")
def sessions_page(request: Request, *, user: Annotated[User, Depends(current_user)]) -> Response:
    state = app_state(request)
    params = request.query_params
    profiles = [p.name for p in state.rules.profiles]
    form, flt, errors = parse_list_query(
        params, params.getlist("flag"), profiles, state.rules.default_profile
    )
    try:
        limit = int(params.get("limit", DEFAULT_PAGE_SIZE))
    except ValueError:
        limit = DEFAULT_PAGE_SIZE
    if limit not in PAGE_SIZES:
        limit = DEFAULT_PAGE_SIZE
    cursor = None
    if params.get("cursor"):
        try:
            cursor = Cursor.decode(str(params["cursor"])[:512])
        except BadCursor:
            errors.append("the page link was not valid; showing the first page")
    with state.engine.connect() as connection:
        page = list_sessions(
            connection,
            flt,
            default_profile=state.rules.default_profile,
            cursor=cursor,
            limit=limit,
        )
    base = form.query() + ([("limit", str(limit))] if limit != DEFAULT_PAGE_SIZE else [])

    def url(cursor_text: str | None) -> str | None:
        if cursor_text is None:
            return None
        return "/sessions?" + urlencode([*base, ("cursor", cursor_text)])

    return render(
        request,
        "sessions.html",
        {
            "nav": "sessions",
            "form": form,
            "profiles": profiles,
            "chosen_profile": flt.profile,
            "procedures": PROCEDURES,
            "flag_choices": SESSION_FLAGS,
            "page_sizes": PAGE_SIZES,
            "limit": limit,
            "page": page,
            "error": "; ".join(errors),
            "first_url": "/sessions" + ("?" + urlencode(base) if base else ""),
            "next_url": url(page.next_cursor),
            "prev_url": url(page.prev_cursor),
        },
    )


# ---------------------------------------------------------------------------
# One session: evidence, packet, PDF, raw files, replay


def _view(request: Request, session_id: str) -> EvidenceView | None:
    state = app_state(request)
    if len(session_id) > 64:
        return None
    with state.engine.connect() as connection:
        return build_evidence_view(
            connection, session_id, state.rules, software_version=state.config.version
        )


def _audited_view(
    request: Request, session_id: str, user: User, action: str, detail: dict[str, str] | None
) -> EvidenceView | Response:
    """The session's evidence view, its access recorded before anything is sent; or 404."""
    view = _view(request, session_id)
    if view is None:
        return _not_found(request, "No stored session has this ID.")
    record(request, actor=user.username, action=action, target=session_id, detail=detail)
    return view


@router.get("/sessions/{session_id}")
def evidence_page(
    request: Request, session_id: str, *, user: Annotated[User, Depends(current_user)]
) -> Response:
    view = _audited_view(request, session_id, user, audit.VIEW_SESSION, None)
    if isinstance(view, Response):
        return view
    return render(request, "evidence.html", {"nav": "sessions", "v": view, "packet": False})


@router.get("/sessions/{session_id}/packet")
def packet_page(
    request: Request, session_id: str, *, user: Annotated[User, Depends(current_user)]
) -> Response:
    view = _audited_view(request, session_id, user, audit.EXPORT_PACKET, {"format": "html"})
    if isinstance(view, Response):
        return view
    return render(
        request,
        "packet.html",
        {
            "v": view,
            "packet": True,
            "generated": generated_stamp(utc_now(), user.username),
        },
    )


@router.get("/sessions/{session_id}/packet.pdf")
def packet_pdf(
    request: Request, session_id: str, *, user: Annotated[User, Depends(current_user)]
) -> Response:
    view = _audited_view(request, session_id, user, audit.EXPORT_PACKET, {"format": "pdf"})
    if isinstance(view, Response):
        return view
    data = render_pdf(view, generated_at=utc_now(), generated_by=user.username)
    return Response(
        content=data,
        media_type="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="evidence-{session_id}.pdf"'},
    )


@router.get("/raw/{sha256}")
def raw_download(
    request: Request, sha256: str, *, user: Annotated[User, Depends(current_user)]
) -> Response:
    state = app_state(request)
    if not SHA256_RE.match(sha256):
        return _not_found(request, "Not a SHA-256.")
    with state.engine.connect() as connection:
        found = raw_file(connection, sha256)
    if found is None:
        return _not_found(request, "No raw file with this SHA-256 was ever offered for import.")
    try:
        data = raw_store_of(state).get(sha256)
    except RawStoreError as exc:
        return render(
            request,
            "error.html",
            {"heading": "Raw file unavailable", "message": str(exc)},
            status_code=410,
        )
    record(request, actor=user.username, action="export_raw", target=sha256)
    suffix = {"psl-binary": ".psl", "psl-csv": ".csv"}.get(found.source_format or "", ".bin")
    return Response(
        content=data,
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{sha256[:16]}{suffix}"'},
    )


def _detail_text(detail: Mapping[str, Any]) -> str:
    return json.dumps(detail, sort_keys=True, ensure_ascii=False) if detail else ""


def _entries(
    request: Request,
    *,
    actions: tuple[str, ...] = (),
    actor: str | None = None,
    target: str | None = None,
    before: int | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
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


@router.get("/sessions/{session_id}/replay")
def replay_page(
    request: Request, session_id: str, *, user: Annotated[User, Depends(require("auditor"))]
) -> Response:
    state = app_state(request)
    record_ = None
    if len(session_id) <= 64:
        with state.engine.connect() as connection:
            record_ = session_record(connection, session_id)
            raws = [] if record_ is None else raw_files_of(connection, record_.pk)
    if record_ is None:
        return _not_found(request, "No stored session has this ID.")
    result = replay_pump_of(
        state.engine,
        raw_store_of(state),
        state.rules,
        session_id=session_id,
        pump_serial=record_.pump_serial,
        raw_sha256s={raw.sha256 for raw in raws},
        actor=user.username,
    )
    return render(
        request,
        "replay.html",
        {"nav": "replay", "result": result, "runs": _entries(request, actions=REPLAY_ACTIONS)},
    )


@router.get("/replay")
def replay_runs(
    request: Request, *, user: Annotated[User, Depends(require("auditor"))]
) -> Response:
    return render(
        request,
        "replay.html",
        {"nav": "replay", "result": None, "runs": _entries(request, actions=REPLAY_ACTIONS)},
    )


# ---------------------------------------------------------------------------
# Pump timeline and refills due


@router.get("/pumps/{serial}")
def timeline_page(
    request: Request, serial: str, *, user: Annotated[User, Depends(current_user)]
) -> Response:
    state = app_state(request)
    limit = 500
    found = None
    if len(serial) <= 64:
        with state.engine.connect() as connection:
            found = pump_timeline(connection, serial, limit=limit)
    if found is None:
        return _not_found(request, "No pump with this serial has a stored session.")
    pump, entries = found
    rows = []
    for entry in entries:
        doc = entry.document
        state_after = present.end_state(doc) or {}
        drugs = []
        for slot in ("drug1", "drug2"):
            name = state_after.get(f"{slot}_name")
            dose = state_after.get(f"{slot}_daily_dose")
            if name:
                drugs.append(f"{name} {present.format_value(f'{slot}_daily_dose', dose)}")
        before = (doc.get("interrogated") or {}).get("reservoir_volume")
        after = state_after.get("reservoir_volume")
        rows.append(
            {
                "session_id": entry.session_id,
                "start": present.when_text(entry.start_local),
                "operator": f"{entry.operator_id} ({entry.operator_role})",
                "drugs": "; ".join(drugs) or present.DASH,
                "reservoir": f"{present.ml(before)} → {present.ml(after)}",
                "procedure": entry.procedure,
                "refill": entry.has_refill,
                "flags": entry.flags,
            }
        )
    rows.reverse()
    return render(
        request,
        "timeline.html",
        {
            "nav": "sessions",
            "pump": pump,
            "rows": rows,
            "truncated": len(entries) >= limit,
            "charts": timeline_charts(entries),
        },
    )


@router.get("/due")
def due_page(request: Request, *, user: Annotated[User, Depends(current_user)]) -> Response:
    state = app_state(request)
    today = date.today()
    rows = due_report(
        state.engine, today=today, within_days=state.config.due_within_days, rules=state.rules
    )
    return render(
        request,
        "due.html",
        {
            "nav": "due",
            "rows": rows,
            "today": today.isoformat(),
            "within_days": state.config.due_within_days,
        },
    )


# ---------------------------------------------------------------------------
# Imports


@dataclass(frozen=True)
class FolderFile:
    name: str
    size: int
    modified: str


@dataclass(frozen=True)
class QuarantinedFile:
    name: str
    sha256: str
    code: str
    message: str
    where: str
    when: str


ERROR_SUFFIX = ".error.json"


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


def quarantine_files(folder: Path, limit: int) -> list[QuarantinedFile]:
    """Quarantined files with the reason from `<name>.error.json` (ingest.watch)."""
    if not folder.is_dir():
        return []
    files = []
    for path in sorted(folder.iterdir()):
        name = path.name
        if name.startswith(".") or name.endswith(ERROR_SUFFIX) or not path.is_file():
            continue
        record_data: Mapping[str, Any] = {}
        try:
            parsed = json.loads(path.with_name(name + ERROR_SUFFIX).read_text(encoding="utf-8"))
            record_data = parsed if isinstance(parsed, Mapping) else {}
        except (OSError, ValueError):
            record_data = {}
        where = ""
        if isinstance(record_data.get("offset"), int):
            where = present.position_text("offset", record_data["offset"])
        elif isinstance(record_data.get("line"), int):
            where = present.position_text("line", record_data["line"])
        files.append(
            QuarantinedFile(
                name=name,
                sha256=str(record_data.get("sha256") or ""),
                code=str(record_data.get("code") or "unknown"),
                message=str(record_data.get("message") or "no error record beside the file"),
                where=where or present.DASH,
                when=str(record_data.get("quarantined_at_utc") or _mtime(path))
                .replace("T", " ")
                .rstrip("Z"),
            )
        )
        if len(files) >= limit:
            break
    return files


@router.get("/imports")
def imports_page(request: Request, *, user: Annotated[User, Depends(current_user)]) -> Response:
    state = app_state(request)
    with state.engine.connect() as connection:
        counts = import_counts(connection)
        recent = recent_imports(connection, limit=50)
    inbox, more = inbox_files(state.config.inbox, INBOX_LIMIT)
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
            "quarantine": quarantine_files(state.config.quarantine, QUARANTINE_LIMIT),
            "quarantine_path": str(state.config.quarantine),
            "message": MESSAGES.get(str(request.query_params.get("done", "")), ""),
        },
    )


def _free_target(folder: Path, name: str) -> Path:
    target = folder / name
    stem, dot, suffix = name.partition(".")
    counter = 1
    while target.exists():
        target = folder / f"{stem}.requeued-{counter}{dot}{suffix}"
        counter += 1
    return target


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
    quarantine = state.config.quarantine
    if (
        not name
        or "/" in name
        or "\\" in name
        or name.startswith(".")
        or name.endswith(ERROR_SUFFIX)
    ):
        return _not_found(request, "No such file in the quarantine.")
    source = quarantine / name
    if not source.is_file():
        return _not_found(request, "No such file in the quarantine.")
    error_file = source.with_name(name + ERROR_SUFFIX)
    details: Mapping[str, Any] = {}
    try:
        parsed = json.loads(error_file.read_text(encoding="utf-8"))
        details = parsed if isinstance(parsed, Mapping) else {}
    except (OSError, ValueError):
        details = {}
    inbox = state.config.inbox
    inbox.mkdir(parents=True, exist_ok=True)
    target = _free_target(inbox, name)
    with write_transaction(state.engine) as connection:
        audit.append(
            connection,
            actor=user.username,
            action=audit.REQUEUE,
            target=str(details.get("sha256") or "")[:64],
            detail={"code": str(details.get("code") or "unknown")},
        )
        if _same_device(source, inbox):
            os.link(source, target)
        else:
            _copy(source, target)
        source.unlink()
    error_file.unlink(missing_ok=True)
    log.info(
        "requeued a quarantined file (%s) by %s",
        str(details.get("sha256") or "?")[:12],
        user.username,
    )
    return _redirect("/imports?done=requeued")


def _same_device(path: Path, folder: Path) -> bool:
    try:
        return path.stat().st_dev == folder.stat().st_dev
    except OSError:
        return False


def _copy(source: Path, target: Path) -> None:
    with source.open("rb") as reader, target.open("xb") as writer:
        while chunk := reader.read(1 << 20):
            writer.write(chunk)


# ---------------------------------------------------------------------------
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
    entries = _entries(
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


# ---------------------------------------------------------------------------
# Users (admin)


def _users_page(
    request: Request, *, message: str = "", error: str = "", status_code: int = 200
) -> Response:
    with app_state(request).engine.connect() as connection:
        users = list_users(connection)
    return render(
        request,
        "users.html",
        {"nav": "users", "users": users, "roles": ROLES, "message": message, "error": error},
        status_code=status_code,
    )


@router.get("/admin/users")
def users_page(request: Request, *, user: Annotated[User, Depends(require("admin"))]) -> Response:
    return _users_page(request, message=MESSAGES.get(str(request.query_params.get("done", "")), ""))


@router.post("/admin/users")
def users_add(
    request: Request,
    *,
    user: Annotated[User, Depends(require("admin"))],
    username: Annotated[str, Form(max_length=256)] = "",
    role: Annotated[str, Form(max_length=32)] = "coder",
    password: Annotated[str, Form(max_length=4096)] = "",
    csrf_token: Annotated[str, Form(max_length=256)] = "",
) -> Response:
    check_csrf(request, csrf_token)
    try:
        with write_transaction(app_state(request).engine) as connection:
            added = add_user(connection, username.strip(), role, password)
            audit.append(
                connection,
                actor=user.username,
                action=audit.USER_ADD,
                target=added.username,
                detail={"role": added.role},
            )
    except AccountError as exc:
        return _users_page(request, error=str(exc), status_code=400)
    return _redirect("/admin/users?done=added")


def _enabled_admins(request: Request) -> int:
    with app_state(request).engine.connect() as connection:
        return sum(1 for u in list_users(connection) if u.role == "admin" and not u.disabled)


@router.post("/admin/users/{username}")
def users_change(
    request: Request,
    username: str,
    *,
    user: Annotated[User, Depends(require("admin"))],
    op: Annotated[str, Form(max_length=16)] = "",
    role: Annotated[str, Form(max_length=32)] = "",
    password: Annotated[str, Form(max_length=4096)] = "",
    csrf_token: Annotated[str, Form(max_length=256)] = "",
) -> Response:
    check_csrf(request, csrf_token)
    state = app_state(request)
    with state.engine.connect() as connection:
        target = find_user(connection, username)
    if target is None:
        return _users_page(request, error=f"no user {username!r}", status_code=404)
    losing_admin = (
        target.role == "admin"
        and not target.disabled
        and (op == "disable" or (op == "role" and role != "admin"))
    )
    if losing_admin and _enabled_admins(request) <= 1:
        return _users_page(
            request, error="the last enabled admin must stay an admin", status_code=400
        )
    if op == "disable" and target.id == user.id:
        return _users_page(request, error="you cannot disable your own account", status_code=400)
    try:
        with write_transaction(state.engine) as connection:
            if op == "role":
                set_role(connection, username, role)
                detail: dict[str, object] = {"op": "role", "role": role}
            elif op in ("disable", "enable"):
                set_disabled(connection, username, op == "disable")
                detail = {"op": op}
            elif op == "password":
                set_password(connection, username, password)
                detail = {"op": "password"}
            else:
                raise AccountError(f"unknown change {op!r}")
            audit.append(
                connection,
                actor=user.username,
                action=audit.USER_CHANGE,
                target=username,
                detail=detail,
            )
    except AccountError as exc:
        return _users_page(request, error=str(exc), status_code=400)
    if target.id == user.id:
        # Your own change ended your session too.
        response = _redirect("/login")
        clear_session_cookie(request, response)
        request.state.set_cookie = None
        return response
    return _redirect("/admin/users?done=changed")
