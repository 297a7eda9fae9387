"""The session list page: filters from the query string, keyset pages (`web.queries.listing`).

Bad filter values are reported on the page and ignored, and a reversed date range
says so; the filters and the chosen profile are kept for the browser session
(`web.views.common.LIST_COOKIE`: the list without a query shows them again,
`?clear=1` forgets them); the procedure codes and
session flags offered are the evidence room's (`evidence.codes`,
`evidence.flags`). A patient ID is a GET filter value, never logged.

The bulk action (docs/web.md "Sign-off"): coders and admins tick clean visits (no
flags at all) and `POST /sessions/sign-off` signs each off with its applicable
code, the diagnoses given once for all, and the rendering NPI of that visit
(`web.signoff.rendering_npi`), each through `web.signoff.sign_off` (its own version
and `sign_off` audit entry). A visit with flags, without evidence, or already
signed off is refused, never signed; the answer counts the signed visits and lists
the refused ones with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response

from db import audit
from db.decisions import current_decision
from evidence.codes import PROCEDURE_CODES
from evidence.flags import SESSION_FLAGS
from web.context import (
    Forbidden,
    app_state,
    check_csrf,
    current_user,
    record_view,
    render,
)
from web.decision_form import COMMON_DIAGNOSES
from web.queries import (
    DEFAULT_PAGE_SIZE,
    PAGE_SIZES,
    SORTS,
    BadCursor,
    Cursor,
    SessionFilter,
    list_sessions,
)
from web.signoff import SignOffRefused, rendering_npi, session_facts, sign_off_for
from web.users import User
from web.views.common import list_url, remember_list, saved_list

router = APIRouter(include_in_schema=False)

# The roles that sign off (auditors read only).
SIGN_OFF_ROLES = frozenset({"coder", "admin"})
# Visits one bulk sign-off takes at most (the largest page of the list).
BULK_MAX = 200


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

    def audited(self) -> dict[str, object]:
        """The filters as an audit entry records them: values, but a patient ID only as used."""
        values: dict[str, object] = {
            name: value
            for name, value in self.query()
            if name not in ("patient_id", "flag", "flagged")
        }
        if self.flagged:
            values["flagged"] = True
        if self.flags:
            values["flags"] = list(self.flags)
        if self.patient_id:
            values["patient_filter"] = True
        return values


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
    if form.procedure and form.procedure not in PROCEDURE_CODES:
        errors.append("unknown code; ignored")
        form.procedure = ""
    if form.sort not in SORTS:
        form.sort = "newest"
    date_from = _parse_date(form.date_from, "From", errors)
    date_to = _parse_date(form.date_to, "To", errors)
    if date_from is not None and date_to is not None and date_from > date_to:
        errors.append(
            f"the date range is reversed: From ({date_from.isoformat()}) is after "
            f"To ({date_to.isoformat()}), so no session can match"
        )
    flt = SessionFilter(
        date_from=date_from,
        date_to=date_to,
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
    cleared = "clear" in params
    if not params and not cleared:
        # Back on the list: the filters this browser session chose last.
        params = saved_list(request)
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
    record_view(
        request,
        user,
        audit.VIEW_SESSIONS,
        target="sessions",
        filters={**form.audited(), "limit": limit, "page": "cursor" if cursor else "first"},
        session_ids=[row.session_id for row in page.rows],
    )
    base = form.query() + ([("limit", str(limit))] if limit != DEFAULT_PAGE_SIZE else [])

    def url(cursor_text: str | None) -> str | None:
        if cursor_text is None:
            return None
        return "/sessions?" + urlencode([*base, ("cursor", cursor_text)])

    response = render(
        request,
        "sessions.html",
        {
            "nav": "sessions",
            "form": form,
            "profiles": profiles,
            "profile_labels": {p.name: p.title for p in state.rules.profiles},
            "chosen_profile": flt.profile,
            "procedures": PROCEDURE_CODES,
            "flag_choices": SESSION_FLAGS,
            "page_sizes": PAGE_SIZES,
            "limit": limit,
            "page": page,
            "error": "; ".join(errors),
            "first_url": "/sessions" + ("?" + urlencode(base) if base else ""),
            "next_url": url(page.next_cursor),
            "prev_url": url(page.prev_cursor),
            "can_sign": user.role in SIGN_OFF_ROLES,
            "common_diagnoses": COMMON_DIAGNOSES,
        },
    )
    remember_list(request, response, base)
    return response


# Bulk sign-off


@dataclass(frozen=True)
class BulkOutcome:
    session_id: str
    signed: bool
    text: str


def _sign_one(request: Request, session_id: str, diagnoses: str, user: User) -> BulkOutcome:
    state = app_state(request)
    with state.engine.connect() as connection:
        facts = session_facts(connection, session_id, state.rules.default_profile)
        if facts is None:
            return BulkOutcome(session_id, False, "no stored evidence for this session ID")
        if facts.flags:
            return BulkOutcome(
                session_id,
                False,
                "has flags (" + ", ".join(f.replace("_", " ") for f in facts.flags) + "): "
                "sign it off on its evidence page",
            )
        if facts.applicable_procedure is None:
            return BulkOutcome(session_id, False, "no applicable code")
        current = current_decision(connection, session_id)
        if current is not None:
            return BulkOutcome(
                session_id,
                False,
                f"already signed off (version {current.version}); change it on its evidence page",
            )
        npi = rendering_npi(connection, facts, state.config.supervising_physician)
    body = {
        "procedure": facts.applicable_procedure,
        "diagnoses": diagnoses,
        "rendering_npi": npi or "",
    }
    try:
        version, _warnings = sign_off_for(request, user, facts, body, bulk=True)
    except SignOffRefused as refused:
        return BulkOutcome(session_id, False, str(refused))
    return BulkOutcome(session_id, True, f"{facts.applicable_procedure}, version {version.version}")


@router.post("/sessions/sign-off")
def bulk_sign_off(
    request: Request,
    *,
    user: Annotated[User, Depends(current_user)],
    session_id: Annotated[list[str] | None, Form()] = None,
    diagnoses: Annotated[str, Form(max_length=400)] = "",
    csrf_token: Annotated[str, Form(max_length=256)] = "",
) -> Response:
    """Sign off the ticked clean visits with their applicable codes, one by one."""
    check_csrf(request, csrf_token)
    if user.role not in SIGN_OFF_ROLES:
        raise Forbidden(f"coders and admins sign off; you are an {user.role}")
    chosen = list(dict.fromkeys(s.strip() for s in session_id or [] if s.strip()))
    error = ""
    if not chosen:
        error = "No visit was ticked: tick the clean visits to sign off."
    elif len(chosen) > BULK_MAX:
        error = f"At most {BULK_MAX} visits are signed off in one step."
        chosen = []
    outcomes = [
        _sign_one(request, sid, diagnoses, user)
        if len(sid) <= 64
        else BulkOutcome(sid[:64], False, "not a session ID")
        for sid in chosen
    ]
    signed = [o for o in outcomes if o.signed]
    refused = [o for o in outcomes if not o.signed]
    return render(
        request,
        "bulk_signoff.html",
        {
            "nav": "sessions",
            "signed": signed,
            "refused": refused,
            "error": error,
            "diagnoses": diagnoses,
            "list_url": list_url(request),
        },
        status_code=400 if error else 200,
    )
