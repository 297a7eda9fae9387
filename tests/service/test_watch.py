"""The inbox watcher with a fake clock: readiness, archive, quarantine, crashes, outages."""

from __future__ import annotations

import itertools
import json
import logging
import os
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError, OperationalError

from db.models import raw_files, sessions
from fixtures.binary_writer import encode_binary
from fixtures.csv_writer import encode_csv
from fixtures.scenarios import realistic_scenario
from ingest.pipeline import Importer, ImportResult
from ingest.rawstore import sha256_hex
from ingest.watch import InboxWatcher, error_text, is_candidate, is_transient
from parsers.errors import DecodeError
from parsers.registry import PARSER_VERSION, decode_bytes
from tests.ingest.exports import importer as open_importer

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
# 2026-03-15 12:00 local time: archive folders are named after the local month.
T0 = datetime(2026, 3, 15, 12, 0, 0).timestamp()
SETTLE = 2.0
# The default truncated_grace_seconds: a file cut short this old is quarantined.
GRACE = 120.0


@dataclass
class Clock:
    """Wall clock and monotonic clock of the watcher, moved by the test."""

    now: float = T0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Env:
    inbox: Path
    archive: Path
    quarantine: Path
    clock: Clock
    importer: Importer
    connect_calls: int = 0
    connect_error: Exception | None = None
    stop: bool = False
    made: list[InboxWatcher] = field(default_factory=list)

    def connect(self) -> Importer:
        self.connect_calls += 1
        if self.connect_error is not None:
            raise self.connect_error
        return self.importer

    def watcher(self, **options: Any) -> InboxWatcher:
        settings: dict[str, Any] = {
            "inbox": self.inbox,
            "archive": self.archive,
            "quarantine": self.quarantine,
            "connect": self.connect,
            "settle_seconds": SETTLE,
            "retry_initial_seconds": 2.0,
            "retry_max_seconds": 60.0,
            "outage_log_seconds": 60.0,
            "stop_requested": lambda: self.stop,
            "clock": self.clock,
            "monotonic": self.clock,
            "durable": False,
        }
        settings.update(options)
        return InboxWatcher(**settings)

    def put(self, name: str, data: bytes, *, age: float = 10.0) -> Path:
        """A file written `age` seconds ago (by the fake clock)."""
        path = self.inbox / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, (self.clock.now - age, self.clock.now - age))
        return path

    def count(self, table: Any) -> int:
        with self.importer.engine.connect() as connection:
            return int(connection.execute(select(func.count()).select_from(table)).scalar_one())


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    with open_importer(f"sqlite:///{tmp_path / 'db' / 'pumptrail.db'}", tmp_path / "raw") as imp:
        yield Env(tmp_path / "inbox", tmp_path / "archive", tmp_path / "quarantine", Clock(), imp)


def export(seed: int) -> bytes:
    return encode_binary(realistic_scenario(random.Random(seed)))


def poll_twice(watcher: InboxWatcher, clock: Clock, gap: float = 2.0) -> list[Any]:
    """A first poll observes; the next one, `gap` seconds later, may act."""
    first = watcher.poll()
    clock.advance(gap)
    return first + watcher.poll()


def files(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


# ---------------------------------------------------------------------------
# Readiness


def test_a_file_is_ready_only_at_the_second_poll_with_the_same_size_and_mtime(env: Env) -> None:
    watcher = env.watcher()
    env.put("a.psl", export(1))
    assert watcher.scan() == []  # first sight: never ready
    env.clock.advance(2)
    assert watcher.scan() == [env.inbox / "a.psl"]


def test_a_file_still_growing_is_not_ready(env: Env) -> None:
    watcher = env.watcher()
    path = env.put("a.psl", export(1)[:100])
    assert watcher.scan() == []
    env.clock.advance(2)
    with path.open("ab") as handle:  # the writer goes on
        handle.write(b"more")
    os.utime(path, (env.clock.now - 10, env.clock.now - 10))  # even with an old mtime
    assert watcher.scan() == []
    env.clock.advance(2)
    assert watcher.scan() == [path]


def test_a_touched_file_is_observed_again(env: Env) -> None:
    watcher = env.watcher()
    path = env.put("a.psl", export(1))
    watcher.scan()
    env.clock.advance(2)
    os.utime(path, (env.clock.now - 5, env.clock.now - 5))  # same size, new mtime
    assert watcher.scan() == []
    env.clock.advance(2)
    assert watcher.scan() == [path]


def test_a_young_file_waits_for_the_settle_time(env: Env) -> None:
    watcher = env.watcher()
    path = env.put("a.psl", export(1), age=0)
    watcher.scan()
    env.clock.advance(1)
    assert watcher.scan() == []  # unchanged, but only 1 s old
    env.clock.advance(1)
    assert watcher.scan() == [path]


def test_a_file_dated_in_the_future_is_ready_once_seen_unchanged_for_the_settle_time(
    env: Env,
) -> None:
    watcher = env.watcher()
    path = env.put("a.psl", export(1), age=-3600)  # a share with a fast clock
    watcher.scan()
    env.clock.advance(1)
    assert watcher.scan() == []
    env.clock.advance(1)
    assert watcher.scan() == [path]


@pytest.mark.parametrize(
    "name",
    [".receiving-1234.part", "export.psl.part", ".hidden.psl", "export.tmp", "export.psl~"],
)
def test_hidden_and_temporary_names_are_never_picked_up(env: Env, name: str) -> None:
    assert not is_candidate(name)
    watcher = env.watcher()
    env.put(name, export(1))
    env.put(".staging/inside.psl", export(2))
    assert poll_twice(watcher, env.clock) == []
    assert (env.inbox / name).exists()
    assert files(env.archive) == []


def test_files_in_subfolders_are_imported_in_sorted_order(env: Env) -> None:
    watcher = env.watcher()
    env.put("b.psl", export(2))
    env.put("a/z.psl", export(1))
    handled = poll_twice(watcher, env.clock)
    assert [h.name for h in handled] == ["a/z.psl", "b.psl"]
    assert files(env.archive) == ["2026/03/b.psl", "2026/03/z.psl"]


def test_symbolic_links_are_not_followed_but_quarantined_with_a_reason(
    env: Env, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ingest.watch")
    outside = tmp_path / "Jane Doe.psl"
    outside.write_bytes(export(1))
    env.inbox.mkdir()
    (env.inbox / "link.psl").symlink_to(outside)
    (env.inbox / "folder-link").symlink_to(tmp_path, target_is_directory=True)
    handled = poll_twice(env.watcher(), env.clock)
    assert sorted((h.name, h.disposition) for h in handled) == [
        ("folder-link", "quarantined"),
        ("link.psl", "quarantined"),
    ]
    assert outside.read_bytes() == export(1)  # never followed, never moved
    assert env.count(raw_files) == 0
    assert (env.quarantine / "link.psl").is_symlink()
    assert files(env.inbox) == []
    report = json.loads((env.quarantine / "link.psl.error.json").read_text())
    assert report["code"] == "symlink"
    assert "symbolic link" in report["message"]
    assert "Jane" not in json.dumps(report)  # where it points is not recorded
    assert all("link.psl" not in r.getMessage() for r in caplog.records)


def test_output_folders_inside_the_inbox_are_not_scanned(env: Env) -> None:
    watcher = env.watcher(archive=env.inbox / "done", quarantine=env.inbox / "refused")
    env.put("a.psl", export(1))
    env.put("junk.txt", b"not an export")
    assert len(poll_twice(watcher, env.clock)) == 2
    env.clock.advance(2)
    assert poll_twice(watcher, env.clock) == []
    assert env.count(raw_files) == 2


# ---------------------------------------------------------------------------
# Archive


def test_an_imported_file_is_archived_by_month_and_queryable(env: Env) -> None:
    data = export(1)
    env.put("a.psl", data)
    (handled,) = poll_twice(env.watcher(), env.clock)
    assert handled.disposition == "archived"
    assert handled.result is not None and handled.result.outcome == "imported"
    assert handled.destination == env.archive / "2026" / "03" / "a.psl"
    assert handled.destination.read_bytes() == data
    assert files(env.inbox) == []
    assert env.count(sessions) == 1


def test_a_duplicate_is_archived_without_a_second_session(env: Env) -> None:
    scenario = realistic_scenario(random.Random(3))
    env.put("a.psl", encode_binary(scenario))
    env.put("a.csv", encode_csv(scenario))
    env.put("b.psl", encode_binary(scenario))
    handled = poll_twice(env.watcher(), env.clock)
    assert [h.result.outcome for h in handled if h.result] == ["imported", "duplicate", "duplicate"]
    assert [h.disposition for h in handled] == ["archived"] * 3
    assert env.count(sessions) == 1


def test_a_name_clash_in_the_archive_gets_the_hash_and_overwrites_nothing(env: Env) -> None:
    watcher = env.watcher()
    first, second = export(1), export(2)
    env.put("a.psl", first)
    poll_twice(watcher, env.clock)
    env.put("a.psl", second)
    (handled,) = poll_twice(watcher, env.clock)
    month = env.archive / "2026" / "03"
    assert (month / "a.psl").read_bytes() == first
    clash = month / f"a.{sha256_hex(second)[:12]}.psl"
    assert handled.destination == clash
    assert clash.read_bytes() == second
    # The same bytes under the same name a third time: a numbered name, still no overwrite.
    env.put("a.psl", second)
    (third,) = poll_twice(watcher, env.clock)
    assert third.destination == month / f"a.{sha256_hex(second)[:12]}.2.psl"
    assert len(files(month)) == 3


def stored_raw_names(env: Env) -> list[tuple[str, str, str | None]]:
    """(name, status, session ID) of every `raw_files` row, in arrival order."""
    with env.importer.engine.connect() as connection:
        rows = connection.execute(
            select(raw_files.c.name, raw_files.c.status, sessions.c.session_id)
            .select_from(raw_files.outerjoin(sessions, sessions.c.id == raw_files.c.session_pk))
            .order_by(raw_files.c.id)
        )
        return [tuple(row) for row in rows]  # type: ignore[misc]


def test_two_exports_dropped_one_after_the_other_under_one_name_are_both_imported(
    env: Env,
) -> None:
    # Another visit's export saved under the name of the last one: other bytes, other
    # session, so it is imported, not taken for the file already archived.
    first = realistic_scenario(random.Random(11))
    second = realistic_scenario(random.Random(12))
    watcher = env.watcher()
    env.put("visit.psl", encode_binary(first))
    (one,) = poll_twice(watcher, env.clock)
    env.put("visit.psl", encode_csv(second))
    (two,) = poll_twice(watcher, env.clock)
    assert [h.result.outcome for h in (one, two) if h.result] == ["imported", "imported"]
    assert [h.result.session_id for h in (one, two) if h.result] == [
        first.header.session_id,
        second.header.session_id,
    ]
    assert [h.disposition for h in (one, two)] == ["archived", "archived"]
    assert env.count(sessions) == 2
    assert stored_raw_names(env) == [
        ("visit.psl", "imported", first.header.session_id),
        ("visit.psl", "imported", second.header.session_id),
    ]
    assert all(env.importer.store.contains(h.result.sha256 or "") for h in (one, two) if h.result)
    assert files(env.inbox) == []


def test_two_exports_with_one_name_in_two_inbox_folders_are_both_imported(env: Env) -> None:
    first = realistic_scenario(random.Random(13))
    second = realistic_scenario(random.Random(14))
    env.put("ward-a/visit.psl", encode_binary(first))
    env.put("ward-b/visit.psl", encode_binary(second))
    handled = poll_twice(env.watcher(), env.clock)
    assert [(h.name, h.result.outcome) for h in handled if h.result] == [
        ("ward-a/visit.psl", "imported"),
        ("ward-b/visit.psl", "imported"),
    ]
    assert env.count(sessions) == 2
    assert stored_raw_names(env) == [
        ("ward-a/visit.psl", "imported", first.header.session_id),
        ("ward-b/visit.psl", "imported", second.header.session_id),
    ]


def test_a_crash_after_the_commit_before_the_move_reimports_as_a_duplicate(env: Env) -> None:
    data = export(1)
    path = env.put("a.psl", data)
    # The previous process committed this file, then died before moving it.
    assert env.importer.import_path(path, name="a.psl").outcome == "imported"
    (handled,) = poll_twice(env.watcher(), env.clock)
    assert handled.result is not None and handled.result.outcome == "duplicate"
    assert handled.disposition == "archived"
    assert files(env.inbox) == []
    assert files(env.archive) == ["2026/03/a.psl"]
    assert env.count(sessions) == 1
    assert env.count(raw_files) == 1


def test_a_crash_between_link_and_unlink_is_finished_without_a_second_copy(env: Env) -> None:
    data = export(1)
    path = env.put("a.psl", data)
    env.importer.import_path(path, name="a.psl")
    month = env.archive / "2026" / "03"
    month.mkdir(parents=True)
    os.link(path, month / "a.psl")  # the move got halfway
    (handled,) = poll_twice(env.watcher(), env.clock)
    assert handled.destination == month / "a.psl"
    assert files(env.archive) == ["2026/03/a.psl"]
    assert files(env.inbox) == []


# ---------------------------------------------------------------------------
# Quarantine


def expected_error(data: bytes, name: str) -> DecodeError:
    with pytest.raises(DecodeError) as caught:
        decode_bytes(data, source=name)
    return caught.value


def test_a_broken_binary_export_is_quarantined_with_its_error(env: Env) -> None:
    data = export(1)
    broken = data[: len(data) // 2]
    env.put("half.psl", broken, age=GRACE)
    (handled,) = poll_twice(env.watcher(), env.clock)
    assert handled.disposition == "quarantined"
    assert handled.destination == env.quarantine / "half.psl"
    assert handled.destination.read_bytes() == broken
    report = json.loads((env.quarantine / "half.psl.error.json").read_text())
    error = expected_error(broken, "half.psl")
    assert error.position is not None and error.position.kind == "offset"
    assert report["code"] == error.code
    assert report["offset"] == error.position.value
    assert report["line"] is None
    assert report["record_index"] == error.record_index
    assert report["record_type"] == error.record_type
    assert report["message"] == f"offset 0x{error.position.value:X}: " + (
        f"record {error.record_index} ({error.record_type}): " if error.record_index else ""
    ) + error.code + (
        " (expected "
        + (report["expected_kind"] or "nothing")
        + ", found "
        + (report["found_kind"] or "nothing")
        + ")"
        if report["expected_kind"] or report["found_kind"]
        else ""
    )
    assert "text" not in report
    assert report["file"] == "half.psl"
    assert report["sha256"] == sha256_hex(broken)
    assert report["parser_version"] == PARSER_VERSION
    assert report["quarantined_at_utc"] == datetime.fromtimestamp(env.clock.now, UTC).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    assert env.count(sessions) == 0
    assert files(env.inbox) == []


def test_a_broken_csv_export_reports_its_line(env: Env) -> None:
    data = (FIXTURES / "psl-csv" / "bad_csv_blank_line_in_table.csv").read_bytes()
    env.put("visit.csv", data)
    poll_twice(env.watcher(), env.clock)
    report = json.loads((env.quarantine / "visit.csv.error.json").read_text())
    assert report["code"] == "blank_line_in_table"
    assert report["line"] == 21
    assert report["offset"] is None
    assert report["position"] == {"kind": "line", "value": 21}
    assert report["message"] == "line 21: blank_line_in_table"


def test_a_file_that_is_not_an_export_is_quarantined_as_unknown_format(env: Env) -> None:
    env.put("notes.docx", b"PK\x03\x04 a word processor file")
    (handled,) = poll_twice(env.watcher(), env.clock)
    assert handled.disposition == "quarantined"
    report = json.loads((env.quarantine / "notes.docx.error.json").read_text())
    assert report["code"] == "unknown_format"
    assert report["offset"] == 0
    assert report["message"] == "offset 0x0: unknown_format"
    assert "word processor" not in json.dumps(report)


def test_a_refused_file_again_gets_the_hash_in_its_quarantine_name(env: Env) -> None:
    watcher = env.watcher()
    env.put("junk.txt", b"first")
    poll_twice(watcher, env.clock)
    env.put("junk.txt", b"second")
    (handled,) = poll_twice(watcher, env.clock)
    tag = sha256_hex(b"second")[:12]
    assert handled.destination == env.quarantine / f"junk.{tag}.txt"
    assert (env.quarantine / "junk.txt").read_bytes() == b"first"
    assert json.loads((env.quarantine / f"junk.{tag}.txt.error.json").read_text())["sha256"] == (
        sha256_hex(b"second")
    )


def test_a_crash_after_the_error_report_before_the_move_leaves_one_report(env: Env) -> None:
    env.put("junk.txt", b"junk")
    env.quarantine.mkdir()
    (env.quarantine / "junk.txt.error.json").write_text('{"partial": true}')
    poll_twice(env.watcher(), env.clock)
    assert files(env.quarantine) == ["junk.txt", "junk.txt.error.json"]
    assert json.loads((env.quarantine / "junk.txt.error.json").read_text())["code"] == (
        "unknown_format"
    )


# ---------------------------------------------------------------------------
# Failures, outages and stops


@dataclass
class ScriptedImporter:
    """An importer whose `import_bytes` runs a test's function on the inbox file (for failures)."""

    engine: Any
    action: Callable[[Path, str], ImportResult]
    inbox: Path
    calls: int = 0

    def import_bytes(self, data: bytes, name: str) -> ImportResult:
        self.calls += 1
        return self.action(self.inbox / name, name)


def outage_error() -> OperationalError:
    return OperationalError("connect", {}, Exception("connection refused\nDETAIL: secret"))


def test_transient_errors_are_told_apart_from_bugs() -> None:
    assert is_transient(outage_error())
    assert is_transient(OSError(28, "No space left on device"))
    assert not is_transient(ValueError("bug"))
    assert not is_transient(IntegrityError("INSERT", {}, Exception("unique")))
    assert error_text(outage_error()) == "Exception: connection refused"


def test_an_unreachable_database_leaves_files_and_backs_off(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ingest.watch")
    watcher = env.watcher(retry_initial_seconds=2.0, retry_max_seconds=16.0)
    env.put("a.psl", export(1))
    env.put("b.psl", export(2))
    env.connect_error = outage_error()
    watcher.poll()
    attempts_at = []
    for _ in range(300):  # ten minutes of 2-second polls
        env.clock.advance(2)
        before = env.connect_calls
        handled = watcher.poll()
        if env.connect_calls > before:
            attempts_at.append(env.clock.now - T0)
            assert [h.disposition for h in handled] == ["waiting"]  # one file tried, not both
        else:
            assert handled == []
    assert files(env.inbox) == ["a.psl", "b.psl"]
    gaps = [b - a for a, b in itertools.pairwise(attempts_at)]
    assert gaps[:4] == [2.0, 4.0, 8.0, 16.0]  # doubling ...
    assert set(gaps[4:]) == {16.0}  # ... up to the cap
    logged = [r for r in caplog.records if "database_unavailable" in r.getMessage()]
    # Once a minute over ten minutes, not once per attempt (about 40).
    assert 9 <= len(logged) <= 11 < len(attempts_at)
    assert all("secret" not in r.getMessage() for r in logged)
    assert "files_waiting=2" in logged[0].getMessage()

    env.connect_error = None
    env.clock.advance(16)
    handled = watcher.poll()
    assert [h.disposition for h in handled] == ["archived", "archived"]
    assert any("database_available" in r.getMessage() for r in caplog.records)
    assert env.count(sessions) == 2


def test_a_transient_failure_inside_the_import_leaves_the_file(env: Env) -> None:
    def fail(path: Path, name: str) -> ImportResult:
        return ImportResult(name, "failed", "down", exception=outage_error())

    scripted = ScriptedImporter(env.importer.engine, fail, env.inbox)
    watcher = env.watcher(connect=lambda: scripted)
    env.put("a.psl", export(1))
    (handled,) = poll_twice(watcher, env.clock)
    assert handled.disposition == "waiting"
    assert watcher.outage.active
    assert files(env.inbox) == ["a.psl"]
    assert files(env.quarantine) == []


def test_a_bug_in_the_import_quarantines_the_file_as_an_internal_error(env: Env) -> None:
    def fail(path: Path, name: str) -> ImportResult:
        return ImportResult(
            name, "failed", f"{name}: internal error: ValueError: oops", exception=ValueError()
        )

    scripted = ScriptedImporter(env.importer.engine, fail, env.inbox)
    env.put("a.psl", export(1))
    (handled,) = poll_twice(env.watcher(connect=lambda: scripted), env.clock)
    assert handled.disposition == "quarantined"
    report = json.loads((env.quarantine / "a.psl.error.json").read_text())
    assert report["code"] == "internal_error"
    assert report["exception"] == "ValueError"
    assert report["message"] == "internal_error (ValueError)"
    assert "oops" not in json.dumps(report)  # an exception's text may quote the file


def test_a_file_written_to_during_its_import_stays_in_the_inbox(env: Env) -> None:
    def append_then_import(path: Path, name: str) -> ImportResult:
        result = env.importer.import_path(path, name=name)
        with path.open("ab") as handle:
            handle.write(b"late bytes")
        return result

    scripted = ScriptedImporter(env.importer.engine, append_then_import, env.inbox)
    watcher = env.watcher(connect=lambda: scripted)
    env.put("a.psl", export(1))
    (handled,) = poll_twice(watcher, env.clock)
    assert handled.disposition == "changed"
    assert files(env.inbox) == ["a.psl"]
    assert files(env.archive) == []


def test_a_stop_request_finishes_the_file_in_hand_and_starts_no_other(env: Env) -> None:
    def import_then_stop(path: Path, name: str) -> ImportResult:
        env.stop = True  # SIGTERM arrives while this file is being imported
        return env.importer.import_path(path, name=name)

    scripted = ScriptedImporter(env.importer.engine, import_then_stop, env.inbox)
    watcher = env.watcher(connect=lambda: scripted)
    for name in ("a.psl", "b.psl", "c.psl"):
        env.put(name, export(len(name) + ord(name[0])))
    handled = poll_twice(watcher, env.clock)
    assert [(h.name, h.disposition) for h in handled] == [("a.psl", "archived")]
    assert files(env.inbox) == ["b.psl", "c.psl"]
    assert scripted.calls == 1


def test_a_file_removed_before_its_turn_is_forgotten(env: Env) -> None:
    watcher = env.watcher()
    path = env.put("a.psl", export(1))
    watcher.scan()
    env.clock.advance(2)
    ready = watcher.scan()
    path.unlink()
    assert watcher.handle(ready[0]).disposition == "gone"
    assert env.count(raw_files) == 0
