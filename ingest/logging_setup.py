"""Structured log lines for the unattended service: one `key=value` line per event.

A line reads
`ts=2026-03-04T10:15:02.117Z level=INFO logger=ingest.serial_receiver event=received
file=serial-20260304T101502Z-ab12cd34ef56.psl sha256=ab12cd34ef56 bytes=5481`
(logfmt: a value with a space, quote, `=` or control character is written as a JSON
string), so journald, grep and log shippers can all read it.

Rule: log lines carry no patient identifier. Code
logs only session IDs, pump and programmer serials, file names this program made,
SHA-256 prefixes and counts, never a file's contents or a name a user chose. As a
second line of defence, a field whose key names patient data (`patient_id`,
`patient_name`, `birth_date`, ...) is written as `[redacted]`.

`log_event(logger, event, **fields)` is the one way the service logs; records from
other libraries (APScheduler, xmodem) are written as `event=message msg="..."`.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from datetime import UTC, date, datetime
from enum import Enum
from pathlib import PurePath
from typing import IO, Any, Final

# Field keys that would name a patient; their values never reach a log line.
REDACTED_KEYS: Final = frozenset(
    {
        "patient",
        "patient_id",
        "patient_name",
        "patient_dob",
        "birth_date",
        "date_of_birth",
        "dob",
        "mrn",
    }
)
REDACTED: Final = "[redacted]"
# The attribute names `log_event` puts on a LogRecord (`extra=`).
EVENT_ATTR: Final = "event"
FIELDS_ATTR: Final = "fields"
# The handler `configure_logging` installs, so calling it again replaces it.
_HANDLER_NAME: Final = "pumptrail-keyvalue"


def format_value(value: object) -> str:
    """One field value as logfmt text: bare when safe, else a JSON string."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, date):  # datetime too
        text = value.isoformat()
    elif isinstance(value, Enum):
        text = str(value.value)
    elif isinstance(value, PurePath):
        text = str(value)
    elif isinstance(value, bytes):
        text = value.hex()
    else:
        text = str(value)
    if text == "" or any(c in text for c in ' "=\\') or not text.isprintable():
        return json.dumps(text, ensure_ascii=False)
    return text


def render_fields(pairs: Mapping[str, object] | list[tuple[str, object]]) -> str:
    """`key=value key=value`, keys in the given order, patient-data keys redacted."""
    items = pairs.items() if isinstance(pairs, Mapping) else pairs
    out: list[str] = []
    for key, value in items:
        shown = REDACTED if key.lower() in REDACTED_KEYS else value
        out.append(f"{key}={format_value(shown)}")
    return " ".join(out)


def log_event(
    logger: logging.Logger,
    event: str,
    *,
    level: int = logging.INFO,
    **fields: Any,
) -> None:
    """Log one event with its fields; a field whose value is None is left out.

    The record's message is `event key=value ...` (readable under any formatter,
    e.g. pytest's caplog); `record.event` and `record.fields` carry the same data
    for `KeyValueFormatter` and for tests.
    """
    if not logger.isEnabledFor(level):
        return
    present = {key: value for key, value in fields.items() if value is not None}
    text = render_fields(present)
    logger.log(
        level,
        "%s",
        f"{event} {text}" if text else event,
        extra={EVENT_ATTR: event, FIELDS_ATTR: present},
        stacklevel=2,
    )


class KeyValueFormatter(logging.Formatter):
    """Formats every record as one `ts=... level=... logger=... event=...` line.

    `tracebacks=True` adds a `traceback=` field (one JSON string) to records logged
    with exc_info; otherwise only `error="Type: message"` is written.
    """

    def __init__(self, *, tracebacks: bool = False) -> None:
        super().__init__()
        self.tracebacks = tracebacks

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, tz=UTC)
        pairs: list[tuple[str, object]] = [
            ("ts", ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"),
            ("level", record.levelname),
            ("logger", record.name),
        ]
        event = getattr(record, EVENT_ATTR, None)
        fields = getattr(record, FIELDS_ATTR, None)
        if isinstance(event, str) and isinstance(fields, Mapping):
            pairs.append(("event", event))
            pairs.extend((str(key), value) for key, value in fields.items())
        else:
            pairs.append(("event", "message"))
            pairs.append(("msg", record.getMessage()))
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            pairs.append(("error", f"{type(exc).__name__}: {exc}"))
            if self.tracebacks:
                pairs.append(("traceback", self.formatException(record.exc_info)))
        return render_fields(pairs)


class _StderrHandler(logging.Handler):
    """Writes to whatever `sys.stderr` is when a record arrives (as logging's
    last-resort handler does), so a replaced or captured stderr is followed."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:  # logging must never break the caller
            self.handleError(record)


def configure_logging(level: str | int = "INFO", *, stream: IO[str] | None = None) -> None:
    """Send every log record to `stream` (default stderr) as key=value lines.

    Replaces a handler installed by an earlier call, leaves other handlers alone.
    Without `stream` the handler follows `sys.stderr` as it is when each line is
    written.
    `level` is a name (`DEBUG`, `INFO`, `WARNING`, `ERROR`) or a number.
    """
    numeric = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    if not isinstance(numeric, int):
        raise ValueError(f"log level: expected DEBUG, INFO, WARNING or ERROR, found {level!r}")
    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == _HANDLER_NAME:
            root.removeHandler(old)
    handler: logging.Handler = (
        logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    )
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(KeyValueFormatter(tracebacks=numeric <= logging.DEBUG))
    root.addHandler(handler)
    root.setLevel(numeric)
