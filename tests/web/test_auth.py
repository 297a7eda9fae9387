"""Accounts, login, logout, cookies, CSRF, roles and the audit of each (web view item 2, 6)."""

from __future__ import annotations

import logging
import multiprocessing
import re
import stat
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from db import audit
from db.engine import write_transaction
from tests.web.conftest import login
from tests.web.support import PASSWORD, DemoData, csrf_of, served_routes
from web.auth import LOGIN_COOKIE, SESSION_COOKIE, SessionCodec, load_secret
from web.users import AccountError, add_user, authenticate, set_disabled

SECRET = "s" * 48


def entries(engine: Engine, action: str) -> list[audit.AuditEntry]:
    with engine.connect() as connection:
        return audit.show(connection, audit.AuditFilter(action=action, limit=None))


def set_cookie_headers(response: object) -> list[str]:
    return response.headers.get_list("set-cookie")  # type: ignore[attr-defined,no-any-return]


# ---------------------------------------------------------------------------
# Not logged in


@pytest.mark.parametrize(
    "path", ["/", "/sessions", "/sessions/x", "/pumps/x", "/due", "/imports", "/audit"]
)
def test_a_page_without_login_redirects_to_the_login_page(anonymous: TestClient, path: str) -> None:
    response = anonymous.get(path, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"].startswith("/login?next=")
    page = anonymous.get(path)
    assert page.url.path == "/login"
    assert 'name="username"' in page.text and 'name="password"' in page.text
    assert 'name="csrf_token"' in page.text


@pytest.mark.parametrize("path", ["/api/sessions", "/api/sessions/x", "/openapi.json"])
def test_an_api_request_without_login_gets_401(anonymous: TestClient, path: str) -> None:
    response = anonymous.get(path, follow_redirects=False)
    assert response.status_code == 401
    assert response.json() == {"detail": "not logged in"}
    assert "WWW-Authenticate" in response.headers


# Routes anyone may open: the login form and its POST (and the static files, a mount).
ANONYMOUS_ROUTES = {("GET", "/login"), ("POST", "/login")}


def test_every_route_but_the_login_page_needs_a_login(
    app: FastAPI, anonymous: TestClient, engine: Engine
) -> None:
    """Walks the app's routes: a page added without the login dependency fails here."""
    walked = [
        (method, path)
        for path, route in served_routes(app)
        for method in sorted(route.methods or ())
        if method != "HEAD"
    ]
    assert {
        ("GET", "/"),
        ("GET", "/sessions/{session_id}/packet.pdf"),
        ("GET", "/raw/{sha256}"),
        ("GET", "/due"),
        ("GET", "/admin/users"),
        ("POST", "/imports/requeue"),
        ("GET", "/api/sessions/{session_id}"),
        ("GET", "/openapi.json"),
    } <= set(walked)
    assert set(walked) >= ANONYMOUS_ROUTES
    with engine.connect() as connection:
        before = audit.current_head(connection)
    for method, template in walked:
        if (method, template) in ANONYMOUS_ROUTES:
            continue
        path = re.sub(r"\{[^}]+\}", "x", template)
        response = anonymous.request(method, path, follow_redirects=False)
        if path.startswith("/api/") or path == "/openapi.json":
            assert response.status_code == 401, (method, template)
            assert response.json() == {"detail": "not logged in"}, (method, template)
        else:
            assert response.status_code == 303, (method, template)
            assert response.headers["location"].startswith("/login?next="), (method, template)
    with engine.connect() as connection:
        assert audit.current_head(connection) == before  # nothing was recorded


def test_the_stylesheet_needs_no_login(anonymous: TestClient) -> None:
    response = anonymous.get("/static/pumptrail.css")
    assert response.status_code == 200
    assert "@media print" in response.text


def test_next_never_leaves_the_site(anonymous: TestClient) -> None:
    page = anonymous.get("/login?next=//evil.example/x")
    token = csrf_of(page.text)
    assert 'name="next" value="/sessions"' in page.text
    response = anonymous.post(
        "/login",
        data={
            "username": "cora",
            "password": PASSWORD,
            "csrf_token": token,
            "next": "https://evil.example/",
        },
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/sessions"


def test_login_returns_to_the_page_asked_for(anonymous: TestClient) -> None:
    first = anonymous.get("/sessions?sort=oldest", follow_redirects=False)
    next_url = first.headers["location"].split("next=", 1)[1]
    page = anonymous.get("/login?next=" + next_url)
    response = anonymous.post(
        "/login",
        data={
            "username": "cora",
            "password": PASSWORD,
            "csrf_token": csrf_of(page.text),
            "next": "/sessions?sort=oldest",
        },
        follow_redirects=False,
    )
    assert response.headers["location"] == "/sessions?sort=oldest"


# ---------------------------------------------------------------------------
# Login and logout


def test_login_sets_a_secure_session_cookie_and_is_audited(
    anonymous: TestClient, engine: Engine
) -> None:
    page = anonymous.get("/login")
    login_cookie = [h for h in set_cookie_headers(page) if h.startswith(LOGIN_COOKIE)]
    assert login_cookie and "HttpOnly" in login_cookie[0]
    response = anonymous.post(
        "/login",
        data={"username": "cora", "password": PASSWORD, "csrf_token": csrf_of(page.text)},
        follow_redirects=False,
    )
    assert response.status_code == 303
    cookie = next(h for h in set_cookie_headers(response) if h.startswith(SESSION_COOKIE + "="))
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie or "samesite=strict" in cookie.lower()
    assert "Path=/" in cookie
    assert "Secure" not in cookie  # plain http: a Secure cookie would never come back
    logins = entries(engine, audit.LOGIN)
    assert [(e.actor, e.target) for e in logins] == [("cora", "cora")]
    assert anonymous.get("/sessions").status_code == 200


def test_over_https_the_cookie_is_secure(app: FastAPI) -> None:
    with TestClient(app, base_url="https://testserver") as client:
        page = client.get("/login")
        response = client.post(
            "/login",
            data={"username": "cora", "password": PASSWORD, "csrf_token": csrf_of(page.text)},
            follow_redirects=False,
        )
    cookie = next(h for h in set_cookie_headers(response) if h.startswith(SESSION_COOKIE + "="))
    assert "Secure" in cookie


def test_a_wrong_password_is_refused_and_audited(anonymous: TestClient, engine: Engine) -> None:
    page = anonymous.get("/login")
    response = anonymous.post(
        "/login",
        data={"username": "cora", "password": "not-the-password", "csrf_token": csrf_of(page.text)},
        follow_redirects=False,
    )
    assert response.status_code == 401
    assert "wrong password" in response.text
    assert not any(h.startswith(SESSION_COOKIE + "=") for h in set_cookie_headers(response))
    failed = entries(engine, audit.LOGIN_FAILED)
    assert [(e.actor, e.detail) for e in failed] == [
        ("cora", {"reason": "bad_credentials", "client": "testclient"})
    ]
    assert "not-the-password" not in repr(failed)
    assert anonymous.get("/sessions", follow_redirects=False).status_code == 303


def test_an_unknown_user_gets_the_same_answer(anonymous: TestClient, engine: Engine) -> None:
    page = anonymous.get("/login")
    response = anonymous.post(
        "/login",
        data={"username": "nobody", "password": PASSWORD, "csrf_token": csrf_of(page.text)},
    )
    assert response.status_code == 401
    assert "Unknown user name or wrong password" in response.text
    assert [e.actor for e in entries(engine, audit.LOGIN_FAILED)] == ["nobody"]


def test_repeated_failures_are_throttled(anonymous: TestClient, engine: Engine) -> None:
    for _ in range(10):
        page = anonymous.get("/login")
        anonymous.post(
            "/login",
            data={"username": "cora", "password": "wrong-wrong", "csrf_token": csrf_of(page.text)},
        )
    page = anonymous.get("/login")
    response = anonymous.post(
        "/login",
        data={"username": "cora", "password": PASSWORD, "csrf_token": csrf_of(page.text)},
    )
    assert response.status_code == 429
    assert "Too many failed attempts" in response.text
    throttled = entries(engine, audit.LOGIN_FAILED)[-1].detail
    assert (throttled["reason"], throttled["client"]) == ("throttled", "testclient")
    assert 0 < throttled["wait_s"] <= 5
    assert response.headers["retry-after"] == str(throttled["wait_s"])


def test_login_without_its_csrf_token_is_refused(anonymous: TestClient, engine: Engine) -> None:
    anonymous.get("/login")
    response = anonymous.post("/login", data={"username": "cora", "password": PASSWORD})
    assert response.status_code == 403
    assert "Form refused" in response.text
    wrong = anonymous.post(
        "/login", data={"username": "cora", "password": PASSWORD, "csrf_token": "forged"}
    )
    assert wrong.status_code == 403
    assert entries(engine, audit.LOGIN) == []


def test_logout_ends_this_browsers_session_and_is_audited(
    coder: TestClient, engine: Engine
) -> None:
    old_cookie = coder.cookies.get(SESSION_COOKIE)
    assert old_cookie
    page = coder.get("/sessions")
    refused = coder.post("/logout", data={}, follow_redirects=False)
    assert refused.status_code == 403
    assert coder.get("/sessions", follow_redirects=False).status_code == 200
    response = coder.post(
        "/logout", data={"csrf_token": csrf_of(page.text)}, follow_redirects=False
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/login"
    assert coder.get("/sessions", follow_redirects=False).status_code == 303
    # The old cookie, replayed, is refused too: logout ended its session.
    coder.cookies.set(SESSION_COOKIE, old_cookie)
    assert coder.get("/sessions", follow_redirects=False).status_code == 303
    assert [(e.actor, e.action) for e in entries(engine, audit.LOGOUT)] == [("cora", "logout")]


def test_disabling_an_account_ends_its_sessions(coder: TestClient, engine: Engine) -> None:
    assert coder.get("/sessions", follow_redirects=False).status_code == 200
    with write_transaction(engine) as connection:
        set_disabled(connection, "cora", True)
    assert coder.get("/sessions", follow_redirects=False).status_code == 303
    assert coder.get("/api/sessions").status_code == 401


def test_a_forged_cookie_is_refused(anonymous: TestClient) -> None:
    other = SessionCodec("another-secret" * 4, idle_timeout_s=600, max_age_s=3600)
    anonymous.cookies.set(SESSION_COOKIE, other.issue(1, 0))
    assert anonymous.get("/sessions", follow_redirects=False).status_code == 303


# ---------------------------------------------------------------------------
# The cookie codec: idle timeout, maximum age, refresh


def test_an_idle_session_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    codec = SessionCodec(SECRET, idle_timeout_s=1800, max_age_s=12 * 3600)
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now - 1801)
    stale = codec.issue(7, 3)
    monkeypatch.setattr(time, "time", lambda: now - 1700)
    fresh = codec.issue(7, 3)
    monkeypatch.setattr(time, "time", lambda: now)
    assert codec.read(stale) is None
    session = codec.read(fresh)
    assert session is not None and (session.user_id, session.version) == (7, 3)


def test_activity_slides_the_idle_timeout_but_not_the_maximum_age(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    codec = SessionCodec(SECRET, idle_timeout_s=1800, max_age_s=3 * 3600)
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now - 4 * 3600)
    cookie = codec.issue(1, 0)
    # Active every 1,000 s for four hours: refreshed each time.
    for step in range(1, 13):
        monkeypatch.setattr(time, "time", lambda step=step: now - 4 * 3600 + step * 1000)
        session = codec.read(cookie)
        if step * 1000 > 3 * 3600:
            assert session is None  # beyond the maximum age of a login
            break
        assert session is not None
        refreshed = codec.refreshed(session)
        assert refreshed is not None
        cookie = refreshed
    else:
        pytest.fail("the maximum age was never reached")


def test_a_fresh_cookie_is_not_reissued_on_every_request() -> None:
    codec = SessionCodec(SECRET, idle_timeout_s=1800, max_age_s=3600)
    session = codec.read(codec.issue(1, 0))
    assert session is not None
    assert codec.refreshed(session) is None


def test_the_secret_file_is_created_0600_once(tmp_path: Path) -> None:
    first = load_secret(tmp_path / "data")
    path = tmp_path / "data" / "web-secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) >= 32
    path.chmod(0o644)
    assert load_secret(tmp_path / "data") == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_workers_starting_together_read_one_whole_secret(tmp_path: Path) -> None:
    """Many processes creating the secret at once: each reads the same complete file."""
    data = tmp_path / "data"
    data.mkdir()
    context = multiprocessing.get_context("spawn")
    with context.Pool(6) as pool:
        secrets_read = pool.map(load_secret, [data] * 24)
    assert len(set(secrets_read)) == 1
    assert len(secrets_read[0]) >= 32
    assert [p.name for p in data.iterdir()] == ["web-secret"]


# ---------------------------------------------------------------------------
# Roles


@pytest.mark.parametrize(
    ("user", "path", "status"),
    [
        ("cora", "/audit", 403),
        ("cora", "/replay", 403),
        ("cora", "/admin/users", 403),
        ("audrey", "/audit", 200),
        ("audrey", "/replay", 200),
        ("audrey", "/admin/users", 403),
        ("adam", "/admin/users", 200),
        ("adam", "/audit", 200),
    ],
)
def test_roles_gate_the_pages(
    client_for: Callable[[str], TestClient], user: str, path: str, status: int
) -> None:
    response = client_for(user).get(path)
    assert response.status_code == status
    if status == 403:
        assert "Not allowed" in response.text


def test_navigation_shows_what_the_role_may_open(client_for: Callable[[str], TestClient]) -> None:
    assert 'href="/audit"' not in client_for("cora").get("/sessions").text
    assert 'href="/audit"' in client_for("audrey").get("/sessions").text
    assert 'href="/admin/users"' in client_for("adam").get("/sessions").text


# ---------------------------------------------------------------------------
# CSRF on every form, cross-site posts


def _post_routes(app: FastAPI) -> list[str]:
    """POST routes the app serves (routers included), path parameters filled in."""
    return [
        re.sub(r"\{[^}]+\}", "adam", path)
        for path, route in served_routes(app)
        if "POST" in (route.methods or ())
    ]


def test_every_post_route_refuses_a_form_without_its_csrf_token(
    app: FastAPI, admin: TestClient, engine: Engine
) -> None:
    paths = _post_routes(app)
    assert {"/login", "/logout", "/admin/users", "/admin/users/adam", "/imports/requeue"} <= set(
        paths
    )
    with engine.connect() as connection:
        before = audit.current_head(connection)
    for path in paths:
        response = admin.post(path, data={"username": "x", "role": "admin", "op": "disable"})
        assert response.status_code == 403, path
        assert "Form refused" in response.text
    with engine.connect() as connection:
        assert audit.current_head(connection) == before  # nothing happened
    assert admin.get("/sessions", follow_redirects=False).status_code == 200


def test_a_cross_site_post_is_refused(admin: TestClient) -> None:
    page = admin.get("/admin/users")
    response = admin.post(
        "/admin/users",
        data={
            "username": "mallory",
            "role": "admin",
            "password": "long-enough-pass",
            "csrf_token": csrf_of(page.text),
        },
        headers={"Origin": "https://evil.example"},
    )
    assert response.status_code == 403
    assert "mallory" not in admin.get("/admin/users").text


# ---------------------------------------------------------------------------
# Headers and logs


def test_pages_carry_security_headers(coder: TestClient) -> None:
    response = coder.get("/sessions")
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert "script-src 'self'" in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Referrer-Policy"] == "same-origin"


def test_the_access_log_names_routes_never_query_strings(
    coder: TestClient, data: DemoData, caplog: pytest.LogCaptureFixture
) -> None:
    session_id = data.session_ids[0]
    with caplog.at_level(logging.INFO, logger="pumptrail.web.access"):
        coder.get("/sessions?patient_id=SYN-SECRET-42&pump_serial=ITP-SECRET")
        coder.get(f"/sessions/{session_id}")
    lines = [r.getMessage() for r in caplog.records if r.name == "pumptrail.web.access"]
    assert any("method=GET route=/sessions status=200" in line for line in lines)
    assert any(
        'route="/sessions/{session_id}" status=200' in line
        or "route=/sessions/{session_id} status=200" in line
        for line in lines
    )
    assert all(line.startswith("http_request ") and "user=cora" in line for line in lines)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "SYN-SECRET-42" not in text and "ITP-SECRET" not in text and session_id not in text


# ---------------------------------------------------------------------------
# Accounts


def test_account_rules(engine: Engine) -> None:
    with write_transaction(engine) as connection:
        with pytest.raises(AccountError, match="already exists"):
            add_user(connection, "cora", "coder", "long-enough-pass")
        with pytest.raises(AccountError, match="role 'boss'"):
            add_user(connection, "bob", "boss", "long-enough-pass")
        with pytest.raises(AccountError, match="too short"):
            add_user(connection, "bob", "coder", "short")
        with pytest.raises(AccountError, match="user name"):
            add_user(connection, "bob smith", "coder", "long-enough-pass")
        user = add_user(connection, "bob", "auditor", "long-enough-pass")
        assert user.can("coder") and user.can("auditor") and not user.can("admin")
        assert authenticate(connection, "bob", "long-enough-pass") is not None
        assert authenticate(connection, "bob", "long-enough-pasS") is None
        set_disabled(connection, "bob", True)
        assert authenticate(connection, "bob", "long-enough-pass") is None
        from db.users import users

        stored = connection.execute(
            select(users.c.password_hash).where(users.c.username == "bob")
        ).scalar_one()
    assert stored.startswith("$argon2id$")
    assert "long-enough-pass" not in stored


def test_login_helper_logs_in(client_for: Callable[[str], TestClient]) -> None:
    client = client_for("audrey")
    assert client.get("/audit").status_code == 200
    login(client, "cora")  # a second login replaces the session
    assert client.get("/audit").status_code == 403
