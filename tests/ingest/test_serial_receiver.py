"""The serial receiver against a real, independent sender (docs/formats.md §6).

The sender is lrzsz's `sx -k` (XMODEM-1K, CRC when the receiver asks with `C`) on one
end of a socat pty pair; the receiver is `ingest.serial_receiver` on the other.
Noisy and dying lines put a relay (tests/ingest/serial_line.py) between two pairs.

What "intact" means: a CSV export is stored exactly as sent (its 0x1A padding
stripped, §6). A binary export is stored *as received*: the sent bytes followed by
the XMODEM padding of the last block (0x1A, fewer than 1024 bytes; lrzsz ends with
128-byte blocks so fewer than 128), because §6 makes the decoder, not the receiver,
drop it using `header_size + body_size`. The tests check exactly that and that the
decoder reads the stored file as the same session.

Port errors (missing, taken, not a tty) use `os.openpty()` and need neither tool.
If socat or lrzsz is missing the transfer tests skip with the reason, or fail when
the environment variable CI is set.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import random
import re
import stat
import struct
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import serial

from fixtures.binary_writer import encode_binary
from fixtures.csv_writer import encode_csv
from fixtures.scenarios import VisitPlan, new_pump, realistic_scenario, visit
from ingest import serial_receiver
from ingest.logging_setup import KeyValueFormatter
from ingest.serial_receiver import (
    MAX_TRANSFER_BYTES,
    PSL_SIGNATURE,
    Received,
    SerialPortError,
    SerialReceiver,
    TransferFailed,
)
from parsers.registry import decode_bytes
from pumptrail import cli
from pumptrail.commands import receive as receive_command
from tests.ingest.serial_line import (
    BLOCK_WIRE,
    Faults,
    Relay,
    Sender,
    pty_pair,
    start_sender,
    sx_binary,
)

NAME = re.compile(r"^serial-\d{8}T\d{6}Z-([0-9a-f]{12})\.(psl|csv)$")
# Seconds of silence after which a test receiver gives up (the default is 30); the
# shortest that lets xmodem NAK once and the sender answer (1 s reads: 3 x 1 + 2).
TIMEOUT = 5.0


# -- exports to send ------------------------------------------------------------


def small_binary() -> bytes:
    """The realistic workhorse session: about 1.2 KB, one 1K block and 128-byte tail blocks."""
    return encode_binary(realistic_scenario(random.Random(1)))


def large_binary() -> bytes:
    """A long visit (150 logged alarms, 40 notes): about 5.5 KB, five full 1K blocks."""
    rng = random.Random(1)
    plan = VisitPlan(refill=True, dose_change_percent=10, bolus=True, logged_alarms=150, notes=40)
    return encode_binary(visit(rng, new_pump(rng), datetime(2025, 3, 4, 10, 0), plan))


def csv_export() -> bytes:
    """The realistic session as a CSV export; it holds a `Patient ID,SYN-...` line."""
    return encode_csv(realistic_scenario(random.Random(1)))


def binary_length(data: bytes) -> int:
    """header_size + body_size (docs/formats.md §2.1: u16 at 10, u32 at 86)."""
    (header_size,) = struct.unpack_from("<H", data, 10)
    (body_size,) = struct.unpack_from("<I", data, 86)
    return int(header_size + body_size)


def assert_intact(received_bytes: bytes, sent: bytes) -> None:
    if sent.startswith(PSL_SIGNATURE):
        assert binary_length(sent) == len(sent)
        padding = received_bytes[len(sent) :]
        assert received_bytes[: len(sent)] == sent
        assert set(padding) <= {0x1A}
        assert len(padding) < 128  # lrzsz pads to a 128-byte block
        assert binary_length(received_bytes) == len(sent)
        assert (
            decode_bytes(received_bytes, source="rx").session_id
            == decode_bytes(sent, source="tx").session_id
        )
    else:
        assert received_bytes == sent


def inbox_names(inbox: Path) -> list[str]:
    return sorted(os.listdir(inbox)) if inbox.exists() else []


# -- running a receiver beside a sender -------------------------------------------


class ReceiverThread:
    """`receiver.receive(wait=...)` in a thread, its result or exception kept."""

    def __init__(self, receiver: SerialReceiver, wait: float | None = 20.0) -> None:
        self.receiver = receiver
        self.result: Received | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(wait,), daemon=True)
        self.thread.start()

    def _run(self, wait: float | None) -> None:
        try:
            self.result = self.receiver.receive(wait=wait)
        except BaseException as exc:
            self.error = exc

    def join(self, timeout: float = 60.0) -> Received | None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "receiver did not finish"
        if self.error is not None:
            raise self.error
        return self.result


@pytest.fixture(autouse=True)
def restore_root_logging() -> Iterator[None]:
    """The command installs a root handler (configure_logging); undo it after each test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    return tmp_path / "inbox"


@pytest.fixture
def line(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A null-modem pty pair: (receiver end, sender end)."""
    sx_binary()  # skip (or fail under CI) before starting anything
    with pty_pair(tmp_path, "line") as pair:
        yield pair.a, pair.b


@pytest.fixture
def relay_line(tmp_path: Path) -> Iterator[tuple[Path, Path, Path, Path]]:
    """receiver end, relay's receiver-side end, relay's sender-side end, sender end."""
    sx_binary()
    with pty_pair(tmp_path, "rx") as near, pty_pair(tmp_path, "tx") as far:
        yield near.a, near.b, far.a, far.b


def send_file(tmp_path: Path, data: bytes, name: str = "export.bin") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def run_transfer(
    receiver_end: Path,
    sender_end: Path,
    inbox: Path,
    export: Path,
    **receiver_options: float,
) -> tuple[Received | None, Sender]:
    """Start `sx -k` first (it waits 10 s for `C`), then receive: a single `C`, no stale ones."""
    sender = start_sender(export, sender_end)
    try:
        with SerialReceiver(str(receiver_end), inbox, timeout=TIMEOUT, **receiver_options) as rx:
            result = rx.receive(wait=20)
        sender.wait(timeout=30)
    finally:
        sender.close()
    return result, sender


# -- clean transfers ------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("export", "suffix"),
    [(small_binary, "psl"), (large_binary, "psl"), (csv_export, "csv")],
    ids=["binary-1k", "binary-5k", "csv"],
)
def test_transfer_lands_in_inbox_intact(
    line: tuple[Path, Path], inbox: Path, tmp_path: Path, export: object, suffix: str
) -> None:
    sent = export()  # type: ignore[operator]
    received, sender = run_transfer(*line, inbox, send_file(tmp_path, sent))
    assert sender.process.returncode == 0
    assert received is not None
    assert inbox_names(inbox) == [received.path.name]
    match = NAME.match(received.path.name)
    assert match is not None and match.group(2) == suffix
    stored = received.path.read_bytes()
    assert_intact(stored, sent)
    assert received.sha256 == hashlib.sha256(stored).hexdigest()
    assert match.group(1) == received.sha256[:12]
    assert received.size == len(stored)
    assert received.format == ("psl-binary" if suffix == "psl" else "psl-csv")
    if suffix == "csv":
        assert received.padding_stripped > 0  # sx padded the last block; §6: strip it
    else:
        assert received.padding_stripped == 0
    assert stat.S_IMODE(received.path.stat().st_mode) == 0o600


@pytest.mark.slow
def test_cli_once_prints_the_received_file(
    line: tuple[Path, Path], inbox: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sent = large_binary()
    sender = start_sender(send_file(tmp_path, sent), line[1])
    try:
        status = run_cli(
            ["receive", "--port", str(line[0]), "--once", "--inbox", str(inbox), "--wait", "20"]
        )
        assert sender.wait(timeout=30) == 0
    finally:
        sender.close()
    out = capsys.readouterr().out.splitlines()
    assert status == 0
    assert len(out) == 1
    path = Path(out[0])
    assert path.parent == inbox and NAME.match(path.name)
    assert_intact(path.read_bytes(), sent)


@pytest.mark.slow
def test_noise_while_idle_is_ignored(
    line: tuple[Path, Path], inbox: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ingest.serial_receiver")
    sent = csv_export()
    rx = SerialReceiver(str(line[0]), inbox, timeout=TIMEOUT)
    waiting = ReceiverThread(rx)
    time.sleep(0.3)  # the receiver has sent its first C
    fd = os.open(line[1], os.O_RDWR | os.O_NOCTTY)
    try:
        os.write(fd, b"\x00+++ATZ\r\n\xff")  # a modem greeting: no SOH or STX in it
    finally:
        os.close(fd)
    time.sleep(0.3)
    sender = start_sender(send_file(tmp_path, sent), line[1])
    try:
        received = waiting.join()
        assert sender.wait(timeout=30) == 0
    finally:
        sender.close()
        rx.close()
    assert received is not None
    assert received.path.read_bytes() == sent
    started = [r for r in caplog.records if getattr(r, "event", None) == "transfer_started"]
    assert len(started) == 1
    assert started[0].fields["noise_bytes"] == 10  # type: ignore[attr-defined]


# -- noisy and dying lines ------------------------------------------------------

THIRD_BLOCK = 2 * BLOCK_WIRE  # offset of the 3rd 1K block in the sender's stream


def relayed_transfer(
    relay_line: tuple[Path, Path, Path, Path],
    inbox: Path,
    export: Path,
    faults: Faults,
) -> tuple[Received | None, BaseException | None, Relay, Sender]:
    rx_end, relay_rx, relay_tx, tx_end = relay_line
    relay = Relay(relay_rx, relay_tx, faults)
    relay.start()
    sender = start_sender(export, tx_end)
    rx = SerialReceiver(str(rx_end), inbox, timeout=TIMEOUT)
    try:
        waiting = ReceiverThread(rx)
        waiting.thread.join(90)
        sender.wait(timeout=60)
    finally:
        sender.close()
        rx.close()
        relay.close()
    return waiting.result, waiting.error, relay, sender


@pytest.mark.slow
def test_corrupted_block_is_resent(
    relay_line: tuple[Path, Path, Path, Path], inbox: Path, tmp_path: Path
) -> None:
    sent = large_binary()
    faults = Faults(flip=frozenset({THIRD_BLOCK + 3 + 500}))  # one data byte of block 3
    received, error, relay, sender = relayed_transfer(
        relay_line, inbox, send_file(tmp_path, sent), faults
    )
    assert error is None
    assert received is not None
    assert received.retransmissions >= 1  # the bad CRC was NAKed and the block resent
    assert relay.forwarded > len(sent) + BLOCK_WIRE  # the damaged block went twice
    assert sender.process.returncode == 0
    assert inbox_names(inbox) == [received.path.name]
    assert_intact(received.path.read_bytes(), sent)


@pytest.mark.slow
def test_lost_bytes_are_resent(
    relay_line: tuple[Path, Path, Path, Path], inbox: Path, tmp_path: Path
) -> None:
    sent = csv_export()
    faults = Faults(drop=range(THIRD_BLOCK + 300, THIRD_BLOCK + 340))  # 40 bytes of block 3
    received, error, _relay, sender = relayed_transfer(
        relay_line, inbox, send_file(tmp_path, sent), faults
    )
    assert error is None
    assert received is not None
    assert received.retransmissions >= 1
    assert sender.process.returncode == 0
    assert inbox_names(inbox) == [received.path.name]
    assert received.path.read_bytes() == sent


@pytest.mark.slow
def test_line_dying_mid_transfer_leaves_nothing(
    relay_line: tuple[Path, Path, Path, Path], inbox: Path, tmp_path: Path
) -> None:
    rx_end, relay_rx, relay_tx, tx_end = relay_line
    relay = Relay(relay_rx, relay_tx, Faults(cut_at=THIRD_BLOCK + 500))
    relay.start()
    sender = start_sender(send_file(tmp_path, large_binary()), tx_end)
    rx = SerialReceiver(str(rx_end), inbox, timeout=TIMEOUT)
    try:
        waiting = ReceiverThread(rx)
        assert relay.cut.wait(20), "the transfer never reached the cut"
        sender.kill()  # the programmer is gone too
        # Mid-transfer: two blocks sit in a temporary file the inbox watcher skips.
        partial = [n for n in inbox_names(inbox) if n.startswith(".receiving-")]
        assert len(partial) == 1 and partial[0].endswith(".part")
        assert (inbox / partial[0]).stat().st_size == 2048
        began = time.monotonic()
        with pytest.raises(TransferFailed) as failed:
            waiting.join()
        assert time.monotonic() - began < TIMEOUT + 10
    finally:
        sender.close()
        rx.close()
        relay.close()
    assert failed.value.reason == f"line silent for {TIMEOUT:g} s"
    assert failed.value.received_bytes == 2048
    assert str(failed.value) == f"{rx_end}: transfer failed: line silent for {TIMEOUT:g} s"
    assert inbox_names(inbox) == []


@pytest.mark.slow
def test_dock_unplugged_mid_transfer(tmp_path: Path, inbox: Path) -> None:
    """The receiver's end of the line vanishes (socat killed): a port error, nothing kept."""
    sx_binary()
    with pty_pair(tmp_path, "rx") as near, pty_pair(tmp_path, "tx") as far:
        relay = Relay(near.b, far.a, Faults(cut_at=THIRD_BLOCK + 500))
        relay.start()
        sender = start_sender(send_file(tmp_path, large_binary()), far.b)
        rx = SerialReceiver(str(near.a), inbox, timeout=30)
        try:
            waiting = ReceiverThread(rx)
            assert relay.cut.wait(20)
            near.kill()
            with pytest.raises(SerialPortError) as failed:
                waiting.join(timeout=20)
        finally:
            sender.close()
            rx.close()
            relay.close()
    assert failed.value.reason == "device disconnected"
    assert not rx.is_open
    assert inbox_names(inbox) == []


@pytest.mark.slow
def test_lost_ack_never_leaves_a_bad_file(
    relay_line: tuple[Path, Path, Path, Path], inbox: Path, tmp_path: Path
) -> None:
    """xmodem 0.5.0 NAKs a block it already has, so a lost ACK ends the transfer: cleanly."""
    sent = large_binary()
    received, error, relay, _sender = relayed_transfer(
        relay_line, inbox, send_file(tmp_path, sent), Faults(corrupt_ack=3)
    )
    assert relay.acks >= 3
    if received is not None:
        assert inbox_names(inbox) == [received.path.name]
        assert_intact(received.path.read_bytes(), sent)
    else:
        assert isinstance(error, TransferFailed)
        assert inbox_names(inbox) == []


@pytest.mark.slow
def test_transfer_over_the_size_limit_is_cancelled(
    line: tuple[Path, Path], inbox: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(serial_receiver, "MAX_TRANSFER_BYTES", 3000)
    sender = start_sender(send_file(tmp_path, large_binary()), line[1])
    try:
        with (
            SerialReceiver(str(line[0]), inbox, timeout=TIMEOUT) as rx,
            pytest.raises(TransferFailed) as failed,
        ):
            rx.receive(wait=20)
        assert sender.wait(timeout=30) != 0  # our CANs stopped it
    finally:
        sender.close()
    assert failed.value.reason == "larger than 3000 bytes"
    assert failed.value.received_bytes == 2048
    assert inbox_names(inbox) == []


# -- logs -----------------------------------------------------------------------


@pytest.mark.slow
def test_logs_carry_no_patient_identifier(
    line: tuple[Path, Path], inbox: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sent = csv_export()
    text = sent.decode()
    patient_id = re.search(r"^Patient ID,(SYN-\d+)", text, re.M)
    patient_name = re.search(r'^Patient Name,"?([^"\r\n]+)', text, re.M)
    assert patient_id and patient_name
    caplog.set_level(logging.DEBUG)  # every logger, xmodem's included
    received, _sender = run_transfer(*line, inbox, send_file(tmp_path, sent))
    assert received is not None
    formatter = KeyValueFormatter(tracebacks=True)
    lines = [formatter.format(record) for record in caplog.records]
    everything = "\n".join(lines) + caplog.text
    assert f"sha256={received.sha256[:12]}" in everything
    assert any("event=received" in entry for entry in lines)
    for secret in (patient_id.group(1), patient_name.group(1), "Patient"):
        assert secret not in everything


# -- the idle receiver ------------------------------------------------------------


@pytest.fixture
def pty() -> Iterator[tuple[int, str]]:
    """A kernel pty: (master fd, slave path). The master plays the programmer."""
    master, slave = os.openpty()
    path = os.ttyname(slave)
    os.close(slave)
    try:
        yield master, path
    finally:
        os.close(master)


def read_available(fd: int) -> bytes:
    os.set_blocking(fd, False)
    try:
        return os.read(fd, 4096)
    except BlockingIOError:
        return b""


def test_idle_receiver_asks_for_crc_mode_repeatedly(pty: tuple[int, str], inbox: Path) -> None:
    master, path = pty
    with SerialReceiver(path, inbox, c_interval=0.3) as rx:
        began = time.monotonic()
        assert rx.receive(wait=1.0) is None
        assert 0.9 < time.monotonic() - began < 3
    requests = read_available(master)
    assert set(requests) == {ord("C")}  # §6: the receiver starts by sending C
    assert 3 <= len(requests) <= 5
    assert inbox_names(inbox) == []


def test_stop_event_ends_the_wait(pty: tuple[int, str], inbox: Path) -> None:
    _master, path = pty
    stop = threading.Event()
    rx = SerialReceiver(path, inbox, stop_event=stop)
    waiting = ReceiverThread(rx, wait=None)
    time.sleep(0.3)
    stop.set()
    began = time.monotonic()
    assert waiting.join(timeout=5) is None
    assert time.monotonic() - began < 1.0
    rx.close()


def test_run_once_listens_for_its_window(pty: tuple[int, str], inbox: Path) -> None:
    _master, path = pty
    rx = SerialReceiver(path, inbox, listen_seconds=0.3)
    try:
        assert rx.run_once() is None
        assert rx.is_open  # kept open between the service's calls
        assert rx.run_once() is None
    finally:
        rx.close()
    assert not rx.is_open


def test_stale_temporary_files_are_removed_on_open(pty: tuple[int, str], inbox: Path) -> None:
    _master, path = pty
    inbox.mkdir()
    old = inbox / ".receiving-0123.part"
    fresh = inbox / ".receiving-4567.part"
    other = inbox / "dropped.csv"
    for file in (old, fresh, other):
        file.write_bytes(b"x")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    with SerialReceiver(path, inbox):
        pass
    assert inbox_names(inbox) == [fresh.name, other.name]


# -- port errors --------------------------------------------------------------------


def test_missing_port(tmp_path: Path, inbox: Path) -> None:
    port = str(tmp_path / "ttyUSB9")
    rx = SerialReceiver(port, inbox)
    with pytest.raises(SerialPortError) as failed:
        rx.open()
    assert str(failed.value) == f"{port}: no such device"
    assert failed.value.reason == "no such device"
    assert not rx.is_open
    with pytest.raises(SerialPortError):  # what the service's serial job sees
        rx.run_once()


def test_taken_port(pty: tuple[int, str], inbox: Path) -> None:
    _master, path = pty
    holder = serial.Serial(path, exclusive=True)
    try:
        with pytest.raises(SerialPortError) as failed:
            SerialReceiver(path, inbox).open()
    finally:
        holder.close()
    assert str(failed.value) == f"{path}: in use by another program (port busy)"
    with SerialReceiver(path, inbox) as rx:  # free again
        assert rx.is_open


def test_second_receiver_on_the_same_port_is_refused(pty: tuple[int, str], inbox: Path) -> None:
    _master, path = pty
    with SerialReceiver(path, inbox), pytest.raises(SerialPortError, match="port busy"):
        SerialReceiver(path, inbox).open()


def test_not_a_serial_device(tmp_path: Path, inbox: Path) -> None:
    plain = tmp_path / "notatty"
    plain.write_bytes(b"")
    with pytest.raises(SerialPortError) as failed:
        SerialReceiver(str(plain), inbox).open()
    assert str(failed.value) == f"{plain}: not a serial device"


# -- the command line -----------------------------------------------------------------


def run_cli(argv: list[str]) -> int:
    """`pumptrail receive ...` through its own registration (the other commands aside)."""
    parser = argparse.ArgumentParser(prog="pumptrail")
    receive_command.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return cli.dispatch(args)


def test_cli_missing_port_is_one_line_and_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PUMPTRAIL_SERIAL_PORT", raising=False)
    port = str(tmp_path / "ttyACM7")
    status = run_cli(["receive", "--port", port, "--once", "--inbox", str(tmp_path / "in")])
    assert status == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    error_lines = [x for x in captured.err.splitlines() if not x.startswith("ts=")]
    assert error_lines == [f"pumptrail receive: {port}: no such device"]


def test_cli_needs_a_port(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PUMPTRAIL_SERIAL_PORT", raising=False)
    monkeypatch.delenv("PUMPTRAIL_CONFIG", raising=False)
    assert run_cli(["receive", "--once", "--inbox", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        "pumptrail receive: no serial port: give --port DEVICE or set serial_port\n"
    )


def test_cli_takes_the_port_from_the_environment(
    pty: tuple[int, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _master, path = pty
    monkeypatch.setenv("PUMPTRAIL_SERIAL_PORT", path)
    monkeypatch.setenv("PUMPTRAIL_INBOX", str(tmp_path / "in"))
    status = run_cli(["receive", "--once", "--wait", "0.5"])
    assert status == 1
    err = [x for x in capsys.readouterr().err.splitlines() if not x.startswith("ts=")]
    assert err == [f"pumptrail receive: {path}: no transfer within 0.5 s"]
    assert (tmp_path / "in").is_dir()


def test_size_limit_covers_an_export_and_its_padding() -> None:
    from parsers.params import MAX_FILE_BYTES, MAX_PADDING_BYTES

    assert MAX_TRANSFER_BYTES == MAX_FILE_BYTES + MAX_PADDING_BYTES
