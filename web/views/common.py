"""What every page module shares: the local-redirect check, redirects, not-found pages.

`safe_next` keeps the page to return to after login on this site; `MESSAGES`
are the notes a page shows after a form succeeded (its `done` query parameter).
"""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import RedirectResponse, Response
from starlette.datastructures import QueryParams

from web.auth import cookie_flags
from web.context import app_state, is_secure, render

# The list's filters and chosen profile, kept for the browser session (no max age:
# the browser forgets it when it closes; logout clears it), so going list ->
# evidence -> packet -> back keeps them. HttpOnly and SameSite=Strict like every
# cookie the app sets; it may hold a patient filter, which stays in this browser.
LIST_COOKIE = "pt_list"
LIST_COOKIE_MAX = 1024

MESSAGES = {
    "added": "User added.",
    "changed": "User changed; their open sessions have ended.",
    "requeued": "File moved back to the inbox; it will be imported on the next poll.",
    "requeued_same": "File moved back to the inbox. Warning: these are the same bytes this "
    "parser version refused before, so the same outcome will follow.",
    "dismissed": "File dismissed from the quarantine; its bytes stay in the raw store.",
    "payer_added": "Payer added.",
    "coverage_added": "Coverage added.",
    "coverage_ended": "Coverage ended.",
}


def safe_next(value: str | None) -> str:
    """A local path to go to after login (never another site)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/sessions"
    if any(ord(c) < 32 for c in value):
        return "/sessions"
    return value


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def not_found(request: Request, what: str) -> Response:
    return render(
        request,
        "error.html",
        {"heading": "Not found", "message": what},
        status_code=404,
    )


def saved_list(request: Request) -> QueryParams:
    """The list's filters saved for this browser session (empty when none)."""
    return QueryParams(request.cookies.get(LIST_COOKIE, "")[:LIST_COOKIE_MAX])


def remember_list(request: Request, response: Response, pairs: list[tuple[str, str]]) -> None:
    """Save the list's filters (and chosen profile) for the browser session."""
    value = urlencode(pairs)
    if not value or len(value) > LIST_COOKIE_MAX:
        forget_list(request, response)
        return
    response.set_cookie(LIST_COOKIE, value, **cookie_flags(secure=is_secure(request), max_age=None))


def forget_list(request: Request, response: Response) -> None:
    response.delete_cookie(
        LIST_COOKIE, path="/", secure=is_secure(request), httponly=True, samesite="strict"
    )


def chosen_profile(request: Request) -> str:
    """The profile chosen on this page (`?profile=`) or saved with the list; else the default."""
    rules = app_state(request).rules
    names = {p.name for p in rules.profiles}
    for candidate in (request.query_params.get("profile"), saved_list(request).get("profile")):
        if candidate and candidate in names:
            return candidate
    return rules.default_profile


def list_url(request: Request) -> str:
    """The list as this browser session left it."""
    saved = str(saved_list(request))
    return "/sessions" + (f"?{saved}" if saved else "")


def keep_profile(request: Request, response: Response, profile: str) -> None:
    """Save a profile chosen on an evidence page with the list's other filters."""
    if request.query_params.get("profile") != profile:
        return
    pairs = [(k, v) for k, v in saved_list(request).multi_items() if k != "profile"]
    if profile != app_state(request).rules.default_profile:
        pairs.append(("profile", profile))
    remember_list(request, response, pairs)
