"""One session: the evidence page and its sign-off, the printable packet, its PDF, raw
downloads, replay.

Each view, packet export, raw-file download and replay page is recorded in the
audit log before the answer is sent (`web.context.record_view`: actor, client
address, route, the session ID shown). The page, the packet and the
PDF show one view model (`web.pages.EvidenceView`). The replay page (auditors)
verifies the session's pump against its kept bytes (`web.replay`).

The page's "Decision" section (`web.decision_form`, docs/web.md "Sign-off") shows
the current decision and its earlier versions to everyone, and to coders and admins
the sign-off form; `POST /sessions/{id}/decision` signs off through
`web.signoff.sign_off` (which records the `sign_off` audit entry), then redirects
back with the version stored, or shows the page again with each field's error.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response

from db import audit
from db.models import utc_now
from ingest.rawstore import RawStoreError
from web.context import (
    Forbidden,
    app_state,
    check_csrf,
    current_user,
    raw_store_of,
    record_view,
    render,
    require,
)
from web.decision_form import DecisionForm, decision_form, form_body, refused_form
from web.packet_signing import build_signed_packet
from web.pages import EvidenceView, build_evidence_view, generated_stamp
from web.queries import raw_file, raw_files_of, session_record
from web.replay import replay_pump_of
from web.signoff import (
    MAX_SESSION_ID_LEN,
    SignOffRefused,
    proposal,
    session_facts,
    sign_off_for,
)
from web.users import User
from web.views.audit import REPLAY_ACTIONS, audit_entries
from web.views.common import chosen_profile, keep_profile, list_url, not_found, redirect

router = APIRouter(include_in_schema=False)

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
# The roles that sign off (auditors see the decision, not the form).
SIGN_OFF_ROLES = frozenset({"coder", "admin"})


# One session: evidence, packet, PDF, raw files, replay


def _view(request: Request, session_id: str) -> EvidenceView | None:
    state = app_state(request)
    if len(session_id) > MAX_SESSION_ID_LEN:
        return None
    with state.engine.connect() as connection:
        return build_evidence_view(
            connection,
            session_id,
            state.rules,
            software_version=state.config.version,
            chosen_profile=chosen_profile(request),
            supervising_physician=state.config.supervising_physician,
        )


def _audited_view(
    request: Request, session_id: str, user: User, action: str, export_format: str | None
) -> EvidenceView | Response:
    """The session's evidence view, its access recorded before anything is sent; or 404."""
    view = _view(request, session_id)
    if view is None:
        return not_found(request, "No stored session has this ID.")
    if export_format is None:
        record_view(request, user, action, target=session_id, session_ids=[session_id])
    else:
        record_view(
            request,
            user,
            action,
            target=session_id,
            session_ids=[session_id],
            format=export_format,
        )
    return view


def _decision_form(request: Request, session_id: str, user: User) -> DecisionForm | None:
    """The page's decision section; None for a session without evidence."""
    state = app_state(request)
    with state.engine.connect() as connection:
        facts = session_facts(connection, session_id, state.rules.default_profile)
        if facts is None:
            return None
        found = proposal(
            connection, facts, state.rules, state.edits, state.config.supervising_physician
        )
    return decision_form(found, can_sign=user.role in SIGN_OFF_ROLES)


def _evidence_page(
    request: Request,
    session_id: str,
    user: User,
    *,
    form: DecisionForm | None,
    message: str = "",
    status_code: int = 200,
) -> Response:
    view = _audited_view(request, session_id, user, audit.VIEW_SESSION, None)
    if isinstance(view, Response):
        return view
    response = render(
        request,
        "evidence.html",
        {
            "nav": "sessions",
            "v": view,
            "packet": False,
            "list_url": list_url(request),
            "d": form,
            "message": message,
        },
        status_code=status_code,
    )
    keep_profile(request, response, view.chosen_profile)
    return response


@router.get("/sessions/{session_id}")
def evidence_page(
    request: Request, session_id: str, *, user: Annotated[User, Depends(current_user)]
) -> Response:
    form = _decision_form(request, session_id, user)
    signed = str(request.query_params.get("signed", ""))
    message = f"Visit signed off (version {signed})." if signed.isdigit() else ""
    return _evidence_page(request, session_id, user, form=form, message=message)


@router.post("/sessions/{session_id}/decision")
def evidence_sign_off(
    request: Request,
    session_id: str,
    *,
    user: Annotated[User, Depends(current_user)],
    procedure: Annotated[str, Form(max_length=16)] = "",
    reason: Annotated[str, Form(max_length=1000)] = "",
    diagnoses: Annotated[str, Form(max_length=400)] = "",
    modifiers: Annotated[str, Form(max_length=64)] = "",
    rendering_npi: Annotated[str, Form(max_length=32)] = "",
    drug_hcpcs: Annotated[list[str] | None, Form()] = None,
    drug_units: Annotated[list[str] | None, Form()] = None,
    drug_discarded_units: Annotated[list[str] | None, Form()] = None,
    drug_ndc: Annotated[list[str] | None, Form()] = None,
    specialty_pharmacy_supplied: Annotated[str, Form(max_length=8)] = "",
    csrf_token: Annotated[str, Form(max_length=256)] = "",
) -> Response:
    """Sign off from the evidence page: a new decision version, or the form with errors."""
    check_csrf(request, csrf_token)
    if user.role not in SIGN_OFF_ROLES:
        raise Forbidden(f"coders and admins sign off; you are an {user.role}")
    state = app_state(request)
    with state.engine.connect() as connection:
        facts = session_facts(connection, session_id, state.rules.default_profile)
    if facts is None:
        return not_found(request, "No stored evidence for this session ID.")
    body: dict[str, Any] = form_body(
        procedure=procedure,
        reason=reason,
        diagnoses=diagnoses,
        modifiers=modifiers,
        rendering_npi=rendering_npi,
        drug_hcpcs=[v[:16] for v in drug_hcpcs or []][:20],
        drug_units=[v[:16] for v in drug_units or []][:20],
        drug_discarded_units=[v[:16] for v in drug_discarded_units or []][:20],
        drug_ndc=[v[:32] for v in drug_ndc or []][:20],
        specialty_pharmacy_supplied=specialty_pharmacy_supplied in ("1", "on", "true"),
    )
    try:
        version, _warnings = sign_off_for(request, user, facts, body)
    except SignOffRefused as refused:
        form = _decision_form(request, session_id, user)
        if form is None:  # pragma: no cover - the facts were just read
            return not_found(request, "No stored evidence for this session ID.")
        return _evidence_page(
            request,
            session_id,
            user,
            form=refused_form(form, body, refused),
            status_code=422,
        )
    return redirect(f"/sessions/{session_id}?signed={version.version}#decision")


@router.get("/sessions/{session_id}/packet")
def packet_page(
    request: Request, session_id: str, *, user: Annotated[User, Depends(current_user)]
) -> Response:
    view = _audited_view(request, session_id, user, audit.EXPORT_PACKET, "html")
    if isinstance(view, Response):
        return view
    response = render(
        request,
        "packet.html",
        {
            "v": view,
            "packet": True,
            "generated": generated_stamp(utc_now(), user.username),
            "list_url": list_url(request),
        },
    )
    keep_profile(request, response, view.chosen_profile)
    return response


@router.get("/sessions/{session_id}/packet.pdf")
def packet_pdf(
    request: Request, session_id: str, *, user: Annotated[User, Depends(current_user)]
) -> Response:
    """The signed PDF packet; its audit entry names the packet and the file's SHA-256,
    so a copy that surfaces later can be traced to this export."""
    view = _view(request, session_id)
    if view is None:
        return not_found(request, "No stored session has this ID.")
    packet = build_signed_packet(
        view,
        app_state(request).identity,
        generated_at=utc_now(),
        generated_by=user.username,
    )
    record_view(
        request,
        user,
        audit.EXPORT_PACKET,
        target=session_id,
        format="pdf",
        session_ids=[session_id],
        packet_id=packet.packet_id,
        sha256=packet.sha256,
    )
    return Response(
        content=packet.data,
        media_type="application/pdf",
        headers={
            "Content-Disposition": (
                f'attachment; filename="evidence-{session_id}-{packet.packet_id}.pdf"'
            )
        },
    )


@router.get("/raw/{sha256}")
def raw_download(
    request: Request, sha256: str, *, user: Annotated[User, Depends(current_user)]
) -> Response:
    state = app_state(request)
    if not SHA256_RE.match(sha256):
        return not_found(request, "Not a SHA-256.")
    with state.engine.connect() as connection:
        found = raw_file(connection, sha256)
    if found is None:
        return not_found(request, "No raw file with this SHA-256 was ever offered for import.")
    try:
        data = raw_store_of(state).get(sha256)
    except RawStoreError as exc:
        return render(
            request,
            "error.html",
            {"heading": "Raw file unavailable", "message": str(exc)},
            status_code=410,
        )
    record_view(
        request,
        user,
        audit.EXPORT_RAW,
        target=sha256,
        session_ids=[found.session_id] if found.session_id else [],
    )
    suffix = {"psl-binary": ".psl", "psl-csv": ".csv"}.get(found.source_format or "", ".bin")
    return Response(
        content=data,
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{sha256[:16]}{suffix}"'},
    )


@router.get("/sessions/{session_id}/replay")
def replay_page(
    request: Request, session_id: str, *, user: Annotated[User, Depends(require("auditor"))]
) -> Response:
    state = app_state(request)
    record_ = None
    if len(session_id) <= MAX_SESSION_ID_LEN:
        with state.engine.connect() as connection:
            record_ = session_record(connection, session_id)
            raws = [] if record_ is None else raw_files_of(connection, record_.pk)
    if record_ is None:
        return not_found(request, "No stored session has this ID.")
    runs = audit_entries(request, actions=REPLAY_ACTIONS)
    record_view(
        request,
        user,
        audit.VIEW_REPLAY,
        target=session_id,
        session_ids=[session_id],
        pump_serials=[record_.pump_serial],
        entry_ids=[run["id"] for run in runs],
    )
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
        {"nav": "replay", "result": result, "runs": runs},
    )
