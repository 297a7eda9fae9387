"""Fixtures of the web tests: a database imported from synthetic exports, logged-in clients.

The database is built once per test run through the real import pipeline
(`tests.web.support.build_database`) and copied for each test, so a test may
write (audit entries, users, re-queues) without disturbing another.
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from db.code_index import sync_codes
from db.engine import write_transaction
from db.migrate import open_database
from tests.web.support import PASSWORD, DemoData, add_account, build_database, csrf_of

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from fastapi.testclient import TestClient

from fastapi import FastAPI

from web.app import create_app
from web.context import WebConfig

SECRET = "test-secret-" + "x" * 40


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> DemoData:
    root = tmp_path_factory.mktemp("web-data")
    data = build_database(root, seeds=(11, 12, 13), visits=6)
    for name, role in (("cora", "coder"), ("audrey", "auditor"), ("adam", "admin")):
        add_account(data.url, name, role)
    return data


@pytest.fixture
def data(built: DemoData, tmp_path: Path) -> DemoData:
    """A private copy of the built database and raw store."""
    root = tmp_path / "data"
    shutil.copytree(built.root, root)
    return DemoData(
        root=root,
        url=f"sqlite:///{root / 'pumptrail.db'}",
        raw_store=root / "raw",
        session_ids=list(built.session_ids),
        pumps={k: list(v) for k, v in built.pumps.items()},
    )


@pytest.fixture
def engine(data: DemoData) -> Iterator[Engine]:
    engine = open_database(data.url)
    with write_transaction(engine) as connection:
        while sync_codes(connection):
            pass
    yield engine
    engine.dispose()


@pytest.fixture
def app(data: DemoData, engine: Engine) -> FastAPI:
    config = WebConfig.for_database(
        data.url, data_dir=data.root, sync_codes_seconds=None, version="test"
    )
    return create_app(config, secret=SECRET)


def login(client: TestClient, username: str, password: str = PASSWORD) -> None:
    page = client.get("/login")
    response = client.post(
        "/login",
        data={"username": username, "password": password, "csrf_token": csrf_of(page.text)},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text


@pytest.fixture
def anonymous(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as client:
        yield client


@pytest.fixture
def client_for(app: FastAPI) -> Iterator[Callable[[str], TestClient]]:
    """A factory of logged-in clients: `client_for("cora")` (coder), audrey, adam."""
    clients: list[TestClient] = []

    def make(username: str) -> TestClient:
        client = TestClient(app)
        client.__enter__()
        clients.append(client)
        login(client, username)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def coder(client_for: Callable[[str], TestClient]) -> TestClient:
    return client_for("cora")


@pytest.fixture
def auditor(client_for: Callable[[str], TestClient]) -> TestClient:
    return client_for("audrey")


@pytest.fixture
def admin(client_for: Callable[[str], TestClient]) -> TestClient:
    return client_for("adam")
