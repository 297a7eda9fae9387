"""The users page (admins): add accounts, change a role or password, disable, enable.

Every change ends the account's sessions (`web.users`) and is recorded in the
audit log in the same write transaction; the last enabled admin cannot lose
the role, and nobody can disable their own account.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response

from db import audit
from db.engine import write_transaction
from web.context import app_state, check_csrf, clear_session_cookie, render, require
from web.users import (
    ROLES,
    AccountError,
    User,
    add_user,
    find_user,
    list_users,
    set_disabled,
    set_password,
    set_role,
)
from web.views.common import MESSAGES, redirect

router = APIRouter(include_in_schema=False)


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
    return redirect("/admin/users?done=added")


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
        response = redirect("/login")
        clear_session_cookie(request, response)
        request.state.set_cookie = None
        return response
    return redirect("/admin/users?done=changed")
