"""The serial receiver: what a docked programmer sends lands in the inbox (docs/formats.md §6).

The programmer sends one export per transfer over a serial line (default 115200
baud, 8N1, no flow control) with XMODEM-1K using CRC, as `sx -k` from lrzsz does
(§6). The protocol is the maintained `xmodem` package (`XMODEM.recv`); this module
supplies its byte callbacks over pyserial and turns each transfer into one file:

1. The port is opened exclusively (a second receiver, or any program that locks
   it, gets `SerialPortError: DEVICE: in use by another program`).
2. While idle the receiver sends `C` every `c_interval` seconds (§6: "the
   receiver starts each transfer by sending C"; lrzsz waits 10 s for it before
   falling back to checksum mode) and ignores every byte that cannot start a
   block, so line noise never counts against a transfer.
3. The blocks are written to `<inbox>/.receiving-<uuid>.part` (a dot name with a
   temporary suffix: the inbox watcher skips it), mode 0600, created on the first
   block so an idle receiver leaves nothing behind.
4. After EOT the content is classified by its first bytes: the PSL signature
   (§2.1) means a binary export, kept exactly as received, 0x1A padding included
   (the decoder drops it using `header_size + body_size`, §2 and §6); anything
   else is text (a CSV export) whose trailing 0x1A padding is stripped (§6).
5. The file is fsync'ed, hard-linked to `serial-<UTC time>-<sha256[:12]>.psl` or
   `.csv` (a link never replaces an existing file) and the temporary name is
   removed; the folder is fsync'ed. Only a complete, verified transfer ever gets a
   name the watcher picks up.

A block that arrives damaged is NAKed and resent by the sender (XMODEM CRC-16).
A transfer that fails (the sender cancels, too many errors, the line silent for
`timeout` seconds, larger than the 4 MiB export limit plus the 1023 bytes of
padding §7.3 allows, a stop request) is cancelled with CAN bytes, its temporary
file is removed and `TransferFailed` says why. A port that vanishes raises
`SerialPortError`.

Logging follows `ingest.logging_setup`: transfers are named by the file name this
module made and a SHA-256 prefix; no content is ever logged.

Known limit of xmodem 0.5.0: a block the receiver has already ACKed and gets again
(the sender missed the ACK) is NAKed instead of ACKed and skipped, so a lost ACK
makes the transfer fail (cleanly: nothing reaches the inbox) rather than recover.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, Final

import serial
from xmodem import XMODEM

from ingest.durable import fsync_dir, link_to_free_name
from ingest.logging_setup import log_event
from ingest.rawstore import sha256_hex
from parsers.errors import PumptrailError
from parsers.params import MAX_FILE_BYTES, MAX_PADDING_BYTES

log = logging.getLogger(__name__)

# docs/formats.md §2.1: every binary export starts with this signature.
PSL_SIGNATURE: Final = b"\x89PSL\r\n\x1a\n"
# XMODEM pads the last block with CP/M end-of-file (SUB, 0x1A) (§2, §6).
PAD_BYTE: Final = 0x1A
# XMODEM control bytes (XMODEM.TXT, XMODEM1K.TXT, XMODMCRC.TXT).
SOH: Final = b"\x01"  # starts a 128-byte block
STX: Final = b"\x02"  # starts a 1024-byte block
CAN: Final = b"\x18"
CRC_REQUEST: Final = b"C"  # the receiver asks for CRC-16 mode
# Bytes that start a 1K block on the wire: STX, seq, 255-seq, 1024 data, CRC hi, CRC lo.
BLOCK_WIRE_BYTES: Final = 1 + 2 + 1024 + 2

# The most a transfer may carry: the export size limit plus the padding §7.3 allows.
MAX_TRANSFER_BYTES: Final = MAX_FILE_BYTES + MAX_PADDING_BYTES

TEMP_PREFIX: Final = ".receiving-"
TEMP_SUFFIX: Final = ".part"
FINAL_PREFIX: Final = "serial-"
# A temporary file untouched this long belongs to a receiver that died: removed.
STALE_TEMP_SECONDS: Final = 600.0
# Reads are cut into slices this long so a stop request is seen promptly.
_READ_SLICE: Final = 0.25
# After a failed transfer: how long the line must be quiet before listening again.
_DRAIN_QUIET: Final = 1.0
_DRAIN_MAX: Final = 5.0
_CANCEL_BYTES: Final = 8


class SerialReceiverError(PumptrailError):
    """Base of the receiver's errors; raised only as one of its subclasses."""


class SerialPortError(SerialReceiverError):
    """Raised when the port cannot be used: missing, taken, not a serial device, no
    permission, gone, or the baud rate refused."""

    def __init__(self, port: str, reason: str) -> None:
        super().__init__(f"{port}: {reason}")
        self.port = port
        self.reason = reason


class TransferFailed(SerialReceiverError):
    """Raised when a transfer began but did not complete (no data, only padding, an
    XMODEM failure); nothing was put in the inbox."""

    def __init__(self, port: str, reason: str, *, received_bytes: int = 0) -> None:
        super().__init__(f"{port}: transfer failed: {reason}")
        self.port = port
        self.reason = reason
        self.received_bytes = received_bytes


@dataclass(frozen=True)
class Received:
    """One export written to the inbox."""

    path: Path
    sha256: str
    size: int
    format: str  # "psl-binary", "psl-csv" or "unknown" (the watcher will quarantine it)
    padding_stripped: int
    retransmissions: int
    seconds: float


# Control flow out of the xmodem callbacks (xmodem's recv catches nothing).
class _Stopped(Exception):
    pass


class _Idle(Exception):
    pass


class _Silent(Exception):
    pass


class _TooLarge(Exception):
    pass


def port_error(port: str, exc: BaseException) -> SerialPortError:
    """A one-line reason for a pyserial or OS error on `port`."""
    code = getattr(exc, "errno", None)
    if code in (errno.ENOENT, errno.ENODEV, errno.ENXIO):
        reason = "no such device"
    elif code in (errno.EACCES, errno.EPERM):
        reason = "permission denied (the user needs the dialout group)"
    elif code in (errno.EAGAIN, errno.EBUSY):
        reason = "in use by another program (port busy)"
    elif code == errno.EIO or any(
        text in str(exc) for text in ("returned no data", "Input/output error")
    ):
        reason = "device disconnected"
    elif code == errno.EISDIR or "Inappropriate ioctl" in str(exc) or code == errno.ENOTTY:
        reason = "not a serial device"
    elif isinstance(exc, OSError) and exc.strerror:
        reason = exc.strerror.lower()
    else:
        reason = str(exc) or type(exc).__name__
    return SerialPortError(port, reason)


class _Line:
    """The xmodem `getc`/`putc` callbacks over one open pyserial port."""

    def __init__(
        self,
        port: serial.Serial,
        name: str,
        *,
        stop: threading.Event,
        c_interval: float,
        silence_limit: float,
    ) -> None:
        self.port = port
        self.name = name
        self.stop = stop
        self.c_interval = c_interval
        self.silence_limit = silence_limit
        self.wait: float | None = None
        self.started = False
        self.idle_since = 0.0
        self.last_c_at = 0.0
        self.last_byte_at = 0.0
        self.noise_bytes = 0

    def begin(self, wait: float | None) -> None:
        """Reset for a new transfer; `wait` bounds the idle time (None: until stopped)."""
        self.wait = wait
        self.started = False
        self.idle_since = time.monotonic()
        self.last_c_at = float("-inf")
        self.noise_bytes = 0

    # -- xmodem callbacks -----------------------------------------------------

    def getc(self, size: int, timeout: float = 1) -> bytes | None:
        if self.stop.is_set():
            raise _Stopped
        if not self.started:
            return self._await_sender()
        data = self._read(size, float(timeout))
        if data:
            return data
        if time.monotonic() - self.last_byte_at >= self.silence_limit:
            raise _Silent
        return None

    def putc(self, data: bytes, timeout: float = 1) -> int | None:
        if data == CRC_REQUEST and not self.started:
            self.last_c_at = time.monotonic()
        return self.write(data)

    # -- port I/O -------------------------------------------------------------

    def write(self, data: bytes) -> int | None:
        try:
            written = self.port.write(data)
        except serial.SerialTimeoutException:
            return None
        except (serial.SerialException, OSError) as exc:
            raise port_error(self.name, exc) from exc
        return int(written) if written else None

    def _read(self, size: int, seconds: float) -> bytes:
        deadline = time.monotonic() + seconds
        buf = bytearray()
        while len(buf) < size:
            if self.stop.is_set():
                raise _Stopped
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self.port.timeout = min(_READ_SLICE, remaining)
            try:
                chunk = self.port.read(size - len(buf))
            except (serial.SerialException, OSError) as exc:
                raise port_error(self.name, exc) from exc
            if chunk:
                buf += chunk
                self.last_byte_at = time.monotonic()
        return bytes(buf)

    def _await_sender(self) -> bytes:
        """Send `C` every c_interval until a block starts (§6); other bytes are noise."""
        while True:
            now = time.monotonic()
            if self.wait is not None and now - self.idle_since >= self.wait:
                raise _Idle
            if now - self.last_c_at >= self.c_interval:
                self.last_c_at = now
                self.write(CRC_REQUEST)
            listen = min(_READ_SLICE, self.last_c_at + self.c_interval - now)
            if self.wait is not None:
                listen = min(listen, self.idle_since + self.wait - now)
            byte = self._read(1, max(listen, 0.001))
            if byte in (SOH, STX):
                self.started = True
                log_event(log, "transfer_started", port=self.name, noise_bytes=self.noise_bytes)
                return byte
            if byte:
                self.noise_bytes += 1

    def cancel_and_drain(self) -> None:
        """Tell the sender to stop (CAN...), then wait for the line to go quiet."""
        self.write(CAN * _CANCEL_BYTES)
        started = time.monotonic()
        quiet_since = started
        while True:
            now = time.monotonic()
            if now - quiet_since >= _DRAIN_QUIET or now - started >= _DRAIN_MAX:
                break
            try:
                if self._read(64, _READ_SLICE):
                    quiet_since = time.monotonic()
            except _Stopped:
                break
        try:
            self.port.reset_input_buffer()
        except (serial.SerialException, OSError) as exc:
            raise port_error(self.name, exc) from exc


class _Sink:
    """The stream xmodem writes to: a temporary file in the inbox, created on first write."""

    def __init__(self, folder: Path, limit: int) -> None:
        self.folder = folder
        self.limit = limit
        self.path: Path | None = None
        self.handle: BinaryIO | None = None
        self.size = 0
        self.head = b""
        self.trailing_pad = 0

    def write(self, data: bytes) -> int:
        if self.size + len(data) > self.limit:
            raise _TooLarge
        handle = self.handle if self.handle is not None else self._open()
        handle.write(data)
        handle.flush()  # the temporary file holds every block ACKed so far
        self.size += len(data)
        if len(self.head) < len(PSL_SIGNATURE):
            self.head += data[: len(PSL_SIGNATURE) - len(self.head)]
        stripped = len(data.rstrip(bytes([PAD_BYTE])))
        self.trailing_pad = self.trailing_pad + len(data) if stripped == 0 else len(data) - stripped
        return len(data)

    def _open(self) -> BinaryIO:
        path = self.folder / f"{TEMP_PREFIX}{uuid.uuid4().hex}{TEMP_SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        self.path = path
        os.fchmod(fd, 0o600)  # whatever the umask, the file is the service user's alone
        self.handle = handle = os.fdopen(fd, "wb")
        return handle

    def discard(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None
        if self.path is not None:
            self.path.unlink(missing_ok=True)
            self.path = None


def classify(head: bytes) -> tuple[str, bool]:
    """(file suffix, keep padding) from the first bytes: binary by signature, else text."""
    if head.startswith(PSL_SIGNATURE):
        return ".psl", True
    return ".csv", False


def format_name(data: bytes) -> str:
    """The registry's name for the content, or "unknown" (the watcher quarantines it)."""
    try:
        from parsers.errors import UnknownFormat
        from parsers.registry import detect
    except ImportError:  # decoders not installed: the signature alone decides
        return "psl-binary" if data.startswith(PSL_SIGNATURE) else "unknown"
    try:
        return detect(data).name
    except UnknownFormat:
        return "unknown"


def _new_names(folder: Path, stem: str, suffix: str) -> Iterator[Path]:
    """`stem.suffix`, then `stem-2.suffix`, `stem-3.suffix`, ... in `folder`."""
    yield folder / f"{stem}{suffix}"
    for attempt in itertools.count(2):
        yield folder / f"{stem}-{attempt}{suffix}"


class SerialReceiver:
    """Receives exports from one serial port into one inbox folder.

    `timeout` is how long the line may stay silent mid-transfer before the transfer
    is abandoned; `c_interval` how often an idle receiver sends `C`; `retry` the
    xmodem error budget per block; `listen_seconds` how long one `run_once` (the
    service's job) listens before returning. `stop_event` ends waiting and cancels
    a transfer in progress.
    """

    def __init__(
        self,
        port: str,
        inbox: Path,
        *,
        baud: int = 115200,
        timeout: float = 30.0,
        c_interval: float = 3.0,
        retry: int = 10,
        listen_seconds: float = 25.0,
        stop_event: threading.Event | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.port_name = port
        self.inbox = Path(inbox)
        self.baud = baud
        self.timeout = timeout
        self.c_interval = c_interval
        self.retry = retry
        self.listen_seconds = listen_seconds
        self.stop_event = stop_event if stop_event is not None else threading.Event()
        self._clock = clock
        self._serial: serial.Serial | None = None
        self._line: _Line | None = None
        # xmodem's per-read timeout. On a silent line xmodem 0.5.0 waits for a block
        # header, then for the block body, then purges for 1 s before it NAKs; the
        # NAK must go out with time left for the sender to answer: 3 reads + 2 s fit
        # in the silence limit. A read must also fit one block at the line speed
        # (10 bits a byte on an 8N1 line).
        block_seconds = BLOCK_WIRE_BYTES * 10 / max(baud, 1)
        self.read_timeout = max(1.0, min(10.0, (timeout - 2.0) / 3), 2 * block_seconds + 0.5)
        self.silence_limit = max(timeout, 3 * self.read_timeout + 2.0)

    # -- port -----------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._serial is not None and bool(self._serial.is_open)

    def open(self) -> None:
        """Open the port 8N1, no flow control, exclusively; raise SerialPortError."""
        self._open_line()

    def _open_line(self) -> _Line:
        if self._line is not None and self.is_open:
            return self._line
        # The inbox first: an inbox that cannot be made leaves no port locked.
        self.inbox.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.remove_stale_temporaries()
        port = serial.Serial()
        port.port = self.port_name
        try:
            port.baudrate = self.baud
        except ValueError as exc:
            raise SerialPortError(self.port_name, f"cannot use {self.baud} baud") from exc
        port.bytesize = serial.EIGHTBITS
        port.parity = serial.PARITY_NONE
        port.stopbits = serial.STOPBITS_ONE
        port.xonxoff = False
        port.rtscts = False
        port.dsrdtr = False
        port.timeout = _READ_SLICE
        port.write_timeout = 5.0
        port.exclusive = True
        try:
            port.open()
            port.reset_input_buffer()
        except (serial.SerialException, OSError, ValueError) as exc:
            if port.is_open:
                port.close()
            raise port_error(self.port_name, exc) from exc
        self._serial = port
        self._line = line = _Line(
            port,
            self.port_name,
            stop=self.stop_event,
            c_interval=self.c_interval,
            silence_limit=self.silence_limit,
        )
        log_event(log, "serial_open", port=self.port_name, baud=self.baud)
        return line

    def close(self) -> None:
        if self._serial is not None:
            # Closing a port that vanished: nothing left to release.
            with contextlib.suppress(serial.SerialException, OSError):
                self._serial.close()
            self._serial = None
            self._line = None
            log_event(log, "serial_closed", port=self.port_name)

    def __enter__(self) -> SerialReceiver:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def remove_stale_temporaries(self) -> int:
        """Remove `.receiving-*.part` files left by a receiver that died mid-transfer."""
        removed = 0
        now = time.time()
        for path in self.inbox.glob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}"):
            try:
                if now - path.stat().st_mtime >= STALE_TEMP_SECONDS:
                    path.unlink()
                    removed += 1
                    log_event(log, "stale_temporary_removed", file=path.name)
            except FileNotFoundError:
                continue
        return removed

    # -- transfers ------------------------------------------------------------

    def receive(self, *, wait: float | None = None) -> Received | None:
        """Receive one export: the file in the inbox, or None when no sender started
        within `wait` seconds (None: wait until `stop_event`).

        Raises TransferFailed (nothing written) or SerialPortError (the port is closed).
        """
        line = self._open_line()
        line.begin(wait)
        sink = _Sink(self.inbox, MAX_TRANSFER_BYTES)
        errors = _ErrorCounter()
        try:
            try:
                return self._transfer(line, sink, errors)
            except OSError as exc:  # the inbox cannot be written (disk full, permissions)
                line.cancel_and_drain()
                raise TransferFailed(
                    self.port_name,
                    f"cannot write to the inbox: {exc.strerror or exc}",
                    received_bytes=sink.size,
                ) from exc
        except SerialPortError:
            self.close()
            raise
        except TransferFailed as exc:
            log_event(
                log,
                "transfer_failed",
                level=logging.WARNING,
                port=self.port_name,
                reason=exc.reason,
                bytes=exc.received_bytes,
                retransmissions=errors.total,
            )
            raise
        finally:
            sink.discard()

    def _transfer(self, line: _Line, sink: _Sink, errors: _ErrorCounter) -> Received | None:
        modem = XMODEM(line.getc, line.putc, mode="xmodem1k")
        started = time.monotonic()
        reason: str | None = None
        try:
            result = modem.recv(
                sink,
                crc_mode=1,
                retry=self.retry,
                timeout=self.read_timeout,
                delay=1,
                quiet=True,
                callback=errors,
            )
        except _Idle:
            return None
        except _Stopped:
            if not line.started:
                return None
            reason = "stopped by request"
        except _Silent:
            reason = f"line silent for {line.silence_limit:g} s"
        except _TooLarge:
            reason = f"larger than {MAX_TRANSFER_BYTES} bytes"
        else:
            if result is None:
                reason = "cancelled by the sender or too many errors"
            elif sink.size == 0:
                reason = "no data"
        if reason is not None:
            line.cancel_and_drain()
            raise TransferFailed(self.port_name, reason, received_bytes=sink.size)
        return self._finish(sink, errors.total, time.monotonic() - started)

    def _finish(self, sink: _Sink, retransmissions: int, seconds: float) -> Received:
        """Strip text padding, fsync, name by content and publish the file (steps 4-5)."""
        if sink.handle is None or sink.path is None:
            raise TransferFailed(self.port_name, "no data")
        suffix, keep_padding = classify(sink.head)
        keep = sink.size if keep_padding else sink.size - sink.trailing_pad
        if keep == 0:
            raise TransferFailed(self.port_name, "only padding received", received_bytes=sink.size)
        handle = sink.handle
        handle.flush()
        if keep != sink.size:
            handle.truncate(keep)
        os.fsync(handle.fileno())
        handle.close()
        sink.handle = None
        data = sink.path.read_bytes()
        digest = sha256_hex(data)
        stamp = self._clock().astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
        target = link_to_free_name(
            sink.path, _new_names(self.inbox, f"{FINAL_PREFIX}{stamp}-{digest[:12]}", suffix)
        )
        if sink.path.exists():
            sink.path.unlink()
        sink.path = None
        fsync_dir(self.inbox)
        received = Received(
            path=target,
            sha256=digest,
            size=len(data),
            format=format_name(data),
            padding_stripped=sink.size - keep,
            retransmissions=retransmissions,
            seconds=round(seconds, 3),
        )
        log_event(
            log,
            "received",
            port=self.port_name,
            file=target.name,
            format=received.format,
            sha256=digest[:12],
            bytes=received.size,
            padding_stripped=received.padding_stripped,
            retransmissions=retransmissions,
            seconds=received.seconds,
        )
        return received

    def run_once(self) -> Received | None:
        """The service's job: listen for `listen_seconds`, receive at most one export.

        A failed transfer is logged and gives None; a port problem raises
        SerialPortError (the service logs it and tries again later).
        """
        try:
            return self.receive(wait=self.listen_seconds)
        except TransferFailed:
            return None

    def serve(self, on_received: Callable[[Received], None] | None = None) -> None:
        """Receive export after export until `stop_event` is set.

        Failed transfers are logged and skipped; SerialPortError ends the loop.
        """
        while not self.stop_event.is_set():
            try:
                received = self.receive(wait=None)
            except TransferFailed:
                continue
            if received is not None and on_received is not None:
                on_received(received)


class _ErrorCounter:
    """xmodem's progress callback: counts every block error (each one is a NAK and a resend)."""

    def __init__(self) -> None:
        self.total = 0
        self._last = 0

    def __call__(
        self, total_packets: int, success_count: int, error_count: int, packet_size: int = 0
    ) -> None:
        if error_count > self._last:
            self.total += error_count - self._last
        self._last = error_count


def receive_one(
    port: str,
    inbox: Path,
    *,
    baud: int = 115200,
    timeout: float = 30.0,
    wait: float | None = None,
    stop_event: threading.Event | None = None,
) -> Path | None:
    """Open `port`, receive one export into `inbox`, close; the file, or None if no
    sender started within `wait` seconds. Raises TransferFailed or SerialPortError."""
    with SerialReceiver(port, inbox, baud=baud, timeout=timeout, stop_event=stop_event) as rx:
        received = rx.receive(wait=wait)
    return received.path if received is not None else None
