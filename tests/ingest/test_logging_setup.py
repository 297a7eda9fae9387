"""Structured key=value log lines (ingest.logging_setup): format, quoting, redaction."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from ingest.logging_setup import (
    KeyValueFormatter,
    configure_logging,
    format_value,
    log_event,
    render_fields,
)

LINE = re.compile(
    r"^ts=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z level=(\w+) logger=(\S+) event=(\S+)(.*)$"
)


@pytest.fixture
def logger() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(KeyValueFormatter())
    log = logging.getLogger("tests.logging_setup")
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    try:
        yield log, stream
    finally:
        log.removeHandler(handler)
        log.propagate = True


def test_event_line_has_fixed_prefix_then_fields_in_order(
    logger: tuple[logging.Logger, io.StringIO],
) -> None:
    log, stream = logger
    log_event(log, "received", file="serial-x.psl", sha256="ab12cd34ef56", bytes=1234)
    line = stream.getvalue()
    assert line.endswith("\n") and line.count("\n") == 1
    match = LINE.match(line.rstrip("\n"))
    assert match is not None
    assert match.groups() == (
        "INFO",
        "tests.logging_setup",
        "received",
        " file=serial-x.psl sha256=ab12cd34ef56 bytes=1234",
    )


def test_none_fields_are_left_out_and_level_is_kept(
    logger: tuple[logging.Logger, io.StringIO],
) -> None:
    log, stream = logger
    log_event(log, "serial_unavailable", level=logging.WARNING, port="/dev/ttyUSB0", error=None)
    assert (
        stream.getvalue()
        .rstrip()
        .endswith(
            "level=WARNING logger=tests.logging_setup event=serial_unavailable port=/dev/ttyUSB0"
        )
    )


def test_values_needing_quotes_are_json_strings() -> None:
    assert format_value("plain-value_1.5") == "plain-value_1.5"
    assert format_value("two words") == '"two words"'
    assert format_value('say "hi"') == '"say \\"hi\\""'
    assert format_value("a=b") == '"a=b"'
    assert format_value("line\nbreak") == '"line\\nbreak"'
    assert format_value("") == '""'
    assert format_value(True) == "true"
    assert format_value(date(2025, 3, 4)) == "2025-03-04"
    assert format_value(datetime(2025, 3, 4, 10, 0, tzinfo=UTC)) == "2025-03-04T10:00:00+00:00"
    assert format_value(Path("/var/lib/pumptrail")) == "/var/lib/pumptrail"
    assert format_value(12.5) == "12.5"


def test_one_record_is_one_line_whatever_the_message(
    logger: tuple[logging.Logger, io.StringIO],
) -> None:
    log, stream = logger
    log.warning("recv error: %s\nsecond line", "purge")
    line = stream.getvalue()
    assert line.count("\n") == 1
    assert 'event=message msg="recv error: purge\\nsecond line"' in line


def test_patient_keys_are_redacted(logger: tuple[logging.Logger, io.StringIO]) -> None:
    log, stream = logger
    log_event(log, "oops", patient_id="SYN-1234567", Patient_Name="Sample, Avery", count=2)
    line = stream.getvalue()
    assert "SYN-1234567" not in line and "Avery" not in line
    assert "patient_id=[redacted] Patient_Name=[redacted] count=2" in line
    assert render_fields({"birth_date": date(1950, 1, 1)}) == "birth_date=[redacted]"


def test_message_text_is_readable_without_the_formatter(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="tests.plain")
    log_event(logging.getLogger("tests.plain"), "refills_due", pumps=3, overdue=0)
    (record,) = caplog.records
    assert record.getMessage() == "refills_due pumps=3 overdue=0"
    assert record.event == "refills_due"  # type: ignore[attr-defined]
    assert record.fields == {"pumps": 3, "overdue": 0}  # type: ignore[attr-defined]
    assert record.funcName == "test_message_text_is_readable_without_the_formatter"


def test_exceptions_become_an_error_field(logger: tuple[logging.Logger, io.StringIO]) -> None:
    log, stream = logger
    try:
        raise ValueError("bad thing")
    except ValueError:
        log.exception("failed")
    line = stream.getvalue()
    assert line.count("\n") == 1
    assert 'error="ValueError: bad thing"' in line
    assert "traceback=" not in line


def test_configure_logging_installs_one_handler_and_the_level() -> None:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = io.StringIO()
    try:
        configure_logging("WARNING", stream=io.StringIO())
        configure_logging("debug", stream=stream)  # replaces, does not add
        ours = [h for h in root.handlers if h.get_name() == "pumptrail-keyvalue"]
        assert len(ours) == 1
        assert root.level == logging.DEBUG
        log_event(logging.getLogger("tests.configured"), "hello", n=1)
        assert (
            stream.getvalue()
            .rstrip()
            .endswith("level=INFO logger=tests.configured event=hello n=1")
        )
        with pytest.raises(ValueError, match="log level: expected DEBUG"):
            configure_logging("LOUD")
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
