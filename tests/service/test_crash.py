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

from tests.service.support import (
    Drop,
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
