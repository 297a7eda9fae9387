"""`pumptrail run` as a real process: drops are imported and moved, SIGTERM, outages, schema."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
from pathlib import Path

import pytest

from ingest.parallel import MAX_OFFERED_GROUPS
from ingest.pipeline import GROUP_FILES
from ingest.rawstore import sha256_hex
from ingest.service import Service, ServiceConfig
from parsers.errors import DecodeError
from parsers.registry import decode_bytes
from pumptrail import settings
from pumptrail.commands.run import service_config
from pumptrail.errors import CommandError
from tests.ingest.exports import rules
from tests.service.support import (
    REPO,
    RunningService,
    corpus,
    drop,
    error_report,
    files_under,
    pumptrail,
    service_env,
    session_ids,
    sqlite_rows,
    wait_for,
)


def test_dropped_exports_are_imported_and_archived_and_the_rest_quarantined(
    tmp_path: Path,
) -> None:
    drops = corpus(1, pumps=2, visits=3, singles=2)
    service = RunningService(tmp_path, tmp_path / "service.log")
    try:
        for item in drops:
            drop(tmp_path / "inbox", item)
        assert wait_for(lambda: not files_under(tmp_path / "inbox"), timeout=60), service.log_text()
    finally:
        status = service.terminate()
    assert status == 0, service.log_text()

    archived = {p.name: p.read_bytes() for p in files_under(tmp_path / "archive")}
    quarantined = {p.name: p.read_bytes() for p in files_under(tmp_path / "quarantine")}
    assert archived == {d.name: d.data for d in drops if d.session_id is not None}
    assert quarantined == {d.name: d.data for d in drops if d.session_id is None}
    month_folders = {
        p.parent.relative_to(tmp_path / "archive") for p in files_under(tmp_path / "archive")
    }
    assert len(month_folders) == 1
    assert re.fullmatch(r"\d{4}/\d{2}", next(iter(month_folders)).as_posix())

    not_export = error_report(tmp_path / "quarantine" / "notes.txt")
    assert not_export["code"] == "unknown_format"
    assert not_export["offset"] == 0
    broken_data = quarantined["broken.psl"]
    try:
        decode_bytes(broken_data, source="broken.psl")
    except DecodeError as exc:
        expected = exc
    broken = error_report(tmp_path / "quarantine" / "broken.psl")
    assert broken["code"] == expected.code
    assert expected.position is not None
    assert broken["offset"] == expected.position.value
    assert broken["sha256"] == sha256_hex(broken_data)

    db = tmp_path / "pumptrail.db"
    stored = {row[0] for row in sqlite_rows(db, "SELECT session_id FROM sessions")}
    assert stored == session_ids(drops)
    assert sqlite_rows(db, "SELECT count(*) FROM evidence") == [(len(stored),)]
    # The evidence is queryable by the other commands.
    some_id = sorted(stored)[0]
    shown = subprocess.run(
        pumptrail("evidence", "--json", "--session", some_id),
        cwd=REPO,
        env=service_env(tmp_path),
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(shown.stdout)[0]["session_id"] == some_id
    assert len(service.events("file_archived")) == len(archived)
    assert len(service.events("file_quarantined")) == 2
    assert service.events("service_stopped")


@pytest.mark.parametrize("import_jobs", [1, 2])
def test_sigterm_while_importing_finishes_the_file_in_hand_and_exits_0(
    tmp_path: Path, import_jobs: int
) -> None:
    """File by file (`import_jobs=1`) and as a backfill with workers: a backlog of more
    groups than a backfill offers at once, so a stop after the first group still leaves
    files behind."""
    drops = corpus(2, pumps=10, visits=8, singles=140)
    assert len(drops) > (MAX_OFFERED_GROUPS + 1) * GROUP_FILES
    inbox = tmp_path / "inbox"
    for item in drops:  # all present before the start: one long poll
        drop(inbox, item)
    service = RunningService(tmp_path, tmp_path / "service.log", import_jobs=import_jobs)
    try:
        assert wait_for(lambda: bool(files_under(tmp_path / "archive")), timeout=60, interval=0.01)
    finally:
        status = service.terminate()
    assert status == 0, service.log_text()
    left = files_under(inbox)
    moved = files_under(tmp_path / "archive") + files_under(tmp_path / "quarantine")
    assert left, "SIGTERM came after the last file: the test proves nothing"
    assert len(left) + len(moved) == len(drops)
    if import_jobs > 1:
        # The first group was moved when the stop came; at most the groups prepared
        # beside it were offered too, and finished.
        assert service.events("backfill_started")
        assert GROUP_FILES <= len(moved) <= MAX_OFFERED_GROUPS * GROUP_FILES
    else:
        assert not service.events("backfill_started")
    # Finished means imported *and* moved: every stored file left the inbox, and
    # nothing left the inbox without being stored.
    stored = {
        row[0] for row in sqlite_rows(tmp_path / "pumptrail.db", "SELECT sha256 FROM raw_files")
    }
    # (A file left behind may still be a byte-identical copy of one moved.)
    assert {sha256_hex(p.read_bytes()) for p in moved} == stored
    assert service.events("service_stopping")[0].count("signal=SIGTERM") == 1
    assert "status=0" in service.events("service_stopped")[0]


def test_an_unreachable_database_leaves_the_files_then_recovers(tmp_path: Path) -> None:
    blocker = tmp_path / "dbdir"
    blocker.write_text("a file where the database folder should be")
    drops = corpus(3, pumps=1, visits=3, singles=0)[:3]
    service = RunningService(
        tmp_path,
        tmp_path / "service.log",
        db=f"sqlite:///{blocker / 'pumptrail.db'}",
        retry_max_seconds=0.4,
        outage_log_seconds=1.0,
    )
    try:
        for item in drops:
            drop(tmp_path / "inbox", item)
        assert wait_for(lambda: len(service.events("database_unavailable")) >= 4, timeout=30)
        assert len(files_under(tmp_path / "inbox")) == len(drops)
        lines = service.events("database_unavailable")
        attempts = [int(re.search(r"attempts=(\d+)", line).group(1)) for line in lines]  # type: ignore[union-attr]
        # Logged about once a second while retried about every 0.4 s.
        assert attempts[-1] >= 2 * len(lines)
        assert "files_waiting=" in lines[0]

        blocker.unlink()
        blocker.mkdir()
        assert wait_for(lambda: not files_under(tmp_path / "inbox"), timeout=30), service.log_text()
    finally:
        status = service.terminate()
    assert status == 0
    assert len(files_under(tmp_path / "archive")) == len(drops)
    assert service.events("database_available")
    # The refill report failed at start, was retried quietly, and ran once it could.
    assert len(service.events("refills_due_failed")) == 1
    assert service.events("refills_due")
    rows = sqlite_rows(blocker / "pumptrail.db", "SELECT count(*) FROM sessions")
    assert rows == [(len(session_ids(drops)),)]


def test_a_database_at_an_unknown_schema_revision_stops_the_service(tmp_path: Path) -> None:
    env = service_env(tmp_path)
    subprocess.run(pumptrail("db", "upgrade"), cwd=REPO, env=env, check=True, capture_output=True)
    connection = sqlite3.connect(tmp_path / "pumptrail.db")
    connection.execute("UPDATE alembic_version SET version_num = '9999_future'")
    connection.commit()
    connection.close()
    done = subprocess.run(
        pumptrail("run"),
        check=False,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "event=service_failed" in done.stderr
    assert "newer than this pumptrail knows" in done.stderr


def test_an_inbox_holding_the_database_is_refused(tmp_path: Path) -> None:
    done = subprocess.run(
        pumptrail("run", "--inbox", str(tmp_path)),
        check=False,
        cwd=REPO,
        env=service_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "event=service_failed" in done.stderr
    assert "is inside the inbox" in done.stderr
    assert not (tmp_path / "pumptrail.db").exists()  # refused before anything was touched


def test_import_jobs_reaches_the_service_and_is_bounded(tmp_path: Path) -> None:
    def config(**environ: str) -> ServiceConfig:
        resolved = settings.load(environ={"PUMPTRAIL_DATA_DIR": str(tmp_path), **environ})
        return service_config(resolved)

    assert config().import_jobs == 0  # one worker per core
    assert config(PUMPTRAIL_IMPORT_JOBS="3").import_jobs == 3
    assert Service(config(PUMPTRAIL_IMPORT_JOBS="3"), rules()).watcher.import_jobs == 3
    with pytest.raises(settings.SettingsError, match="must not be negative"):
        config(PUMPTRAIL_IMPORT_JOBS="-1")
    with pytest.raises(CommandError, match="import_jobs: expected 0 to 64, found 65"):
        config(PUMPTRAIL_IMPORT_JOBS="65")
    done = subprocess.run(
        pumptrail("run", "--import-jobs", "65"),
        check=False,
        cwd=REPO,
        env=service_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "import_jobs: expected 0 to 64, found 65" in done.stderr
    assert not (tmp_path / "pumptrail.db").exists()
