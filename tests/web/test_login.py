"""The hardened login: throttle by address and account, sessions per browser, password rule.

docs/web.md "Login". Clients with their own address stand for different
workstations (`TestClient(client=...)`).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select, text, update

from db import audit
from db.engine import write_transaction
from db.migrate import SchemaError, alembic_config, open_database
from db.models import utc_now
from db.users import login_throttle, users, web_sessions
from evidence import load_rules
from fixtures.binary_writer import encode_binary
from fixtures.scenarios import pump_history
from ingest.pipeline import Importer
from ingest.rawstore import RawStore
from tests.web.conftest import SECRET
from tests.web.support import PASSWORD, DemoData, csrf_of
from web.app import create_app
from web.context import WebConfig
from web.throttle import (
    BASE_DELAY_S,
    FREE_FAILURES,
    LoginThrottle,
    account_key,
    address_key,
    delay_after,
)
from web.users import (
    AccountError,
    add_user,
    authenticate,
    browser_session_open,
    check_password,
    common_passwords,
    end_browser_session,
    find_user,
    open_browser_session,
    set_disabled,
    set_password,
)

NEW_PASSWORD = "a-fresh-long-secret-9"


def post_login(client: TestClient, username: str, password: str) -> object:
    page = client.get("/login")
    return client.post(
        "/login",
        data={"username": username, "password": password, "csrf_token": csrf_of(page.text)},
        follow_redirects=False,
    )


def send_cookie(client: TestClient, value: str) -> None:
    """Make the browser send this session cookie, as if the server had set it."""
    for cookie in list(client.cookies.jar):
        if cookie.name == "pt_session":
            client.cookies.delete("pt_session", domain=cookie.domain, path=cookie.path)
    client.cookies.set("pt_session", value, domain="testserver.local", path="/")


def status(response: object) -> int:
    return int(response.status_code)  # type: ignore[attr-defined]


@pytest.fixture
def workstation(app: FastAPI) -> Iterator[object]:
    """A factory of anonymous clients, each with an address of its own."""
    clients: list[TestClient] = []

    def make(address: str) -> TestClient:
        client = TestClient(app, client=(address, 40000))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def entries(engine: Engine, action: str) -> list[audit.AuditEntry]:
    with engine.connect() as connection:
        return audit.show(connection, audit.AuditFilter(action=action, limit=None))


def fail_until_throttled(client: TestClient, username: str) -> None:
    for _ in range(FREE_FAILURES):
        assert status(post_login(client, username, "wrong-password-x")) == 401
    assert status(post_login(client, username, PASSWORD)) == 429


# ---------------------------------------------------------------------------
# Throttle


def test_a_fresh_address_gets_in_while_another_is_throttled(
    workstation: object, engine: Engine
) -> None:
    attacker = workstation("10.0.0.66")  # type: ignore[operator]
    fail_until_throttled(attacker, "cora")
    # Even the right password waits from the throttled address...
    response = post_login(attacker, "cora", PASSWORD)
    assert status(response) == 429
    assert "Too many failed attempts" in response.text  # type: ignore[attr-defined]
    # ...but the account is not locked: a workstation with no failures gets in.
    coder = workstation("10.0.0.7")  # type: ignore[operator]
    assert status(post_login(coder, "cora", PASSWORD)) == 303
    assert coder.get("/sessions", follow_redirects=False).status_code == 200
    failed = entries(engine, audit.LOGIN_FAILED)
    assert {e.detail["client"] for e in failed} == {"10.0.0.66"}
    assert [e.detail["reason"] for e in failed].count("bad_credentials") == FREE_FAILURES
    assert "wrong-password-x" not in repr(failed)
    assert entries(engine, audit.LOGIN)[-1].detail == {"client": "10.0.0.7"}


def test_an_address_with_failures_of_its_own_waits_for_the_account_too(
    workstation: object, engine: Engine
) -> None:
    for number in range(FREE_FAILURES):
        # Each guess from another address: no address is throttled on its own...
        guesser = workstation(f"10.0.1.{number}")  # type: ignore[operator]
        assert status(post_login(guesser, "cora", "wrong-password-x")) == 401
    # ...but the account's count slows down every address that failed too.
    assert status(post_login(guesser, "cora", PASSWORD)) == 429
    assert status(post_login(workstation("10.0.2.1"), "cora", PASSWORD)) == 303  # type: ignore[operator]


def test_delays_grow_with_the_failures_and_end() -> None:
    delays = [delay_after(n) for n in range(FREE_FAILURES + 12)]
    assert delays[:FREE_FAILURES] == [0.0] * FREE_FAILURES
    assert delays[FREE_FAILURES] == BASE_DELAY_S
    growing = delays[FREE_FAILURES:]
    assert growing == sorted(growing) and growing[1] == 2 * growing[0]
    assert max(delays) == 900.0


def test_a_throttled_address_may_try_again_after_its_delay(
    workstation: object, engine: Engine
) -> None:
    client = workstation("10.0.3.3")  # type: ignore[operator]
    fail_until_throttled(client, "cora")
    with write_transaction(engine) as connection:
        connection.execute(
            update(login_throttle).values(
                last_failure_at=utc_now() - timedelta(seconds=BASE_DELAY_S + 1)
            )
        )
    assert status(post_login(client, "cora", PASSWORD)) == 303
    with engine.connect() as connection:  # a success clears its address and its account
        keys = set(connection.execute(select(login_throttle.c.key)).scalars())
    assert address_key("10.0.3.3") not in keys and account_key("cora") not in keys


def test_the_throttle_survives_a_restart(
    app: FastAPI, data: DemoData, engine: Engine, workstation: object
) -> None:
    fail_until_throttled(workstation("10.0.4.4"), "cora")  # type: ignore[operator]
    config = WebConfig.for_database(
        data.url, data_dir=data.root, sync_codes_seconds=None, version="test"
    )
    restarted = create_app(config, secret=SECRET)
    with TestClient(restarted, client=("10.0.4.4", 40000)) as client:
        assert status(post_login(client, "cora", PASSWORD)) == 429
    with TestClient(restarted, client=("10.0.4.5", 40000)) as client:
        assert status(post_login(client, "cora", PASSWORD)) == 303


def test_a_login_flood_does_not_stall_an_import(
    app: FastAPI, data: DemoData, engine: Engine
) -> None:
    """50 failed logins from 8 threads (each its own address) while a file is imported."""
    started = threading.Event()
    answers: list[int] = []

    def guess(number: int) -> int:
        client = TestClient(app, client=(f"10.9.{number // 200}.{number % 200}", 40000))
        started.set()
        return status(post_login(client, f"user{number}", "wrong-password-x"))

    scenario = next(iter(pump_history(random.Random(4242), visits=1)))
    importer = Importer(engine, RawStore(data.raw_store, durable=False), load_rules())
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(guess, number) for number in range(50)]
        assert started.wait(10)
        time.sleep(0.2)  # the flood is under way
        pending = sum(not f.done() for f in futures)
        began = time.monotonic()
        result = importer.import_bytes(encode_binary(scenario), name="during-flood.psl")
        took = time.monotonic() - began
        answers = [f.result() for f in futures]
    assert result.outcome == "imported"
    assert took < 5.0, f"the import took {took:.2f} s during a login flood"
    assert pending > 0  # the import really ran while logins were being checked
    assert answers == [401] * 50
    assert len(entries(engine, audit.LOGIN_FAILED)) == 50


# ---------------------------------------------------------------------------
# Sessions per browser, stale cookies


def test_logout_of_one_browser_keeps_the_other_logged_in(
    workstation: object, engine: Engine
) -> None:
    first = workstation("10.1.0.1")  # type: ignore[operator]
    second = workstation("10.1.0.2")  # type: ignore[operator]
    assert status(post_login(first, "cora", PASSWORD)) == 303
    assert status(post_login(second, "cora", PASSWORD)) == 303
    page = first.get("/sessions")
    old_cookie = first.cookies.get("pt_session")
    assert first.post("/logout", data={"csrf_token": csrf_of(page.text)}).url.path == "/login"
    assert first.get("/sessions", follow_redirects=False).status_code == 303
    assert second.get("/sessions", follow_redirects=False).status_code == 200
    # The logged-out cookie, replayed, stays refused.
    send_cookie(first, old_cookie or "")
    assert first.get("/sessions", follow_redirects=False).status_code == 303
    logout = entries(engine, audit.LOGOUT)[-1]
    assert (logout.actor, logout.detail) == ("cora", {"client": "10.1.0.1"})


def test_a_password_change_ends_every_browser(workstation: object, engine: Engine) -> None:
    first = workstation("10.1.1.1")  # type: ignore[operator]
    second = workstation("10.1.1.2")  # type: ignore[operator]
    assert status(post_login(first, "cora", PASSWORD)) == 303
    assert status(post_login(second, "cora", PASSWORD)) == 303
    with write_transaction(engine) as connection:
        set_password(connection, "cora", NEW_PASSWORD)
        user_id = find_user(connection, "cora").id  # type: ignore[union-attr]
        assert (
            connection.execute(
                select(web_sessions.c.token_sha256).where(web_sessions.c.user_id == user_id)
            ).all()
            == []
        )
    assert first.get("/sessions", follow_redirects=False).status_code == 303
    assert second.get("/sessions", follow_redirects=False).status_code == 303


def test_a_stale_cookie_never_blocks_a_login(workstation: object, engine: Engine) -> None:
    browser = workstation("10.1.2.1")  # type: ignore[operator]
    assert status(post_login(browser, "cora", PASSWORD)) == 303
    with write_transaction(engine) as connection:  # ended elsewhere: a new password
        set_password(connection, "cora", NEW_PASSWORD)
    stale = browser.cookies.get("pt_session")
    assert stale  # the stale cookie is still sent
    # A wrong password is a plain 401 (never a refused form)...
    assert status(post_login(browser, "cora", PASSWORD)) == 401
    # ...and the right one logs in at once, the stale cookie sent along.
    send_cookie(browser, stale)
    assert status(post_login(browser, "cora", NEW_PASSWORD)) == 303
    assert browser.get("/sessions", follow_redirects=False).status_code == 200


def test_a_stale_cookie_of_a_logout_elsewhere_never_blocks_a_login(
    workstation: object, app: FastAPI
) -> None:
    browser = workstation("10.1.3.1")  # type: ignore[operator]
    assert status(post_login(browser, "cora", PASSWORD)) == 303
    stale = browser.cookies.get("pt_session")
    page = browser.get("/sessions")
    browser.post("/logout", data={"csrf_token": csrf_of(page.text)})
    send_cookie(browser, stale or "")
    assert status(post_login(browser, "cora", PASSWORD)) == 303
    assert browser.get("/sessions", follow_redirects=False).status_code == 200


def test_a_disabled_accounts_attempt_is_recorded_as_such(
    workstation: object, engine: Engine
) -> None:
    with write_transaction(engine) as connection:
        set_disabled(connection, "cora", True)
    response = post_login(workstation("10.1.4.1"), "cora", PASSWORD)  # type: ignore[operator]
    assert status(response) == 401
    assert "Unknown user name or wrong password" in response.text  # type: ignore[attr-defined]
    failed = entries(engine, audit.LOGIN_FAILED)[-1]
    assert (failed.actor, failed.detail) == ("cora", {"reason": "disabled", "client": "10.1.4.1"})
    # A wrong password of a disabled account says nothing more than any wrong password.
    post_login(workstation("10.1.4.2"), "cora", "wrong-password-x")  # type: ignore[operator]
    assert entries(engine, audit.LOGIN_FAILED)[-1].detail["reason"] == "bad_credentials"


# ---------------------------------------------------------------------------
# Cookies over TLS


def test_secure_cookies_come_with_hsts(data: DemoData, engine: Engine) -> None:
    config = WebConfig.for_database(
        data.url, data_dir=data.root, sync_codes_seconds=None, version="test", secure_cookies=True
    )
    with TestClient(create_app(config, secret=SECRET), base_url="https://testserver") as client:
        response = post_login(client, "cora", PASSWORD)
        cookie = response.headers["set-cookie"]  # type: ignore[attr-defined]
        assert "Secure" in cookie
        assert response.headers["strict-transport-security"] == "max-age=31536000"  # type: ignore[attr-defined]
        assert client.get("/login").headers["strict-transport-security"]


def test_plain_http_without_secure_cookies_sends_no_hsts(workstation: object) -> None:
    response = workstation("10.2.0.1").get("/login")  # type: ignore[operator]
    assert "strict-transport-security" not in response.headers


# ---------------------------------------------------------------------------
# Accounts: names in any case, the password rule


def test_user_names_are_unique_without_regard_to_case(engine: Engine, workstation: object) -> None:
    with write_transaction(engine) as connection, pytest.raises(AccountError, match="already"):
        add_user(connection, "CORA", "coder", "another-long-pass-1")
    assert status(post_login(workstation("10.3.0.1"), "Cora", PASSWORD)) == 303  # type: ignore[operator]
    with engine.connect() as connection:
        assert (
            connection.execute(
                select(users.c.username_key).where(users.c.username == "cora")
            ).scalar_one()
            == "cora"
        )


def test_the_database_refuses_two_names_differing_in_case(engine: Engine) -> None:
    with pytest.raises(Exception, match=r"(?i)unique"), write_transaction(engine) as connection:
        connection.execute(
            text(
                "INSERT INTO users (username, username_key, role, password_hash, disabled, "
                "session_version, created_at, updated_at) VALUES ('Cora', 'cora', 'coder', "
                "'x', false, 0, '2026-01-01', '2026-01-01')"
            )
        )


def test_the_password_rule() -> None:
    assert len(common_passwords()) >= 9000
    with pytest.raises(AccountError, match="too short"):
        check_password("eleven-char")
    check_password("twelve-chars")
    for common in ("1qaz2wsx3edc", "QWERTY123456", "leavemealone"):
        with pytest.raises(AccountError, match="common passwords"):
            check_password(common)
    with pytest.raises(AccountError, match="user name"):
        check_password("frederick.long", "Frederick.Long")


def test_an_upgrade_stops_on_names_differing_only_in_case(tmp_path: Path) -> None:
    from alembic import command

    url = f"sqlite:///{tmp_path / 'case.db'}"
    engine = open_database(url)
    try:
        with engine.begin() as connection:
            command.downgrade(alembic_config(connection), "0003")
        with engine.begin() as connection:
            for name in ("ann", "Ann"):
                connection.execute(
                    text(
                        "INSERT INTO users (username, role, password_hash, disabled, "
                        "session_version, created_at, updated_at) VALUES (:n, 'coder', 'x', "
                        "0, 0, '2026-01-01', '2026-01-01')"
                    ),
                    {"n": name},
                )
        with (
            pytest.raises(SchemaError, match="differ only in case: ann"),
            engine.begin() as connection,
        ):
            command.upgrade(alembic_config(connection), "head")
    finally:
        engine.dispose()


def test_throttle_counts_and_sessions_on_both_backends(db_url: str) -> None:
    """The upsert of the counts and the session rows work on SQLite and PostgreSQL."""
    engine = open_database(db_url)
    throttle = LoginThrottle()
    try:
        with write_transaction(engine) as connection:
            user = add_user(connection, "Eve.Long", "coder", "a-long-password-1")
        for _ in range(FREE_FAILURES + 1):
            with write_transaction(engine) as connection:
                throttle.failed(connection, "192.0.2.9", "EVE.long")
        with engine.connect() as connection:
            now = utc_now()
            assert throttle.failures(connection, account_key("eve.long"), now).count == 6
            assert throttle.wait_s(connection, "192.0.2.9", "eve.long") > BASE_DELAY_S
            assert throttle.wait_s(connection, "192.0.2.10", "eve.long") == 0.0
        with write_transaction(engine) as connection:
            first = open_browser_session(connection, user.id)
            second = open_browser_session(connection, user.id)
            end_browser_session(connection, first)
            assert not browser_session_open(connection, user.id, first)
            assert browser_session_open(connection, user.id, second)
            throttle.succeeded(connection, "192.0.2.9", "Eve.Long")
            assert throttle.wait_s(connection, "192.0.2.9", "eve.long") == 0.0
            assert authenticate(connection, "EVE.LONG", "a-long-password-1") is not None
    finally:
        engine.dispose()
