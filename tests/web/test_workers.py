"""`pumptrail serve --workers N`: the workers share logins, the throttle and the secret."""

from __future__ import annotations

import fcntl
import io
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pumptrail.cli import main
from pumptrail.commands.serve import decode_config, encode_config
from tests.web.support import PASSWORD, csrf_of, free_port
from web.context import WebConfig
from web.throttle import FREE_FAILURES


def children_of(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text(encoding="ascii")
    return [int(part) for part in text.split()]


@pytest.fixture
def two_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(PASSWORD + "\n"))
    assert (
        main(
            [
                "user",
                "add",
                "cora",
                "--role",
                "coder",
                "--password-stdin",
                "--data-dir",
                str(tmp_path),
            ]
        )
        == 0
    )
    port = free_port()
    env = {**os.environ, "PUMPTRAIL_DATA_DIR": str(tmp_path), "PUMPTRAIL_CONFIG": ""}
    process = subprocess.Popen(
        [sys.executable, "-m", "pumptrail.cli", "serve", "--port", str(port), "--workers", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + "/login", timeout=2).status_code == 200 and (
                    len(children_of(process.pid)) >= 2
                ):
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise AssertionError("pumptrail serve --workers 2 did not come up")
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        _out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "2 workers" in err


def log_in(base: str, password: str) -> httpx.Response:
    """A login on fresh connections (each may land on either worker)."""
    with httpx.Client(base_url=base) as client:
        page = client.get("/login")
        return client.post(
            "/login",
            data={"username": "cora", "password": password, "csrf_token": csrf_of(page.text)},
        )


def test_one_login_is_good_on_every_worker(two_workers: str) -> None:
    response = log_in(two_workers, PASSWORD)
    assert response.status_code == 303, response.text
    cookies = response.cookies
    assert cookies.get("pt_session")
    statuses = []
    for _ in range(20):
        # A new connection per request: the kernel spreads them over the workers.
        with httpx.Client(base_url=two_workers, cookies=cookies) as client:
            answer = client.get("/api/sessions")
            statuses.append(answer.status_code)
    assert statuses == [200] * 20
    # Without the cookie the same requests are refused: the 200s came from the login.
    assert httpx.get(two_workers + "/api/sessions").status_code == 401


def test_failed_logins_counted_by_one_worker_throttle_the_other(two_workers: str) -> None:
    for _ in range(FREE_FAILURES):
        assert log_in(two_workers, "not-the-password").status_code == 401
    # The right password from the same address now waits, whichever worker answers.
    statuses = [log_in(two_workers, PASSWORD).status_code for _ in range(8)]
    assert statuses == [429] * 8


def test_the_web_config_reaches_the_workers_unchanged(tmp_path: Path) -> None:
    from db.checkpoints import AnchorConfig
    from evidence.dft import Hl7Settings

    config = WebConfig.for_database(
        f"sqlite:///{tmp_path / 'pumptrail.db'}",
        idle_minutes=7,
        secure_cookies=True,
        sync_codes_seconds=None,
        anchor=AnchorConfig(tmp_path, signing_key=tmp_path / "key.pem", clinic_name="North"),
        hl7=Hl7Settings(sending_facility="NORTH", charge_codes={"62370": "CHG-1"}),
    )
    text = encode_config(config, rules_dir=tmp_path / "rules", log_level="DEBUG")
    assert decode_config(text) == (config, tmp_path / "rules", "DEBUG")


def test_only_the_worker_holding_the_lock_repairs_the_code_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pumptrail.commands import serve

    config = WebConfig.for_database(f"sqlite:///{tmp_path / 'pumptrail.db'}")
    monkeypatch.setenv(serve.CONFIG_ENV, encode_config(config, rules_dir=None, log_level="INFO"))
    monkeypatch.setattr(serve, "_code_index_lock", [])
    other = os.open(tmp_path / serve.CODE_INDEX_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(other, fcntl.LOCK_EX)
        # Another worker holds the lock: this one leaves the index alone.
        assert serve.app_from_env().state.code_indexer.every_s is None
        fcntl.flock(other, fcntl.LOCK_UN)
        # The holder is gone: the next worker started takes over the repair.
        assert serve.app_from_env().state.code_indexer.every_s == config.sync_codes_seconds
    finally:
        os.close(other)
        for descriptor in serve._code_index_lock:
            os.close(descriptor)


def test_app_from_env_needs_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from pumptrail.commands import serve
    from pumptrail.errors import CommandError

    monkeypatch.delenv(serve.CONFIG_ENV, raising=False)
    with pytest.raises(CommandError, match="PUMPTRAIL_WEB_CONFIG"):
        serve.app_from_env()
