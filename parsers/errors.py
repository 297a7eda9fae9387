"""The one error tree every decoder raises (docs/formats.md §7.2, docs/session-json.md).

An error names the file, where in it the problem shows (a byte offset in hex for
binary, a physical line for CSV), the record index and type when there is one,
and what was expected versus what was found. `code` is a stable identifier that
fixtures and tests assert; `str(error)` is the one line the CLI prints:
``FILE: offset 0x1A4: record 3 (PARAM_CHANGE): bad CRC: expected 0x1234, found 0x4321``.
"""

from __future__ import annotations

from typing import Any

from parsers.model import Position
from parsers.params import MAX_FILE_BYTES


class PumptrailError(Exception):
    """Base of every error the project raises on purpose."""


class DecodeError(PumptrailError):
    """A file that does not follow its format's contract."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        source: str = "",
        position: Position | None = None,
        record_index: int | None = None,
        record_type: str | None = None,
        expected: object = None,
        found: object = None,
    ) -> None:
        self.code = code
        self.message = message
        self.source = source
        self.position = position
        self.record_index = record_index
        self.record_type = record_type
        self.expected = expected
        self.found = found
        super().__init__(self.describe())

    def describe(self) -> str:
        """The error as one line, without the file name."""
        parts: list[str] = []
        if self.position is not None:
            parts.append(str(self.position))
        if self.record_index is not None:
            label = f"record {self.record_index}"
            if self.record_type:
                label += f" ({self.record_type})"
            parts.append(label)
        text = self.message
        if self.expected is not None or self.found is not None:
            text += f": expected {_show(self.expected)}, found {_show(self.found)}"
        parts.append(text)
        return ": ".join(parts)

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled whole (the parallel import's workers return refusals to the writer):
        # the default would call __init__ with the one-line message only.
        return (_restore_decode_error, (type(self), dict(self.__dict__)))

    def __str__(self) -> str:
        line = self.describe()
        return f"{self.source}: {line}" if self.source else line

    def with_source(self, source: str) -> DecodeError:
        self.source = source
        self.args = (self.describe(),)
        return self

    def as_dict(self) -> dict[str, Any]:
        """The error as JSON for quarantine files and golden fixtures."""
        return {
            "code": self.code,
            "position": None
            if self.position is None
            else {"kind": self.position.kind, "value": self.position.value},
            "record_index": self.record_index,
            "record_type": self.record_type,
            "message": self.describe(),
        }


def _restore_decode_error(cls: type[DecodeError], state: dict[str, Any]) -> DecodeError:
    error = cls.__new__(cls)
    error.__dict__.update(state)
    error.args = (error.describe(),)
    return error


class LimitExceeded(DecodeError):
    """A size limit checked before anything was allocated (docs/formats.md §3)."""


def check_file_size(size: int, *, source: str, position: Position) -> None:
    """The 4 MiB file limit (docs/formats.md §3, docs/format-psl-csv.md §5.4), before any decoding."""
    if size > MAX_FILE_BYTES:
        raise LimitExceeded(
            "file_too_large",
            "file larger than the 4 MiB limit",
            source=source,
            position=position,
            expected=f"at most {MAX_FILE_BYTES} bytes",
            found=f"{size} bytes",
        )


class UnsupportedVersion(DecodeError):
    """A major version this decoder does not implement."""


class UnknownFormat(DecodeError):
    """No decoder recognised the content; `refusals` says why each candidate refused."""

    def __init__(self, refusals: dict[str, str], *, source: str = "") -> None:
        self.refusals = refusals
        reasons = "; ".join(f"{name}: {why}" for name, why in refusals.items())
        super().__init__(
            "unknown_format",
            f"not a pump session export ({reasons})",
            source=source,
            position=Position("offset", 0),
        )


class StrictModeWarning(DecodeError):
    """A warning promoted to an error because the decoder ran with strict=True."""


def _show(value: object) -> str:
    if isinstance(value, str):
        return value if value.startswith(("0x", "'", "<")) else repr(value)
    return str(value)
