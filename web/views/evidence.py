"""One session: the evidence page, the printable packet, its PDF, raw downloads, replay.

Each view, packet export, raw-file download and replay page is recorded in the
audit log before the answer is sent (`web.context.record_view`: actor, client
address, route, the session ID shown). The page, the packet and the
PDF show one view model (`web.pages.EvidenceView`). The replay page (auditors)
verifies the session's pump against its kept bytes (`web.replay`).
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from db import audit
from db.models import utc_now
from ingest.rawstore import RawStoreError
from web.context import app_state, current_user, raw_store_of, record_view, render, require
from web.packet_signing import build_signed_packet
from web.pages import EvidenceView, build_evidence_view, generated_stamp
from web.queries import raw_file, raw_files_of, session_record
from web.replay import replay_pump_of
from web.users import User
from web.views.audit import REPLAY_ACTIONS, audit_entries
from web.views.common import chosen_profile, keep_profile, list_url, not_found

router = APIRouter(include_in_schema=False)

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


# One session: evidence, packet, PDF, raw files, replay


def _view(request: Request, session_id: str) -> EvidenceView | None:
    state = app_state(request)
    if len(session_id) > 64:
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


@router.get("/sessions/{session_id}")
def evidence_page(
    request: Request, session_id: str, *, user: Annotated[User, Depends(current_user)]
) -> Response:
    view = _audited_view(request, session_id, user, audit.VIEW_SESSION, None)
    if isinstance(view, Response):
        return view
    response = render(
        request,
        "evidence.html",
        {"nav": "sessions", "v": view, "packet": False, "list_url": list_url(request)},
    )
    keep_profile(request, response, view.chosen_profile)
    return response


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
    if len(session_id) <= 64:
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
