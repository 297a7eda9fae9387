"""`pumptrail receive`: receive exports from a programmer dock over a serial line.

`pumptrail receive --port DEVICE [--once] [--inbox DIR] [--baud N]` listens on the
port (XMODEM-1K with CRC, 8N1, no flow control: docs/formats.md §6) and writes
each export into the inbox, where `pumptrail run` imports it
(`ingest.serial_receiver`). Each received file's path is printed on standard
output, one line each; log lines (key=value) go to standard error.

`--once` stops after one transfer (exit 0), or exits 1 when the transfer fails or,
with `--wait SECONDS`, when no sender started in time. Without `--once` the command
runs until interrupted (SIGINT or SIGTERM, exit 0), reporting and skipping failed
transfers. A port that is missing, taken or not a serial device exits 2 with one
line on standard error, e.g. `pumptrail receive: /dev/ttyUSB0: no such device`.

The port, speed and inbox come from the settings (`serial_port`, `serial_baud`,
`inbox`: flag, environment, config file, default), like every other command.
"""

from __future__ import annotations

import argparse
import signal
import threading
from types import FrameType
from typing import TYPE_CHECKING, Any

from pumptrail import settings
from pumptrail.commands import set_handler
from pumptrail.errors import EXIT_PROBLEM, CommandError

if TYPE_CHECKING:
    from ingest.serial_receiver import Received, SerialReceiver


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "receive",
        help="receive exports from a programmer dock over a serial line (XMODEM-1K)",
        description="Receive exports over a serial line into the inbox (docs/formats.md §6).",
    )
    # --port and --baud are the serial_port / serial_baud settings under short names
    # (`--port` alone would clash with the web view's `port` setting elsewhere).
    parser.add_argument(
        "--port",
        dest="setting_serial_port",
        metavar="DEVICE",
        default=None,
        help="serial device of the programmer dock, e.g. /dev/ttyUSB0 "
        f"(setting serial_port, env {settings.ENV_PREFIX}SERIAL_PORT)",
    )
    parser.add_argument(
        "--baud",
        dest="setting_serial_baud",
        metavar="N",
        default=None,
        help=f"line speed, default 115200 (setting serial_baud, env {settings.ENV_PREFIX}SERIAL_BAUD)",
    )
    parser.add_argument("--once", action="store_true", help="stop after one transfer")
    parser.add_argument(
        "--wait",
        type=float,
        metavar="SECONDS",
        default=None,
        help="with --once: give up (exit 1) when no sender starts within SECONDS",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        default=30.0,
        help="abandon a transfer when the line stays silent this long (default 30)",
    )
    parser.add_argument("--config", help="TOML config file (env PUMPTRAIL_CONFIG)")
    settings.add_arguments(parser, names=("data_dir", "inbox", "log_level"))
    set_handler(parser, run)


def run(args: argparse.Namespace) -> int:
    from ingest.logging_setup import configure_logging
    from ingest.serial_receiver import SerialPortError, SerialReceiver

    resolved = settings.from_args(args)
    try:
        configure_logging(resolved.log_level)
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
    port = resolved.serial_port
    if not port:
        raise CommandError("no serial port: give --port DEVICE or set serial_port")
    if args.timeout is not None and args.timeout <= 0:
        raise CommandError(f"--timeout must be positive, found {args.timeout:g}")
    stop = threading.Event()
    receiver = SerialReceiver(
        port,
        resolved.inbox,
        baud=resolved.serial_baud,
        timeout=float(args.timeout),
        stop_event=stop,
    )
    previous = _install_signals(stop)
    try:
        receiver.open()
        if args.once:
            return _receive_once(receiver, args.wait)
        receiver.serve(_print_received)
        return 0
    except SerialPortError as exc:
        raise CommandError(str(exc)) from exc
    finally:
        receiver.close()
        _restore_signals(previous)


def _receive_once(receiver: SerialReceiver, wait: float | None) -> int:
    from ingest.serial_receiver import TransferFailed

    try:
        received = receiver.receive(wait=wait)
    except TransferFailed as exc:
        raise CommandError(str(exc), exit_status=EXIT_PROBLEM) from exc
    if received is None:
        if receiver.stop_event.is_set() or wait is None:
            return 0  # interrupted while waiting
        raise CommandError(
            f"{receiver.port_name}: no transfer within {wait:g} s", exit_status=EXIT_PROBLEM
        )
    _print_received(received)
    return 0


def _print_received(received: Received) -> None:
    print(received.path, flush=True)


def _install_signals(stop: threading.Event) -> dict[int, Any]:
    """SIGINT/SIGTERM set `stop` (the receiver notices within a quarter second)."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    return {signum: signal.signal(signum, on_signal) for signum in (signal.SIGINT, signal.SIGTERM)}


def _restore_signals(previous: dict[int, Any]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)
