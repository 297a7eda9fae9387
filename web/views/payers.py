"""The payers page: payers and their profiles, patients' coverage, mapped providers.

docs/coding-rules.md §9.1: a payer codes under one profile; a patient's coverage on
the date of service picks the payer, so the evidence, the list and the API show
the applicable code at once after a change here. Every logged-in account sees the
page; admins and coders add payers, add coverage and end it (auditors only read).
A patient has at most one payer on a date: an overlapping period, or one that
ends before it starts, is refused with the reason on the page.

The page shows patient IDs, so a view is recorded in the audit log
(`view_payers`, with the coverage rows shown); every change is recorded in the
same write transaction (`payer_add`, `coverage_add`, `coverage_end`), a coverage
entry named by its row number, never by the patient ID.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response

from db import audit
from db.engine import write_transaction
from db.payers import (
    StoredCoverage,
    add_payer,
    assign_coverage,
    end_coverage,
    list_coverage,
    list_payers,
    list_providers,
)
from evidence.payers import CoverageError
from web.context import (
    Forbidden,
    app_state,
    check_csrf,
    client_address,
    current_user,
    record_view,
    render,
)
from web.users import User
from web.views.common import MESSAGES, redirect

router = APIRouter(include_in_schema=False)

# The roles that may change payers and coverage (auditors read only).
EDITORS = ("coder", "admin")
# Coverage rows the page shows, newest start first.
SHOWN = 500


def _editor(user: User) -> None:
    if user.role not in EDITORS:
        raise Forbidden(
            f"payers and coverage are changed by coders and admins; you are a {user.role}"
        )


def _optional_day(text: str, label: str) -> date | None:
    text = text.strip()
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise CoverageError(f"{label}: not a date (YYYY-MM-DD)") from None


def _day(text: str, label: str) -> date:
    found = _optional_day(text, label)
    if found is None:
        raise CoverageError(f"{label}: a date is needed (YYYY-MM-DD)")
    return found


def _coverage_detail(request: Request, period: StoredCoverage) -> dict[str, object]:
    return {
        "payer": period.payer,
        "from": period.starts_on.isoformat(),
        "to": None if period.ends_on is None else period.ends_on.isoformat(),
        "client": client_address(request),
    }


def _payers_page(
    request: Request, user: User, *, message: str = "", error: str = "", status_code: int = 200
) -> Response:
    state = app_state(request)
    with state.engine.connect() as connection:
        payers = list_payers(connection)
        periods = list_coverage(connection, limit=SHOWN)
        providers = list_providers(connection)
    record_view(
        request,
        user,
        audit.VIEW_PAYERS,
        target="payers",
        coverage_ids=[p.pk for p in periods],
    )
    return render(
        request,
        "payers.html",
        {
            "nav": "payers",
            "payers": payers,
            "periods": periods,
            "providers": providers,
            "profiles": state.rules.profiles,
            "labels": {p.name: p.title for p in state.rules.profiles},
            "can_edit": user.role in EDITORS,
            "message": message,
            "error": error,
            "today": date.today().isoformat(),
        },
        status_code=status_code,
    )


@router.get("/payers")
def payers_page(request: Request, *, user: Annotated[User, Depends(current_user)]) -> Response:
    return _payers_page(
        request, user, message=MESSAGES.get(str(request.query_params.get("done", "")), "")
    )


@router.post("/payers")
def payers_add(
    request: Request,
    *,
    user: Annotated[User, Depends(current_user)],
    name: Annotated[str, Form(max_length=256)] = "",
    profile: Annotated[str, Form(max_length=64)] = "",
    payer_id: Annotated[str, Form(max_length=64)] = "",
    csrf_token: Annotated[str, Form(max_length=256)] = "",
) -> Response:
    check_csrf(request, csrf_token)
    _editor(user)
    state = app_state(request)
    try:
        with write_transaction(state.engine) as connection:
            payer = add_payer(
                connection,
                name,
                profile,
                [p.name for p in state.rules.profiles],
                payer_id=payer_id,
            )
            audit.append(
                connection,
                actor=user.username,
                action=audit.PAYER_ADD,
                target=f"payer:{payer.pk}",
                detail={"payer": payer.name, "profile": payer.profile},
            )
    except CoverageError as exc:
        return _payers_page(request, user, error=str(exc), status_code=400)
    return redirect("/payers?done=payer_added")


@router.post("/payers/coverage")
def coverage_add(
    request: Request,
    *,
    user: Annotated[User, Depends(current_user)],
    patient_id: Annotated[str, Form(max_length=128)] = "",
    payer: Annotated[str, Form(max_length=256)] = "",
    starts_on: Annotated[str, Form(max_length=32)] = "",
    ends_on: Annotated[str, Form(max_length=32)] = "",
    csrf_token: Annotated[str, Form(max_length=256)] = "",
) -> Response:
    check_csrf(request, csrf_token)
    _editor(user)
    try:
        start = _day(starts_on, "From")
        end = _optional_day(ends_on, "To")
        with write_transaction(app_state(request).engine) as connection:
            period = assign_coverage(connection, patient_id, payer, start, end)
            audit.append(
                connection,
                actor=user.username,
                action=audit.COVERAGE_ADD,
                target=f"coverage:{period.pk}",
                detail=_coverage_detail(request, period),
            )
    except CoverageError as exc:
        return _payers_page(request, user, error=str(exc), status_code=400)
    return redirect("/payers?done=coverage_added")


@router.post("/payers/coverage/{pk}/end")
def coverage_end(
    request: Request,
    pk: str,
    *,
    user: Annotated[User, Depends(current_user)],
    ends_on: Annotated[str, Form(max_length=32)] = "",
    csrf_token: Annotated[str, Form(max_length=256)] = "",
) -> Response:
    check_csrf(request, csrf_token)
    _editor(user)
    try:
        if not pk.isdigit() or len(pk) > 18:
            raise CoverageError(f"no coverage period {pk[:20]!r}")
        end = _day(ends_on, "To")
        with write_transaction(app_state(request).engine) as connection:
            period = end_coverage(connection, int(pk), end)
            audit.append(
                connection,
                actor=user.username,
                action=audit.COVERAGE_END,
                target=f"coverage:{period.pk}",
                detail=_coverage_detail(request, period),
            )
    except CoverageError as exc:
        return _payers_page(request, user, error=str(exc), status_code=400)
    return redirect("/payers?done=coverage_ended")
