"""`pumptrail status` and the status file the service writes after every poll."""

from __future__ import annotations

import json
import os
import stat
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ingest import status as service_status
from ingest.service import Service, ServiceConfig
from pumptrail import cli
from tests.ingest.exports import rules


def config(data_dir: Path) -> ServiceConfig:
    return ServiceConfig(
        db_url=f"sqlite:///{data_dir / 'pumptrail.db'}",
        inbox=data_dir / "inbox",
        archive=data_dir / "archive",
        quarantine=data_dir / "quarantine",
        raw_store=data_dir / "raw",
        data_dir=data_dir,
    )


def status_of(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    code = cli.main(["status", "--json", "--data-dir", str(data_dir)])
    return code, json.loads(capsys.readouterr().out)


def utc(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_the_service_writes_a_private_status_file_each_poll(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    previous = os.umask(0o022)
    try:
        service = Service(config(data_dir), rules())
        service.prepare()
        (data_dir / "inbox" / "waiting.psl").write_bytes(b"not yet")
        service.poll_job()
    finally:
        os.umask(previous)
    path = data_dir / service_status.STATUS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for folder in ("", "inbox", "archive", "quarantine"):
        assert stat.S_IMODE((data_dir / folder).stat().st_mode) == 0o700, folder
    written = json.loads(path.read_text())
    assert written["version"] == service_status.STATUS_VERSION
    assert written["files_waiting"] == 1
    assert written["needing_attention"] == []
    assert written["database_check"] is None
    assert written["pid"] == os.getpid()
    assert (
        abs(
            datetime.strptime(written["last_poll_utc"], "%Y-%m-%dT%H:%M:%SZ")
            .replace(tzinfo=UTC)
            .timestamp()
            - time.time()
        )
        < 5
    )
    assert "waiting.psl" not in path.read_text()
    assert not [p for p in data_dir.iterdir() if p.name.startswith(".")]


def test_status_is_ok_after_a_fresh_poll_and_counts_the_inbox(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    service = Service(config(tmp_path), rules())
    service.prepare()
    service.poll_job()
    (tmp_path / "inbox" / "a.psl").write_bytes(b"x")
    (tmp_path / "inbox" / ".hidden").write_bytes(b"x")
    code, report = status_of(tmp_path, capsys)
    assert code == 0
    assert report["needs_attention"] is False and report["problems"] == []
    assert report["files_waiting"] == 1
    assert report["files_needing_attention"] == []
    assert report["last_audit_checkpoint"] is None
    assert report["database_check"] is None
    assert cli.main(["status", "--data-dir", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("status: ok\n")
    assert "files waiting in the inbox: 1" in text
    assert "database check: not run" in text


def test_status_needs_attention_without_a_service(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, report = status_of(tmp_path, capsys)
    assert code == 1
    assert report["needs_attention"] is True
    assert report["last_poll_utc"] is None
    assert "not polled" in report["problems"][0]


def write(data_dir: Path, **fields: Any) -> None:
    service_status.write_status(
        data_dir / service_status.STATUS_FILE,
        {"last_poll_utc": utc(time.time()), "needing_attention": [], **fields},
    )


def test_status_needs_attention_for_a_stale_poll_a_stuck_file_or_a_failed_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path, last_poll_utc=utc(time.time() - 3600))
    code, report = status_of(tmp_path, capsys)
    assert code == 1 and "last poll was" in report["problems"][0]

    stuck = {
        "key": "a57a12f060a2",
        "reason": "unreadable",
        "error": "EACCES",
        "attempts": 15,
        "since_utc": utc(time.time() - 700),
    }
    write(tmp_path, needing_attention=[stuck], files_retrying=1)
    code, report = status_of(tmp_path, capsys)
    assert code == 1
    assert report["files_needing_attention"] == [stuck]
    assert report["files_retrying"] == 1
    assert cli.main(["status", "--data-dir", str(tmp_path)]) == 1
    text = capsys.readouterr().out
    assert text.startswith("status: NEEDS ATTENTION\n")
    assert "a57a12f060a2: unreadable (EACCES)" in text

    write(tmp_path, database_check={"ok": False, "error": "disk I/O error"})
    code, report = status_of(tmp_path, capsys)
    assert code == 1 and report["problems"] == ["the last database check failed"]

    write(tmp_path, database_check={"ok": True})
    assert status_of(tmp_path, capsys)[0] == 0


def test_status_reports_the_last_audit_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path)
    lines = [
        {"head_id": 10, "at": "2026-03-01T00:00:00Z", "head_hash": "aa"},
        {"head_id": 42, "at": "2026-03-02T00:00:00Z", "head_hash": "bb"},
    ]
    (tmp_path / service_status.CHECKPOINTS_FILE).write_text(
        "".join(json.dumps(line) + "\n" for line in lines) + "\n"
    )
    code, report = status_of(tmp_path, capsys)
    assert code == 0
    assert report["last_audit_checkpoint"] == {"head_id": 42, "at": "2026-03-02T00:00:00Z"}


def test_a_status_file_that_cannot_be_written_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = Service(config(tmp_path), rules())
    service.prepare()

    def full(*_args: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("ingest.service.write_status", full)
    for _ in range(5):
        service.poll_job()
    assert sum("status_file_failed" in r.getMessage() for r in caplog.records) == 1
