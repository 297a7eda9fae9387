"""A pump's timeline page: its sessions in chain order with drugs, reservoir and charts."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from db import audit
from web import present
from web.charts import timeline_charts
from web.context import app_state, current_user, record_view, render
from web.queries import pump_timeline
from web.users import User
from web.views.common import not_found

router = APIRouter(include_in_schema=False)


# Pump timeline


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
        return not_found(request, "No pump with this serial has a stored session.")
    pump, entries = found
    record_view(
        request,
        user,
        audit.VIEW_TIMELINE,
        target=serial,
        pump_serials=[serial],
        session_ids=[entry.session_id for entry in entries],
    )
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
