"""The watcher fails safe: slow writers, files it cannot read or move, links, private modes."""

from __future__ import annotations

import errno
import json
import logging
import os
import random
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from db.models import sessions
from fixtures.binary_writer import encode_binary
from fixtures.csv_writer import encode_csv
from fixtures.scenarios import realistic_scenario
from ingest import quarantine
from ingest.rawstore import sha256_hex
from ingest.watch import InboxWatcher, name_hash
from parsers.errors import DecodeError
from pumptrail.settings import SETTINGS_BY_NAME
from tests.service.test_watch import Clock, Env, files

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "fixtures"
POLL = float(SETTINGS_BY_NAME["poll_seconds"].default)
SETTLE = float(SETTINGS_BY_NAME["settle_seconds"].default)
GRACE = float(SETTINGS_BY_NAME["truncated_grace_seconds"].default)
UNREADABLE_GRACE = float(SETTINGS_BY_NAME["unreadable_grace_seconds"].default)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    from tests.ingest.exports import importer as open_importer

    with open_importer(f"sqlite:///{tmp_path / 'db' / 'pumptrail.db'}", tmp_path / "raw") as imp:
        yield Env(tmp_path / "inbox", tmp_path / "archive", tmp_path / "quarantine", Clock(), imp)


def default_watcher(env: Env, **options: Any) -> InboxWatcher:
    """A watcher with the default settings of `pumptrail run`."""
    settings: dict[str, Any] = {
        "settle_seconds": SETTLE,
        "retry_initial_seconds": POLL,
        "retry_max_seconds": float(SETTINGS_BY_NAME["retry_max_seconds"].default),
        "outage_log_seconds": float(SETTINGS_BY_NAME["outage_log_seconds"].default),
        "truncated_grace_seconds": GRACE,
        "unreadable_grace_seconds": UNREADABLE_GRACE,
    }
    settings.update(options)
    return env.watcher(**settings)


def export(seed: int) -> bytes:
    return encode_binary(realistic_scenario(random.Random(seed)))


def poll_for(watcher: InboxWatcher, clock: Clock, seconds: float) -> list[Any]:
    """Poll every `POLL` seconds for `seconds` of the fake clock."""
    handled = []
    for _ in range(round(seconds / POLL)):
        handled += watcher.poll()
        clock.advance(POLL)
    return handled


def write_at(path: Path, data: bytes, clock: Clock) -> None:
    """Write `data` at the end of `path` now (by the fake clock), as a copy in progress."""
    with path.open("ab") as handle:
        handle.write(data)
    os.utime(path, (clock.now, clock.now))


def log_text(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------------------
# Slow writers


def test_a_writer_pausing_5s_has_its_file_imported_whole_with_the_default_settings(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ingest.watch")
    data = export(1)
    watcher = default_watcher(env)
    env.inbox.mkdir()
    path = env.inbox / "slow copy of Jane Doe.psl"
    path.touch()
    write_at(path, data[: len(data) // 2], env.clock)
    handled = poll_for(watcher, env.clock, 5.0)  # the network share stalls for 5 s
    assert [h.disposition for h in handled] == ["incomplete"]  # read half-written: held
    assert files(env.quarantine) == []
    write_at(path, data[len(data) // 2 :], env.clock)
    handled = poll_for(watcher, env.clock, 10.0)
    assert [h.disposition for h in handled] == ["archived"]
    assert files(env.archive) == ["2026/03/slow copy of Jane Doe.psl"]
    assert env.count(sessions) == 1
    assert files(env.quarantine) == files(env.inbox) == []
    assert "Jane" not in log_text(caplog)
    assert "file_incomplete" in log_text(caplog)


def test_a_file_cut_short_is_quarantined_once_unchanged_for_the_grace(env: Env) -> None:
    data = export(2)
    env.put("half.psl", data[: len(data) // 2], age=0)
    watcher = default_watcher(env)
    handled = poll_for(watcher, env.clock, GRACE - 10)
    assert {h.disposition for h in handled} == {"incomplete"}
    assert len(handled) == 1  # decoded once, then left alone until the grace is over
    assert files(env.inbox) == ["half.psl"]
    handled = poll_for(watcher, env.clock, 20)
    assert [h.disposition for h in handled] == ["quarantined"]
    record = json.loads((env.quarantine / "half.psl.error.json").read_text())
    assert record["code"] in quarantine.TRUNCATION_CODES


def test_a_csv_cut_inside_its_last_row_waits_too(env: Env) -> None:
    data = encode_csv(realistic_scenario(random.Random(3)))
    lines = data.splitlines(keepends=True)
    cut = b"".join(lines[:-3]) + lines[-3][:25]  # a table row cut after its second field
    env.put("visit.csv", cut, age=0)
    handled = poll_for(default_watcher(env), env.clock, 10.0)
    assert [h.disposition for h in handled] == ["incomplete"]
    assert handled[0].result is not None and handled[0].result.error is not None
    assert handled[0].result.error["code"] in {"field_count", "missing_end"}


def test_a_broken_row_that_is_not_the_last_line_is_quarantined_at_once(env: Env) -> None:
    data = encode_csv(realistic_scenario(random.Random(3)))
    lines = data.splitlines(keepends=True)
    lines[20] = lines[20].replace(b",", b";", 3)  # too few fields, in the middle
    env.put("visit.csv", b"".join(lines), age=0)
    handled = poll_for(default_watcher(env), env.clock, 10.0)
    assert [h.disposition for h in handled] == ["quarantined"]


def test_a_quarantined_file_its_writer_finishes_is_requeued_and_imported(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ingest.watch")
    data = export(4)
    watcher = default_watcher(env, truncated_grace_seconds=5.0)
    env.inbox.mkdir()
    path = env.inbox / "a.psl"
    with path.open("wb") as writer:  # the copy keeps its handle across the move
        writer.write(data[:200])
        writer.flush()
        os.utime(path, (env.clock.now, env.clock.now))
        handled = poll_for(watcher, env.clock, 20.0)
        assert [h.disposition for h in handled] == ["incomplete", "quarantined"]
        assert files(env.quarantine) == ["a.psl", "a.psl.error.json"]
        writer.write(data[200:])
    handled = poll_for(watcher, env.clock, 10.0)
    assert [h.disposition for h in handled] == ["archived"]
    assert files(env.quarantine) == []
    assert files(env.archive) == ["2026/03/a.psl"]
    assert (env.archive / "2026/03/a.psl").read_bytes() == data
    assert "quarantined_file_changed_requeued" in log_text(caplog)


def test_an_unchanged_quarantined_file_stays(env: Env) -> None:
    env.put("junk.txt", b"not an export")
    watcher = default_watcher(env)
    poll_for(watcher, env.clock, 10.0)
    poll_for(watcher, env.clock, 10.0)
    assert files(env.quarantine) == ["junk.txt", "junk.txt.error.json"]
    assert files(env.inbox) == []


# ---------------------------------------------------------------------------
# The error record holds nothing from the file


def test_the_error_record_and_the_log_hold_no_value_from_the_file(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    data = (FIXTURES / "psl-csv" / "alarm_threshold_only.csv").read_bytes()
    assert b'Patient Name,"Fictive, Jamie"\r\n' in data
    broken = data.replace(
        b'Patient Name,"Fictive, Jamie"\r\n', b'Patient Name,"Fictive, Jamie",x\r\n'
    )
    env.put("visit.csv", broken)
    handled = poll_for(default_watcher(env), env.clock, 6.0)
    assert [h.disposition for h in handled] == ["quarantined"]
    text = (env.quarantine / "visit.csv.error.json").read_text()
    record = json.loads(text)
    assert record["code"] == "field_count"
    assert record["line"] == 15
    assert "Jamie" not in text and "Fictive" not in text
    assert "Jamie" not in log_text(caplog)
    # The decoder's own message does quote it: that is what the record must leave out.
    assert handled[0].result is not None and "Jamie" in handled[0].result.detail


def test_a_binary_error_record_keeps_the_kinds_of_the_expected_and_found_values(
    env: Env,
) -> None:
    data = bytearray(export(10))
    data[len(data) // 2] ^= 0xFF
    env.put("flipped.psl", bytes(data))
    (handled,) = poll_for(default_watcher(env), env.clock, 6.0)
    assert handled.disposition == "quarantined"
    assert handled.result is not None
    error = handled.result.exception
    assert isinstance(error, DecodeError) and error.found is not None
    record = json.loads((env.quarantine / "flipped.psl.error.json").read_text())
    assert record["expected_kind"] == quarantine.value_kind(error.expected)
    assert record["found_kind"] == quarantine.value_kind(error.found) is not None
    assert f"found {record['found_kind']}" in record["message"]
    assert str(error.found) not in record["message"]


def test_value_kinds_name_the_kind_not_the_value() -> None:
    assert quarantine.value_kind(None) is None
    assert quarantine.value_kind(7) == "integer"
    assert quarantine.value_kind(True) == "boolean"
    assert quarantine.value_kind("0x1A") == "hex"
    assert quarantine.value_kind("'Fictive, Jamie'") == "quoted text"
    assert quarantine.value_kind("Jamie") == "text"


# ---------------------------------------------------------------------------
# Files the service cannot read or move


def test_a_quarantine_that_cannot_be_written_retries_with_back_off_and_logs_rarely(
    env: Env, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO, logger="ingest.watch")
    real_write = quarantine.write_json
    full = True

    def write_json(target: Path, record: Any, *, durable: bool = True) -> None:
        if full:
            raise OSError(errno.ENOSPC, "No space left on device", str(target))
        real_write(target, record, durable=durable)

    monkeypatch.setattr(quarantine, "write_json", write_json)
    env.put("Jane Doe notes.txt", b"not an export")
    watcher = default_watcher(env)
    handled = poll_for(watcher, env.clock, 20 * 60.0)  # twenty minutes
    attempts = [h for h in handled if h.disposition == "trouble"]
    assert 20 <= len(attempts) <= 30  # back-off up to retry_max_seconds, not every poll
    assert files(env.inbox) == ["Jane Doe notes.txt"]
    assert files(env.quarantine) == []
    lines = [r for r in caplog.records if "file_retrying" in r.getMessage()]
    attention = [r for r in caplog.records if "file_needs_attention" in r.getMessage()]
    assert 15 <= len(lines) + len(attention) <= 22  # about once a minute
    assert all(r.levelno == logging.ERROR for r in attention) and attention
    assert "Jane" not in log_text(caplog) and "notes" not in log_text(caplog)
    assert f"key={sha256_hex(b'not an export')[:12]}" in lines[0].getMessage()
    assert "error=ENOSPC" in lines[0].getMessage()
    (item,) = watcher.status()["needing_attention"]
    assert item["reason"] == "cannot_quarantine" and item["error"] == "ENOSPC"

    full = False  # space freed: the next attempt quarantines it, and it is well again
    handled = poll_for(watcher, env.clock, 70.0)
    assert [h.disposition for h in handled] == ["quarantined"]
    assert files(env.quarantine) == ["Jane Doe notes.txt", "Jane Doe notes.txt.error.json"]
    assert watcher.status()["needing_attention"] == []
    assert "file_recovered" in log_text(caplog)


@pytest.fixture
def tiny_quarantine() -> Iterator[Path]:
    """A 64 KiB tmpfs (root only: skipped where mounting is not allowed)."""
    folder = Path(tempfile.mkdtemp(prefix="pumptrail-full-"))
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(folder)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        folder.rmdir()
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)
        folder.rmdir()


def test_a_full_quarantine_disk_leaves_the_file_in_the_inbox(
    env: Env, tiny_quarantine: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ingest.watch")
    filler = tiny_quarantine / ".filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    env.put("junk.txt", b"not an export" * 1000)
    watcher = default_watcher(env, quarantine=tiny_quarantine / "q")
    handled = poll_for(watcher, env.clock, 60.0)
    assert handled and {h.disposition for h in handled} == {"trouble"}
    assert files(env.inbox) == ["junk.txt"]
    assert "error=ENOSPC" in log_text(caplog)
    assert not [p for p in (tiny_quarantine / "q").iterdir() if p.name.endswith(".tmp")]
    filler.unlink()
    handled = poll_for(watcher, env.clock, 70.0)
    assert [h.disposition for h in handled] == ["quarantined"]
    assert files(env.inbox) == []


UNPRIVILEGED = textwrap.dedent(
    """
    import json, logging, sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    from ingest.logging_setup import configure_logging
    from ingest.watch import InboxWatcher
    from tests.ingest.exports import importer

    root = Path(sys.argv[2])
    configure_logging("INFO")
    now = [1_900_000_000.0]
    clock = lambda: now[0]
    with importer(f"sqlite:///{root / 'db' / 'p.db'}", root / "raw") as imp:
        watcher = InboxWatcher(
            inbox=root / "inbox", archive=root / "archive", quarantine=root / "quarantine",
            connect=lambda: imp, settle_seconds=2.0, retry_initial_seconds=2.0,
            retry_max_seconds=60.0, outage_log_seconds=60.0, clock=clock, monotonic=clock,
            durable=False,
        )
        dispositions = []
        for _ in range(int(sys.argv[3])):
            dispositions += [h.disposition for h in watcher.poll()]
            now[0] += 2.0
        print(json.dumps({"dispositions": dispositions, "status": watcher.status()}))
    """
)


def test_another_owners_0600_file_is_retried_not_quarantined_by_an_unprivileged_service(
    tmp_path: Path,
) -> None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run the service as another user")
    root = Path(tempfile.mkdtemp(prefix="pumptrail-owner-"))
    try:
        os.chmod(root, 0o755)
        for folder in ("inbox", "archive", "quarantine", "db", "raw"):
            (root / folder).mkdir()
            os.chown(root / folder, 65534, 65534)
        secret = root / "inbox" / "Jane Doe.psl"
        secret.write_bytes(export(5))
        os.chmod(secret, 0o600)  # root's file: the service's user may not read it
        os.utime(secret, (1_900_000_000 - 60, 1_900_000_000 - 60))
        polls = round(UNREADABLE_GRACE / 2.0) + 30
        run = subprocess.run(
            [
                "setpriv",
                "--reuid=nobody",
                "--regid=nogroup",
                "--clear-groups",
                sys.executable,
                "-c",
                UNPRIVILEGED,
                str(REPO),
                str(root),
                str(polls),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert run.returncode == 0, run.stderr
        result = json.loads(run.stdout)
        assert set(result["dispositions"]) == {"trouble"}
        assert len(result["dispositions"]) < polls / 3  # back-off, not every poll
        assert secret.exists()
        assert list((root / "quarantine").iterdir()) == []
        (item,) = result["status"]["needing_attention"]
        assert item == {
            **item,
            "key": name_hash("Jane Doe.psl"),
            "reason": "unreadable",
            "error": "EACCES",
        }
        logged = [line for line in run.stderr.splitlines() if "logger=ingest." in line]
        assert 8 <= len(logged) <= 14  # about once a minute over some eleven minutes
        assert not [line for line in logged if "Jane" in line or str(root) in line]
        assert "level=ERROR" in logged[-1] and "event=file_needs_attention" in logged[-1]
    finally:
        shutil.rmtree(root)


# ---------------------------------------------------------------------------
# Modes


def test_moved_files_records_and_folders_are_private_whatever_the_umask(env: Env) -> None:
    previous = os.umask(0o022)
    try:
        env.put("a.psl", export(6))
        env.put("junk.txt", b"not an export")
        os.chmod(env.inbox / "a.psl", 0o644)
        poll_for(default_watcher(env), env.clock, 6.0)
    finally:
        os.umask(previous)

    def mode(path: Path) -> int:
        return stat.S_IMODE(path.stat().st_mode)

    assert mode(env.archive / "2026" / "03" / "a.psl") == 0o600
    assert mode(env.quarantine / "junk.txt") == 0o600
    assert mode(env.quarantine / "junk.txt.error.json") == 0o600
    for folder in (env.archive, env.archive / "2026", env.archive / "2026" / "03", env.quarantine):
        assert mode(folder) == 0o700, folder


def test_the_status_names_no_file_and_counts_what_waits(env: Env) -> None:
    env.put("Jane.psl", export(9), age=0)
    watcher = default_watcher(env)
    watcher.poll()
    status = watcher.status()
    assert status["files_waiting"] == 1
    assert status["needing_attention"] == []
    assert status["last_poll_utc"] is not None
    assert "Jane" not in json.dumps(status)
