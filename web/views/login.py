"""Login, logout and the home page (docs/web.md "Accounts").

`/login` is the one page without a login. A login form carries its own CSRF
token (a short-lived cookie, `web.auth`), the only token a login accepts: a
session cookie left over from a session ended elsewhere never makes a login
fail. Failed logins slow down further attempts from the same address, and for
the same account from addresses that failed too (`web.throttle`); the password
is verified outside any write transaction. A login, a failed login (with its
reason: `bad_credentials`, `disabled` or `throttled`, and the client address,
never the password) and a logout are each recorded in the audit log. Logout
ends this browser's session only.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response

from db import audit
from db.engine import write_transaction
from web.auth import LOGIN_COOKIE, SESSION_COOKIE, cookie_flags
from web.context import (
    app_state,
    browser_session,
    check_csrf,
    check_login_csrf,
    clear_session_cookie,
    client_address,
    current_user,
    is_secure,
    optional_user,
    record,
    render,
    set_session_cookie,
)
from web.users import (
    User,
    check_login,
    count_users,
    end_browser_session,
    login_candidate,
    open_browser_session,
    record_login,
    session_cutoff,
)
from web.views.common import forget_list, redirect, safe_next

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


def _delay_text(seconds: float) -> str:
    whole = max(1, math.ceil(seconds))
    return f"{whole} seconds" if whole < 120 else f"{math.ceil(whole / 60)} minutes"


@router.post("/login")
def login(
    request: Request,
    username: Annotated[str, Form(max_length=256)] = "",
    password: Annotated[str, Form(max_length=4096)] = "",
    csrf_token: Annotated[str, Form(max_length=256)] = "",
    next: Annotated[str, Form(max_length=2048)] = "/sessions",
) -> Response:
    check_login_csrf(request, csrf_token)
    state = app_state(request)
    username = username.strip()
    actor = username[:120] or "(empty)"
    address = client_address(request)
    target = safe_next(next)
    with state.engine.connect() as connection:
        wait_s = state.throttle.wait_s(connection, address, username)
        candidate = None if wait_s > 0 else login_candidate(connection, username)
    if wait_s > 0:
        record(
            request,
            actor=actor,
            action=audit.LOGIN_FAILED,
            detail={"reason": "throttled", "client": address, "wait_s": math.ceil(wait_s)},
        )
        response = _login_page(
            request,
            next_url=target,
            username=username,
            error=f"Too many failed attempts: wait {_delay_text(wait_s)} and try again.",
            status_code=429,
        )
        response.headers["Retry-After"] = str(math.ceil(wait_s))
        return response
    # The password is verified with no database connection held (no write waits on it).
    check = check_login(candidate, password)
    with write_transaction(state.engine) as connection:
        user = record_login(connection, check, password)
        if user is None:
            reason = "disabled" if check.outcome == "disabled" else "bad_credentials"
            state.throttle.failed(connection, address, username)
            audit.append(
                connection,
                actor=actor,
                action=audit.LOGIN_FAILED,
                detail={"reason": reason, "client": address},
            )
            token = None
        else:
            state.throttle.succeeded(connection, address, username)
            replaced = browser_session(request)
            if replaced is not None:  # a second login in this browser replaces the first
                end_browser_session(connection, replaced.token)
            token = open_browser_session(
                connection,
                user.id,
                expired_before=session_cutoff(timedelta(hours=state.config.max_hours)),
            )
            audit.append(
                connection,
                actor=user.username,
                action=audit.LOGIN,
                target=user.username,
                detail={"client": address},
            )
    if user is None or token is None:
        response = _login_page(
            request,
            next_url=target,
            username=username,
            error="Unknown user name or wrong password (or the account is disabled).",
            status_code=401,
        )
        if request.cookies.get(SESSION_COOKIE):
            clear_session_cookie(request, response)
        return response
    response = redirect(target)
    set_session_cookie(
        request, response, state.codec.issue(user.id, user.session_version, token=token)
    )
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
    """End this browser's session; the account's sessions elsewhere stay open."""
    check_csrf(request, csrf_token)
    session = browser_session(request)
    with write_transaction(app_state(request).engine) as connection:
        if session is not None:
            end_browser_session(connection, session.token)
        audit.append(
            connection,
            actor=user.username,
            action=audit.LOGOUT,
            target=user.username,
            detail={"client": client_address(request)},
        )
    response = redirect("/login")
    clear_session_cookie(request, response)
    request.state.set_cookie = None
    forget_list(request, response)
    return response
