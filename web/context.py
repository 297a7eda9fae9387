"""The app's configuration and state, and per-request helpers: login, roles, CSRF, audit.

`WebConfig` is everything `web.app.create_app` needs (`WebConfig.for_database`
derives one from a database URL); `AppState` is what the app keeps per process.

Every route but `/login` and the static files goes through `current_user` (or
`require`): without a valid session cookie a page request is redirected to the
login page and an API request gets 401 (`LoginRequired`, handled in `web.app`).
Every POST route calls `check_csrf` first.

The API (`/api/...` and `/openapi.json`, `is_api_request`) also takes an API
token of another system in `Authorization: Bearer <token>` (`web.tokens`): the
request then acts for the token's account with its current role, the session
cookie is not looked at, no CSRF token is asked for (a browser never sends a
bearer token on its own), and a token that is not valid is refused with 401
(`TokenRefused`) whatever cookie comes with it, as is an `Authorization`
header of another scheme. Pages take the cookie only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs
from fastapi import Request
from fastapi.templating import Jinja2Templates
from sqlalchemy import Engine
from starlette.responses import Response

from db import audit
from db.checkpoints import AnchorConfig
from db.engine import normalize_url, sqlite_path, write_transaction
from db.signing import SigningIdentity
from evidence import Rules
from evidence.devices import DeviceMakers
from evidence.dft import Hl7Settings
from evidence.edits import Edits
from ingest.rawstore import AUTO, RawStorage, open_raw_store
from parsers.errors import PumptrailError
from web.auth import (
    CSRF_FIELD,
    LOGIN_COOKIE,
    SESSION_COOKIE,
    BrowserSession,
    SessionCodec,
    cookie_flags,
    tokens_match,
)
from web.throttle import LoginThrottle
from web.tokens import token_login
from web.users import User, browser_session_open, get_user

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WebConfig:
    """What the web app needs: the database, its folders, login timeouts, the index repair."""

    db_url: str
    data_dir: Path
    raw_store: Path
    inbox: Path
    quarantine: Path
    due_within_days: int = 14
    # `raw_store_mode` (ingest.rawstore): where the raw exports are read from.
    raw_store_mode: str = AUTO
    # Minutes of inactivity after which a login ends; hours a login lasts at most.
    idle_minutes: int = 30
    max_hours: int = 12
    # True: always Secure cookies, and HSTS on every answer; None: Secure when the
    # request came over https.
    secure_cookies: bool | None = None
    # Seconds between repairs of the per-profile code index (0: only at start).
    sync_codes_seconds: float | None = 60.0
    version: str = "unknown"
    # Operator ID of the default supervising physician of staff-performed visits.
    supervising_physician: str = ""
    # The signing identity and audit checkpoints; None: the defaults under data_dir.
    anchor: AnchorConfig | None = None
    # What the billing interface's DFT^P03 messages are built with (evidence.dft).
    hl7: Hl7Settings = field(default_factory=Hl7Settings)

    def anchor_config(self) -> AnchorConfig:
        return self.anchor if self.anchor is not None else AnchorConfig(self.data_dir)

    @classmethod
    def for_database(
        cls, db_url: str, *, data_dir: Path | str | None = None, **fields: Any
    ) -> WebConfig:
        """The configuration of a web app on `db_url`, every folder under one data folder.

        `data_dir` defaults to the SQLite file's folder (the platform's user data
        folder for a server database); `raw_store`, `inbox` and `quarantine`
        default to `raw`, `inbox` and `quarantine` in it. Other keyword `fields`
        set the remaining fields (`idle_minutes`, `secure_cookies`,
        `sync_codes_seconds`, `due_within_days`, `version`, ...).
        """
        if data_dir is None:
            path = sqlite_path(normalize_url(db_url))
            data_dir = (
                path.parent
                if path is not None
                else Path(platformdirs.user_data_dir("pumptrail", appauthor=False))
            )
        folder = Path(data_dir)
        for name, default in (
            ("raw_store", folder / "raw"),
            ("inbox", folder / "inbox"),
            ("quarantine", folder / "quarantine"),
        ):
            fields[name] = Path(fields.get(name, default))
        return cls(db_url=db_url, data_dir=folder, **fields)


@dataclass
class AppState:
    config: WebConfig
    engine: Engine
    rules: Rules
    codec: SessionCodec
    templates: Jinja2Templates
    # Signs evidence packets (and, through the engine, audit checkpoints).
    identity: SigningIdentity
    # The billing edits a sign-off is checked against (evidence/data/edits.toml + rules_dir).
    edits: Edits
    # Pump models to makers for FHIR Device (evidence/data/devices.toml + rules_dir).
    device_makers: DeviceMakers = ()
    throttle: LoginThrottle = field(default_factory=LoginThrottle)


class LoginRequired(PumptrailError):
    """Raised by `current_user` when a request carries no valid session cookie.

    No cookie, a forged or expired one, a logged-out session or a disabled
    account; `web.app` answers a page with a redirect to /login and the API (and
    /openapi.json) with 401.
    """


class TokenRefused(LoginRequired):
    """Raised by `current_user` when an API request's bearer token is not valid.

    Unknown, malformed or revoked, or a token of a disabled account; `web.app`
    answers 401 with `WWW-Authenticate: Bearer ... error="invalid_token"`.
    """


class Forbidden(PumptrailError):
    """Raised by `require(role)` when the logged-in account's role is below `role`.

    `web.app` answers 403: an error page, or a JSON body under /api/.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class CsrfRefused(PumptrailError):
    """Raised by `check_csrf` when a POST form lacks its CSRF token or carries a wrong one.

    `web.app` answers 403 with the "Form refused" page; nothing of the form is done.
    """


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.pumptrail
    return state


def raw_store_of(state: AppState) -> RawStorage:
    """The raw store the importer of this database writes to (read only here)."""
    return open_raw_store(
        state.engine, state.config.raw_store, state.config.raw_store_mode, durable=False
    )


def is_secure(request: Request) -> bool:
    configured = app_state(request).config.secure_cookies
    return request.url.scheme == "https" if configured is None else configured


def browser_session(request: Request) -> BrowserSession | None:
    cached: BrowserSession | bool | None = getattr(request.state, "browser_session", False)
    if cached is not False and not isinstance(cached, bool):
        return cached
    if cached is None:
        return None
    session = app_state(request).codec.read(request.cookies.get(SESSION_COOKIE))
    request.state.browser_session = session
    return session


def is_api_request(request: Request) -> bool:
    """Whether the request is for the JSON API or its OpenAPI document (bearer tokens count)."""
    path = request.url.path
    return path.startswith("/api/") or path in {"/api", "/openapi.json"}


def bearer_token(request: Request) -> str | None:
    """The credentials of an API request's `Authorization: Bearer` header, or None.

    None on a page and without the header. "" for a Bearer header without
    credentials and for any other scheme: an API request that brings an
    `Authorization` header is decided by it (refused like a wrong token), never
    by a cookie beside it.
    """
    if not is_api_request(request):
        return None
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, credentials = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return ""
    return credentials.strip()


def token_id_of(request: Request) -> int | None:
    """The ID of the API token the request was authorized by, or None (cookie login)."""
    token_id: int | None = getattr(request.state, "token_id", None)
    return token_id


def optional_user(request: Request) -> User | None:
    """The account the request acts for, or None.

    An API request with a bearer token: the token's account, or None when the
    token is not valid (`current_user` then raises `TokenRefused`). Otherwise the
    session cookie's account, or None (no cookie, expired, logged out, disabled).
    """
    cached: User | bool | None = getattr(request.state, "user", False)
    if cached is not False and not isinstance(cached, bool):
        return cached
    if cached is None:
        return None
    state = app_state(request)
    token = bearer_token(request)
    if token is not None:
        login = token_login(state.engine, token) if token else None
        request.state.user = None if login is None else login.user
        if login is None:
            request.state.token_refused = True
            return None
        request.state.token_id = login.token_id
        return login.user
    session = browser_session(request)
    user = None
    if session is not None:
        with state.engine.connect() as connection:
            found = get_user(connection, session.user_id)
            still_open = found is not None and browser_session_open(
                connection, found.id, session.token
            )
        if (
            found is not None
            and still_open
            and not found.disabled
            and found.session_version == session.version
        ):
            user = found
            refreshed = state.codec.refreshed(session)
            if refreshed is not None:
                request.state.set_cookie = refreshed
    request.state.user = user
    return user


def current_user(request: Request) -> User:
    user = optional_user(request)
    if user is None:
        if getattr(request.state, "token_refused", False):
            raise TokenRefused
        raise LoginRequired
    return user


def require(role: str) -> Callable[[Request], User]:
    """A dependency: the logged-in account, which must hold at least `role`."""

    def dependency(request: Request) -> User:
        user = current_user(request)
        if not user.can(role):
            raise Forbidden(f"this page is for the {role} role and above; you are a {user.role}")
        return user

    return dependency


def csrf_token(request: Request) -> str:
    session = browser_session(request)
    return "" if session is None else session.csrf


def check_login_csrf(request: Request, given: str | None) -> None:
    """Refuse a login POST whose token is not its login form's.

    The login form's own token always counts, so a session cookie left over from
    a session ended elsewhere never makes a login fail; a browser still logged
    in may also send its session's token.
    """
    expected = app_state(request).codec.read_login_form(request.cookies.get(LOGIN_COOKIE))
    if tokens_match(expected, given):
        return
    # A logged-in browser may log in again (as another account) from any of its forms.
    session = browser_session(request)
    if session is None or not tokens_match(session.csrf, given):
        raise CsrfRefused


def check_csrf(request: Request, given: str | None) -> None:
    """Refuse a POST whose form token is not the session's (or the login form's).

    An API request with a bearer token needs none: the token is checked instead
    (`TokenRefused` when it is not valid).
    """
    if bearer_token(request) is not None:
        current_user(request)
        return
    session = browser_session(request)
    expected = session.csrf if session is not None else None
    if expected is None:
        expected = app_state(request).codec.read_login_form(request.cookies.get(LOGIN_COOKIE))
    if tokens_match(expected, given):
        return
    # A logged-in browser may log in again (as another account) from any of its forms.
    session = browser_session(request)
    if session is None or not tokens_match(session.csrf, given):
        raise CsrfRefused


def set_session_cookie(request: Request, response: Response, value: str) -> None:
    state = app_state(request)
    response.set_cookie(
        SESSION_COOKIE,
        value,
        **cookie_flags(secure=is_secure(request), max_age=state.config.max_hours * 3600),
    )


def clear_session_cookie(request: Request, response: Response) -> None:
    response.delete_cookie(
        SESSION_COOKIE, path="/", secure=is_secure(request), httponly=True, samesite="strict"
    )


def record(
    request: Request,
    *,
    actor: str,
    action: str,
    target: str = "",
    detail: Mapping[str, object] | None = None,
) -> None:
    """Append an audit entry in its own write transaction (before the content is sent)."""
    with write_transaction(app_state(request).engine) as connection:
        audit.append(connection, actor=actor, action=action, target=target[:128], detail=detail)


def client_address(request: Request) -> str:
    """The client's address as the server saw it (the proxy's own, unless it forwards it).

    Behind a TLS proxy, `pumptrail serve --proxy-headers` lets uvicorn take the
    address from `X-Forwarded-For` of a trusted proxy (docs/operations.md).
    """
    return request.client.host if request.client is not None else "unknown"


def route_template(request: Request) -> str:
    """The matched route's path template (`/pumps/{serial}`), never the concrete path."""
    route = request.scope.get("route")
    return str(getattr(route, "path", None) or "(no route)")


def record_view(
    request: Request,
    user: User,
    action: str,
    *,
    target: str = "",
    filters: Mapping[str, object] | None = None,
    **shown: object,
) -> None:
    """Record a view of patient data (docs/web.md "What is recorded"): who, from where, what was shown.

    The actor is the account's user name. The detail holds the route template,
    the client address, the API token's ID (`token_id`, when a bearer token
    authorized the request), the filters with their values (`filters`; never a patient ID: a patient filter is recorded as
    `patient_filter: true`) and the IDs the answer shows (`shown`, e.g.
    `session_ids=[...]`, `pump_serials=[...]`: at most one page of them).
    """
    detail: dict[str, object] = {
        "route": route_template(request),
        "client": client_address(request),
    }
    token_id = token_id_of(request)
    if token_id is not None:
        detail["token_id"] = token_id
    if filters:
        detail["filters"] = dict(filters)
    detail.update(shown)
    record(request, actor=user.username, action=action, target=target, detail=detail)


def render(
    request: Request,
    template: str,
    context: Mapping[str, Any] | None = None,
    *,
    status_code: int = 200,
) -> Response:
    """A page: the template with the common context (user, CSRF token, version, nav)."""
    state = app_state(request)
    user = getattr(request.state, "user", None)
    values: dict[str, Any] = {
        "user": user or None,
        "csrf_field": CSRF_FIELD,
        "csrf_token": csrf_token(request),
        "version": state.config.version,
        "default_profile": state.rules.default_profile,
        "nav": "",
    }
    if context:
        values.update(context)
    return state.templates.TemplateResponse(request, template, values, status_code=status_code)
