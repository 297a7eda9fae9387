"""Decoder for the PSL CSV session export, version 1 (docs/format-psl-csv.md).

The CSV carries the records of the binary log (docs/formats.md §3) as a metadata
block (§2) and an event table (§3). This module does stage one for the CSV: bytes
to text (§1, §5.10), RFC 4180 rows with physical line numbers (§5.2), the metadata
block (§2, §5.5), the locale's numbers, dates and timestamps (§1, §5.3), every
binary limit (§5.4), the table rows (§3, §5.6-§5.9) and the snapshot grouping
(§5.8). It builds a `RawHeader` and the stage-one records of `parsers.records`
(SESSION_INFO and PATIENT from the metadata block, then one record per table row
or snapshot run), each at `Position("line", n)`, and hands them to
`parsers.assemble.assemble`, which applies the binary sequence rules to both
formats.

Numbers are converted exactly with `decimal.Decimal` to the canonical integers
(µg, µL, minutes); a value that is not whole in canonical units is an error.

Readings of the format the text leaves open (docs/format-psl-csv.md lists them too;
the tests hold each one):

- Extra blank lines between the metadata block and the header row are tolerated
  (§3 says only "after the blank line comes the header row").
- An empty `Time` cell is a record time that is "not applicable" (binary
  0xFFFFFFFF, docs/formats.md §7.1). The `End` row's Time may be empty or a
  timestamp.
- An `Interrogated`/`Programmed` row with an unknown label still belongs to its
  snapshot run (its Time is checked, it breaks no run) but gives no entry, like an
  unknown `param_id` inside a binary SNAPSHOT; an unknown label in a `Change` row
  skips the row. An empty-Parameter snapshot row must be the only row of its run.
- `Session ID` hex digits may be upper or lower case; the session id is kept in
  lower case. `Programmer Software` and `Firmware` numbers are kept as integers
  (`03.1.2045` is `3.1.2045`).
- The `Record` cell may not be empty (an empty cell is no word at all).

Every error code this decoder raises (each at the line where the problem shows) is
in the table of docs/formats.md §9.1, and its warning codes (`unknown_key`,
`unknown_record_word`, `unknown_label`, `unknown_detail_key`; errors with
strict=True) in docs/formats.md §10.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import (
    Context,
    Decimal,
    DecimalException,
    Inexact,
    InvalidOperation,
    Rounded,
)
from struct import calcsize
from types import MappingProxyType
from typing import Final

from parsers.assemble import WarningLog, assemble, describe_time
from parsers.errors import DecodeError, LimitExceeded, UnsupportedVersion, check_file_size
from parsers.model import Position, Session
from parsers.params import (
    ASCII_FIELD_BYTES,
    MAX_FILE_BYTES,
    MAX_MINUTE,
    MAX_NOTE_BYTES,
    MAX_TEXT_BYTES,
    PARAMS_BY_LABEL,
    PHASE_INTERROGATED,
    PHASE_PROGRAMMED,
    FlexStep,
    ParamDef,
    ParamValue,
    ValueType,
)
from parsers.psl_binary_schema import (
    DATE_FIELD,
    END_FIELDS,
    ENTRY_HEAD_FIELDS,
    ENUM_FIELD,
    FIXED_PAYLOAD_FIELDS,
    HEADER_SIZE_V1_0,
    RECORD_OVERHEAD,
    SNAPSHOT_HEAD_FIELDS,
    TEXT8_PREFIX,
    TEXT16_PREFIX,
    VALUE_FIELDS,
    RecordType,
    packer,
)
from parsers.records import (
    AlarmRec,
    BolusRec,
    Entry,
    NoteRec,
    ParamChangeRec,
    PatientRec,
    PumpStatusRec,
    RawHeader,
    Record,
    RefillRec,
    SessionInfoRec,
    SnapshotRec,
)
from parsers.wiretime import date_in_range, timestamp_in_range

# --- vocabulary of the export (§1, §2, §3, §3.2) -------------------------------------

EXPORT_KEY: Final = "PSL Session Export"
BOM_UTF8: Final = b"\xef\xbb\xbf"
BOM_UTF16LE: Final = b"\xff\xfe"
# Serial transfers pad the last XMODEM block with SUB (docs/formats.md §6, CSV §5.10).
SUB: Final = 0x1A

TABLE_COLUMNS: Final = ("Time", "Record", "Parameter", "Value", "Previous Value", "Unit", "Detail")
REQUIRED_KEYS: Final = (
    EXPORT_KEY,
    "Locale",
    "Programmer Model",
    "Programmer Serial",
    "Programmer Software",
    "Pump Model",
    "Pump Serial",
    "Session ID",
    "Session Start",
    "UTC Offset",
    "Operator ID",
    "Operator Role",
    "Clinic ID",
)
PATIENT_KEYS: Final = ("Patient ID", "Patient Name", "Birth Date")
KNOWN_KEYS: Final = frozenset(REQUIRED_KEYS + PATIENT_KEYS)


@dataclass(frozen=True, slots=True)
class CsvLocale:
    """One row of the locale table (§1): decimal mark and the shapes of dates and timestamps."""

    name: str
    decimal_mark: str
    date_shape: str
    timestamp_shape: str


LOCALES: Final = MappingProxyType(
    {
        "ISO": CsvLocale("ISO", ".", "YYYY-MM-DD", "YYYY-MM-DD HH:MM:SS"),
        "en-US": CsvLocale("en-US", ".", "MM/DD/YYYY", "MM/DD/YYYY hh:MM:SS AM|PM"),
        "de-DE": CsvLocale("de-DE", ",", "DD.MM.YYYY", "DD.MM.YYYY HH:MM:SS"),
    }
)

# CSV word -> docs/session-json.md word (§3.2, §2).
ROLE_WORDS: Final = MappingProxyType(
    {
        "Unknown": "unknown",
        "Physician": "physician",
        "QHP": "qhp",
        "Nurse": "nurse",
        "Technician": "technician",
    }
)
INFUSION_MODE_WORDS: Final = MappingProxyType(
    {"Simple Continuous": "simple_continuous", "Flex": "flex", "Minimum Rate": "minimum_rate"}
)
REASON_WORDS: Final = MappingProxyType(
    {
        "Unspecified": "unspecified",
        "Efficacy": "efficacy",
        "Side Effects": "side_effects",
        "Refill Bookkeeping": "refill_bookkeeping",
        "Drug Change": "drug_change",
        "Entry Correction": "entry_correction",
        "Patient Request": "patient_request",
    }
)
BOLUS_KIND_WORDS: Final = MappingProxyType(
    {"Bridge": "bridge", "Priming": "priming", "Clinician": "clinician"}
)
ALARM_NAME_CODES: Final = MappingProxyType(
    {
        "Low Reservoir": 0x0001,
        "Empty Reservoir": 0x0002,
        "Elective Replacement": 0x0003,
        "End of Service": 0x0004,
        "Motor Stall": 0x0005,
        "Motor Stall Recovery": 0x0006,
        "Pump Memory Error": 0x0007,
        "Catheter Access Port Warning": 0x0008,
    }
)
ALARM_STATE_WORDS: Final = MappingProxyType(
    {"Active": "active", "Logged": "logged", "Cleared": "cleared"}
)
SEVERITY_WORDS: Final = MappingProxyType(
    {"Critical": "critical", "Non-critical": "non_critical", "Informational": "informational"}
)
BATTERY_WORDS: Final = MappingProxyType({"OK": "ok", "ERI": "eri", "EOS": "eos"})
BOOL_WORDS: Final = MappingProxyType({"On": True, "Off": False})
NOT_MEASURED: Final = "Not Measured"

# Enumerated parameters: label words per parameter name (§3.1, §3.2).
ENUM_PARAM_WORDS: Final = MappingProxyType({"infusion_mode": INFUSION_MODE_WORDS})

# Record words of the table (§3) and the binary record each becomes.
WORD_INTERROGATED: Final = "Interrogated"
WORD_PROGRAMMED: Final = "Programmed"
RECORD_WORDS: Final = (
    WORD_INTERROGATED,
    WORD_PROGRAMMED,
    "Change",
    "Refill",
    "Bolus",
    "Alarm",
    "Pump Status",
    "Note",
    "End",
)

# --- binary limits the CSV must respect (§5.4) ---------------------------------------

U8_MAX: Final = 0xFF
U16_MAX: Final = 0xFFFF
U32_MAX: Final = 0xFFFFFFFF
I32_MIN: Final = -(2**31)
I32_MAX: Final = 2**31 - 1
# Texts with a u8 length prefix (SESSION_INFO, PATIENT payloads, docs/formats.md §3).
U8_TEXT_BYTES: Final = 0xFF
UTC_OFFSET_MIN: Final = -720
UTC_OFFSET_MAX: Final = 840
# A REFILL's aspirated_ul of 0xFFFFFFFF means "not measured", so a measured value stops below.
ASPIRATED_MAX: Final = U32_MAX - 1
INT_RANGES: Final = MappingProxyType(
    {
        ValueType.U32: (0, U32_MAX),
        ValueType.I32: (I32_MIN, I32_MAX),
        ValueType.MINUTES: (0, MAX_MINUTE),
    }
)
# Binary sizes for the 4 MiB check (§5.4), all from the binary layouts of
# `parsers.psl_binary_schema` (docs/formats.md §2.1-§2.3, §3).
HEADER_BYTES: Final = HEADER_SIZE_V1_0
FRAME_BYTES: Final = RECORD_OVERHEAD  # sync, type, length, seq, time, then the CRC
END_PAYLOAD_BYTES: Final = packer(END_FIELDS).size
_TEXT8_BYTES: Final = calcsize("<" + TEXT8_PREFIX)  # length prefix of a short text
_TEXT16_BYTES: Final = calcsize("<" + TEXT16_PREFIX)  # length prefix of a NOTE's text
_ENUM_BYTES: Final = calcsize("<" + ENUM_FIELD)
_DATE_BYTES: Final = calcsize("<" + DATE_FIELD)
# A value's bytes; TEXT adds its UTF-8 bytes to its length prefix.
VALUE_SIZES: Final = MappingProxyType(
    {
        **{kind: packer(layout).size for kind, layout in VALUE_FIELDS.items()},
        ValueType.TEXT: _TEXT8_BYTES,
    }
)
_ENTRY_HEAD_BYTES: Final = packer(ENTRY_HEAD_FIELDS).size
_SNAPSHOT_HEAD_BYTES: Final = packer(SNAPSHOT_HEAD_FIELDS).size
# SESSION_INFO: operator_id, operator_role, clinic_id; PATIENT: id, name, birth_date.
_SESSION_INFO_FIXED_BYTES: Final = 2 * _TEXT8_BYTES + _ENUM_BYTES
_PATIENT_FIXED_BYTES: Final = 2 * _TEXT8_BYTES + _DATE_BYTES
# PARAM_CHANGE: an entry head, the old and new values, then the reason.
_PARAM_CHANGE_FIXED_BYTES: Final = _ENTRY_HEAD_BYTES + _ENUM_BYTES
_REFILL_BYTES: Final = packer(FIXED_PAYLOAD_FIELDS[RecordType.REFILL]).size
_BOLUS_BYTES: Final = packer(FIXED_PAYLOAD_FIELDS[RecordType.BOLUS]).size
_ALARM_BYTES: Final = packer(FIXED_PAYLOAD_FIELDS[RecordType.ALARM]).size
_PUMP_STATUS_BYTES: Final = packer(FIXED_PAYLOAD_FIELDS[RecordType.PUMP_STATUS]).size

# Exact decimal arithmetic: inputs have at most 2 x 30 digits, so 80 digits never round;
# the traps turn any surprise into an exception instead of a silent rounding.
_EXACT: Final = Context(prec=80, traps=[Inexact, Rounded, InvalidOperation])
_MAX_DIGITS: Final = 30

_NUMBER_RE: Final = MappingProxyType(
    {
        ".": re.compile(rf"(-?)([0-9]{{1,{_MAX_DIGITS}}})(?:\.([0-9]{{1,{_MAX_DIGITS}}}))?"),
        ",": re.compile(rf"(-?)([0-9]{{1,{_MAX_DIGITS}}})(?:,([0-9]{{1,{_MAX_DIGITS}}}))?"),
    }
)
_D2: Final = "([0-9]{2})"
_D4: Final = "([0-9]{4})"
_TIME = f"{_D2}:{_D2}:{_D2}"
# Group order per locale: the positions of year, month, day in the date groups.
_DATE_RE: Final = MappingProxyType(
    {
        "ISO": (re.compile(f"{_D4}-{_D2}-{_D2}"), (0, 1, 2)),
        "en-US": (re.compile(f"{_D2}/{_D2}/{_D4}"), (2, 0, 1)),
        "de-DE": (re.compile(rf"{_D2}\.{_D2}\.{_D4}"), (2, 1, 0)),
    }
)
_TIMESTAMP_RE: Final = MappingProxyType(
    {
        "ISO": re.compile(f"{_D4}-{_D2}-{_D2} {_TIME}"),
        "en-US": re.compile(f"{_D2}/{_D2}/{_D4} {_TIME} (AM|PM)"),
        "de-DE": re.compile(rf"{_D2}\.{_D2}\.{_D4} {_TIME}"),
    }
)
_VERSION_RE: Final = re.compile(r"([0-9]{1,3})\.([0-9]{1,3})")
_SOFTWARE_RE: Final = re.compile(r"([0-9]{1,5})\.([0-9]{1,5})\.([0-9]{1,7})")
_FIRMWARE_RE: Final = re.compile(r"([0-9]{1,5})\.([0-9]{1,5})")
_UUID_RE: Final = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
_UTC_OFFSET_RE: Final = re.compile(r"([+-])([0-9]{2}):([0-9]{2})")
_FLEX_RE: Final = re.compile(r"([0-9]{2}):([0-9]{2})@(.*)", re.DOTALL)
_ALARM_CODE_RE: Final = re.compile(r"Code 0x([0-9a-fA-F]{4})")
_COUNT_RE: Final = re.compile(r"[0-9]{1,10}")


def sniff(data: bytes) -> str | None:
    """None when `data` is a PSL CSV export by §5.1, else why it is not."""
    if data.startswith((BOM_UTF8, BOM_UTF16LE)):
        return None
    if data.startswith((b"sep=", EXPORT_KEY.encode("ascii"))):
        return None
    return f"first line is not '{EXPORT_KEY}' and no BOM or sep= hint"


def decode(data: bytes, *, source: str, strict: bool = False) -> Session:
    """Decode one CSV export (docs/format-psl-csv.md) into the normalized session."""
    check_file_size(len(data), source=source, position=Position("line", 1))
    text = _text_of(data, source)
    return _Decoder(source, WarningLog(source=source, strict=strict)).run(text)


# --- bytes to text (§1, §5.2, §5.10) -------------------------------------------------


def _text_of(data: bytes, source: str) -> str:
    """The export as text: BOM removed, trailing SUB padding ignored, encoding checked."""
    if data.startswith(BOM_UTF16LE):
        body = data[len(BOM_UTF16LE) :]
        # Padding may follow the text as single SUB bytes; a UTF-16 text has an even
        # length, so when stripping leaves an odd length the last stripped byte was
        # the high byte of a character and goes back.
        kept = len(body.rstrip(bytes([SUB])))
        if kept % 2:
            kept += 1
        body = body[:kept]
        try:
            text = body.decode("utf-16-le")
        except UnicodeDecodeError as exc:
            good = body[: exc.start].decode("utf-16-le", errors="replace")
            raise _bad_encoding(source, good.count("\n") + 1, "UTF-16LE", exc) from None
        return text.rstrip("\x1a")
    body = data[len(BOM_UTF8) :] if data.startswith(BOM_UTF8) else data
    body = body.rstrip(bytes([SUB]))
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _bad_encoding(source, body.count(b"\n", 0, exc.start) + 1, "UTF-8", exc) from None


def _bad_encoding(source: str, line: int, encoding: str, exc: UnicodeDecodeError) -> DecodeError:
    found = exc.object[exc.start : exc.start + 4].hex(" ")
    return DecodeError(
        "bad_encoding",
        f"text is not valid {encoding} ({exc.reason}): expected {encoding} text, "
        f"found bytes {found}",
        source=source,
        position=Position("line", line),
    )


def _physical_lines(text: str) -> list[str]:
    """Lines split at LF only, ends kept, so the csv module sees CRLF/LF and quoted breaks."""
    pieces = text.split("\n")
    lines = [piece + "\n" for piece in pieces[:-1]]
    if pieces[-1]:
        lines.append(pieces[-1])
    return lines


def _q(text: str) -> str:
    """A cell as it appears in messages: quoted, control characters escaped, long text cut."""
    shown = repr(text)[1:-1]
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return f"'{shown}'"


def _one_of(words: Iterable[str]) -> str:
    quoted = [_q(word) for word in words]
    return quoted[0] if len(quoted) == 1 else "one of " + ", ".join(quoted)


def _a(word: str) -> str:
    """A record word with its article, for messages ("an Interrogated", "a Refill")."""
    return f"an {word}" if word[:1] in "AEIOU" else f"a {word}"


def _is_blank(row: Sequence[str]) -> bool:
    """An empty line or a line of empty fields (§5.5, §5.6)."""
    return not any(row)


@dataclass(slots=True)
class _Run:
    """Consecutive Interrogated (or Programmed) rows: one SNAPSHOT in the making (§5.8)."""

    word: str
    phase: int
    line: int
    time_text: str
    time: datetime | None
    entries: list[Entry]
    names: set[str]
    empty_row: bool = False


class _Decoder:
    """One decode: the rows of one file, its locale, its warnings and its records."""

    def __init__(self, source: str, log: WarningLog) -> None:
        self.source = source
        self.log = log
        self.locale = LOCALES["ISO"]
        self.delimiter = ","
        self.records: list[Record] = []
        self.pending: _Run | None = None
        self._number_re = _NUMBER_RE["."]
        self._date_re, self._date_order = _DATE_RE["ISO"]
        self._timestamp_re = _TIMESTAMP_RE["ISO"]
        self._timestamps: dict[str, datetime] = {}
        self._numbers: dict[tuple[str, int], Decimal] = {}

    # -- errors -----------------------------------------------------------------------

    def error(self, code: str, line: int, message: str) -> DecodeError:
        return DecodeError(code, message, source=self.source, position=Position("line", line))

    def fail(self, code: str, line: int, what: str, expected: str, found: str) -> DecodeError:
        """`line N: WHAT: expected X, found Y`, with X and Y already quoted."""
        return self.error(code, line, f"{what}: expected {expected}, found {found}")

    # -- the file ---------------------------------------------------------------------

    def run(self, text: str) -> Session:
        lines = _physical_lines(text)
        if not lines:
            raise self.fail("no_header_line", 1, "first line", _q(EXPORT_KEY), "an empty file")
        first = lines[0].rstrip("\r\n")
        offset = 0
        hint: str | None = None
        if first.startswith("sep="):
            hint = first[len("sep=") :]
            if hint not in (",", ";"):
                raise self.fail("bad_delimiter", 1, "sep= hint", "'sep=,' or 'sep=;'", _q(first))
            offset = 1
            if len(lines) < 2:
                raise self.fail(
                    "no_header_line", 2, "line after the sep= hint", _q(EXPORT_KEY), "end of file"
                )
            first = lines[1].rstrip("\r\n")
        if not first.startswith(EXPORT_KEY):
            raise self.fail("no_header_line", offset + 1, "first line", _q(EXPORT_KEY), _q(first))
        delimiter = first[len(EXPORT_KEY) : len(EXPORT_KEY) + 1]
        if hint is not None and delimiter != hint:
            raise self.fail(
                "bad_delimiter",
                offset + 1,
                f"delimiter after '{EXPORT_KEY}'",
                f"{_q(hint)} (from the sep= line)",
                _q(delimiter) if delimiter else "end of line",
            )
        if delimiter not in (",", ";"):
            raise self.fail(
                "bad_delimiter",
                offset + 1,
                f"delimiter after '{EXPORT_KEY}'",
                "',' or ';'",
                _q(delimiter) if delimiter else "end of line",
            )
        self.delimiter = delimiter
        # The version is checked first: a later major may change everything after it.
        try:
            first_row = next(
                csv.reader(lines[offset : offset + 1], delimiter=delimiter, strict=True)
            )
        except csv.Error:
            first_row = []  # a quoted value spanning lines: checked with the metadata block
        if len(first_row) >= 2:
            self.version(offset + 1, first_row[1])
        rows = self._rows(lines, offset)
        header, table_start, blank_line = self._metadata(rows)
        return self._table(rows, table_start, header, blank_line, len(lines))

    def _rows(self, lines: list[str], offset: int) -> list[tuple[int, list[str]]]:
        """RFC 4180 rows, each with the physical line it starts on (§5.2)."""
        reader = csv.reader(lines[offset:], delimiter=self.delimiter, strict=True)
        rows: list[tuple[int, list[str]]] = []
        start = offset + 1
        try:
            for row in reader:
                rows.append((start, row))
                start = offset + reader.line_num + 1
        except csv.Error as exc:
            raise self.error("bad_csv", start, f"malformed CSV row: {exc}") from None
        return rows

    # -- metadata block (§2, §5.5) ----------------------------------------------------

    def _metadata(self, rows: list[tuple[int, list[str]]]) -> tuple[RawHeader, int, int]:
        values: dict[str, tuple[int, str]] = {}
        i = 0
        first_line = rows[0][0]
        while i < len(rows) and not _is_blank(rows[i][1]):
            line, row = rows[i]
            i += 1
            if len(row) < 2 or not row[0]:
                raise self.fail(
                    "bad_metadata_line",
                    line,
                    "metadata line",
                    f"'Key{self.delimiter}Value'",
                    _q(self.delimiter.join(row)),
                )
            if any(row[2:]):
                raise self.fail(
                    "field_count",
                    line,
                    f"metadata line {_q(row[0])}",
                    "a key and one value (trailing fields empty)",
                    f"{_q(row[0])} with values {', '.join(_q(v) for v in row[1:] if v)}",
                )
            key, value = row[0], row[1]
            if key in values:
                raise self.fail(
                    "duplicate_key",
                    line,
                    f"metadata key {_q(key)}",
                    f"one line (first on line {values[key][0]})",
                    "a second one",
                )
            values[key] = (line, value)
            if key not in KNOWN_KEYS:
                self.log.warn(
                    f"unknown metadata key {_q(key)} ignored (line {line})",
                    code="unknown_key",
                    position=Position("line", line),
                )
        if i == len(rows):
            last = rows[-1][0]
            raise self.error(
                "missing_table",
                last,
                "the metadata block is not followed by a blank line and the event table",
            )
        blank_line = rows[i][0]
        for key in REQUIRED_KEYS:
            if key not in values:
                raise self.error(
                    "missing_key", blank_line, f"required metadata key {_q(key)} is missing"
                )
        header = self._header(values)
        self._session_records(values, first_line)
        return header, i, blank_line

    def _header(self, values: Mapping[str, tuple[int, str]]) -> RawHeader:
        get = values.__getitem__
        line, locale = get("Locale")
        if locale not in LOCALES:
            raise self.fail("bad_locale", line, "Locale", _one_of(LOCALES), _q(locale))
        self.locale = LOCALES[locale]
        self._number_re = _NUMBER_RE[self.locale.decimal_mark]
        self._date_re, self._date_order = _DATE_RE[locale]
        self._timestamp_re = _TIMESTAMP_RE[locale]

        format_version = self.version(*get(EXPORT_KEY))

        line, software = get("Programmer Software")
        match = _SOFTWARE_RE.fullmatch(software)
        if match is None:
            raise self.fail(
                "bad_software", line, "Programmer Software", "'major.minor.build'", _q(software)
            )
        sw_major, sw_minor, sw_build = int(match[1]), int(match[2]), int(match[3])
        for part, value, top in (
            ("major", sw_major, U8_MAX),
            ("minor", sw_minor, U8_MAX),
            ("build", sw_build, U16_MAX),
        ):
            if value > top:
                raise self.fail(
                    "out_of_range", line, f"Programmer Software {part}", f"0..{top}", str(value)
                )

        line, session_id = get("Session ID")
        if _UUID_RE.fullmatch(session_id) is None:
            raise self.fail(
                "bad_uuid",
                line,
                "Session ID",
                "a UUID in 8-4-4-4-12 hex form",
                _q(session_id),
            )
        if set(session_id) <= {"0", "-"}:
            raise self.fail(
                "bad_uuid", line, "Session ID", "a UUID that is not all zero", _q(session_id)
            )

        line, offset_text = get("UTC Offset")
        match = _UTC_OFFSET_RE.fullmatch(offset_text)
        if match is None or int(match[3]) > 59:
            raise self.fail(
                "bad_utc_offset", line, "UTC Offset", "'+HH:MM' or '-HH:MM'", _q(offset_text)
            )
        utc_offset = (int(match[2]) * 60 + int(match[3])) * (-1 if match[1] == "-" else 1)
        if not UTC_OFFSET_MIN <= utc_offset <= UTC_OFFSET_MAX:
            raise self.fail("out_of_range", line, "UTC Offset", "-12:00..+14:00", _q(offset_text))

        line, start_text = get("Session Start")
        start = self.timestamp(start_text, line, "Session Start")
        if start is None:
            raise self.fail(
                "bad_timestamp",
                line,
                "Session Start",
                f"a timestamp {_q(self.locale.timestamp_shape)}",
                "''",
            )

        line, pump_serial = get("Pump Serial")
        if not pump_serial:
            raise self.fail("empty_value", line, "Pump Serial", "a serial number", "''")
        return RawHeader(
            format_version=format_version,
            programmer_model=self.ascii_field(*get("Programmer Model"), "Programmer Model"),
            programmer_serial=self.ascii_field(*get("Programmer Serial"), "Programmer Serial"),
            programmer_software=f"{sw_major}.{sw_minor}.{sw_build}",
            pump_model=self.ascii_field(*get("Pump Model"), "Pump Model"),
            pump_serial=self.ascii_field(line, pump_serial, "Pump Serial"),
            session_id=session_id.lower(),
            session_start_local=start,
            utc_offset_min=utc_offset,
        )

    def version(self, line: int, text: str) -> str:
        """The export version `major.minor` (§2, §5.3); only major 1 is supported."""
        match = _VERSION_RE.fullmatch(text)
        if match is None:
            raise self.fail("bad_version", line, "export version", "'major.minor'", _q(text))
        major, minor = int(match[1]), int(match[2])
        if major != 1:
            raise UnsupportedVersion(
                "unsupported_version",
                f"export version {major}.{minor} is not supported: expected major version 1, "
                f"found {major}",
                source=self.source,
                position=Position("line", line),
            )
        return f"{major}.{minor}"

    def _session_records(self, values: Mapping[str, tuple[int, str]], first_line: int) -> None:
        """SESSION_INFO and, when any patient key is present, PATIENT (§2, §5.5)."""
        line, role = values["Operator Role"]
        if role not in ROLE_WORDS:
            raise self.fail("bad_word", line, "Operator Role", _one_of(ROLE_WORDS), _q(role))
        operator_id = self.u8_text(*values["Operator ID"], "Operator ID")
        clinic_id = self.u8_text(*values["Clinic ID"], "Clinic ID")
        # CSV has no record time for SESSION_INFO / PATIENT: "not applicable".
        self.records.append(
            SessionInfoRec(
                0,
                Position("line", first_line),
                None,
                operator_id,
                ROLE_WORDS[role],
                clinic_id,
            )
        )
        present = [key for key in PATIENT_KEYS if key in values]
        if not present:
            return
        patient_id = self.u8_text(*values.get("Patient ID", (0, "")), "Patient ID")
        name = self.u8_text(*values.get("Patient Name", (0, "")), "Patient Name")
        birth_line, birth_text = values.get("Birth Date", (0, ""))
        birth = self.date(birth_text, birth_line, "Birth Date")
        self.records.append(
            PatientRec(
                1,
                Position("line", min(values[key][0] for key in present)),
                None,
                patient_id,
                name,
                birth,
            )
        )

    # -- the event table (§3, §5.6-§5.9) -----------------------------------------------

    def _table(
        self,
        rows: list[tuple[int, list[str]]],
        i: int,
        header: RawHeader,
        blank_line: int,
        line_count: int,
    ) -> Session:
        while i < len(rows) and _is_blank(rows[i][1]):
            i += 1
        if i == len(rows):
            raise self.error("missing_table", blank_line, "no event table after the metadata block")
        line, row = rows[i]
        if tuple(row) != TABLE_COLUMNS:
            raise self.fail(
                "bad_header_row",
                line,
                "event table header row",
                _q(self.delimiter.join(TABLE_COLUMNS)),
                _q(self.delimiter.join(row)),
            )
        i += 1
        count = 0
        end_line: int | None = None
        handlers = {
            WORD_INTERROGATED: self._snapshot_row,
            WORD_PROGRAMMED: self._snapshot_row,
            "Change": self._change_row,
            "Refill": self._refill_row,
            "Bolus": self._bolus_row,
            "Alarm": self._alarm_row,
            "Pump Status": self._status_row,
            "Note": self._note_row,
        }
        while i < len(rows):
            line, row = rows[i]
            i += 1
            if _is_blank(row):
                raise self.error(
                    "blank_line_in_table",
                    line,
                    "blank line inside the event table (before the End row)",
                )
            if len(row) != len(TABLE_COLUMNS):
                raise self.fail("field_count", line, "table row", "7 fields", f"{len(row)} fields")
            word = row[1]
            if word == "End":
                self._flush()
                self._end_row(line, row, count)
                end_line = line
                break
            count += 1
            handler = handlers.get(word)
            if handler is None:
                self._flush()
                if not word:
                    raise self.fail("bad_word", line, "Record", "a record word", "''")
                self.log.warn(
                    f"unknown Record word {_q(word)} at {_q(row[0])} skipped (line {line})",
                    code="unknown_record_word",
                    position=Position("line", line),
                )
                continue
            if word not in (WORD_INTERROGATED, WORD_PROGRAMMED):
                self._flush()
            handler(line, row)
        if end_line is None:
            raise self.error("missing_end", line_count, "the event table has no End row")
        for line, row in rows[i:]:
            if not _is_blank(row):
                raise self.fail(
                    "data_after_end",
                    line,
                    "line after the End row",
                    "only blank lines",
                    _q(self.delimiter.join(row)),
                )
        end = Position("line", end_line)
        self._check_binary_size(end_line)
        return assemble(
            header,
            self.records,
            source=self.source,
            source_format="psl-csv",
            end_position=end,
            log=self.log,
        )

    def _empty(self, line: int, row: list[str], columns: Sequence[int]) -> None:
        """§5.7: a value in a cell the table shows empty is an error."""
        for column in columns:
            if row[column]:
                raise self.fail(
                    "unexpected_value",
                    line,
                    f"{TABLE_COLUMNS[column]} of {_a(row[1])} row",
                    "an empty cell",
                    _q(row[column]),
                )

    def _flush(self) -> None:
        run = self.pending
        if run is None:
            return
        self.pending = None
        self.records.append(
            SnapshotRec(
                len(self.records),
                Position("line", run.line),
                run.time,
                run.phase,
                tuple(run.entries),
            )
        )

    def _snapshot_row(self, line: int, row: list[str]) -> None:
        """One entry of a SNAPSHOT; consecutive rows of one word are one snapshot (§5.8)."""
        time_text, word, label = row[0], row[1], row[2]
        phase = PHASE_INTERROGATED if word == WORD_INTERROGATED else PHASE_PROGRAMMED
        run = self.pending
        if run is not None and run.word != word:
            self._flush()
            run = None
        if run is None:
            run = _Run(
                word, phase, line, time_text, self.timestamp(time_text, line, "Time"), [], set()
            )
            self.pending = run
        else:
            if time_text != run.time_text:
                raise self.fail(
                    "snapshot_time",
                    line,
                    f"Time of {_a(word)} row",
                    f"{_q(run.time_text)} like the first row of its snapshot (line {run.line})",
                    _q(time_text),
                )
            if run.empty_row or not label:
                raise self.error(
                    "empty_snapshot_row",
                    line,
                    f"{_a(word)} row with an empty Parameter must be the only row of its snapshot "
                    f"(snapshot from line {run.line})",
                )
        if not label:
            run.empty_row = True
            self._empty(line, row, (3, 4, 5, 6))
            return
        definition = PARAMS_BY_LABEL.get(label)
        if definition is None:
            self.log.warn(
                f"{word} row at {describe_time(run.time)}: unknown parameter label {_q(label)} "
                f"skipped (line {line})",
                code="unknown_label",
                position=Position("line", line),
            )
            return
        self._empty(line, row, (4, 6))
        if definition.name in run.names:
            raise self.fail(
                "duplicate_parameter",
                line,
                f"parameter {_q(label)} in the {word} snapshot from line {run.line}",
                "each parameter once",
                "a second row",
            )
        value = self.param_value(definition, row[3], row[5], line, "Value")
        run.names.add(definition.name)
        run.entries.append(
            Entry(definition.name, definition.param_id, definition.value_type, value)
        )

    def _change_row(self, line: int, row: list[str]) -> None:
        """PARAM_CHANGE: new value, old value, one unit for both, reason (§3, §5.9)."""
        time = self.timestamp(row[0], line, "Time")
        label = row[2]
        definition = PARAMS_BY_LABEL.get(label)
        if definition is None:
            self.log.warn(
                f"Change row at {describe_time(time)}: unknown parameter label {_q(label)}; "
                f"row skipped (line {line})",
                code="unknown_label",
                position=Position("line", line),
            )
            return
        new = self.param_value(definition, row[3], row[5], line, "Value")
        old = self.param_value(definition, row[4], row[5], line, "Previous Value")
        reason = row[6]
        if not reason:
            raise self.fail(
                "missing_reason",
                line,
                f"reason (Detail) of the Change of {_q(label)}",
                _one_of(REASON_WORDS),
                "''",
            )
        if reason not in REASON_WORDS:
            raise self.fail(
                "bad_word",
                line,
                f"reason of the Change of {_q(label)}",
                _one_of(REASON_WORDS),
                _q(reason),
            )
        self.records.append(
            ParamChangeRec(
                len(self.records),
                Position("line", line),
                time,
                Entry(definition.name, definition.param_id, definition.value_type, old),
                new,
                REASON_WORDS[reason],
            )
        )

    def _refill_row(self, line: int, row: list[str]) -> None:
        time = self.timestamp(row[0], line, "Time")
        self._empty(line, row, (2, 4))
        self._unit(line, row[5], "Unit of a Refill row", ("mL",))
        added = self.number(
            row[3], 1000, line, "added volume (Value) of a Refill row", unit="uL", top=U32_MAX
        )
        detail = self.detail(line, row, ("Expected Residual", "Aspirated", "New Volume"), time)
        expected = self.number(
            detail["Expected Residual"], 1000, line, "Expected Residual", unit="uL", top=U32_MAX
        )
        aspirated_text = detail["Aspirated"]
        aspirated = (
            None
            if aspirated_text == NOT_MEASURED
            else self.number(aspirated_text, 1000, line, "Aspirated", unit="uL", top=ASPIRATED_MAX)
        )
        new_volume = self.number(
            detail["New Volume"], 1000, line, "New Volume", unit="uL", top=U32_MAX
        )
        self.records.append(
            RefillRec(
                len(self.records),
                Position("line", line),
                time,
                expected,
                aspirated,
                added,
                new_volume,
            )
        )

    def _bolus_row(self, line: int, row: list[str]) -> None:
        time = self.timestamp(row[0], line, "Time")
        self._empty(line, row, (2, 4))
        self._unit(line, row[5], "Unit of a Bolus row", ("mL",))
        volume = self.number(
            row[3], 1000, line, "volume (Value) of a Bolus row", unit="uL", top=U32_MAX
        )
        detail = self.detail(line, row, ("Kind", "Duration"), time)
        kind = self.word(detail["Kind"], BOLUS_KIND_WORDS, line, "Bolus Kind")
        duration = self.number(
            detail["Duration"], 1, line, "Bolus Duration", unit="min", top=U16_MAX
        )
        self.records.append(
            BolusRec(len(self.records), Position("line", line), time, kind, volume, duration)
        )

    def _alarm_row(self, line: int, row: list[str]) -> None:
        time = self.timestamp(row[0], line, "Time")
        self._empty(line, row, (4, 5))
        name = row[2]
        code = ALARM_NAME_CODES.get(name)
        if code is None:
            match = _ALARM_CODE_RE.fullmatch(name)
            if match is None:
                raise self.fail(
                    "bad_word",
                    line,
                    "alarm name (Parameter)",
                    _one_of([*ALARM_NAME_CODES, "Code 0xNNNN"]),
                    _q(name),
                )
            code = int(match[1], 16)
        state = self.word(row[3], ALARM_STATE_WORDS, line, "alarm state (Value)")
        detail = self.detail(line, row, ("Severity", "Occurred"), time)
        severity = self.word(detail["Severity"], SEVERITY_WORDS, line, "alarm Severity")
        occurred = self.timestamp(detail["Occurred"], line, "alarm Occurred")
        self.records.append(
            AlarmRec(
                len(self.records), Position("line", line), time, code, severity, state, occurred
            )
        )

    def _status_row(self, line: int, row: list[str]) -> None:
        time = self.timestamp(row[0], line, "Time")
        self._empty(line, row, (2, 3, 4, 5))
        detail = self.detail(line, row, ("Pump Clock", "Firmware", "Battery"), time)
        clock = self.timestamp(detail["Pump Clock"], line, "Pump Clock")
        firmware = detail["Firmware"]
        match = _FIRMWARE_RE.fullmatch(firmware)
        if match is None:
            raise self.fail("bad_firmware", line, "Firmware", "'major.minor'", _q(firmware))
        fw_major, fw_minor = int(match[1]), int(match[2])
        if fw_major > U8_MAX or fw_minor > U8_MAX:
            raise self.fail("out_of_range", line, "Firmware", "0..255 for each part", _q(firmware))
        battery = self.word(detail["Battery"], BATTERY_WORDS, line, "Battery")
        self.records.append(
            PumpStatusRec(
                len(self.records),
                Position("line", line),
                time,
                clock,
                f"{fw_major}.{fw_minor}",
                battery,
            )
        )

    def _note_row(self, line: int, row: list[str]) -> None:
        time = self.timestamp(row[0], line, "Time")
        self._empty(line, row, (2, 4, 5, 6))
        text = row[3]
        self.text_limit(text, MAX_NOTE_BYTES, line, "Note text")
        self.records.append(NoteRec(len(self.records), Position("line", line), time, text))

    def _end_row(self, line: int, row: list[str], count: int) -> None:
        if row[0]:
            self.timestamp(row[0], line, "Time of the End row")
        self._empty(line, row, (2, 4, 5, 6))
        text = row[3]
        if _COUNT_RE.fullmatch(text) is None:
            raise self.fail(
                "bad_number", line, "End row count (Value)", "a whole number of rows", _q(text)
            )
        if int(text) != count:
            raise self.fail(
                "end_count",
                line,
                "End row count",
                f"{count} (rows between the header row and End)",
                text,
            )

    # -- cells --------------------------------------------------------------------------

    def _unit(self, line: int, unit: str, what: str, accepted: Sequence[str]) -> None:
        if unit not in accepted:
            raise self.fail("bad_unit", line, what, _one_of(accepted), _q(unit))

    def detail(
        self, line: int, row: list[str], keys: Sequence[str], time: datetime | None
    ) -> dict[str, str]:
        """`Key=Value|...` in any order (§3); unknown keys warn, missing keys fail."""
        items: dict[str, str] = {}
        text = row[6]
        for item in text.split("|") if text else ():
            key, equals, value = item.partition("=")
            if not equals or not key:
                raise self.fail(
                    "bad_detail", line, f"Detail item of {_a(row[1])} row", "'Key=Value'", _q(item)
                )
            if key in items:
                raise self.fail(
                    "duplicate_detail",
                    line,
                    f"Detail key {_q(key)} of {_a(row[1])} row",
                    "once",
                    "twice",
                )
            items[key] = value
            if key not in keys:
                self.log.warn(
                    f"{row[1]} row at {describe_time(time)}: unknown Detail key {_q(key)} "
                    f"ignored (line {line})",
                    code="unknown_detail_key",
                    position=Position("line", line),
                )
        for key in keys:
            if key not in items:
                raise self.fail(
                    "missing_detail",
                    line,
                    f"Detail of {_a(row[1])} row",
                    f"a {_q(key)} item",
                    _q(text),
                )
        return items

    def word(self, text: str, words: Mapping[str, str], line: int, what: str) -> str:
        value = words.get(text)
        if value is None:
            raise self.fail("bad_word", line, what, _one_of(words), _q(text))
        return value

    def timestamp(self, text: str, line: int, what: str) -> datetime | None:
        """A timestamp in the locale's exact shape (§1, §5.3); empty is "not applicable"."""
        if not text:
            return None
        cached = self._timestamps.get(text)
        if cached is not None:
            return cached
        match = self._timestamp_re.fullmatch(text)
        if match is None:
            raise self.fail(
                "bad_timestamp",
                line,
                what,
                f"a timestamp {_q(self.locale.timestamp_shape)}",
                _q(text),
            )
        parts = [int(group) for group in match.groups()[:6]]
        year, month, day = (parts[k] for k in self._date_order)
        hour, minute, second = parts[3:6]
        if self.locale.name == "en-US":
            # 12-hour clock: 12:xx AM is 00:xx, 12:xx PM is 12:xx.
            if not 1 <= hour <= 12:
                raise self.fail(
                    "bad_timestamp", line, f"{what} hour", "01..12 (12-hour clock)", _q(text)
                )
            hour = hour % 12 + (12 if match[7] == "PM" else 0)
        try:
            value = datetime(year, month, day, hour, minute, second)
        except ValueError:
            raise self.fail("bad_timestamp", line, what, "a real date and time", _q(text)) from None
        if not timestamp_in_range(value):
            raise self.fail(
                "out_of_range",
                line,
                what,
                "a time from 2000-01-01 00:00:00 to 2136-02-07 06:28:14",
                _q(text),
            )
        self._timestamps[text] = value
        return value

    def date(self, text: str, line: int, what: str) -> date | None:
        """A date in the locale's exact shape (§1, §5.3); empty is "not set"."""
        if not text:
            return None
        match = self._date_re.fullmatch(text)
        if match is None:
            raise self.fail(
                "bad_date", line, what, f"a date {_q(self.locale.date_shape)}", _q(text)
            )
        parts = [int(group) for group in match.groups()]
        year, month, day = (parts[k] for k in self._date_order)
        try:
            value = date(year, month, day)
        except ValueError:
            raise self.fail("bad_date", line, what, "a real date", _q(text)) from None
        if not date_in_range(value):
            raise self.fail(
                "out_of_range", line, what, "a date from 1900-01-01 to 2079-06-05", _q(text)
            )
        return value

    def number(
        self, text: str, factor: int, line: int, what: str, *, unit: str, top: int, low: int = 0
    ) -> int:
        """A locale number times `factor`, exactly, as a whole number in low..top (§1, §5.4)."""
        key = (text, factor)
        scaled = self._numbers.get(key)
        if scaled is None:
            match = self._number_re.fullmatch(text)
            if match is None:
                raise self.fail(
                    "bad_number",
                    line,
                    what,
                    f"a number with decimal mark {_q(self.locale.decimal_mark)} "
                    "and no thousands separators",
                    _q(text),
                )
            sign, whole, fraction = match.groups()
            try:
                exact = Decimal(f"{sign}{whole}.{fraction}" if fraction else f"{sign}{whole}")
                scaled = _EXACT.multiply(exact, Decimal(factor))
            except DecimalException:
                raise self.fail("bad_number", line, what, "a number", _q(text)) from None
            self._numbers[key] = scaled
        if scaled != scaled.to_integral_value():
            raise self.fail(
                "not_whole",
                line,
                what,
                f"a whole number of {unit}",
                f"{_q(text)} = {scaled.normalize():f} {unit}",
            )
        value = int(scaled)
        if not low <= value <= top:
            raise self.fail(
                "out_of_range",
                line,
                what,
                f"{low}..{top} {unit}".rstrip(),
                f"{_q(text)} = {value} {unit}".rstrip(),
            )
        return value

    def param_value(
        self, definition: ParamDef, text: str, unit: str, line: int, column: str
    ) -> ParamValue:
        """One parameter value in canonical units, by the label's type and units (§3.1)."""
        units = dict(definition.csv_units)
        factor = units.get(unit)
        if factor is None:
            raise self.fail(
                "bad_unit", line, f"Unit of {_q(definition.csv_label)}", _one_of(units), _q(unit)
            )
        what = f"{column} of {_q(definition.csv_label)}"
        kind = definition.value_type
        if kind in INT_RANGES:
            low, top = INT_RANGES[kind]
            return self.number(text, factor, line, what, unit=definition.unit, top=top, low=low)
        if kind is ValueType.TEXT:
            self.text_limit(text, MAX_TEXT_BYTES, line, what)
            return text
        if kind is ValueType.DATE:
            return self.date(text, line, what)
        if kind is ValueType.BOOL:
            flag = BOOL_WORDS.get(text)
            if flag is None:
                raise self.fail("bad_word", line, what, _one_of(BOOL_WORDS), _q(text))
            return flag
        if kind is ValueType.ENUM:
            words = ENUM_PARAM_WORDS.get(definition.name, MappingProxyType({}))
            return self.word(text, words, line, what)
        # FLEX_STEP: `HH:MM@rate`, times always with ':' (§5.3), rate in the locale.
        match = _FLEX_RE.fullmatch(text)
        if match is None or int(match[1]) > 23 or int(match[2]) > 59:
            raise self.fail("bad_flex_step", line, what, "'HH:MM@rate'", _q(text))
        rate = self.number(
            match[3], factor, line, f"{what} rate", unit=definition.unit, top=U32_MAX
        )
        return FlexStep(int(match[1]) * 60 + int(match[2]), rate)

    def text_limit(self, text: str, limit: int, line: int, what: str) -> None:
        size = len(text.encode("utf-8"))
        if size > limit:
            raise self.fail(
                "text_too_long", line, what, f"at most {limit} bytes of UTF-8", f"{size} bytes"
            )

    def u8_text(self, line: int, text: str, what: str) -> str:
        """Texts with a u8 length in the binary (SESSION_INFO, PATIENT)."""
        self.text_limit(text, U8_TEXT_BYTES, line, what)
        return text

    def ascii_field(self, line: int, text: str, what: str) -> str:
        """A NUL-padded 12-byte ASCII header field (docs/formats.md §2.1, §7.10)."""
        if not text.isascii() or "\x00" in text:
            raise self.fail("not_ascii", line, what, "ASCII text without NUL", _q(text))
        if len(text) > ASCII_FIELD_BYTES:
            raise self.fail(
                "text_too_long",
                line,
                what,
                f"at most {ASCII_FIELD_BYTES} characters",
                f"{len(text)} characters",
            )
        return text

    # -- §5.4: what is accepted can be written as binary ----------------------------------

    def _check_binary_size(self, end_line: int) -> None:
        size = binary_log_size(self.records)
        if size > MAX_FILE_BYTES:
            raise LimitExceeded(
                "binary_too_large",
                "the records would not fit a binary log: expected at most "
                f"{MAX_FILE_BYTES} bytes, found {size} bytes",
                source=self.source,
                position=Position("line", end_line),
            )


def binary_log_size(records: Sequence[Record]) -> int:
    """Bytes of the binary log holding `records` (header, the records, the END record)."""
    size = HEADER_BYTES + FRAME_BYTES + END_PAYLOAD_BYTES
    for rec in records:
        size += FRAME_BYTES + _payload_size(rec)
    return size


def _value_size(kind: ValueType, value: ParamValue) -> int:
    size = VALUE_SIZES[kind]
    if kind is ValueType.TEXT and isinstance(value, str):
        size += len(value.encode("utf-8"))
    return size


def _payload_size(rec: Record) -> int:
    """Payload bytes of the binary record (docs/formats.md §3)."""
    if isinstance(rec, SessionInfoRec):
        return (
            _SESSION_INFO_FIXED_BYTES
            + len(rec.operator_id.encode("utf-8"))
            + len(rec.clinic_id.encode("utf-8"))
        )
    if isinstance(rec, PatientRec):
        return (
            _PATIENT_FIXED_BYTES
            + len(rec.patient_id.encode("utf-8"))
            + len(rec.patient_name.encode("utf-8"))
        )
    if isinstance(rec, SnapshotRec):
        return _SNAPSHOT_HEAD_BYTES + sum(
            _ENTRY_HEAD_BYTES + _value_size(e.value_type, e.value) for e in rec.entries
        )
    if isinstance(rec, ParamChangeRec):
        kind = rec.entry_old.value_type
        return (
            _PARAM_CHANGE_FIXED_BYTES
            + _value_size(kind, rec.entry_old.value)
            + _value_size(kind, rec.new)
        )
    if isinstance(rec, RefillRec):
        return _REFILL_BYTES
    if isinstance(rec, BolusRec):
        return _BOLUS_BYTES
    if isinstance(rec, AlarmRec):
        return _ALARM_BYTES
    if isinstance(rec, PumpStatusRec):
        return _PUMP_STATUS_BYTES
    if isinstance(rec, NoteRec):
        return _TEXT16_BYTES + len(rec.text.encode("utf-8"))
    return len(rec.payload)
