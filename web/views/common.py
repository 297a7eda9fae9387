"""What every page module shares: the local-redirect check, redirects, not-found pages.

`safe_next` keeps the page to return to after login on this site; `MESSAGES`
are the notes a page shows after a form succeeded (its `done` query parameter).
"""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import RedirectResponse, Response

from web.context import render

MESSAGES = {
    "added": "User added.",
    "changed": "User changed; their open sessions have ended.",
    "requeued": "File moved back to the inbox; it will be imported on the next poll.",
    "requeued_same": "File moved back to the inbox. Warning: these are the same bytes this "
    "parser version refused before, so the same outcome will follow.",
    "dismissed": "File dismissed from the quarantine; its bytes stay in the raw store.",
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
