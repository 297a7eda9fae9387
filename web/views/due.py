"""The refills-due page: pumps whose refill or low-reservoir alarm date is near.

The rule is the service's daily report (`db.due.due_report` over the rule in `evidence.due`), over the
configured `due_within_days`.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from db import audit
from db.due import due_report
from web.context import app_state, current_user, record_view, render
from web.users import User

router = APIRouter(include_in_schema=False)


@router.get("/due")
def due_page(request: Request, *, user: Annotated[User, Depends(current_user)]) -> Response:
    state = app_state(request)
    today = date.today()
    rows = due_report(
        state.engine, today=today, within_days=state.config.due_within_days, rules=state.rules
    )
    record_view(
        request,
        user,
        audit.VIEW_DUE,
        target="due",
        filters={"within_days": state.config.due_within_days, "today": today.isoformat()},
        pump_serials=[row.pump_serial for row in rows],
        session_ids=[row.session_id for row in rows],
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
