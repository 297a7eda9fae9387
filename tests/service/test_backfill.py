"""The service's backfill of a full inbox (`InboxWatcher._backfill`, `ingest.parallel`).

A poll that finds more ready files than one import group imports them through the
parallel importer when `import_jobs` allows workers. What it does to every file
must be what the file-by-file path (`import_jobs=1`) does: the same database
contents, the same archive, quarantine and inbox. Each test runs on SQLite and on
PostgreSQL with the watcher's fake clock (tests/service/test_watch.py), so both
runs see the same times.

The backlog: eight pumps' visits in a shuffled order (late arrivals that
re-derive later sessions; one pump's files spread over groups and workers), CSV
exports of half the sessions (linked to the binary ones), byte-identical copies,
a file in a subfolder, garbage (twice the same), files cut short (held in the
inbox), an export that disagrees with its session's other export (its group goes
to the serial path), a file too large to read and a symbolic link.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import signal
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, select
from sqlalchemy.exc import OperationalError

from db.audit import audit_log
from db.engine import make_durable as engine_make_durable
from db.models import raw_files, sessions
from ingest import pipeline, watch
from ingest.parallel import MAX_OFFERED_GROUPS, ParallelImporter
from ingest.pipeline import GROUP_FILES, Importer
from ingest.rawstore import sha256_hex
from ingest.watch import Handled
from parsers.params import MAX_FILE_BYTES
from tests.ingest.exports import binary, csv, history, importer, with_other_note
from tests.ingest.test_parallel_import import result_facts, snapshot
from tests.service.support import (
    RunningService,
    check_after_kill,
    committed_in_inbox,
    corpus,
    drop,
    evidence_by_session,
    files_under,
    fresh_evidence,
    session_ids,
    sqlite_rows,
    wait_for,
)
from tests.service.test_watch import Clock, Env, files, poll_twice

SEED = 20261205


def backlog() -> list[tuple[str, bytes]]:
    """About 150 files (name, bytes) in the order the inbox sorts them (module docstring)."""
    rng = random.Random(SEED)
    chains = [history(seed, visits=12, serial=f"ITP40-9100{seed}") for seed in range(1, 9)]
    visits = [visit for chain in chains for visit in chain]
    rng.shuffle(visits)
    made: list[tuple[str, bytes]] = []
    for index, visit in enumerate(visits):
        made.append(("psl", binary(visit)))
        if index % 2 == 0:
            made.append(("csv", csv(visit)))
    made += [made[3], made[40], made[41]]  # identical bytes, other names
    garbage = ("txt", b"NOT AN EXPORT\n" * 20)
    made += [garbage, garbage, ("psl", binary(visits[7])[:-40]), ("csv", csv(visits[8])[:-30])]
    made.append(("csv", csv(with_other_note(visits[10]))))
    rng.shuffle(made)
    named = [(f"{position:03d}.{ext}", data) for position, (ext, data) in enumerate(made)]
    named[5] = (f"ward-b/{named[5][0]}", named[5][1])
    return sorted(named)


def fill(env: Env, items: list[tuple[str, bytes]], outside: Path) -> None:
    for name, data in items:
        env.put(name, data)
    too_large = env.put("zz-too-large.psl", b"")
    with too_large.open("wb") as handle:
        handle.truncate(MAX_FILE_BYTES + 1)
    os.utime(too_large, (env.clock.now - 10, env.clock.now - 10))
    (env.inbox / "zz-link.psl").symlink_to(outside)


@pytest.fixture
def make_env(tmp_path: Path) -> Iterator[Callable[[str, str], Env]]:
    """An inbox, archive, quarantine, raw store and fake clock on a database, by label."""
    with ExitStack() as stack:

        def make(label: str, url: str) -> Env:
            root = tmp_path / label
            opened = stack.enter_context(importer(url, root / "raw"))
            return Env(root / "inbox", root / "archive", root / "quarantine", Clock(), opened)

        yield make


@pytest.fixture
def parallel_imports(monkeypatch: pytest.MonkeyPatch) -> list[ParallelImporter]:
    """Every ParallelImporter the watcher makes."""
    made: list[ParallelImporter] = []

    def recording(importer_: Importer, jobs: int, **options: Any) -> ParallelImporter:
        made.append(ParallelImporter(importer_, jobs, **options))
        return made[-1]

    monkeypatch.setattr(watch, "ParallelImporter", recording)
    return made


def handled_facts(env: Env, handled: list[Handled]) -> list[tuple[Any, ...]]:
    root = env.inbox.parent
    return [
        (
            h.name,
            h.disposition,
            None if h.destination is None else h.destination.relative_to(root).as_posix(),
            None if h.result is None else result_facts(h.result),
        )
        for h in handled
    ]


def folders(env: Env, *, times: bool = True) -> dict[str, Any]:
    """The inbox, archive and quarantine listings, and every quarantine record
    (without the time it was written when not `times`)."""
    records = {p.name: json.loads(p.read_text()) for p in env.quarantine.glob("*.error.json")}
    if not times:
        for record in records.values():
            del record["quarantined_at_utc"]
    return {
        "inbox": files(env.inbox),
        "archive": files(env.archive),
        "quarantine": files(env.quarantine),
        "records": records,
    }


def run_backlog(env: Env, jobs: int, outside: Path) -> list[Handled]:
    fill(env, backlog(), outside)
    return poll_twice(env.watcher(import_jobs=jobs), env.clock)


def test_a_backlog_is_moved_and_stored_as_the_file_by_file_import_does(
    db_url: str,
    other_db_url: str,
    tmp_path: Path,
    make_env: Callable[[str, str], Env],
    parallel_imports: list[ParallelImporter],
    caplog: pytest.LogCaptureFixture,
) -> None:
    outside = tmp_path / "Jane Doe.psl"
    outside.write_bytes(b"elsewhere")
    serial_env, backfill_env = make_env("serial", db_url), make_env("backfill", other_db_url)
    serial = run_backlog(serial_env, 1, outside)
    assert parallel_imports == []  # import_jobs=1: file by file, whatever the backlog
    caplog.set_level(logging.INFO, logger="ingest.watch")
    backfilled = run_backlog(backfill_env, 2, outside)

    assert len(serial) > 2 * GROUP_FILES
    (used,) = parallel_imports
    assert used.jobs == 2
    # Three groups: two written by the planner, one (the disagreeing export's) file by file.
    assert (used.groups_planned, used.groups_serial) == (2, 1)
    assert handled_facts(backfill_env, backfilled) == handled_facts(serial_env, serial)
    dispositions = {h.disposition for h in serial}
    assert dispositions == {"archived", "quarantined", "incomplete"}
    outcomes = {h.result.outcome for h in serial if h.result is not None}
    assert outcomes == {"imported", "duplicate", "refused"}
    assert any(h.result.rederived for h in serial if h.result is not None)
    assert any(h.result.conflicting_exports for h in serial if h.result is not None)
    assert folders(backfill_env) == folders(serial_env)
    assert len(folders(serial_env)["inbox"]) == 2  # the two files cut short, held
    expected = snapshot(serial_env.importer.engine, tmp_path / "serial" / "raw")
    found = snapshot(backfill_env.importer.engine, tmp_path / "backfill" / "raw")
    for key in expected:
        assert found[key] == expected[key], key
    logged = [r.getMessage() for r in caplog.records]
    assert any(line.startswith("backfill_started ") and "jobs=2" in line for line in logged)
    assert any(line.startswith("backfill_finished ") for line in logged)
    assert all("Jane" not in line for line in logged)


def test_a_small_poll_keeps_the_file_by_file_path(
    db_url: str, make_env: Callable[[str, str], Env], parallel_imports: list[ParallelImporter]
) -> None:
    env = make_env("small", db_url)
    for name, data in backlog()[:GROUP_FILES]:
        env.put(name, data)
    handled = poll_twice(env.watcher(import_jobs=2), env.clock)
    assert len(handled) == GROUP_FILES
    assert parallel_imports == []


def test_a_file_changed_during_the_backfill_is_not_archived(
    db_url: str, make_env: Callable[[str, str], Env]
) -> None:
    env = make_env("changed", db_url)
    items = backlog()[: 2 * GROUP_FILES + 10]
    for name, data in items:
        env.put(name, data)
    victim = env.inbox / items[10][0]
    offered = 0

    def touch_while_importing() -> bool:
        # Asked before each file is offered: by the 100th, the victim (in the first
        # group) has been read and is waiting to be written.
        nonlocal offered
        offered += 1
        if offered == 100:
            os.utime(victim, (env.clock.now - 5, env.clock.now - 5))
        return False

    watcher = env.watcher(import_jobs=2, stop_requested=touch_while_importing)
    handled = {h.name: h for h in poll_twice(watcher, env.clock)}
    assert offered > 100
    assert handled[items[10][0]].disposition == "changed"
    assert handled[items[10][0]].result is not None  # it was imported all the same
    held = [name for name, h in handled.items() if h.disposition == "incomplete"]
    assert files(env.inbox) == sorted([items[10][0], *held])
    assert len(handled) == len(items)
    assert {h.disposition for n, h in handled.items() if n != items[10][0]} == {
        "archived",
        "quarantined",
        "incomplete",
    }

    # Observed again: once it settles, it is recognised as imported and archived.
    again = poll_twice(watcher, env.clock)
    assert [(h.name, h.disposition) for h in again] == [(items[10][0], "archived")]
    assert again[0].result is not None and again[0].result.outcome == "duplicate"
    assert files(env.inbox) == held


def test_a_stop_request_ends_the_offering_and_finishes_what_was_offered(
    db_url: str, make_env: Callable[[str, str], Env]
) -> None:
    env = make_env("stop", db_url)
    items = backlog()
    for name, data in items:
        env.put(name, data)
    asked = 0

    def stop_after_100_files() -> bool:
        nonlocal asked
        asked += 1
        return asked > 100

    handled = poll_twice(env.watcher(import_jobs=2, stop_requested=stop_after_100_files), env.clock)
    offered = [name for name, _data in items[:100]]
    assert [h.name for h in handled] == offered
    assert {h.disposition for h in handled} <= {"archived", "quarantined", "incomplete"}
    left = files(env.inbox)
    held = [h.name for h in handled if h.disposition == "incomplete"]
    assert left == sorted([*held, *(name for name, _data in items[100:])])
    with env.importer.engine.connect() as connection:
        stored = set(connection.execute(select(raw_files.c.sha256)).scalars())
    assert stored == {sha256_hex(data) for _name, data in items[:100]}


class Outage:
    """Makes the database fail from the second group's durability check on."""

    def __init__(self, engine: Engine, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
        self.engine, self.kind = engine, kind
        self.down = False
        self.groups = 0
        real = engine_make_durable

        def make_durable(engine_: Engine) -> None:
            self.groups += 1
            if self.kind == "unconfirmed" and self.groups == 2 and self.down is False:
                # The group's commit happened; whether it reached the disk is unknown.
                self.down = True
                raise error()
            real(engine_)
            if self.kind == "down" and self.groups == 1:
                self.down = True  # after the first group, every statement fails

        monkeypatch.setattr(pipeline, "make_durable", make_durable)
        event.listen(engine, "before_cursor_execute", self._refuse)

    def _refuse(self, *_args: Any) -> None:
        if self.down and self.kind == "down":
            raise error()

    def end(self) -> None:
        self.down = False
        self.kind = "over"
        event.remove(self.engine, "before_cursor_execute", self._refuse)


def error() -> OperationalError:
    return OperationalError("COMMIT", {}, Exception("connection refused"))


@pytest.mark.parametrize("kind", ["unconfirmed", "down"])
def test_an_outage_mid_backfill_leaves_the_rest_and_a_later_poll_finishes(
    db_url: str,
    other_db_url: str,
    tmp_path: Path,
    make_env: Callable[[str, str], Env],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    kind: str,
) -> None:
    outside = tmp_path / "elsewhere.psl"
    outside.write_bytes(b"elsewhere")
    serial_env, env = make_env("serial", db_url), make_env("outage", other_db_url)
    serial = run_backlog(serial_env, 1, outside)
    fill(env, backlog(), outside)
    watcher = env.watcher(import_jobs=2)
    outage = Outage(env.importer.engine, monkeypatch, kind)

    caplog.set_level(logging.INFO, logger="ingest.pipeline")
    first = poll_twice(watcher, env.clock)
    assert [h.disposition for h in first].count("waiting") == 1
    # One failed attempt ends the batch, as in a small poll: not one per file of the group.
    failed = [r.message for r in caplog.records if r.message.startswith("import of")]
    assert len(failed) == (1 if kind == "down" else 0), failed
    assert watcher.outage.active
    moved = [h for h in first if h.disposition in ("archived", "quarantined")]
    # The first group was made durable and moved; nothing of the second was.
    assert GROUP_FILES - 2 <= len(moved) <= GROUP_FILES + 2
    names_in_inbox = set(files(env.inbox))
    assert {h.name for h in moved}.isdisjoint(names_in_inbox)
    # Every file is in one place (the too-large file and the link are not in the backlog).
    assert len(names_in_inbox) + len(moved) == len(backlog()) + 2

    env.clock.advance(2)  # the first retry after the back-off: the database is still down
    if kind == "down":
        assert [h.disposition for h in watcher.poll()] == ["waiting"]
        env.clock.advance(4)
    outage.end()
    rest = watcher.poll()
    assert not watcher.outage.active
    assert {h.disposition for h in rest} == {"archived", "quarantined", "incomplete"}
    if kind == "unconfirmed":
        # The second group was committed before the failure: its files are duplicates now.
        assert sum(1 for h in rest if h.result and h.result.outcome == "duplicate") > sum(
            1 for h in serial if h.result and h.result.outcome == "duplicate"
        )

    # In the end, the same as one uninterrupted file-by-file import (the audit log
    # also holds the second look at what was committed before the outage).
    assert folders(env, times=False) == folders(serial_env, times=False)
    expected = snapshot(serial_env.importer.engine, tmp_path / "serial" / "raw")
    found = snapshot(env.importer.engine, tmp_path / "outage" / "raw")
    for key in expected:
        if key != "audit":
            assert found[key] == expected[key], key
    with env.importer.engine.connect() as connection:
        imports = [
            json.loads(detail)["outcome"]
            for target, detail in connection.execute(
                select(audit_log.c.target, audit_log.c.detail).where(audit_log.c.action == "import")
            )
        ]
        stored = connection.execute(select(sessions.c.session_id)).scalars().all()
    assert imports.count("imported") == len(stored) == len(set(stored))


# ---------------------------------------------------------------------------
# The real service, killed during a backfill


def descendants(pid: int) -> set[int]:
    """Every process below `pid` (the fork server and the import workers)."""
    found: set[int] = set()
    pending = [pid]
    while pending:
        parent = pending.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:  # the process ended meanwhile
            continue
        for task in tasks:
            try:
                text = Path(f"/proc/{parent}/task/{task}/children").read_text()
            except OSError:  # the task ended meanwhile
                continue
            for child in map(int, text.split()):
                if child not in found:
                    found.add(child)
                    pending.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):  # gone
        return False
    return state != "Z"


def test_a_stop_signalled_to_every_process_finishes_the_offered_groups(tmp_path: Path) -> None:
    """`systemctl stop` sends SIGTERM to every process of the unit (KillMode=control-group),
    the fork server and the workers too: the service still finishes the groups it
    offered, with its workers, and exits 0."""
    drops = corpus(SEED, pumps=10, visits=8, singles=60)
    assert len(drops) > 3 * GROUP_FILES
    inbox = tmp_path / "inbox"
    for item in drops:
        drop(inbox, item)
    service = RunningService(tmp_path, tmp_path / "service.log", import_jobs=2)
    try:
        assert wait_for(
            lambda: bool(files_under(tmp_path / "archive")), timeout=120, interval=0.005
        ), service.log_text()[-3000:]
        family = {service.process.pid, *descendants(service.process.pid)}
        # The service, the fork server, the resource tracker and the two workers.
        assert len(family) >= 4, family
        for pid in family:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
    finally:
        status = service.terminate(timeout=120)
    assert status == 0, service.log_text()[-3000:]
    assert "import workers stopped" not in service.log_text()
    helpers = family - {service.process.pid}
    assert wait_for(lambda: not any(alive(pid) for pid in helpers), timeout=30)
    left = files_under(inbox)
    moved = files_under(tmp_path / "archive") + files_under(tmp_path / "quarantine")
    assert left, "the stop came after the last file: the test proves nothing"
    assert GROUP_FILES <= len(moved) <= MAX_OFFERED_GROUPS * GROUP_FILES
    assert len(left) + len(moved) == len(drops)
    stored = {
        row[0] for row in sqlite_rows(tmp_path / "pumptrail.db", "SELECT sha256 FROM raw_files")
    }
    assert {sha256_hex(p.read_bytes()) for p in moved} == stored


@pytest.mark.slow
def test_kill_9_during_a_backfill_loses_and_doubles_nothing(tmp_path: Path) -> None:
    """A few hundred files waiting when the service starts, imported with two workers;
    killed with SIGKILL while workers prepare, while a group is moved, and at a
    random moment; restarted each time, and finally left to finish."""
    rng = random.Random(SEED)
    drops = corpus(SEED, pumps=16, visits=10, singles=100)
    rng.shuffle(drops)  # older sessions of a pump arrive after newer ones
    drops = [replace(d, name=f"{i:03d}-{d.name}") for i, d in enumerate(drops)]
    assert 250 <= len(drops) <= 400
    inbox = tmp_path / "inbox"
    for item in drops:
        drop(inbox, item)

    def archived() -> int:
        return len(files_under(tmp_path / "archive"))

    # When each run is killed: `base` is what the runs before it archived, `left`
    # what they left in the inbox.
    extra = rng.randint(1, 40)
    moments: list[tuple[str, Callable[[RunningService, int, int], bool]]] = [
        ("workers preparing", lambda s, base, left: bool(s.events("backfill_started"))),
        ("a group moving", lambda s, base, left: archived() > base),
        ("a later group moving", lambda s, base, left: archived() >= base + GROUP_FILES + extra),
        *(
            ("a random moment", lambda s, base, left, f=f: archived() >= base + int(f * left))
            for f in (rng.uniform(0.02, 0.5) for _ in range(3))
        ),
    ]
    archived_at_kills: list[int] = []
    committed_not_moved = 0
    for kill, (label, ready) in enumerate(moments):
        base, left = archived(), len(files_under(inbox))
        service = RunningService(tmp_path, tmp_path / f"service-{kill}.log", import_jobs=2)
        try:
            assert wait_for(
                lambda: ready(service, base, left) or not files_under(inbox),
                timeout=120,
                interval=0.005,
            ), label + service.log_text()[-3000:]
            time.sleep(rng.uniform(0, 0.05))
            helpers = descendants(service.process.pid)
        finally:
            service.kill()
        # The fork server, the resource tracker and the workers go with the service.
        assert wait_for(lambda: not any(alive(p) for p in helpers), timeout=30), label
        check_after_kill(tmp_path, drops)
        archived_at_kills.append(archived())
        committed_not_moved += committed_in_inbox(tmp_path)
        if label != "a random moment":  # (a random one may come after the last file)
            assert files_under(inbox), f"{label}: the kill came after the last file"
    print(
        f"archived at the kills: {archived_at_kills}; committed, not moved: {committed_not_moved}"
    )

    service = RunningService(tmp_path, tmp_path / "service-final.log", import_jobs=2)
    try:
        service.wait_started()
        assert wait_for(lambda: not files_under(inbox), timeout=300), service.log_text()[-3000:]
    finally:
        status = service.terminate()
    assert status == 0, service.log_text()[-3000:]
    check_after_kill(tmp_path, drops)

    # Nothing lost: the archive and quarantine hold exactly what was dropped.
    moved = files_under(tmp_path / "archive") + files_under(tmp_path / "quarantine")
    assert Counter(p.read_bytes() for p in moved) == Counter(d.data for d in drops)
    assert {p.name for p in files_under(tmp_path / "quarantine")} == {
        d.name for d in drops if d.session_id is None
    }
    # Nothing doubled: one session per session ID, one raw file per distinct bytes,
    # one evidence row per session, and each session imported once (a file the
    # kill caught committed but not moved came back as a duplicate).
    db = tmp_path / "pumptrail.db"
    stored = [row[0] for row in sqlite_rows(db, "SELECT session_id FROM sessions")]
    assert sorted(stored) == sorted(session_ids(drops))
    assert sqlite_rows(db, "SELECT count(*) FROM raw_files") == [(len({d.data for d in drops}),)]
    assert sqlite_rows(db, "SELECT count(*) FROM evidence") == [(len(stored),)]
    imported = Counter(
        target
        for target, detail in sqlite_rows(
            db, "SELECT target, detail FROM audit_log WHERE action = 'import'"
        )
        if json.loads(detail)["outcome"] == "imported"
    )
    assert imported == Counter(session_ids(drops))
    connection = sqlite3.connect(db)
    try:
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert connection.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        connection.close()
    # The evidence is what one uninterrupted import of the same files derives.
    assert evidence_by_session(f"sqlite:///{db}") == fresh_evidence(tmp_path, drops)
