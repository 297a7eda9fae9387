"""Test serial lines: socat pty pairs, lrzsz's `sx -k` as the sender, a fault-injecting relay.

A *pty pair* (`socat -d -d pty,raw,echo=0,link=A pty,raw,echo=0,link=B`) is a null-modem
cable: what is written to A is read from B and back. The *relay* joins two pairs,
receiver <-> [pair 1] <-> relay <-> [pair 2] <-> sender, and damages the bytes going
from the sender to the receiver at chosen offsets (a noisy line), or stops carrying
anything (a line that dies), or damages one ACK going back to the sender.

Offsets count bytes of the sender-to-receiver stream from its first byte; a 1K block
is 1029 bytes on the wire (STX, seq, ~seq, 1024 data, CRC-16), so the 3rd block
starts at 2 * 1029 when no block before it was resent.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import subprocess
import threading
import time
import tty
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

BLOCK_WIRE = 1029
ACK = 0x06


def require_tool(*names: str) -> str:
    """The first of `names` on PATH; else skip (fail under CI, where a skip hides a gap)."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    message = f"{' or '.join(names)} not installed (Debian: apt-get install lrzsz socat)"
    if os.environ.get("CI"):
        pytest.fail(message + " [CI: a skipped serial test is a failure]")
    pytest.skip(message)


def sx_binary() -> str:
    return require_tool("sx", "lsx")


@dataclass
class PtyPair:
    a: Path
    b: Path
    process: subprocess.Popen[bytes]

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)


@contextlib.contextmanager
def pty_pair(folder: Path, name: str) -> Iterator[PtyPair]:
    """Two linked ptys `<folder>/<name>-a` and `<folder>/<name>-b`, joined by socat."""
    socat = require_tool("socat")
    a, b = folder / f"{name}-a", folder / f"{name}-b"
    process = subprocess.Popen(
        [socat, "-d", "-d", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    pair = PtyPair(a, b, process)
    try:
        deadline = time.monotonic() + 10
        while not (a.exists() and b.exists()):
            if process.poll() is not None or time.monotonic() > deadline:
                err = process.stderr.read().decode() if process.stderr else ""
                pytest.fail(f"socat did not create the pty pair: {err}")
            time.sleep(0.02)
        # socat logs "starting data transfer loop" once both ends are open.
        time.sleep(0.1)
        yield pair
    finally:
        pair.kill()
        if process.stderr:
            process.stderr.close()


@dataclass
class Sender:
    process: subprocess.Popen[bytes]
    fd: int

    def wait(self, timeout: float = 60) -> int:
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=5)

    def close(self) -> None:
        self.kill()
        with contextlib.suppress(OSError):
            os.close(self.fd)

    def stderr_text(self) -> str:
        if self.process.stderr is None:
            return ""
        return self.process.stderr.read().decode(errors="replace").replace("\r", "\n")


def start_sender(file: Path, tty_path: Path) -> Sender:
    """`sx -k FILE < TTY > TTY`: lrzsz sending FILE with XMODEM-1K (CRC when asked by `C`)."""
    fd = os.open(tty_path, os.O_RDWR | os.O_NOCTTY)
    process = subprocess.Popen(
        [sx_binary(), "-k", str(file)],
        stdin=fd,
        stdout=fd,
        stderr=subprocess.PIPE,
    )
    return Sender(process, fd)


@dataclass
class Faults:
    """What the relay does to the sender-to-receiver stream (offsets from its first byte)."""

    flip: frozenset[int] = frozenset()  # XOR these bytes with 0xFF
    drop: range = range(0)  # lose these bytes
    cut_at: int | None = None  # from this byte on, carry nothing either way
    corrupt_ack: int | None = None  # turn the Nth ACK (1-based) back to the sender into 0x00


@dataclass
class Relay:
    """Carries bytes between two pty ends, applying `faults`; runs in a thread."""

    receiver_end: Path
    sender_end: Path
    faults: Faults = field(default_factory=Faults)
    forwarded: int = 0  # sender-to-receiver bytes seen
    acks: int = 0
    cut: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> None:
        self._fr = os.open(self.receiver_end, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        self._fs = os.open(self.sender_end, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        for fd in (self._fr, self._fs):
            tty.setraw(fd)
        self.thread = threading.Thread(target=self._run, name="relay", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=5)
        for fd in (self._fr, self._fs):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _damage(self, data: bytes) -> bytes:
        out = bytearray()
        for byte in data:
            offset = self.forwarded
            self.forwarded += 1
            if self.faults.cut_at is not None and offset >= self.faults.cut_at:
                self.cut.set()
                continue
            if offset in self.faults.drop:
                continue
            out.append(byte ^ 0xFF if offset in self.faults.flip else byte)
        return bytes(out)

    def _damage_acks(self, data: bytes) -> bytes:
        out = bytearray()
        for byte in data:
            damaged = False
            if byte == ACK:
                self.acks += 1
                damaged = self.acks == self.faults.corrupt_ack
            out.append(0x00 if damaged else byte)
        return bytes(out)

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                readable, _, _ = select.select([self._fr, self._fs], [], [], 0.05)
                if self._fs in readable:
                    data = self._damage(os.read(self._fs, 4096))
                    if data:  # the bytes before a cut still get through
                        _write_all(self._fr, data)
                if self._fr in readable:
                    data = os.read(self._fr, 4096)
                    if not self.cut.is_set():
                        _write_all(self._fs, self._damage_acks(data))
            except BlockingIOError:
                continue
            except OSError:
                return  # an end went away


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            time.sleep(0.001)
            continue
        view = view[written:]
