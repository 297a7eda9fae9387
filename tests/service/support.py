"""Shared helpers of the service tests: a corpus of drops, a `pumptrail run` subprocess, waits."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from fixtures.binary_writer import encode_binary
from fixtures.csv_writer import encode_csv
from fixtures.scenarios import pump_history, realistic_scenario
from ingest.rawstore import sha256_hex
from tests.ingest.exports import importer

REPO = Path(__file__).resolve().parents[2]
EVENT = re.compile(r"\bevent=(\S+)")


@dataclass(frozen=True)
class Drop:
    """One file to drop into an inbox; `session_id` is None for files that must be refused."""

    name: str
    data: bytes
    session_id: str | None


def corpus(seed: int, *, pumps: int = 3, visits: int = 4, singles: int = 4) -> list[Drop]:
    """Binary and CSV exports of pump chains and single sessions, plus refused files.

    Every session comes as a binary export, every other one as a CSV export too
    (the same session twice); two files are byte-identical copies under another
    name; one is not an export at all and one is a truncated binary export.
    """
    rng = random.Random(seed)
    scenarios = [s for _ in range(pumps) for s in pump_history(rng, visits=visits)]
    scenarios += [realistic_scenario(rng, name=f"single-{i}") for i in range(singles)]
    drops: list[Drop] = []
    for index, scenario in enumerate(scenarios):
        session_id = scenario.header.session_id
        drops.append(Drop(f"s{index:03d}.psl", encode_binary(scenario), session_id))
        if index % 2 == 0:
            drops.append(Drop(f"s{index:03d}.csv", encode_csv(scenario), session_id))
    drops.append(Drop("copy-of-s000.psl", drops[0].data, drops[0].session_id))
    drops.append(Drop("copy-of-s001.psl", drops[2].data, drops[2].session_id))
    drops.append(Drop("notes.txt", b"Shopping list: gloves, swabs, labels\n", None))
    drops.append(Drop("broken.psl", drops[0].data[: len(drops[0].data) // 2], None))
    return drops


def session_ids(drops: Iterable[Drop]) -> set[str]:
    return {d.session_id for d in drops if d.session_id is not None}


def drop(inbox: Path, item: Drop, *, atomic: bool = True) -> Path:
    """Put a file in the inbox: written under a temporary name then renamed, or in place."""
    inbox.mkdir(parents=True, exist_ok=True)
    target = inbox / item.name
    if atomic:
        temp = inbox / f".receiving-{item.name}.part"
        temp.write_bytes(item.data)
        os.replace(temp, target)
    else:
        target.write_bytes(item.data)
    return target


def service_env(data_dir: Path, **settings: object) -> dict[str, str]:
    """Environment for a `pumptrail run` subprocess: fast polls, everything under data_dir."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUMPTRAIL_")}
    env["PUMPTRAIL_DATA_DIR"] = str(data_dir)
    values: dict[str, object] = {
        "poll_seconds": 0.1,
        "settle_seconds": 0.2,
        # The corpus's truncated export is quarantined at once, as every refused file:
        # these tests count what left the inbox (waiting for a slow writer to finish
        # is tested in test_watch_failsafe.py).
        "truncated_grace_seconds": 0,
        "log_level": "INFO",
    }
    values.update(settings)
    for key, value in values.items():
        env[f"PUMPTRAIL_{key.upper()}"] = str(value)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def pumptrail(*args: str) -> list[str]:
    return [sys.executable, "-m", "pumptrail.cli", *args]


class RunningService:
    """A `pumptrail run` subprocess whose standard error is collected in a file."""

    def __init__(self, data_dir: Path, log_file: Path, **settings: object) -> None:
        self.log_file = log_file
        self._log = log_file.open("ab")
        self.process = subprocess.Popen(
            pumptrail("run"),
            cwd=REPO,
            env=service_env(data_dir, **settings),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def log_text(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_file.read_text(encoding="utf-8", errors="replace")

    def events(self, name: str) -> list[str]:
        """The log lines of one event (exactly that name)."""
        return [
            line
            for line in self.log_text().splitlines()
            if (found := EVENT.search(line)) is not None and found[1] == name
        ]

    def wait_started(self, timeout: float = 60.0) -> None:
        """Until the service logs that it runs (a signal before that kills it outright)."""
        if not wait_for(lambda: bool(self.events("service_started")), timeout=timeout):
            raise AssertionError(f"service did not start:\n{self.log_text()}")

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait for the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to finish anything."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)
        self._log.close()


def wait_for(predicate: Callable[[], bool], *, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def files_under(folder: Path) -> list[Path]:
    """Regular non-hidden files under a folder, error reports excluded."""
    if not folder.is_dir():
        return []
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not p.name.startswith(".") and not p.name.endswith(".error.json")
    )


def sqlite_rows(db: Path, query: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
    """Read a SQLite database the service writes (read-only, WAL-safe)."""
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return list(connection.execute(query, tuple(params)))
    finally:
        connection.close()


def db_rows(url: str, query: str) -> list[tuple[Any, ...]]:
    """Rows of a query on any database URL (a service may be writing it)."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(text(query))]
    finally:
        engine.dispose()


def evidence_by_session(url: str) -> dict[str, Any]:
    """Every stored evidence document, by session ID."""
    rows = db_rows(
        url,
        "SELECT s.session_id, e.document FROM evidence e JOIN sessions s ON s.id = e.session_pk",
    )
    return {session_id: json.loads(document) for session_id, document in rows}


def fresh_evidence(folder: Path, drops: Iterable[Drop]) -> dict[str, Any]:
    """The evidence one uninterrupted import of the files derives (a new SQLite database)."""
    url = f"sqlite:///{folder / 'fresh.db'}"
    with importer(url, folder / "fresh-raw") as fresh:
        for item in drops:
            fresh.import_bytes(item.data, name=item.name)
    return evidence_by_session(url)


def error_report(path: Path) -> Mapping[str, Any]:
    loaded: Mapping[str, Any] = json.loads(
        path.with_name(path.name + ".error.json").read_text(encoding="utf-8")
    )
    return loaded


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
