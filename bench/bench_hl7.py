"""Billing interface throughput: DFT^P03 messages per second over MLLP with ACKs.

A local MLLP receiver (a thread in this process, 127.0.0.1) answers every message
with an `AA` ACK for its control ID. Measured, same run, same message bytes (2000
realistic DFT^P03 messages, 200 with `--quick`, each with its own control ID):

- `send_pending`: the product path: each message claimed in the outbox (a SQLite
  commit), framed, sent, its ACK read and parsed with python-hl7, the answer stored
  (a second commit);
- `MllpClient.exchange` + `parse_ack`: the wire round trips alone, no database;
- baseline: the same framed bytes written with `sendall` to a socket whose reader
  discards them, no ACK awaited: what the network stack costs at most.

The gap between the first two is the database's (two durable commits per
message); between the second and the baseline, the round trip of waiting for each
ACK, which MLLP requires before the next message.
"""

from __future__ import annotations

import random
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, insert, select

from db import outbox
from db.migrate import open_database
from db.models import sessions
from evidence import load_rules
from evidence.charges import ChargeLine
from evidence.dft import Hl7Settings, Patient, dft_p03
from fixtures.binary_writer import encode_binary
from fixtures.scenarios import realistic_scenario
from ingest.billing import MllpClient, MllpTarget, parse_ack, send_pending
from ingest.pipeline import Importer
from ingest.rawstore import RawStore

SEED = 20261205
START, END = b"\x0b", b"\x1c\x0d"


def corpus(count: int) -> list[tuple[str, str]]:
    rng = random.Random(SEED)
    settings = Hl7Settings("CLINIC", "BILLING", "BILLFAC", "P", {"62370": "CM62370"})
    now = datetime.now(UTC).replace(tzinfo=None)
    built = []
    for index in range(count):
        session_id = f"bench-{index:06d}"
        dx = ("G89.4", "T85.615A")
        lines = [
            ChargeLine(session_id, f"MRN{index}", now.date(), 1, "62370", 1, (), (1, 2), dx,
                       "1234567893", None),
            ChargeLine(session_id, f"MRN{index}", now.date(), 2, "J2274", rng.randint(5, 60),
                       ("JZ",), (1,), dx, "1234567893", "00409123401"),
        ]  # fmt: skip
        message = dft_p03(
            lines,
            Patient(f"MRN{index}", "Doe, Jane", None),
            settings,
            signed_at=now,
            created_at=now,
        )
        built.append((message.control_id, message.text))
    return built


class Receiver:
    """127.0.0.1 listener: answers AA per frame, or (`ack=False`) only reads."""

    def __init__(self, *, ack: bool) -> None:
        self.ack = ack
        self.frames = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        connection, _ = self.listener.accept()
        buffer = b""
        with connection:
            while chunk := connection.recv(1 << 16):
                buffer += chunk
                while END in buffer:
                    payload, _, buffer = buffer.partition(END)
                    self.frames += 1
                    if self.ack:
                        control_id = payload.split(b"\r", 1)[0].split(b"|")[9]
                        connection.sendall(
                            START
                            + b"MSH|^~\\&|BILL||PUMPTRAIL||20260101||ACK^P03^ACK|A|P|2.5.1\rMSA|AA|"
                            + control_id
                            + b"\r"
                            + END
                        )

    def close(self) -> None:
        self.listener.close()


def timed(work: Callable[[], None]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def line(label: str, count: int, seconds: float, baseline: float) -> None:
    rate = count / seconds
    print(
        f"   {label:<48} {rate:>9.0f} msg/s   {seconds / baseline:>6.1f}x the baseline's time",
        flush=True,
    )


def main(*, quick: bool = False) -> None:
    count = 200 if quick else 2000
    messages = corpus(count)
    size = sum(len(text) for _, text in messages)
    print(f"   corpus: {count} DFT^P03 messages, {size / 1e6:.2f} MB", flush=True)

    # Baseline: bare sendall of the same frames, nothing awaited.
    bare = Receiver(ack=False)
    frames = [START + text.encode() + END for _, text in messages]
    host, port = bare.address.split(":")
    with socket.create_connection((host, int(port))) as sock:
        baseline = timed(lambda: [sock.sendall(f) for f in frames] and None)
    bare.thread.join(30)
    bare.close()
    assert bare.frames == count
    print(f"   {'baseline: bare socket sendall, no ACK':<48} {count / baseline:>9.0f} msg/s",
          flush=True)  # fmt: skip

    # The wire with ACKs: one round trip per message.
    acking = Receiver(ack=True)
    client = MllpClient(MllpTarget.parse(acking.address, ack_seconds=10))

    def exchange_all() -> None:
        for control_id, text in messages:
            if parse_ack(client.exchange(text), control_id).code != "AA":
                raise RuntimeError("not acknowledged")

    wire = timed(exchange_all)
    client.close()
    acking.close()
    line("MllpClient.exchange + parse_ack (AA each)", count, wire, baseline)

    # The product path: from the outbox, claims and answers committed.
    with tempfile.TemporaryDirectory(prefix="pumptrail-bench-hl7-") as tmp:
        engine = open_database(f"sqlite:///{Path(tmp) / 'pumptrail.db'}")
        try:
            now = datetime.now(UTC).replace(tzinfo=None)
            pk = _session(engine, Path(tmp))
            with engine.begin() as connection:
                connection.execute(
                    insert(outbox.outbox_table),
                    [
                        {
                            "session_pk": pk,
                            "version": 1,
                            "kind": outbox.CHARGES,
                            "control_id": control_id,
                            "message": text,
                            "status": outbox.PENDING,
                            "attempts": 0,
                            "created_at": now,
                        }
                        for control_id, text in messages
                    ],
                )
            acking = Receiver(ack=True)
            client = MllpClient(MllpTarget.parse(acking.address, ack_seconds=10))
            result = None

            def from_outbox() -> None:
                nonlocal result
                result = send_pending(engine, client)

            product = timed(from_outbox)
            client.close()
            acking.close()
            assert result is not None and result.acknowledged == count, result
        finally:
            engine.dispose()
    line("send_pending from the outbox (SQLite)", count, product, baseline)


def _session(engine: Engine, tmp: Path) -> int:
    """One imported session the outbox rows point at."""
    scenario = realistic_scenario(random.Random(SEED), name="bench-hl7")
    importer = Importer(engine, RawStore(tmp / "raw"), load_rules(None))
    result = importer.import_bytes(encode_binary(scenario), name="bench.psl")
    with engine.connect() as connection:
        return int(
            connection.execute(
                select(sessions.c.id).where(sessions.c.session_id == result.session_id)
            ).scalar_one()
        )
