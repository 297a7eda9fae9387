"""The format registry: which decoder reads these bytes (docs/formats.md §8.1).

Formats are chosen by content, never by file extension: the PSL binary signature
(docs/formats.md §2.1), or for CSV a BOM, a `sep=` first line or a first line
starting `PSL Session Export` (docs/format-psl-csv.md §5.1). When nothing fits, the error
lists why each candidate refused. File size is checked against the 4 MiB limit
before the file is read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from parsers import psl_binary, psl_csv
from parsers.errors import DecodeError, UnknownFormat, check_file_size
from parsers.model import Position, Session
from parsers.params import MAX_FILE_BYTES

PARSER_VERSION = "pumptrail-parsers/1"


@dataclass(frozen=True)
class Format:
    name: str
    sniff: Callable[[bytes], str | None]
    decode: Callable[..., Session]


FORMATS: tuple[Format, ...] = (
    Format("psl-binary", psl_binary.sniff, psl_binary.decode),
    Format("psl-csv", psl_csv.sniff, psl_csv.decode),
)


def detect(data: bytes, *, source: str = "") -> Format:
    """The format whose sniffer accepts `data`, or UnknownFormat with every refusal."""
    refusals: dict[str, str] = {}
    for fmt in FORMATS:
        reason = fmt.sniff(data)
        if reason is None:
            return fmt
        refusals[fmt.name] = reason
    raise UnknownFormat(refusals, source=source)


def check_size(size: int, *, source: str) -> None:
    """The file-size limit, checked before anything is allocated (§3, §7.2: offset 0)."""
    check_file_size(size, source=source, position=Position("offset", 0))


def decode_bytes(data: bytes, *, source: str, strict: bool = False) -> Session:
    """Decode one export held in memory."""
    check_size(len(data), source=source)
    fmt = detect(data, source=source)
    try:
        return fmt.decode(data, source=source, strict=strict)
    except DecodeError as exc:
        if not exc.source:
            exc.with_source(source)
        raise


def read_export(path: Path, *, source: str | None = None) -> bytes:
    """Read a file after checking its size, so a huge file is never loaded."""
    name = source if source is not None else str(path)
    check_size(path.stat().st_size, source=name)
    with path.open("rb") as handle:
        data = handle.read(MAX_FILE_BYTES + 1)
    check_size(len(data), source=name)
    return data


def decode_file(path: Path, *, strict: bool = False) -> Session:
    return decode_bytes(read_export(path), source=str(path), strict=strict)
