"""API tokens: the commands, bearer login on every /api route, roles, revocation, audit.

docs/web.md "The JSON API". A token acts for its account with the account's
current role on the API only; a revoked token or a disabled account's token is
refused with 401 and a Bearer challenge; each answer's audit entry names the
token.
"""

from __future__ import annotations

import io
import re
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import pytest
from fastapi import Depends, FastAPI, Form, Request
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select, update

from db import audit
from db.engine import write_transaction
from db.migrate import open_database
from db.models import utc_now
from db.users import api_tokens
from pumptrail.cli import main
from tests.web.conftest import SECRET, login
from tests.web.support import PASSWORD, DemoData, served_routes
from web.app import create_app
from web.context import WebConfig, check_csrf, current_user, require
from web.tokens import (
    MAX_TOKEN_LEN,
    TOKEN_PREFIX,
    TokenError,
    create_token,
    list_tokens,
    revoke_token,
    token_digest,
    token_login,
)
from web.users import User, add_user, set_disabled, set_password, set_role

TOKEN_LINE = re.compile(r"pt_[A-Za-z0-9_-]{43}")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def make_token(engine: Engine, username: str, label: str = "") -> tuple[int, str]:
    with write_transaction(engine) as connection:
        created, token = create_token(connection, username, label)
    return created.id, token


def api_entries(engine: Engine) -> list[audit.AuditEntry]:
    with engine.connect() as connection:
        return audit.show(connection, audit.AuditFilter(action=audit.EXPORT_API, limit=None))


def api_paths(app: FastAPI, session_id: str) -> list[str]:
    """Every GET route under /api, path parameters filled with a stored session's ID."""
    return [
        re.sub(r"\{[^}]+\}", session_id, path)
        for path, route in served_routes(app)
        if path.startswith("/api") and "GET" in (route.methods or ())
    ]


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as client:
        yield client


# The commands


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_token_create_prints_the_token_once_on_the_last_line_and_stores_its_hash(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    where = ["--db", db_url, "--data-dir", str(tmp_path / "data")]
    monkeypatch.setattr(sys, "stdin", io.StringIO(PASSWORD + "\n"))
    assert main(["user", "add", "ci-bot", "--role", "auditor", "--password-stdin", *where]) == 0
    capsys.readouterr()

    status, out, _err = run_cli(
        ["token", "create", "CI-BOT", "--name", "billing export", *where], capsys
    )
    assert status == 0
    lines = out.splitlines()
    token = lines[-1]
    assert TOKEN_LINE.fullmatch(token), out
    assert token not in "\n".join(lines[:-1])
    assert "billing export" in lines[0]

    engine = open_database(db_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(select(api_tokens)).mappings().all()
            (created,) = list_tokens(connection)
            entries = audit.show(
                connection, audit.AuditFilter(action=audit.TOKEN_CREATE, limit=None)
            )
        assert len(rows) == 1
        assert rows[0]["token_sha256"] == token_digest(token)
        assert token not in repr(dict(rows[0]))
        assert (created.username, created.label) == ("ci-bot", "billing export")
        assert [(e.target, e.detail) for e in entries] == [
            ("ci-bot", {"token_id": created.id, "label": "billing export"})
        ]
        assert token_login(engine, token) is not None

        status, out, _err = run_cli(["token", "list", *where], capsys)
        assert status == 0
        assert token not in out
        assert token[len(TOKEN_PREFIX) : len(TOKEN_PREFIX) + 8] not in out
        header, row = out.splitlines()
        assert header.split()[:3] == ["ID", "USER", "LABEL"]
        assert row.split()[:2] == [str(created.id), "ci-bot"]
        assert "billing export" in row
        assert row.rstrip().endswith("-")  # never used, not revoked

        status, out, _err = run_cli(["token", "revoke", str(created.id), *where], capsys)
        assert (status, "revoked" in out) == (0, True)
        assert token_login(engine, token) is None
        status, out, _err = run_cli(["token", "revoke", str(created.id), *where], capsys)
        assert (status, "already revoked" in out) == (0, True)
        with engine.connect() as connection:
            revokes = audit.show(
                connection, audit.AuditFilter(action=audit.TOKEN_REVOKE, limit=None)
            )
        assert [(e.target, e.detail["token_id"]) for e in revokes] == [("ci-bot", created.id)]
        status, out, _err = run_cli(["token", "list", "--user", "ci-bot", *where], capsys)
        assert status == 0
        assert not out.splitlines()[1].rstrip().endswith("-")  # the revocation time
    finally:
        engine.dispose()


def test_token_commands_refuse_what_they_cannot_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    where = ["--data-dir", str(tmp_path)]
    monkeypatch.setattr(sys, "stdin", io.StringIO(PASSWORD + "\n"))
    assert main(["user", "add", "bob", "--role", "coder", "--password-stdin", *where]) == 0
    assert main(["user", "disable", "bob", *where]) == 0
    capsys.readouterr()

    status, out, err = run_cli(["token", "create", "nobody", *where], capsys)
    assert (status, out) == (1, "")
    assert "no user 'nobody'" in err
    status, out, err = run_cli(["token", "create", "bob", *where], capsys)
    assert (status, out) == (1, "")
    assert "disabled" in err
    status, out, err = run_cli(["token", "create", "bob", "--name", "x" * 65, *where], capsys)
    assert status == 1
    assert "label too long" in err
    status, _out, err = run_cli(["token", "revoke", "99", *where], capsys)
    assert status == 1
    assert "no token 99" in err
    status, _out, err = run_cli(["token", "list", "--user", "nobody", *where], capsys)
    assert status == 1
    status, out, _err = run_cli(["token", "list", *where], capsys)
    assert (status, "no API tokens" in out) == (0, True)


# Bearer login on the API


def test_every_api_route_takes_a_bearer_token_with_its_users_role(
    app: FastAPI, client: TestClient, engine: Engine, data: DemoData
) -> None:
    session_id = data.session_ids[0]
    paths = api_paths(app, session_id)
    assert {"/api/sessions", f"/api/sessions/{session_id}"} <= set(paths)
    for username in ("cora", "audrey", "adam"):
        token_id, token = make_token(engine, username, f"{username}'s script")
        for path in paths:
            before = len(api_entries(engine))
            response = client.get(path, headers=bearer(token))
            assert response.status_code == 200, (username, path, response.text)
            assert "set-cookie" not in response.headers  # a token opens no browser session
            entries = api_entries(engine)
            assert len(entries) == before + 1, path
            assert entries[-1].actor == username
            assert entries[-1].detail["token_id"] == token_id


def test_requests_without_a_valid_token_get_401_on_every_api_route(
    app: FastAPI, client: TestClient, engine: Engine, data: DemoData
) -> None:
    paths = [*api_paths(app, data.session_ids[0]), "/openapi.json"]
    _, revoked = make_token(engine, "cora")
    revoked_id = list_tokens_of(engine, "cora")[0]
    with write_transaction(engine) as connection:
        revoke_token(connection, revoked_id)
    _, of_disabled = make_token(engine, "audrey")
    with write_transaction(engine) as connection:
        set_disabled(connection, "audrey", True)
    _, valid = make_token(engine, "adam")
    before = len(api_entries(engine))
    refused = {
        "revoked": bearer(revoked),
        "disabled user": bearer(of_disabled),
        "unknown": bearer(TOKEN_PREFIX + "A" * 43),
        "not ours": bearer("eyJhbGciOiJub25lIn0.e30."),
        "empty": {"Authorization": "Bearer "},
        "too long": bearer(valid + "A" * MAX_TOKEN_LEN),
        "another token's prefix": bearer(valid[:-1]),
    }
    for path in paths:
        anonymous = client.get(path)
        assert anonymous.status_code == 401, path
        assert anonymous.json() == {"detail": "not logged in"}
        challenges = anonymous.headers.get_list("www-authenticate")
        assert any(c.startswith("Bearer ") for c in challenges), challenges
        for why, headers in refused.items():
            response = client.get(path, headers=headers)
            assert response.status_code == 401, (why, path)
            assert response.headers["www-authenticate"].startswith("Bearer ")
            assert 'error="invalid_token"' in response.headers["www-authenticate"]
        # A valid token in another scheme is no bearer token.
        other_scheme = client.get(path, headers={"Authorization": f"Basic {valid}"})
        assert other_scheme.status_code == 401
        assert 'error="invalid_token"' in other_scheme.headers["www-authenticate"]
    assert len(api_entries(engine)) == before  # nothing was shown

    with write_transaction(engine) as connection:
        set_disabled(connection, "audrey", False)
    assert client.get(paths[0], headers=bearer(of_disabled)).status_code == 200


def list_tokens_of(engine: Engine, username: str) -> list[int]:
    with engine.connect() as connection:
        return [t.id for t in list_tokens(connection, username)]


def test_a_bad_token_is_refused_even_beside_a_valid_login_cookie(
    coder: TestClient, data: DemoData
) -> None:
    assert coder.get("/api/sessions").status_code == 200
    for headers in (
        bearer(TOKEN_PREFIX + "B" * 43),
        {"Authorization": "Basic Y29yYTpzeW50aGV0aWMtcGFzcy0xMjM="},
        {"Authorization": "?-"},
    ):
        response = coder.get("/api/sessions", headers=headers)
        assert response.status_code == 401, headers
        assert 'error="invalid_token"' in response.headers["www-authenticate"]
    # Pages take the cookie and pay no heed to an Authorization header.
    page = coder.get("/sessions", headers=bearer(TOKEN_PREFIX + "B" * 43))
    assert page.status_code == 200


def test_a_token_opens_no_page(client: TestClient, engine: Engine, data: DemoData) -> None:
    _, token = make_token(engine, "adam")
    for path in ("/sessions", f"/sessions/{data.session_ids[0]}", "/admin/users", "/audit"):
        response = client.get(path, headers=bearer(token), follow_redirects=False)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/login")


def _add_probe_routes(app: FastAPI) -> None:
    """An auditor-only API route and a writing one, like any later API route would be."""

    def audit_only(user: Annotated[User, Depends(require("auditor"))]) -> dict[str, str]:
        return {"user": user.username, "role": user.role}

    def write(request: Request, csrf_token: Annotated[str | None, Form()] = None) -> dict[str, str]:
        check_csrf(request, csrf_token)
        user = current_user(request)
        return {"user": user.username}

    app.add_api_route("/api/probe/audit-only", audit_only, methods=["GET"])
    app.add_api_route("/api/probe/write", write, methods=["POST", "PUT"])


def test_a_token_has_its_users_current_role(app: FastAPI, engine: Engine) -> None:
    _add_probe_routes(app)
    tokens = {name: make_token(engine, name)[1] for name in ("cora", "audrey", "adam")}
    with TestClient(app) as client:
        refused = client.get("/api/probe/audit-only", headers=bearer(tokens["cora"]))
        assert refused.status_code == 403
        assert "auditor" in refused.json()["detail"]
        for name in ("audrey", "adam"):
            response = client.get("/api/probe/audit-only", headers=bearer(tokens[name]))
            assert response.status_code == 200
            assert response.json()["user"] == name
        with write_transaction(engine) as connection:
            set_role(connection, "cora", "auditor")
        promoted = client.get("/api/probe/audit-only", headers=bearer(tokens["cora"]))
        assert promoted.json() == {"user": "cora", "role": "auditor"}
        with write_transaction(engine) as connection:
            set_role(connection, "audrey", "coder")
            set_password(connection, "cora", "another-long-secret-7")
        demoted = client.get("/api/probe/audit-only", headers=bearer(tokens["audrey"]))
        assert demoted.status_code == 403
        # A password change leaves the account's tokens alone.
        assert (
            client.get("/api/probe/audit-only", headers=bearer(tokens["cora"])).status_code == 200
        )


def test_a_bearer_write_needs_no_csrf_token_but_a_cookie_login_does(
    app: FastAPI, engine: Engine
) -> None:
    _add_probe_routes(app)
    _, token = make_token(engine, "cora")
    with TestClient(app) as client:
        for method in ("POST", "PUT"):
            response = client.request(method, "/api/probe/write", headers=bearer(token))
            assert response.status_code == 200, (method, response.text)
            assert response.json() == {"user": "cora"}
        cross_site = client.post(
            "/api/probe/write", headers={**bearer(token), "Origin": "https://elsewhere.example"}
        )
        assert cross_site.status_code == 200
        bad = client.post("/api/probe/write", headers=bearer(TOKEN_PREFIX + "C" * 43))
        assert bad.status_code == 401
        login(client, "cora")
        assert client.post("/api/probe/write").status_code == 403  # the cookie needs CSRF


def test_last_used_is_written_at_most_once_a_minute(client: TestClient, engine: Engine) -> None:
    token_id, token = make_token(engine, "cora")

    def last_used() -> object:
        with engine.connect() as connection:
            return connection.execute(
                select(api_tokens.c.last_used_at).where(api_tokens.c.id == token_id)
            ).scalar_one()

    assert last_used() is None
    assert client.get("/api/sessions", headers=bearer(token)).status_code == 200
    first = last_used()
    assert first is not None
    assert client.get("/api/sessions", headers=bearer(token)).status_code == 200
    assert last_used() == first
    stale = utc_now() - timedelta(minutes=5)
    with write_transaction(engine) as connection:
        connection.execute(
            update(api_tokens).where(api_tokens.c.id == token_id).values(last_used_at=stale)
        )
    assert client.get("/api/sessions", headers=bearer(token)).status_code == 200
    refreshed = last_used()
    assert isinstance(refreshed, type(stale))
    assert refreshed > stale + timedelta(minutes=4)


def test_the_openapi_document_declares_the_bearer_scheme(
    client: TestClient, engine: Engine
) -> None:
    _, token = make_token(engine, "cora")
    response = client.get("/openapi.json", headers=bearer(token))
    assert response.status_code == 200
    document = response.json()
    schemes = document["components"]["securitySchemes"]
    bearer_names = [
        name
        for name, scheme in schemes.items()
        if scheme.get("type") == "http" and scheme.get("scheme", "").lower() == "bearer"
    ]
    assert bearer_names == ["apiToken"]
    operations = [
        (path, operation)
        for path, item in document["paths"].items()
        if path.startswith("/api/")
        for operation in item.values()
    ]
    assert operations
    for path, operation in operations:
        assert {"apiToken": []} in operation["security"], path
        assert "401" in operation["responses"], path


# Both databases


def test_tokens_on_both_backends(db_url: str, tmp_path: Path) -> None:
    """Create, use, audit, list and revoke a token on SQLite and PostgreSQL."""
    engine = open_database(db_url)
    try:
        with write_transaction(engine) as connection:
            add_user(connection, "Eve.Long", "coder", "a-long-password-1")
            created, token = create_token(connection, "eve.long", "nightly")
            _, other = create_token(connection, "EVE.LONG")
            with pytest.raises(TokenError):
                create_token(connection, "nobody")
        assert created.username == "Eve.Long"
        assert token != other
        config = WebConfig.for_database(
            db_url, data_dir=tmp_path / "data", sync_codes_seconds=None, version="test"
        )
        app = create_app(config, secret=SECRET, engine=engine)
        with TestClient(app) as client:
            response = client.get("/api/sessions", headers=bearer(token))
            assert response.status_code == 200, response.text
            assert response.json()["items"] == []
            assert client.get("/api/sessions").status_code == 401
            (entry,) = api_entries(engine)
            assert (entry.actor, entry.target) == ("Eve.Long", "sessions")
            assert entry.detail["token_id"] == created.id
            with engine.connect() as connection:
                listed = {t.id: t for t in list_tokens(connection, "eve.long")}
            assert listed[created.id].last_used_at is not None
            assert listed[created.id].label == "nightly"
            with write_transaction(engine) as connection:
                _, revoked_now = revoke_token(connection, created.id)
                assert revoked_now
                _, again = revoke_token(connection, created.id)
                assert not again
            refused = client.get("/api/sessions", headers=bearer(token))
            assert refused.status_code == 401
            assert client.get("/api/sessions", headers=bearer(other)).status_code == 200
    finally:
        engine.dispose()
