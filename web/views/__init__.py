"""The pages, one `APIRouter` module per page group; `router` includes them all.

- `web.views.login`: login, logout, home;
- `web.views.sessions`: the session list and its bulk sign-off;
- `web.views.evidence`: one session's evidence page with its sign-off form,
  packet, packet PDF, raw downloads and replay;
- `web.views.pumps`: a pump's timeline;
- `web.views.due`: refills due;
- `web.views.imports`: import status, inbox, quarantine, re-queue;
- `web.views.audit`: the audit log and replay runs;
- `web.views.payers`: payers, coverage and providers (coders and admins edit);
- `web.views.charges`: the charge lines of signed-off visits;
- `web.views.admin`: users;
- `web.views.common`: what they share (redirects, not-found, `safe_next`).

Server-rendered (Jinja2, autoescaped), no JavaScript but the packet's Print
button. Every page but `/login` needs a login (`current_user` / `require`);
every POST checks the form's CSRF token first. Every page showing patient data
records one audit entry before the answer is sent (`web.context.record_view`:
actor, client address, route, filters, the IDs shown; docs/web.md "What is
recorded"), as do logins, failed logins, logouts, user changes, re-queues and payer and coverage
changes; a sign-off records its `sign_off` entry (`web.signoff.sign_off`).
Patient identifiers appear in pages and in the list's GET filter, never in
logs or audit entries.
"""

from fastapi import APIRouter

from web.views import (
    admin,
    audit,
    charges,
    due,
    evidence,
    imports,
    login,
    payers,
    pumps,
    sessions,
)
from web.views.common import safe_next
from web.views.sessions import ListForm, parse_list_query

# Every page group's router, in the order the app matches them.
ROUTERS: tuple[APIRouter, ...] = (
    login.router,
    sessions.router,
    evidence.router,
    pumps.router,
    due.router,
    imports.router,
    audit.router,
    payers.router,
    charges.router,
    admin.router,
)

router = APIRouter(include_in_schema=False)
for _page_group in ROUTERS:
    router.include_router(_page_group)

__all__ = ["ROUTERS", "ListForm", "parse_list_query", "router", "safe_next"]
