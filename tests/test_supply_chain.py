"""The dependency audit's verdict: a known vulnerability fails, an unreachable advisory
service is 'not done' (exit 2), never a pass; the locks split runtime from tools."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
AUDIT = ROOT / ".ci" / "audit-deps"


def fake_pip_audit(tmp_path: Path, report: dict[str, object]) -> Path:
    script = tmp_path / "pip-audit"
    script.write_text(f"#!{sys.executable}\nprint({json.dumps(json.dumps(report))})\n")
    script.chmod(0o755)
    return script


def verdict(tmp_path: Path, report: dict[str, object]) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, str(AUDIT), str(fake_pip_audit(tmp_path, report)), "lock"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    return done.returncode, done.stdout


def test_a_known_vulnerability_fails(tmp_path: Path) -> None:
    status, out = verdict(
        tmp_path,
        {
            "dependencies": [
                {"name": "jinja2", "version": "3.1.4", "vulns": [
                    {"id": "GHSA-q2x7-8rv6-6q7h", "fix_versions": ["3.1.5"]}
                ]},
                {"name": "alembic", "version": "1.20.1", "vulns": []},
            ]
        },
    )  # fmt: skip
    assert status == 1
    assert "VULNERABLE jinja2 3.1.4: GHSA-q2x7-8rv6-6q7h (fixed in 3.1.5)" in out


def test_a_clean_audit_passes(tmp_path: Path) -> None:
    status, out = verdict(
        tmp_path, {"dependencies": [{"name": "alembic", "version": "1.20.1", "vulns": []}]}
    )
    assert status == 0 and "no known vulnerability" in out


@pytest.mark.parametrize("looked_up", [0, 1])
def test_releases_that_could_not_be_looked_up_are_never_a_pass(
    tmp_path: Path, looked_up: int
) -> None:
    dependencies: list[dict[str, object]] = [
        {"name": "alembic", "skip_reason": "Dependency not found on PyPI"},
        {"name": "jinja2", "skip_reason": "Dependency not found on PyPI"},
    ]
    if looked_up:
        dependencies.append({"name": "orjson", "version": "3.13.0", "vulns": []})
    status, out = verdict(tmp_path, {"dependencies": dependencies})
    assert status == (1 if looked_up else 2)
    assert ("NOT DONE" in out) == (not looked_up)
    assert "no known vulnerability" not in out


def test_the_runtime_lock_has_no_test_tools_and_the_dev_lock_has_them() -> None:
    runtime = (ROOT / "requirements.lock").read_text()
    dev = (ROOT / "requirements-dev.lock").read_text()
    for tool in ("pytest==", "ruff==", "mypy==", "hypothesis==", "selenium==", "pip-audit=="):
        assert tool not in runtime
        assert tool in dev
    for runtime_package in ("sqlalchemy==", "fastapi==", "orjson=="):
        assert runtime_package in runtime.lower() and runtime_package in dev.lower()
