"""`pumptrail run` on PostgreSQL: two services racing on one database, an outage and recovery.

PostgreSQL is `PUMPTRAIL_TEST_PG_URL`; each test gets a fresh schema (the
`pg_schema_url` fixture of tests/conftest.py): skipped with the reason when the
server is unreachable, a failure under CI.
"""

from __future__ import annotations

import contextlib
import random
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from ingest.rawstore import sha256_hex
from tests.service.support import (
    RunningService,
    corpus,
    db_rows,
    drop,
    evidence_by_session,
    files_under,
    fresh_evidence,
    session_ids,
    wait_for,
)

pytestmark = pytest.mark.postgres


def test_two_services_on_two_inboxes_store_each_session_once(
    tmp_path: Path, pg_schema_url: str
) -> None:
    drops = corpus(31, pumps=4, visits=5, singles=6)
    services = [
        RunningService(
            tmp_path / name, tmp_path / f"{name}.log", db=pg_schema_url, poll_seconds=0.05
        )
        for name in ("a", "b")
    ]
    try:
        for service in services:
            service.wait_started()
        # The same files land in both inboxes at the same moments, in a shuffled order.
        order = list(drops)
        random.Random(5).shuffle(order)
        for item in order:
            for name in ("a", "b"):
                drop(tmp_path / name / "inbox", item)
        inboxes = [tmp_path / name / "inbox" for name in ("a", "b")]
        assert wait_for(lambda: not any(files_under(i) for i in inboxes), timeout=120), (
            services[0].log_text()[-2000:] + services[1].log_text()[-2000:]
        )
    finally:
        statuses = [service.terminate() for service in services]
    assert statuses == [0, 0]

    for name in ("a", "b"):  # each service archived or quarantined every file it was given
        moved = files_under(tmp_path / name / "archive") + files_under(
            tmp_path / name / "quarantine"
        )
        assert sorted(p.name for p in moved) == sorted(d.name for d in drops)
        assert {p.name for p in files_under(tmp_path / name / "quarantine")} == {
            d.name for d in drops if d.session_id is None
        }
    stored = db_rows(pg_schema_url, "SELECT session_id FROM sessions")
    assert sorted(row[0] for row in stored) == sorted(session_ids(drops))  # once each
    raw = db_rows(pg_schema_url, "SELECT sha256 FROM raw_files")
    assert sorted(row[0] for row in raw) == sorted({sha256_hex(d.data) for d in drops})
    assert db_rows(pg_schema_url, "SELECT count(*) FROM evidence") == [(len(stored),)]
    failed = [
        line
        for service in services
        for line in service.log_text().splitlines()
        if "failed" in line and "event=message" in line
    ]
    assert failed == []
    # Racing imports of one pump's sessions still read each other: every evidence
    # document is what a single uninterrupted import derives.
    assert evidence_by_session(pg_schema_url) == fresh_evidence(tmp_path, drops)


class Forwarder:
    """A TCP port that forwards to PostgreSQL once started: the database 'comes back'."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()  # nothing listens here until start(): connections are refused
        self._server: socket.socket | None = None
        self._stop = threading.Event()

    def start(self) -> None:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(16)
        server.settimeout(0.2)
        self._server = server
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        assert self._server is not None
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.close()


@pytest.fixture
def forwarder(pg_schema_url: str) -> Iterator[Forwarder]:
    url = make_url(pg_schema_url)
    forward = Forwarder((url.host or "127.0.0.1", url.port or 5432))
    yield forward
    forward.stop()


def test_a_database_that_is_down_at_start_is_retried_then_used(
    tmp_path: Path, pg_schema_url: str, forwarder: Forwarder
) -> None:
    down_url = make_url(pg_schema_url).set(host="127.0.0.1", port=forwarder.port)
    drops = corpus(41, pumps=1, visits=3, singles=1)
    service = RunningService(
        tmp_path,
        tmp_path / "service.log",
        db=down_url.render_as_string(hide_password=False),
        retry_max_seconds=0.5,
        outage_log_seconds=1.0,
    )
    try:
        service.wait_started()
        for item in drops:
            drop(tmp_path / "inbox", item)
        assert wait_for(lambda: len(service.events("database_unavailable")) >= 3, timeout=30)
        assert len(files_under(tmp_path / "inbox")) == len(drops)
        assert "Connection refused" in service.events("database_unavailable")[0]
        forwarder.start()
        assert wait_for(lambda: not files_under(tmp_path / "inbox"), timeout=60), (
            service.log_text()[-3000:]
        )
    finally:
        status = service.terminate()
    assert status == 0
    assert service.events("database_available")
    stored = db_rows(pg_schema_url, "SELECT session_id FROM sessions")
    assert sorted(row[0] for row in stored) == sorted(session_ids(drops))
