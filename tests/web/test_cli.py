"""`pumptrail user ...` and `pumptrail serve` from the command line."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from sqlalchemy import select

from db import audit
from db.migrate import open_database
from db.users import users
from pumptrail.cli import main
from tests.web.support import free_port


def run(argv: list[str], stdin: str = "", monkeypatch: pytest.MonkeyPatch | None = None) -> int:
    if monkeypatch is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    return main(argv)


def test_user_add_list_set_role_disable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db = ["--data-dir", str(tmp_path)]
    status = run(
        ["user", "add", "cora", "--role", "coder", "--password-stdin", *db],
        "a-long-password\n",
        monkeypatch,
    )
    assert status == 0
    assert "user cora: role coder, active" in capsys.readouterr().out
    assert (
        run(
            ["user", "add", "cora", "--role", "admin", "--password-stdin", *db],
            "another-password\n",
            monkeypatch,
        )
        == 1
    )
    assert "already exists" in capsys.readouterr().err
    assert (
        run(
            ["user", "add", "bob", "--role", "coder", "--password-stdin", *db],
            "short\n",
            monkeypatch,
        )
        == 1
    )
    assert "too short" in capsys.readouterr().err
    assert run(["user", "set-role", "cora", "auditor", *db]) == 0
    assert run(["user", "disable", "cora", *db]) == 0
    assert run(["user", "set-role", "nobody", "admin", *db]) == 1
    capsys.readouterr()
    assert run(["user", "list", *db]) == 0
    listing = capsys.readouterr().out
    assert re.search(r"cora\s+auditor\s+disabled\s+last login never", listing)

    engine = open_database(f"sqlite:///{tmp_path / 'pumptrail.db'}")
    try:
        with engine.connect() as connection:
            stored = connection.execute(
                select(users.c.password_hash, users.c.session_version).where(
                    users.c.username == "cora"
                )
            ).one()
            entries = audit.show(connection, audit.AuditFilter(limit=None))
    finally:
        engine.dispose()
    assert stored[0].startswith("$argon2id$") and "a-long-password" not in stored[0]
    assert stored[1] == 2  # two changes, two ended generations of sessions
    assert [(e.action, e.target, e.detail) for e in entries] == [
        ("user_add", "cora", {"role": "coder"}),
        ("user_change", "cora", {"op": "role", "role": "auditor"}),
        ("user_change", "cora", {"op": "disable"}),
    ]
    assert all(e.actor.startswith("cli:") for e in entries)


def test_user_commands_apply_the_password_rule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db = ["--data-dir", str(tmp_path)]
    add = ["user", "add", "dora", "--role", "coder", "--password-stdin", *db]
    assert run(add, "eleven-char\n", monkeypatch) == 1
    assert "at least 12 characters" in capsys.readouterr().err
    assert run(add, "QWERTY123456\n", monkeypatch) == 1
    assert "common passwords" in capsys.readouterr().err
    assert run(add, "a-long-password\n", monkeypatch) == 0
    capsys.readouterr()
    change = ["user", "password", "dora", "--password-stdin", *db]
    assert run(change, "1qaz2wsx3edc\n", monkeypatch) == 1
    assert "common passwords" in capsys.readouterr().err
    assert run(change, "Dora\n", monkeypatch) == 1
    assert run(change, "another-long-password\n", monkeypatch) == 0
    # Names are unique in any case from the command line too.
    assert (
        run(
            ["user", "add", "DORA", "--role", "coder", "--password-stdin", *db],
            "a-long-password\n",
            monkeypatch,
        )
        == 1
    )
    assert "already exists" in capsys.readouterr().err


def test_a_role_outside_the_three_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["user", "add", "x", "--role", "boss", "--data-dir", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_serve_answers_and_keeps_query_strings_out_of_its_log(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "PUMPTRAIL_DATA_DIR": str(tmp_path), "PUMPTRAIL_CONFIG": ""}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pumptrail.cli",
            "serve",
            "--port",
            str(port),
            "--log-level",
            "INFO",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(base + "/login", timeout=2) as response:
                    login_page = response.read().decode()
                break
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.2)
        assert 'name="csrf_token"' in login_page
        assert "pumptrail user add NAME --role admin" in login_page  # no account yet

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args: object, **kwargs: object) -> None:
                return None

        opener = urllib.request.build_opener(NoRedirect)
        with pytest.raises(urllib.error.HTTPError) as redirect:
            opener.open(base + "/sessions?patient_id=SYN-SECRET-77", timeout=5)
        assert redirect.value.code == 303
        with pytest.raises(urllib.error.HTTPError) as unauthorized:
            opener.open(base + "/api/sessions?patient_id=SYN-SECRET-77", timeout=5)
        assert unauthorized.value.code == 401
        assert (tmp_path / "web-secret").stat().st_mode & 0o777 == 0o600
    finally:
        process.terminate()
        _out, err = process.communicate(timeout=15)
    assert "web view on http://127.0.0.1:" in err
    assert "event=http_request method=GET route=/sessions status=303" in err
    assert "route=/api/sessions status=401" in err
    assert "SYN-SECRET-77" not in err
