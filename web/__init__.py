"""The web room: the coder and auditor view of the evidence (`pumptrail serve`).

`web.app.create_app` builds the FastAPI app: server-rendered pages (Jinja2,
autoescaped; no JavaScript framework, no CDN), the printable and PDF evidence
packet, the JSON API under `/api/` with its OpenAPI document, accounts with
roles, CSRF-protected forms and an audit entry for every view and export. See
docs/web.md. No coding rule lives here: every verdict shown is read from the
evidence documents the `evidence` room derived.
"""
