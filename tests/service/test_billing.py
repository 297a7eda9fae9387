"""The service's billing job (`pumptrail run` with `billing_mllp`), kill -9 mid-send.

The outbox holds the messages of four signed-off visits (one revised after sending,
so a reversal and new charges follow). The service is SIGKILLed once while the
receiver holds a message unanswered and once right after an AA left the receiver
(before or after the service stored it: either way must hold). After a restart
every message is acknowledged, each was booked under one control ID (the one it was
written with), and a message acknowledged before a kill never reached billing again.
"""

from __future__ import annotations

import subprocess
import threading
from collections import Counter
from pathlib import Path

import pytest

from db import outbox
from db.migrate import open_database
from tests.db.test_outbox import decision, messages, signed
from tests.ingest.exports import binary, history, importer
from tests.ingest.mllp_receiver import MllpReceiver, always
from tests.service.support import REPO, RunningService, pumptrail, service_env, wait_for

pytestmark = pytest.mark.slow


def outbox_with_messages(data_dir: Path) -> tuple[str, list[outbox.OutboxMessage]]:
    url = f"sqlite:///{data_dir / 'pumptrail.db'}"
    ids = []
    with importer(url, data_dir / "raw") as imp:
        for index, scenario in enumerate(history(47, visits=4)):
            result = imp.import_bytes(binary(scenario), name=f"v{index}.psl")
            assert result.session_id is not None
            ids.append(result.session_id)
    engine = open_database(url)
    try:
        for session_id in ids:
            signed(engine, session_id, decision())
        with engine.begin() as connection:
            # The first visit's charges went out once without an answer...
            assert outbox.claim(connection, outbox.list_messages(connection)[0].id)
        # ...so its revision queues a reversal, then the new charges.
        signed(engine, ids[0], decision(units=12))
        return url, messages(engine)
    finally:
        engine.dispose()


def current(url: str) -> list[outbox.OutboxMessage]:
    engine = open_database(url)
    try:
        return messages(engine)
    finally:
        engine.dispose()


def test_kill_9_mid_send_loses_no_charge_and_acknowledges_none_twice(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    url, queued = outbox_with_messages(data_dir)
    assert [m.kind for m in queued] == ["charges"] * 4 + ["reversal", "charges"]
    held = threading.Event()
    answered = threading.Event()
    order = [m.control_id for m in queued]

    def script(control_id: str, seen: int) -> str:
        if control_id == order[1] and seen == 0:
            held.set()
            return "silence"
        if control_id == order[3] and seen == 0:
            answered.set()
        return "AA"

    settings = {"db": url, "billing_ack_seconds": 30, "retry_max_seconds": 1}
    log = tmp_path / "service.log"
    with MllpReceiver(script) as receiver:
        settings["billing_mllp"] = receiver.address
        service = RunningService(data_dir, log, **settings)
        service.wait_started()
        assert held.wait(30), service.log_text()
        service.kill()  # the second message was received, its ACK never came
        first_pass = list(receiver.received)
        service = RunningService(data_dir, log, **settings)
        service.wait_started()
        assert answered.wait(30), service.log_text()
        service.kill()  # right after an AA for the fourth message left the receiver
        service = RunningService(data_dir, log, **settings)
        service.wait_started()
        assert wait_for(
            lambda: all(m.status == outbox.ACKNOWLEDGED for m in current(url)), timeout=60
        ), service.log_text()
        assert service.terminate() == 0
    final = current(url)
    # No charge lost: every message booked, under the control ID it was written with.
    assert [m.control_id for m in final] == order
    assert set(receiver.messages) == set(order)
    assert all(receiver.messages[m.control_id] == m.message for m in final)
    # In order: the first pass stopped at the unanswered message.
    assert first_pass == order[:2]
    seen = Counter(receiver.received)
    # Acknowledged before a kill: never sent again.
    assert seen[order[0]] == 1 and seen[order[2]] == 1
    # Unanswered, or answered as the sender died: sent again, with the same ID.
    assert seen[order[1]] == 2 and seen[order[3]] in (1, 2)
    assert all(seen[c] == 1 for c in order[4:])
    # The database acknowledged each message once; billing booked each once.
    assert all(m.answered_at is not None and m.ack_code == "AA" for m in final)


def test_a_bad_billing_mllp_setting_stops_the_service(tmp_path: Path) -> None:
    done = subprocess.run(
        pumptrail("run"),
        check=False,
        cwd=REPO,
        env=service_env(tmp_path / "data", billing_mllp="billing-without-port"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "HOST:PORT" in done.stdout + done.stderr


def test_the_service_sends_queued_messages(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    url, queued = outbox_with_messages(data_dir)
    with MllpReceiver(always("AA")) as receiver:
        service = RunningService(
            data_dir, tmp_path / "service.log", db=url, billing_mllp=receiver.address
        )
        service.wait_started()
        assert wait_for(
            lambda: all(m.status == outbox.ACKNOWLEDGED for m in current(url)), timeout=60
        ), service.log_text()
        assert service.terminate() == 0
    assert receiver.received == [m.control_id for m in queued]
    assert len(service.events("billing_ack")) == len(queued)
