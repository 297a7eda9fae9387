"""The Charges page: the charge lines of every signed-off visit, with their status.

Each visit's current decision (the newest signed-off version) yields its lines
(`evidence.charges`, docs/coding-rules.md §9.6). Their status is that of the
version's DFT^P03 message in the billing outbox (`db.outbox`, docs/interfaces.md):
`ready` (queued, not yet sent), `sent` (sent, billing has not answered yet),
`acknowledged`, or `rejected` with the text of billing's ACK. `pumptrail charges export --since DATE` writes the same lines as CSV.
Coders, auditors and admins see the page; each view is audited with the session
IDs it shows.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from db import audit, outbox
from db.decisions import current_decisions
from evidence.charges import charge_lines
from evidence.decision import decision_from_json
from web.context import app_state, current_user, record_view, render
from web.users import User

router = APIRouter(include_in_schema=False)

DEFAULT_DAYS = 31


@router.get("/charges")
def charges_page(
    request: Request,
    *,
    user: Annotated[User, Depends(current_user)],
    since: str = "",
) -> Response:
    state = app_state(request)
    error = ""
    try:
        start = date.fromisoformat(since) if since else date.today() - timedelta(days=DEFAULT_DAYS)
    except ValueError:
        error = f"not a date (YYYY-MM-DD): {since[:20]}"
        start = date.today() - timedelta(days=DEFAULT_DAYS)
    with state.engine.connect() as connection:
        decisions = current_decisions(connection, since=start)
        sent = outbox.charges_status(
            connection, [(version.session_id, version.version) for version, _ in decisions]
        )
    visits = [
        (
            version,
            patient_id,
            charge_lines(decision_from_json(version.session_id, patient_id, version.decision)),
            sent.get((version.session_id, version.version)),
        )
        for version, patient_id in decisions
    ]
    record_view(
        request,
        user,
        audit.VIEW_CHARGES,
        target="charges",
        filters={"since": start.isoformat()},
        session_ids=[version.session_id for version, _, _, _ in visits],
    )
    return render(
        request,
        "charges.html",
        {"nav": "charges", "visits": visits, "since": start.isoformat(), "error": error},
    )
