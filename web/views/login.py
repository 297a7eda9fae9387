"""Login, logout and the home page (docs/web.md "Accounts").

`/login` is the one page without a login. A login form carries its own CSRF
token (a short-lived cookie, `web.auth`); a login, a failed login (with its
reason, never the password) and a logout are each recorded in the audit log;
repeated failures for one user name are throttled.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response

from db import audit
from db.engine import write_transaction
from web.auth import LOGIN_COOKIE, cookie_flags
from web.context import (
    app_state,
    check_csrf,
    clear_session_cookie,
    current_user,
    is_secure,
    optional_user,
    record,
    render,
    set_session_cookie,
)
from web.users import User, authenticate, count_users, end_sessions
from web.views.common import redirect, safe_next

router = APIRouter(include_in_schema=False)


# Login and logout


@router.get("/")
def home(request: Request, *, user: Annotated[User, Depends(current_user)]) -> Response:
    return redirect("/sessions")


def _login_page(
    request: Request,
    *,
    next_url: str,
    username: str = "",
    error: str = "",
    status_code: int = 200,
) -> Response:
    state = app_state(request)
    cookie, token = state.codec.issue_login_form()
    with state.engine.connect() as connection:
        no_accounts = count_users(connection) == 0
    if no_accounts and not error:
        error = "No account exists yet: create one with `pumptrail user add NAME --role admin`."
    response = render(
        request,
        "login.html",
        {"login_csrf": token, "next_url": next_url, "username": username, "error": error},
        status_code=status_code,
    )
    response.set_cookie(
        LOGIN_COOKIE, cookie, **cookie_flags(secure=is_secure(request), max_age=3600)
    )
    return response


@router.get("/login")
def login_form(request: Request, next: str | None = None) -> Response:
    if optional_user(request) is not None:
        return redirect(safe_next(next))
    return _login_page(request, next_url=safe_next(next))


@router.post("/login")
def login(
    request: Request,
    username: Annotated[str, Form(max_length=256)] = "",
    password: Annotated[str, Form(max_length=4096)] = "",
    csrf_token: Annotated[str, Form(max_length=256)] = "",
    next: Annotated[str, Form(max_length=2048)] = "/sessions",
) -> Response:
    check_csrf(request, csrf_token)
    state = app_state(request)
    username = username.strip()
    target = safe_next(next)
    if state.throttle.blocked(username):
        record(
            request,
            actor=username[:120] or "(empty)",
            action=audit.LOGIN_FAILED,
            detail={"reason": "throttled"},
        )
        return _login_page(
            request,
            next_url=target,
            username=username,
            error="Too many failed attempts for this user name: wait 15 minutes.",
            status_code=429,
        )
    with write_transaction(state.engine) as connection:
        user = authenticate(connection, username, password)
        if user is None:
            audit.append(
                connection,
                actor=username[:120] or "(empty)",
                action=audit.LOGIN_FAILED,
                detail={"reason": "bad_credentials"},
            )
        else:
            audit.append(connection, actor=user.username, action=audit.LOGIN, target=user.username)
    if user is None:
        state.throttle.failed(username)
        return _login_page(
            request,
            next_url=target,
            username=username,
            error="Unknown user name or wrong password (or the account is disabled).",
            status_code=401,
        )
    state.throttle.succeeded(username)
    response = redirect(target)
    set_session_cookie(request, response, state.codec.issue(user.id, user.session_version))
    response.delete_cookie(
        LOGIN_COOKIE, path="/", secure=is_secure(request), httponly=True, samesite="strict"
    )
    return response


@router.post("/logout")
def logout(
    request: Request,
    *,
    user: Annotated[User, Depends(current_user)],
    csrf_token: Annotated[str, Form(max_length=256)] = "",
) -> Response:
    check_csrf(request, csrf_token)
    with write_transaction(app_state(request).engine) as connection:
        end_sessions(connection, user.id)
        audit.append(connection, actor=user.username, action=audit.LOGOUT, target=user.username)
    response = redirect("/login")
    clear_session_cookie(request, response)
    request.state.set_cookie = None
    return response
