"""A billing system stand-in for tests: an MLLP listener that answers as it is told.

`MllpReceiver(script)` listens on 127.0.0.1 (`port`, or an ephemeral one); for each message
it gets, `script(control_id, times_seen)` says what to do:

- `AA`, `AE`, `AR`: answer with that ACK (MSA-2 the message's control ID, MSA-3 a
  reason for AE/AR);
- `silence`: read the message and never answer (the connection stays open);
- `close`: close the connection halfway through reading the message.

It is idempotent like a careful billing system: a message is booked (`messages`,
by control ID) on its first `AA` only; a resend with a booked control ID is
acknowledged again without booking. `received` lists the control IDs in arrival
order, `acked` counts the AA answers per control ID.
"""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Callable
from typing import Any

import hl7

START, END = b"\x0b", b"\x1c\x0d"
Script = Callable[[str, int], str]


def always(answer: str) -> Script:
    return lambda _control_id, _seen: answer


class MllpReceiver:
    def __init__(self, script: Script = always("AA"), *, port: int = 0) -> None:
        self.script = script
        self.received: list[str] = []
        self.acked: dict[str, int] = {}
        self.messages: dict[str, str] = {}
        self._lock = threading.Lock()
        receiver = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                receiver._serve(self.request)

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> MllpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _serve(self, sock: socket.socket) -> None:
        buffer = b""
        while True:
            while END not in buffer:
                try:
                    chunk = sock.recv(65536)
                except OSError:
                    return
                if not chunk:
                    return
                buffer += chunk
            payload, _, buffer = buffer.partition(END)
            text = payload[payload.index(START) + 1 :].decode("utf-8")
            message: Any = hl7.parse(text)
            control_id = str(message.segment("MSH")(10))
            with self._lock:
                seen = self.received.count(control_id)
                self.received.append(control_id)
            what = self.script(control_id, seen)
            if what == "close":
                # Drop the connection as if halfway through reading the message.
                sock.shutdown(socket.SHUT_RDWR)
                sock.close()
                return
            if what == "silence":
                continue
            if what == "AA":
                with self._lock:
                    # Booked once per control ID; `acked` counts every AA answered.
                    self.messages.setdefault(control_id, text)
                    self.acked[control_id] = self.acked.get(control_id, 0) + 1
            ack: Any = message.create_ack(what, message_id=f"ACK{len(self.received)}")
            if what != "AA":
                ack.segment("MSA").assign_field(f"unknown provider ({what})", 3)
            try:
                sock.sendall(START + str(ack).encode("utf-8") + END)
            except OSError:
                return
