"""The billing interface's sender: the outbox's DFT^P03 messages over MLLP, in order.

docs/interfaces.md ("Transport", "ACK handling"). MLLP frames a message as the start
block 0x0B, the message, then the end block 0x1C and a carriage return 0x0D; the
billing system answers each message with an ACK in a frame of its own on the same
connection. `send_pending` makes one pass over the outbox (`db.outbox`), oldest first:

- it counts the attempt in the database before the bytes go out (`outbox.claim`), so
  a message that may have reached billing is known to have gone out even if this
  process dies before the answer;
- `AA` (or `CA`) marks it acknowledged; `AE`/`AR` (`CE`/`CR`) holds it as rejected
  with the ACK's text (MSA-3 and ERR-8) and the pass goes on with the next message;
- no answer within `billing_ack_seconds`, a closed or refused connection, an ACK that
  is not for this message's control ID: the pass stops there, the message stays
  pending and is the first one sent again, with the same control ID (MSH-10), so an
  idempotent receiver never books it twice.

`BillingJob.run` is the service's long-running job: a pass whenever the previous one
ended, a wait of `idle_seconds` when the outbox is empty, and after a transport
failure a back-off doubling from one second to `retry_max_seconds`, with the outage
logged at most once per `outage_log_seconds`.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import hl7
from sqlalchemy import Engine

from db import outbox
from db.engine import write_transaction
from ingest.logging_setup import log_event
from parsers.errors import PumptrailError

log = logging.getLogger(__name__)

START_BLOCK: Final = b"\x0b"
END_BLOCK: Final = b"\x1c\x0d"
CONNECT_SECONDS: Final = 10.0
# An answer larger than this is not an ACK.
MAX_ACK_BYTES: Final = 1 << 20
# Enhanced-mode application answers (CA, CE, CR) mean the same as the original ones.
_ACK_CODES: Final = {"AA": "AA", "AE": "AE", "AR": "AR", "CA": "AA", "CE": "AE", "CR": "AR"}


class BillingSettingsError(PumptrailError, ValueError):
    """Raised by `MllpTarget.parse` when `billing_mllp` is not HOST:PORT."""


class MllpError(PumptrailError):
    """Raised by `MllpClient.exchange` and `parse_ack` when a message got no usable
    answer: the connection was refused or closed, the ACK did not come in time, or
    the answer is not an ACK of that message."""


def frame(text: str) -> bytes:
    """One MLLP frame of a message (segments end with CR)."""
    return START_BLOCK + text.encode("utf-8") + END_BLOCK


@dataclass(frozen=True)
class MllpTarget:
    """Where the billing system listens (`billing_mllp`, `billing_mllp_tls`, ...)."""

    host: str
    port: int
    tls: bool = False
    ca_file: str = ""
    ack_seconds: float = 30.0

    @classmethod
    def parse(
        cls, text: str, *, tls: bool = False, ca_file: str = "", ack_seconds: float = 30.0
    ) -> MllpTarget:
        """`HOST:PORT` (an IPv6 address in brackets: `[::1]:2575`)."""
        host, sep, port = text.strip().rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise BillingSettingsError(f"billing_mllp: expected HOST:PORT, found {text!r}")
        return cls(host, int(port), tls, ca_file, ack_seconds)

    def __str__(self) -> str:
        return f"{self.host}:{self.port}{' (TLS)' if self.tls else ''}"


class MllpClient:
    """One connection to the billing system, opened on first use and kept."""

    def __init__(self, target: MllpTarget, *, connect_seconds: float = CONNECT_SECONDS) -> None:
        self.target = target
        self.connect_seconds = connect_seconds
        self._socket: socket.socket | None = None
        self._pending = b""

    def _connect(self) -> socket.socket:
        raw = socket.create_connection(
            (self.target.host, self.target.port), timeout=self.connect_seconds
        )
        if not self.target.tls:
            return raw
        context = ssl.create_default_context(cafile=self.target.ca_file or None)
        try:
            return context.wrap_socket(raw, server_hostname=self.target.host)
        except BaseException:
            raw.close()
            raise

    def exchange(self, text: str) -> bytes:
        """Send one message and return the payload of the answer frame."""
        try:
            if self._socket is None:
                self._socket = self._connect()
                self._pending = b""
            self._socket.settimeout(self.target.ack_seconds)
            self._socket.sendall(frame(text))
            return self._read_frame(self._socket, time.monotonic() + self.target.ack_seconds)
        except (OSError, MllpError) as exc:
            self.close()
            if isinstance(exc, MllpError):
                raise
            if isinstance(exc, TimeoutError | socket.timeout):
                raise MllpError(
                    f"no ACK from {self.target} within {self.target.ack_seconds:g} s"
                ) from exc
            raise MllpError(f"{self.target}: {exc.__class__.__name__}: {exc}") from exc

    def _read_frame(self, sock: socket.socket, deadline: float) -> bytes:
        buffer = self._pending
        while END_BLOCK not in buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            sock.settimeout(left)
            chunk = sock.recv(65536)
            if not chunk:
                raise MllpError(f"{self.target} closed the connection before answering")
            buffer += chunk
            if len(buffer) > MAX_ACK_BYTES:
                raise MllpError(f"{self.target} answered more than {MAX_ACK_BYTES} bytes")
        payload, _, self._pending = buffer.partition(END_BLOCK)
        start = payload.find(START_BLOCK)
        if start < 0:
            raise MllpError(f"{self.target} answered without an MLLP start block")
        return payload[start + 1 :]

    def close(self) -> None:
        if self._socket is not None:
            try:
                self._socket.close()
            finally:
                self._socket = None
                self._pending = b""


@dataclass(frozen=True, slots=True)
class Ack:
    """Billing's answer to one message: AA, AE or AR, and its text."""

    code: str
    text: str


def parse_ack(payload: bytes, control_id: str) -> Ack:
    """The ACK of the message with `control_id` (MSA-1, MSA-2, MSA-3 and ERR-8)."""
    try:
        text = payload.decode("utf-8", errors="replace").replace("\r\n", "\r").replace("\n", "\r")
        message: Any = hl7.parse(text.strip("\r") + "\r")
        msa = message.segment("MSA")
        code = str(msa(1)) if len(msa) > 1 else ""
        acked = str(msa(2)) if len(msa) > 2 else ""
        reasons = [str(msa(3))] if len(msa) > 3 and str(msa(3)) else []
        try:
            errors = message.segments("ERR")
        except KeyError:
            errors = []
        reasons += [str(err(8)) for err in errors if len(err) > 8 and str(err(8))]
    except (KeyError, IndexError, ValueError, hl7.ParseException) as exc:
        raise MllpError(f"answer is not an HL7 ACK: {exc.__class__.__name__}") from exc
    if code not in _ACK_CODES:
        raise MllpError(f"ACK code {code[:8]!r} is not AA, AE or AR")
    if acked != control_id:
        raise MllpError(f"ACK is for control ID {acked[:20]!r}, not {control_id}")
    return Ack(_ACK_CODES[code], "; ".join(reasons))


@dataclass
class PassResult:
    """What one pass over the outbox did; `error` says why it stopped early."""

    sent: int = 0
    acknowledged: int = 0
    rejected: int = 0
    error: str | None = None


def send_pending(
    engine: Engine,
    client: MllpClient,
    *,
    stop_requested: Callable[[], bool] = lambda: False,
) -> PassResult:
    """Send every pending message, oldest first, until one gets no usable answer."""
    result = PassResult()
    after = 0
    while not stop_requested():
        with engine.connect() as connection:
            message = outbox.next_pending(connection, after=after)
        if message is None:
            break
        after = message.id
        with write_transaction(engine) as connection:
            if not outbox.claim(connection, message.id):
                continue
        result.sent += 1
        try:
            ack = parse_ack(client.exchange(message.message), message.control_id)
        except MllpError as exc:
            client.close()
            result.error = str(exc)
            log_event(
                log,
                "billing_no_ack",
                level=logging.DEBUG,
                message_id=message.id,
                control_id=message.control_id,
            )
            break
        with write_transaction(engine) as connection:
            outbox.record_answer(connection, message.id, ack.code, ack.text)
        if ack.code == "AA":
            result.acknowledged += 1
        else:
            result.rejected += 1
        log_event(
            log,
            "billing_ack",
            level=logging.INFO if ack.code == "AA" else logging.WARNING,
            message_id=message.id,
            control_id=message.control_id,
            ack=ack.code,
        )
    return result


class BillingJob:
    """The service's billing sender: passes over the outbox until stopped."""

    def __init__(
        self,
        engine: Callable[[], Engine],
        target: MllpTarget,
        stop: threading.Event,
        *,
        idle_seconds: float = 2.0,
        retry_max_seconds: float = 60.0,
        outage_log_seconds: float = 60.0,
    ) -> None:
        self.engine = engine
        self.client = MllpClient(target)
        self.stop = stop
        self.idle_seconds = idle_seconds
        self.retry_max_seconds = retry_max_seconds
        self.outage_log_seconds = outage_log_seconds
        self.failures = 0

    def run(self) -> None:
        logged_at: float | None = None
        delay = 1.0
        try:
            while not self.stop.is_set():
                try:
                    result = send_pending(
                        self.engine(), self.client, stop_requested=self.stop.is_set
                    )
                    error = result.error
                except Exception as exc:  # the database is away: retried like billing
                    result = PassResult()
                    error = f"database: {exc.__class__.__name__}"
                if error is None:
                    if self.failures:
                        log_event(log, "billing_reachable", failed_passes=self.failures)
                    self.failures, delay, logged_at = 0, 1.0, None
                    self.stop.wait(self.idle_seconds)
                    continue
                self.failures += 1
                now = time.monotonic()
                if logged_at is None or now - logged_at >= self.outage_log_seconds:
                    log_event(
                        log,
                        "billing_unreachable",
                        level=logging.WARNING,
                        target=str(self.client.target),
                        error=error,
                        failed_passes=self.failures,
                        retry_in_s=delay,
                    )
                    logged_at = now
                self.stop.wait(delay)
                delay = min(delay * 2, max(self.retry_max_seconds, 1.0))
        finally:
            self.client.close()


__all__: Sequence[str] = (
    "Ack",
    "BillingJob",
    "BillingSettingsError",
    "MllpClient",
    "MllpError",
    "MllpTarget",
    "PassResult",
    "frame",
    "parse_ack",
    "send_pending",
)
