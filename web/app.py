"""The web app factory: `create_app(config)` on a `web.context.WebConfig` (docs/web.md).

FastAPI with Jinja2 templates (autoescaped), one small hand-written stylesheet and
one tiny script, no CDN. What every response gets:

- security headers: a strict Content-Security-Policy (only this site's styles,
  images and script; no frames, no foreign form targets), `nosniff`, `no-store` caching of
  everything but the static files; referrers only to this site (list URLs may
  carry a patient ID filter); HSTS whenever cookies are Secure;
- the refreshed session cookie when the idle timeout slides (`web.auth`);
- an access log line (logger `pumptrail.web.access`, event `http_request`,
  key=value fields as `ingest.logging_setup` writes them): the method, the
  *route template* (`/sessions/{session_id}`, never the concrete path or the
  query string, which may hold a patient ID or a pump serial), the status, the
  milliseconds taken and the user name. `pumptrail serve` switches uvicorn's
  own access log off.

A POST whose `Origin` names another site is refused before any route runs
(besides each form's CSRF token), unless it is an API request with a bearer
token (`web.context`). Not logged in: a page request is redirected to
`/login?next=...`, an API request (and `/openapi.json`) gets 401 with a JSON body
and the challenges `Bearer` and `Cookie`; a bearer token that is not valid gets
401 with `Bearer ... error="invalid_token"` (RFC 6750 §3).

The import pipeline writes the per-profile code index (table `evidence_codes`)
with the evidence. While the app runs, a `db.code_index.CodeIndexer` thread
fills in rows written by other means (a bulk load): at start, then every
`sync_codes_seconds` (two index-only counts; work only when they differ).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import jinja2
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy import Engine
from starlette.exceptions import HTTPException as StarletteHTTPException

from db.checkpoints import anchor_engine, open_identity
from db.code_index import CodeIndexer
from db.migrate import open_database
from evidence import Rules, load_rules
from evidence.devices import DeviceMakers, load_device_makers
from evidence.edits import Edits, load_edits
from ingest.logging_setup import log_event
from web import api, views
from web.auth import SESSION_COOKIE, SessionCodec, cookie_flags, load_secret
from web.context import (
    AppState,
    CsrfRefused,
    Forbidden,
    LoginRequired,
    TokenRefused,
    WebConfig,
    app_state,
    bearer_token,
    current_user,
    is_api_request,
    is_secure,
    render,
)

log = logging.getLogger(__name__)
access_log = logging.getLogger("pumptrail.web.access")

WEB_DIR = Path(__file__).resolve().parent
TEMPLATES_DIR = WEB_DIR / "templates"
STATIC_DIR = WEB_DIR / "static"

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; script-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
# Sent on every answer when cookies are Secure (configured, or the request came
# over https): browsers then refuse plain http to this site for a year.
HSTS = "max-age=31536000"
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), interest-cohort=()",
}


def _software_version() -> str:
    try:
        return metadata.version("pumptrail")
    except metadata.PackageNotFoundError:
        return "unknown"


def create_app(
    config: WebConfig,
    *,
    rules: Rules | None = None,
    secret: str | None = None,
    engine: Engine | None = None,
    edits: Edits | None = None,
    device_makers: DeviceMakers | None = None,
) -> FastAPI:
    """The web app of `config` (`WebConfig.for_database` derives one from a database URL).

    `rules` default to `evidence.load_rules()`; `secret` to the content of
    `<data_dir>/web-secret`, created 0600 on first run; `engine` to one opened on
    `config.db_url` (and disposed of when the app stops). A config whose
    `version` is "unknown" gets the installed package's version.
    """
    if config.version == "unknown":
        config = replace(config, version=_software_version())
    identity = open_identity(config.anchor_config())
    own_engine = engine is None
    engine = engine or open_database(config.db_url)
    anchor_engine(engine, config.anchor_config(), identity)
    rules = rules or load_rules()
    codec = SessionCodec(
        secret or load_secret(config.data_dir),
        idle_timeout_s=config.idle_minutes * 60,
        max_age_s=config.max_hours * 3600,
    )
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    templates = Jinja2Templates(env=environment)
    indexer = CodeIndexer(engine, config.sync_codes_seconds, rules.default_profile)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        indexer.start()
        try:
            yield
        finally:
            indexer.stop()
            if own_engine:
                engine.dispose()

    app = FastAPI(
        title="pumptrail",
        version=config.version,
        summary="Evidence from implanted drug-pump programmer sessions",
        description=(
            "JSON API of the pumptrail web view. Other systems send an API token "
            "(`pumptrail token create USER`) as `Authorization: Bearer <token>`; it acts "
            "with its account's role. Or log in with POST /login (form fields "
            "`username`, `password` and the `csrf_token` of GET /login), then send the "
            "`pt_session` cookie. Evidence documents follow docs/session-json.md."
        ),
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.pumptrail = AppState(
        config=config,
        engine=engine,
        rules=rules,
        codec=codec,
        templates=templates,
        identity=identity,
        edits=edits if edits is not None else load_edits(),
        device_makers=device_makers if device_makers is not None else load_device_makers(),
    )
    app.state.code_indexer = indexer
    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")
    app.include_router(views.router)
    app.include_router(api.router)

    profile_names = [p.name for p in rules.profiles]

    def openapi() -> dict[str, Any]:
        """FastAPI's document, with the configured payer profiles as the `profile` enum."""
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                description=app.description,
                routes=app.routes,
            )
            for path in document.get("paths", {}).values():
                for operation in path.values():
                    for parameter in operation.get("parameters", ()):
                        if parameter.get("name") == "profile":
                            parameter["schema"] = {"enum": profile_names, "type": "string"}
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.get("/openapi.json", include_in_schema=False)
    def openapi_document(request: Request) -> JSONResponse:
        current_user(request)
        return JSONResponse(app.openapi())

    _install_handlers(app)
    _install_middleware(app)
    return app


def _field_name(loc: Sequence[object]) -> str:
    """`("body", "drugs", 0, "units")` as `drugs[0].units`; the request part is dropped."""
    name = ""
    for part in list(loc)[1:] if len(loc) > 1 else list(loc):
        if isinstance(part, int):
            name += f"[{part}]"
        else:
            name += f".{part}" if name else str(part)
    return name


def _wants_json(request: Request) -> bool:
    return is_api_request(request)


def _install_handlers(app: FastAPI) -> None:
    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, exc: LoginRequired) -> Response:
        if isinstance(exc, TokenRefused):
            return JSONResponse(
                {"detail": "API token not valid (unknown, revoked, or its account is disabled)"},
                status_code=401,
                headers={"WWW-Authenticate": BEARER_REFUSED},
            )
        if _wants_json(request):
            response = JSONResponse({"detail": "not logged in"}, status_code=401)
            for challenge in LOGIN_CHALLENGES:
                response.headers.append("WWW-Authenticate", challenge)
            return response
        target = request.url.path
        if request.method == "GET" and request.url.query:
            target += "?" + request.url.query
        return RedirectResponse("/login?next=" + quote(target, safe=""), status_code=303)

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, exc: Forbidden) -> Response:
        if _wants_json(request):
            return JSONResponse({"detail": exc.message}, status_code=403)
        return render(
            request,
            "error.html",
            {"heading": "Not allowed", "message": exc.message},
            status_code=403,
        )

    @app.exception_handler(CsrfRefused)
    async def csrf_refused(request: Request, _exc: CsrfRefused) -> Response:
        message = (
            "The form was refused: its security token is missing or out of date. "
            "Go back, reload the page and try again."
        )
        return render(
            request,
            "error.html",
            {"heading": "Form refused", "message": message},
            status_code=403,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if _wants_json(request) or exc.status_code not in (404, 405):
            return JSONResponse(
                {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
            )
        heading = "Not found" if exc.status_code == 404 else "Not allowed here"
        return render(
            request,
            "error.html",
            {"heading": heading, "message": "There is no such page."},
            status_code=exc.status_code,
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        problems = [
            {
                "loc": list(e.get("loc", ())),
                "msg": str(e.get("msg", "")),
                "type": e.get("type"),
                # The same naming as a refused sign-off (`drugs[0].units`).
                "field": _field_name(e.get("loc", ())),
                "message": str(e.get("msg", "")),
            }
            for e in exc.errors()
        ]
        if _wants_json(request):
            return JSONResponse({"detail": problems}, status_code=422)
        return render(
            request,
            "error.html",
            {"heading": "Request refused", "message": "Some fields were not valid."},
            status_code=422,
        )


# RFC 6750 §3: the challenge of a refused bearer token, and those of a request
# that brought no credentials at all.
BEARER_REFUSED = 'Bearer realm="pumptrail", error="invalid_token"'
LOGIN_CHALLENGES = ('Bearer realm="pumptrail"', 'Cookie realm="pumptrail", form="/login"')


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        # No Origin, or an opaque one (privacy settings): the CSRF token decides.
        return True
    host = request.headers.get("host", "")
    return urlsplit(origin).netloc.lower() == host.lower()


def _install_middleware(app: FastAPI) -> None:
    @app.middleware("http")
    async def frame(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        # A bearer request is checked by its token; browsers never add one unasked.
        if request.method == "POST" and bearer_token(request) is None and not _same_origin(request):
            response: Response = JSONResponse(
                {"detail": "cross-site form refused"}, status_code=403
            )
        else:
            response = await call_next(request)
        refreshed = getattr(request.state, "set_cookie", None)
        if refreshed:
            state = app_state(request)
            response.set_cookie(
                SESSION_COOKIE,
                refreshed,
                **cookie_flags(secure=is_secure(request), max_age=state.config.max_hours * 3600),
            )
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if is_secure(request):
            response.headers.setdefault("Strict-Transport-Security", HSTS)
        if request.url.path.startswith("/static/"):
            response.headers.setdefault("Cache-Control", "private, max-age=3600")
        else:
            response.headers["Cache-Control"] = "no-store"
        route = request.scope.get("route")
        template = getattr(route, "path", None) or "(no route)"
        user = getattr(request.state, "user", None)
        log_event(
            access_log,
            "http_request",
            method=request.method,
            route=template,
            status=response.status_code,
            ms=round((time.perf_counter() - started) * 1000, 1),
            user=user.username if user else "-",
        )
        return response
