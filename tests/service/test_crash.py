"""kill -9 at random moments during a stream of drops: nothing lost, nothing doubled.

The service is started, files are dropped while it runs (most written under a
temporary name and renamed, some written in place in two halves like a slow
copy), and after a random time it is killed with SIGKILL; then restarted, at
least 30 times. After every kill: every file is in the inbox, the archive or
the quarantine, exactly once, and whatever was moved is committed. At the end:
one session row per distinct session ID, one evidence row per session, the
SQLite file passes its integrity check, and the evidence equals what a plain
import of the same files derives.
"""

from __future__ import annotations

import random
import sqlite3
import time
from collections import Counter
from pathlib import Path

import pytest

from ingest.rawstore import sha256_hex
from tests.service.support import (
    Drop,
    RunningService,
    corpus,
    drop,
    error_report,
    evidence_by_session,
    files_under,
    fresh_evidence,
    session_ids,
    sqlite_rows,
    wait_for,
)

KILLS = 32
SEED = 20261127


def drop_slowly(inbox: Path, item: Drop) -> None:
    """Written in place in two halves, as a slow copy would (the settle time protects it)."""
    inbox.mkdir(parents=True, exist_ok=True)
    target = inbox / item.name
    half = len(item.data) // 2
    with target.open("wb") as handle:
        handle.write(item.data[:half])
        handle.flush()
        time.sleep(0.03)
        handle.write(item.data[half:])


def tables(db: Path) -> set[str]:
    if not db.exists():
        return set()
    return {row[0] for row in sqlite_rows(db, "SELECT name FROM sqlite_master WHERE type='table'")}


def committed_in_inbox(data_dir: Path) -> int:
    """Files a kill caught after their commit and before (or halfway through) their move."""
    db = data_dir / "pumptrail.db"
    if "raw_files" not in tables(db):
        return 0
    stored = set(sqlite_rows(db, "SELECT sha256, name FROM raw_files"))
    return sum(
        1 for p in files_under(data_dir / "inbox") if (sha256_hex(p.read_bytes()), p.name) in stored
    )


def check_after_kill(data_dir: Path, dropped: list[Drop]) -> None:
    """Each dropped file sits in exactly one place, and what was moved is committed.

    A move is a hard link then an unlink: a kill between the two leaves one file
    under two names (one inode), which the next run finishes; files are counted
    by inode.
    """
    inbox = files_under(data_dir / "inbox")
    archived = files_under(data_dir / "archive")
    quarantined = files_under(data_dir / "quarantine")
    inodes = {(s.st_dev, s.st_ino) for s in (p.stat() for p in inbox + archived + quarantined)}
    assert len(inodes) == len(dropped)
    db = data_dir / "pumptrail.db"
    if "raw_files" not in tables(db):
        assert not archived and not quarantined
        return
    status = dict(sqlite_rows(db, "SELECT sha256, status FROM raw_files"))
    for path in archived:
        assert status.get(sha256_hex(path.read_bytes())) == "imported", path
    for path in quarantined:
        assert status.get(sha256_hex(path.read_bytes())) == "refused", error_report(path)
    (sessions,) = sqlite_rows(db, "SELECT count(*), count(DISTINCT session_id) FROM sessions")
    assert sessions[0] == sessions[1]
    assert sqlite_rows(db, "SELECT count(*) FROM evidence") == [(sessions[0],)]


@pytest.mark.slow
def test_kill_9_at_random_moments_loses_and_doubles_nothing(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    drops = corpus(SEED, pumps=5, visits=6, singles=12)
    rng.shuffle(drops)  # older sessions arrive after newer ones too
    assert 60 <= len(drops) <= 100
    inbox = tmp_path / "inbox"
    pending = list(drops)
    dropped: list[Drop] = []
    committed_not_moved = 0

    for kill in range(KILLS):
        service = RunningService(tmp_path, tmp_path / f"service-{kill:02d}.log")
        if rng.random() < 0.25:
            # During startup (imports, migration of the empty database, first poll).
            time.sleep(rng.uniform(0.05, 1.5))
        else:
            # While a batch is being imported and moved.
            service.wait_started()
            batch = [pending.pop() for _ in range(min(len(pending), rng.randint(2, 5)))]
            for item in batch:
                if rng.random() < 0.25:
                    drop_slowly(inbox, item)
                else:
                    drop(inbox, item)
                dropped.append(item)
            time.sleep(rng.uniform(0.1, 0.3 + 0.08 * len(batch)))
        service.kill()
        check_after_kill(tmp_path, dropped)
        committed_not_moved += committed_in_inbox(tmp_path)
    print(f"kills that caught a file committed but not moved: {committed_not_moved}")

    service = RunningService(tmp_path, tmp_path / "service-final.log")
    try:
        service.wait_started()
        for item in pending:
            drop(inbox, item)
        dropped.extend(pending)
        assert wait_for(lambda: not files_under(inbox), timeout=90), service.log_text()[-3000:]
    finally:
        status = service.terminate()
    assert status == 0
    assert sorted(d.name for d in dropped) == sorted(d.name for d in drops)
    check_after_kill(tmp_path, dropped)

    # None lost, none doubled: the archive and quarantine hold exactly what was dropped.
    moved = files_under(tmp_path / "archive") + files_under(tmp_path / "quarantine")
    assert Counter(p.read_bytes() for p in moved) == Counter(d.data for d in drops)
    db = tmp_path / "pumptrail.db"
    stored = sqlite_rows(db, "SELECT session_id FROM sessions")
    assert sorted(row[0] for row in stored) == sorted(session_ids(drops))
    assert sqlite_rows(db, "SELECT count(*) FROM raw_files") == [(len({d.data for d in drops}),)]
    assert sqlite_rows(db, "SELECT count(*) FROM evidence") == [(len(stored),)]
    connection = sqlite3.connect(db)
    try:
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert connection.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        connection.close()

    # The evidence is what one uninterrupted import of the same files derives.
    assert evidence_by_session(f"sqlite:///{db}") == fresh_evidence(tmp_path, drops)
