"""The JSON API under `/api/` (docs/web.md "The JSON API"), documented at `/openapi.json`.

- `GET /api/sessions`: the session list with the page's filters as query
  parameters (`web.queries.SessionFilter`), keyset pages (`cursor`); the
  `procedure` and `flag` enumerations are the evidence room's
  (`evidence.codes.ProcedureCode`, `evidence.flags.SessionFlag`);
- `GET /api/sessions/{session_id}`: the stored evidence document of
  docs/session-json.md "Evidence" with `applicable` (the payer covering the date
  of service, its profile and that profile's code) and, without coverage, the
  flag `no_payer_on_file`, both looked up when the document is read;
- `GET /api/sessions/{session_id}/fhir`: the visit as a FHIR R4 Bundle
  (docs/fhir.md, `web.fhir`), as `application/fhir+json`.

Other systems send an API token (`pumptrail token create`, `web.tokens`) as
`Authorization: Bearer <token>`: the request acts for the token's account with
its current role, and needs no CSRF token. A browser uses the same login as the
pages (the session cookie). Without either the answer is 401 with a JSON body;
a token that is not valid (unknown, revoked, or of a disabled account) gets 401
too. Both schemes are declared in the OpenAPI document. Every answer is an
export and is recorded in the audit log (`export_api`): the actor is the
account's user name, the target is the session ID or `sessions`; the detail
holds the route, the client address, the API token's ID (`token_id`) when a
token was used, the filters with their values (a patient ID filter only as
`patient_filter: true`) and the session IDs of the answer.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyCookie, HTTPBearer
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from db import audit
from db.codec import dumps
from db.payers import evidence_with_applicable
from evidence.codes import ProcedureCode
from evidence.flags import SessionFlag
from web.auth import SESSION_COOKIE
from web.context import app_state, current_user, record_view
from web.queries import (
    DEFAULT_PAGE_SIZE,
    BadCursor,
    Cursor,
    SessionFilter,
    list_sessions,
)
from web.signoff import MAX_SESSION_ID_LEN
from web.users import User

# Documents the cookie login in the OpenAPI security schemes; the check itself is
# `current_user` (401 from the app's handler).
cookie_scheme = APIKeyCookie(
    name=SESSION_COOKIE,
    auto_error=False,
    description="The session cookie set by POST /login (form fields username, password, csrf_token).",
)

# Roles that may sign off a visit (auditors read, they do not bill).
SIGN_OFF_ROLES = frozenset({"coder", "admin"})

# Documents the API tokens of other systems; the check itself is `current_user`
# (web.context reads the Authorization header, 401 from the app's handler).
bearer_scheme = HTTPBearer(
    scheme_name="apiToken",
    bearerFormat="pt_ token",
    auto_error=False,
    description="An API token made by `pumptrail token create USER` "
    '(docs/web.md "The JSON API"); it acts with its account\'s current role.',
)

router = APIRouter(
    prefix="/api",
    tags=["api"],
    dependencies=[Depends(bearer_scheme), Depends(cookie_scheme)],
)


def _iso_date(value: object) -> object:
    """Dates in the API are `YYYY-MM-DD` only (pydantic alone would take 0.0 as 1970-01-01)."""
    if isinstance(value, str) and not ISO_DATE_RE.fullmatch(value):
        raise ValueError("expected a date YYYY-MM-DD")
    return value


ISO_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
IsoDate = Annotated[date, BeforeValidator(_iso_date)]


class Problem(BaseModel):
    detail: str


class CodeOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    procedure: str | None
    reprogrammed: bool
    refill: bool
    counterfactual: str | None = None


class RefillOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    expected_residual_ul: int | None
    recomputed_expected_ul: int | None
    aspirated_ul: int | None
    added_ul: int | None
    new_volume_ul: int | None
    discrepancy_ul: int | None


class ChangeOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    parameter: str
    category: str
    before: Any = Field(description="canonical value (docs/session-json.md §1); null when unknown")
    after: Any = Field(description="canonical value (docs/session-json.md §1); null when unknown")
    when: Literal["in_session", "between_sessions", "reverted_in_session"]
    reason: str | None
    flags: list[str]


class SupplyOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    hcpcs: str | None
    units: int | None
    drug: str
    amount_ug: int | None


class DocumentationOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    item: str
    status: Literal["proven_by_log", "missing_from_log", "note_must_state"]


class ApplicableOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    payer: str | None = Field(description="the payer covering the date of service; null: none")
    payer_id: str | None
    profile: str = Field(description="the payer's profile, or the default without coverage")
    procedure: str | None = Field(description="the CPT code under that profile")


class EvidenceOut(BaseModel):
    """docs/session-json.md "Evidence": one stored session's evidence document."""

    model_config = ConfigDict(extra="allow")

    session_id: str
    pump_serial: str
    session_start_utc: str
    prior_session_id: str | None
    operator_role: str
    applicable: ApplicableOut
    refill: RefillOut | None
    changes: list[ChangeOut]
    codes: dict[str, CodeOut]
    supplies: list[SupplyOut]
    documentation: list[DocumentationOut]
    flags: list[str]


class SessionItem(BaseModel):
    """One row of the session list."""

    session_id: str
    session_start_utc: str = Field(description="ISO 8601 UTC with Z")
    session_start_local: str = Field(description="programmer-local time, no zone")
    utc_offset_min: int
    pump_serial: str
    pump_model: str
    patient_id: str | None
    patient_name: str | None
    operator_id: str
    operator_role: str
    refill: bool
    codes: dict[str, str | None] = Field(description="CPT code under every profile")
    payer: str | None = Field(description="the payer covering the date of service")
    applicable_profile: str | None = Field(
        description="the payer's profile, or the default without coverage"
    )
    applicable: str | None = Field(description="the CPT code under the applicable profile")
    flags: list[str]
    conflicting_exports: bool
    evidence: bool = Field(description="false until the session's evidence is derived")
    href: str


class SessionList(BaseModel):
    profile: str = Field(description="the profile the procedure filter applies to")
    count: int | None = Field(
        description="matching sessions, counted up to 10,000 (then count_capped); "
        "null when the filters allow no bounded count"
    )
    count_capped: bool
    notes: list[str] = Field(description="e.g. a page that searched as far as it may")
    items: list[SessionItem]
    next_cursor: str | None
    prev_cursor: str | None


UNAUTHORIZED: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "not logged in, or the API token is not valid"}
}


def _iso_z(value: datetime) -> str:
    return value.replace(microsecond=0).isoformat() + "Z"


@router.get(
    "/sessions",
    response_model=SessionList,
    responses={**UNAUTHORIZED, 400: {"model": Problem, "description": "bad filter or cursor"}},
    summary="List stored sessions",
)
def api_sessions(
    request: Request,
    *,
    user: Annotated[User, Depends(current_user)],
    date_from: Annotated[
        IsoDate | None, Query(description="programmer-local date YYYY-MM-DD, inclusive")
    ] = None,
    date_to: Annotated[
        IsoDate | None, Query(description="programmer-local date YYYY-MM-DD, inclusive")
    ] = None,
    pump_serial: Annotated[str | None, Query(max_length=32)] = None,
    patient_id: Annotated[str | None, Query(max_length=64)] = None,
    profile: Annotated[
        str | None, Query(max_length=64, description="default: the rules' default")
    ] = None,
    procedure: Annotated[ProcedureCode | None, Query()] = None,
    flag: Annotated[list[SessionFlag] | None, Query(description="all must be set")] = None,
    flagged: Annotated[bool, Query(description="at least one session flag")] = False,
    sort: Annotated[Literal["newest", "oldest", "pump"], Query()] = "newest",
    limit: Annotated[int, Query(ge=1, le=500)] = DEFAULT_PAGE_SIZE,
    cursor: Annotated[
        str | None, Query(max_length=512, description="next_cursor or prev_cursor of a page")
    ] = None,
) -> Any:
    state = app_state(request)
    profiles = [p.name for p in state.rules.profiles]
    chosen = state.rules.default_profile if profile is None else profile
    if chosen not in profiles:
        return JSONResponse({"detail": f"unknown profile {chosen!r}"}, status_code=400)
    flt = SessionFilter(
        date_from=date_from,
        date_to=date_to,
        pump_serial=pump_serial or None,
        patient_id=patient_id or None,
        profile=chosen,
        procedure=procedure,
        flags=tuple(dict.fromkeys(flag or ())),
        flagged=flagged,
        sort=sort,
    )
    try:
        page_cursor = Cursor.decode(cursor) if cursor else None
    except BadCursor:
        return JSONResponse({"detail": "cursor: not a cursor of this list"}, status_code=400)
    with state.engine.connect() as connection:
        page = list_sessions(
            connection,
            flt,
            default_profile=state.rules.default_profile,
            cursor=page_cursor,
            limit=limit,
        )
    notes = list(page.notes)
    if date_from is not None and date_to is not None and date_from > date_to:
        notes.insert(
            0,
            f"the date range is reversed: date_from ({date_from.isoformat()}) is after "
            f"date_to ({date_to.isoformat()}), so no session can match",
        )
    filters: dict[str, object] = {
        name: value.isoformat() if isinstance(value, date) else value
        for name, value in (
            ("date_from", date_from),
            ("date_to", date_to),
            ("pump_serial", pump_serial),
            ("procedure", procedure),
        )
        if value
    }
    if flt.flags:
        filters["flags"] = list(flt.flags)
    if flagged:
        filters["flagged"] = True
    if patient_id:
        filters["patient_filter"] = True
    filters.update(profile=chosen, sort=sort, limit=limit, page="cursor" if cursor else "first")
    record_view(
        request,
        user,
        audit.EXPORT_API,
        target="sessions",
        filters=filters,
        rows=len(page.rows),
        session_ids=[row.session_id for row in page.rows],
    )
    return SessionList(
        profile=chosen,
        count=page.count,
        count_capped=page.count_capped,
        notes=notes,
        items=[
            SessionItem(
                session_id=row.session_id,
                session_start_utc=_iso_z(row.start_utc),
                session_start_local=row.start_local.replace(microsecond=0).isoformat(),
                utc_offset_min=row.utc_offset_min,
                pump_serial=row.pump_serial,
                pump_model=row.pump_model,
                patient_id=row.patient_id,
                patient_name=row.patient_name,
                operator_id=row.operator_id,
                operator_role=row.operator_role,
                refill=row.has_refill,
                codes=dict(row.codes),
                payer=row.payer,
                applicable_profile=row.applicable_profile,
                applicable=row.applicable,
                flags=list(row.flags),
                conflicting_exports=row.conflicting_exports,
                evidence=row.has_evidence,
                href=f"/api/sessions/{row.session_id}",
            )
            for row in page.rows
        ],
        next_cursor=page.next_cursor,
        prev_cursor=page.prev_cursor,
    )


@router.get(
    "/sessions/{session_id}",
    response_model=EvidenceOut,
    responses={
        **UNAUTHORIZED,
        404: {"model": Problem, "description": "no such session, or no evidence yet"},
    },
    summary="The evidence document of one session (docs/session-json.md)",
)
def api_session(
    request: Request,
    session_id: str,
    *,
    user: Annotated[User, Depends(current_user)],
) -> Response:
    state = app_state(request)
    with state.engine.connect() as connection:
        document = (
            evidence_with_applicable(connection, session_id, state.rules.default_profile)
            if len(session_id) <= MAX_SESSION_ID_LEN
            else None
        )
    if document is None:
        return JSONResponse({"detail": "no stored evidence for this session ID"}, status_code=404)
    record_view(request, user, audit.EXPORT_API, target=session_id, session_ids=[session_id])
    return Response(content=dumps(document).encode("utf-8"), media_type="application/json")


# ---------------------------------------------------------------------------
# FHIR R4 (docs/fhir.md)

FHIR_JSON = "application/fhir+json"


@router.get(
    "/sessions/{session_id}/fhir",
    responses={
        **UNAUTHORIZED,
        200: {
            "content": {FHIR_JSON: {"schema": {"type": "object"}}},
            "description": "a FHIR R4 Bundle of type collection (docs/fhir.md)",
        },
        404: {"model": Problem, "description": "no such session, or no evidence yet"},
    },
    summary="The visit's evidence as a FHIR R4 Bundle (docs/fhir.md)",
)
def api_session_fhir(
    request: Request,
    session_id: str,
    *,
    user: Annotated[User, Depends(current_user)],
) -> Response:
    from db.models import utc_now
    from web.fhir import session_bundle

    state = app_state(request)
    with state.engine.connect() as connection:
        bundle = session_bundle(
            connection,
            session_id,
            rules=state.rules,
            edits=state.edits,
            supervising_physician=state.config.supervising_physician,
            identity=state.identity,
            generated_at=utc_now(),
            device_makers=state.device_makers,
        )
    if bundle is None:
        return JSONResponse({"detail": "no stored evidence for this session ID"}, status_code=404)
    record_view(
        request, user, audit.EXPORT_API, target=session_id, format="fhir", session_ids=[session_id]
    )
    return Response(content=dumps(bundle).encode("utf-8"), media_type=FHIR_JSON)


# ---------------------------------------------------------------------------
# The coder's decision (docs/web.md "Sign-off")


class DecisionProblem(BaseModel):
    field: str
    message: str


class DecisionRefused(BaseModel):
    detail: list[DecisionProblem]


class DrugIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hcpcs: str = Field(description="HCPCS code of the drug (J2274, J0475, ...)")
    units: int = Field(description="units administered")
    discarded_units: int = Field(0, description="units discarded (JW line); 0: JZ")
    ndc: str | None = Field(None, description="NDC, 11-digit or hyphenated")


class EmCodeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str
    modifiers: list[str] = []


class DecisionIn(BaseModel):
    """A sign-off: at least the procedure, the diagnoses and the rendering NPI."""

    model_config = ConfigDict(extra="forbid")
    procedure: str = Field(description="the CPT code billed for the visit")
    diagnoses: list[str] = Field(description="ICD-10-CM codes, the first is the primary")
    rendering_npi: str = Field(description="ten digits, Luhn check over 80840 + nine digits")
    reason: str | None = Field(
        None, description="required when the procedure is not the applicable one"
    )
    modifiers: list[str] = []
    em_codes: list[EmCodeIn] = []
    drugs: list[DrugIn] | None = Field(
        None, description="absent: the drug lines the refill yields, with JZ"
    )
    specialty_pharmacy_supplied: bool = False


def _decision_answer(request: Request, session_id: str, *, with_versions: bool = True) -> Any:
    from web.signoff import proposal, session_facts, version_json

    state = app_state(request)
    with state.engine.connect() as connection:
        facts = session_facts(connection, session_id, state.rules.default_profile)
        if facts is None:
            return None
        found = proposal(
            connection, facts, state.rules, state.edits, state.config.supervising_physician
        )
    return {
        "session_id": session_id,
        "applicable": dict(facts.applicable),
        "status": "signed" if found.current is not None else "unsigned",
        "current": None if found.current is None else version_json(found.current),
        "versions": [version_json(v) for v in found.versions] if with_versions else [],
        "edits": [
            {"id": r.edit_id, "severity": r.severity, "text": r.text, "detail": r.detail}
            for r in found.edits
        ],
    }


@router.get(
    "/sessions/{session_id}/decision",
    responses={**UNAUTHORIZED, 404: {"model": Problem, "description": "no such session"}},
    summary="The coder's decision on a visit: current version, earlier versions, edits",
)
def api_decision(
    request: Request,
    session_id: str,
    *,
    user: Annotated[User, Depends(current_user)],
) -> Response:
    answer = _decision_answer(request, session_id)
    if answer is None:
        return JSONResponse({"detail": "no stored evidence for this session ID"}, status_code=404)
    record_view(request, user, audit.EXPORT_API, target=session_id, session_ids=[session_id])
    return JSONResponse(answer)


@router.put(
    "/sessions/{session_id}/decision",
    responses={
        **UNAUTHORIZED,
        400: {"model": Problem, "description": "a body that is not JSON text"},
        403: {"model": Problem, "description": "only coders and admins sign off"},
        404: {"model": Problem, "description": "no such session"},
        422: {"model": DecisionRefused, "description": "a field is wrong, or a blocking edit"},
    },
    summary="Sign off a visit: store the decision as its next version",
)
def api_sign_off(
    request: Request,
    session_id: str,
    body: DecisionIn,
    *,
    user: Annotated[User, Depends(current_user)],
) -> Response:
    from web.signoff import SignOffRefused, session_facts, sign_off_for, version_json

    if user.role not in SIGN_OFF_ROLES:
        return JSONResponse(
            {"detail": f"only coders and admins sign off; you are an {user.role}"},
            status_code=403,
        )
    state = app_state(request)
    with state.engine.connect() as connection:
        facts = session_facts(connection, session_id, state.rules.default_profile)
    if facts is None:
        return JSONResponse({"detail": "no stored evidence for this session ID"}, status_code=404)
    payload = body.model_dump(exclude_none=False)
    if body.drugs is None:
        payload.pop("drugs")
    payload["em_codes"] = [e.model_dump() for e in body.em_codes]
    try:
        version, warnings = sign_off_for(request, user, facts, payload)
    except SignOffRefused as refused:
        return JSONResponse({"detail": refused.as_detail()}, status_code=422)
    answer = version_json(version)
    answer["warnings"] = [{"id": w.edit_id, "text": w.text} for w in warnings]
    return JSONResponse(answer)
