"""The Charges page: the charge lines of every signed-off visit, with their status.

Each visit's current decision (the newest signed-off version) yields its lines
(`evidence.charges`, docs/coding-rules.md §9.6). Their status is that of the
version's DFT^P03 message in the billing outbox (`db.outbox`, docs/interfaces.md):
`ready` (queued, not yet sent), `sent` (sent, billing has not answered yet),
`acknowledged`, or `rejected` with the text of billing's ACK.
`/charges.csv?since=DATE` downloads the same lines as CSV (the layout of
`pumptrail charges export`, docs/coding-rules.md §9.6) for a practice-management
import. Coders, auditors and admins see the page; each view and each download is
audited with the session IDs it shows.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from db import audit, outbox
from db.decisions import DecisionVersion, current_decisions
from evidence.charges import ChargeLine, charge_lines, charges_csv
from evidence.decision import decision_from_json
from web.context import app_state, current_user, record_view, render
from web.users import User
from web.views.common import not_found

router = APIRouter(include_in_schema=False)

DEFAULT_DAYS = 31


def _since(since: str) -> tuple[date, str]:
    """The first date of service shown, and an error when `since` is not a date."""
    default = date.today() - timedelta(days=DEFAULT_DAYS)
    if not since:
        return default, ""
    try:
        return date.fromisoformat(since), ""
    except ValueError:
        return default, f"not a date (YYYY-MM-DD): {since[:20]}"


def _visits(
    request: Request, start: date
) -> list[tuple[DecisionVersion, str | None, tuple[ChargeLine, ...], Any]]:
    """Each signed-off visit since `start`: its current version, patient ID, charge lines
    and the outbox status of that version's message (None: no message)."""
    with app_state(request).engine.connect() as connection:
        decisions = current_decisions(connection, since=start)
        sent = outbox.charges_status(
            connection, [(version.session_id, version.version) for version, _ in decisions]
        )
    return [
        (
            version,
            patient_id,
            charge_lines(decision_from_json(version.session_id, patient_id, version.decision)),
            sent.get((version.session_id, version.version)),
        )
        for version, patient_id in decisions
    ]


@router.get("/charges")
def charges_page(
    request: Request,
    *,
    user: Annotated[User, Depends(current_user)],
    since: str = "",
) -> Response:
    start, error = _since(since)
    visits = _visits(request, start)
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


@router.get("/charges.csv")
def charges_csv_download(
    request: Request,
    *,
    user: Annotated[User, Depends(current_user)],
    since: str = "",
) -> Response:
    start, error = _since(since)
    if error:
        return not_found(request, error)
    visits = _visits(request, start)
    record_view(
        request,
        user,
        audit.EXPORT_CHARGES,
        target="charges",
        filters={"since": start.isoformat(), "format": "csv"},
        session_ids=[version.session_id for version, _, _, _ in visits],
    )
    text = charges_csv([line for _, _, lines, _ in visits for line in lines])
    return Response(
        content=text.encode("utf-8"),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="charges-since-{start.isoformat()}.csv"'
        },
    )
