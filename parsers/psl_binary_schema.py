"""The PSL binary v1 format as declarative construct schemas: the spec in code (docs/formats.md).

One table of field formats per wire structure (`*_FIELDS`: name and `struct` format
code) is the single statement of each layout. From it come both the construct
schemas below (used to build fixtures and, when the fast decoder fails, to re-parse
a payload and name the failing field) and the precompiled `struct.Struct` objects of
the fast decoder (`packer`, `field_offsets`), so the two cannot drift apart.

- `HEADER` (§2.1): `Const` signature, the header fields, the extra bytes a later minor
  version adds (`header_size - 96` of them, §2.1) and the CRC-16/CCITT-FALSE `Checksum`.
- `RECORD` (§2.2): sync, type, length, seq, time, a payload switched on the type
  (`default=GreedyBytes`: an unknown type keeps its raw bytes) cut to `length` bytes,
  and the record `Checksum` over type..payload. `FRAME` is the same frame around
  payload bytes as given (the writer builds payloads with `PAYLOADS` first).
- `PAYLOADS` (§3): one struct per record type, each ending in `Terminated` so a
  payload longer than its fields fails (§7.4).
- `VALUE` (§2.3): the value of a parameter entry switched on its value type, with
  `default=Error` (an unknown value type cannot be skipped, §7.6).

Limits and enumeration ranges are not in the schemas: the writer must be able to
break them on purpose, and the decoder checks them (parsers/psl_binary.py). The
END record's `file_crc32` covers the bytes before the END frame, which a construct
`Checksum` inside the record cannot reach; the writer and decoder compute it.
The record loop is never a `GreedyRange` (it stops silently at a record whose CRC
fails): `PSL_FILE` repeats until the END record and raises on anything else.
"""

from __future__ import annotations

import binascii
import struct
from collections.abc import Mapping
from enum import IntEnum
from types import MappingProxyType
from typing import Any, Final

from construct import (
    Array,
    Bytes,
    Checksum,
    Const,
    ConstructError,
    Error,
    FixedSized,
    GreedyBytes,
    Int8ul,
    Int16sl,
    Int16ul,
    Int32sl,
    Int32ul,
    PascalString,
    RawCopy,
    Rebuild,
    RepeatUntil,
    Struct,
    Switch,
    Terminated,
    len_,
    this,
)

from parsers.params import ValueType

# §2.1: `\x89PSL\r\n\x1a\n`; the high byte and CR LF / SUB catch text-mode transfers.
SIGNATURE: Final = b"\x89PSL\r\n\x1a\n"
SYNC: Final = 0xA5
HEADER_SIZE_V1_0: Final = 96
SUPPORTED_MAJOR: Final = 1
PADDING_BYTE: Final = 0x1A


class RecordType(IntEnum):
    """Record type codes (§3)."""

    SESSION_INFO = 0x01
    PATIENT = 0x02
    SNAPSHOT = 0x10
    PARAM_CHANGE = 0x20
    REFILL = 0x30
    BOLUS = 0x31
    ALARM = 0x40
    PUMP_STATUS = 0x50
    NOTE = 0x60
    END = 0x7F


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection, no final xor (§2.1)."""
    return binascii.crc_hqx(data, 0xFFFF)


# A layout: (field name, `struct` format code), little-endian, no alignment.
Layout = tuple[tuple[str, str], ...]

# §2.1, offsets 0..93; the CRC is the last two bytes of the header (offset header_size - 2).
HEADER_FIELDS: Final[Layout] = (
    ("signature", "8s"),
    ("version_major", "B"),
    ("version_minor", "B"),
    ("header_size", "H"),
    ("programmer_model", "12s"),
    ("programmer_serial", "12s"),
    ("programmer_sw_major", "B"),
    ("programmer_sw_minor", "B"),
    ("programmer_sw_build", "H"),
    ("pump_model", "12s"),
    ("pump_serial", "12s"),
    ("session_id", "16s"),
    ("session_start", "I"),
    ("utc_offset_min", "h"),
    ("body_size", "I"),
    ("reserved", "I"),
)
CRC_FIELDS: Final[Layout] = (("crc", "H"),)

# §2.2: the frame before the payload; the CRC after it covers `type`..payload end.
FRAME_FIELDS: Final[Layout] = (
    ("sync", "B"),
    ("type", "B"),
    ("length", "H"),
    ("seq", "H"),
    ("time", "I"),
)

# §3: the record types whose payload has a fixed size.
REFILL_FIELDS: Final[Layout] = (
    ("expected_residual_ul", "I"),
    ("aspirated_ul", "I"),
    ("added_ul", "I"),
    ("new_volume_ul", "I"),
)
BOLUS_FIELDS: Final[Layout] = (("kind", "B"), ("volume_ul", "I"), ("duration_min", "H"))
ALARM_FIELDS: Final[Layout] = (
    ("code", "H"),
    ("severity", "B"),
    ("state", "B"),
    ("occurred_at", "I"),
)
PUMP_STATUS_FIELDS: Final[Layout] = (
    ("pump_clock", "I"),
    ("firmware_major", "B"),
    ("firmware_minor", "B"),
    ("battery", "B"),
)
END_FIELDS: Final[Layout] = (("record_count", "I"), ("file_crc32", "I"))

FIXED_PAYLOAD_FIELDS: Final[Mapping[int, Layout]] = MappingProxyType(
    {
        RecordType.REFILL: REFILL_FIELDS,
        RecordType.BOLUS: BOLUS_FIELDS,
        RecordType.ALARM: ALARM_FIELDS,
        RecordType.PUMP_STATUS: PUMP_STATUS_FIELDS,
        RecordType.END: END_FIELDS,
    }
)

# §3: the leading fixed fields of the variable payloads.
SNAPSHOT_HEAD_FIELDS: Final[Layout] = (("phase", "B"), ("count", "B"))
# §2.3: a parameter entry is `param_id u16, value_type u8, value`.
ENTRY_HEAD_FIELDS: Final[Layout] = (("param_id", "H"), ("value_type", "B"))
# Length prefixes of texts: u8 for names and TEXT values, u16 for NOTE (§2.3, §3).
TEXT8_PREFIX: Final = "B"
TEXT16_PREFIX: Final = "H"
ENUM_FIELD: Final = "B"
DATE_FIELD: Final = "H"

# §2.3: every value type but TEXT has a fixed layout.
VALUE_FIELDS: Final[Mapping[ValueType, Layout]] = MappingProxyType(
    {
        ValueType.U32: (("value", "I"),),
        ValueType.I32: (("value", "i"),),
        ValueType.DATE: (("value", DATE_FIELD),),
        ValueType.ENUM: (("value", ENUM_FIELD),),
        ValueType.BOOL: (("value", "B"),),
        ValueType.MINUTES: (("value", "H"),),
        ValueType.FLEX_STEP: (("start_minute", "H"), ("rate_ul_per_day", "I")),
    }
)


def packer(layout: Layout) -> struct.Struct:
    """The precompiled little-endian `struct.Struct` of a layout (the fast decoder's view)."""
    return struct.Struct("<" + "".join(fmt for _, fmt in layout))


def field_offsets(layout: Layout) -> dict[str, int]:
    """Each field's offset from the start of its layout."""
    offsets: dict[str, int] = {}
    at = 0
    for name, fmt in layout:
        offsets[name] = at
        at += struct.calcsize("<" + fmt)
    return offsets


_INTEGERS: Final[Mapping[str, Any]] = MappingProxyType(
    {"B": Int8ul, "H": Int16ul, "I": Int32ul, "h": Int16sl, "i": Int32sl}
)


def _field(fmt: str) -> Any:
    if fmt.endswith("s"):
        return Bytes(int(fmt[:-1]))
    return _INTEGERS[fmt]


def construct_fields(layout: Layout) -> list[Any]:
    """The construct subcons of a layout, named as the layout names them."""
    return [name / _field(fmt) for name, fmt in layout]


def _value(value_type: ValueType) -> Any:
    layout = VALUE_FIELDS[value_type]
    if len(layout) == 1:
        return _field(layout[0][1])
    return Struct(*construct_fields(layout))


# §2.3 TEXT: u8 length n (0..64), then n bytes of UTF-8 (the 64 is the decoder's limit).
TEXT8: Final = PascalString(_field(TEXT8_PREFIX), "utf8")
TEXT16: Final = PascalString(_field(TEXT16_PREFIX), "utf8")

# §2.3: an unknown value type has no size, so it cannot be skipped: `default=Error`.
VALUE: Final = Switch(
    this.value_type,
    {**{int(vt): _value(vt) for vt in VALUE_FIELDS}, int(ValueType.TEXT): TEXT8},
    default=Error,
)

PARAM_ENTRY: Final = Struct(*construct_fields(ENTRY_HEAD_FIELDS), "value" / VALUE)


def _fixed(layout: Layout) -> Any:
    return Struct(*construct_fields(layout), Terminated)


PAYLOADS: Final[Mapping[int, Any]] = MappingProxyType(
    {
        RecordType.SESSION_INFO: Struct(
            "operator_id" / TEXT8,
            "operator_role" / _field(ENUM_FIELD),
            "clinic_id" / TEXT8,
            Terminated,
        ),
        RecordType.PATIENT: Struct(
            "patient_id" / TEXT8,
            "patient_name" / TEXT8,
            "birth_date" / _field(DATE_FIELD),
            Terminated,
        ),
        RecordType.SNAPSHOT: Struct(
            "phase" / _field(SNAPSHOT_HEAD_FIELDS[0][1]),
            "count" / Rebuild(_field(SNAPSHOT_HEAD_FIELDS[1][1]), len_(this.entries)),
            "entries" / Array(this.count, PARAM_ENTRY),
            Terminated,
        ),
        # §3: the old value as a full entry, the new value in the same type, the reason.
        RecordType.PARAM_CHANGE: Struct(
            *construct_fields(ENTRY_HEAD_FIELDS),
            "old" / VALUE,
            "new" / VALUE,
            "reason" / _field(ENUM_FIELD),
            Terminated,
        ),
        RecordType.NOTE: Struct("text" / TEXT16, Terminated),
        **{code: _fixed(layout) for code, layout in FIXED_PAYLOAD_FIELDS.items()},
    }
)

HEADER: Final = Struct(
    "fields"
    / RawCopy(
        Struct(
            "signature" / Const(SIGNATURE),
            *construct_fields(HEADER_FIELDS[1:]),
            # §2.1: a later minor version's extra header bytes sit before the CRC.
            "extra" / Bytes(this.header_size - HEADER_SIZE_V1_0),
        )
    ),
    "header_crc" / Checksum(_field(CRC_FIELDS[0][1]), crc16, this.fields.data),
)


def _record(payload: Any) -> Any:
    """A record frame (§2.2) around `payload`, with the CRC over type..payload end."""
    return Struct(
        "sync" / Const(bytes([SYNC])),
        "body" / RawCopy(Struct(*construct_fields(FRAME_FIELDS[1:]), "payload" / payload)),
        "crc" / Checksum(_field(CRC_FIELDS[0][1]), crc16, this.body.data),
    )


# A record with its payload parsed by type; an unknown type keeps its raw bytes.
RECORD: Final = _record(
    FixedSized(this.length, Switch(this.type, dict(PAYLOADS), default=GreedyBytes))
)
# A record frame around payload bytes as given: how the writer frames every record,
# including deliberately broken payloads of known types.
FRAME: Final = _record(Bytes(this.length))

# A whole file: header, records up to and including END, then whatever follows
# (0x1A padding, §2). Counted by the END record, never a GreedyRange.
PSL_FILE: Final = Struct(
    "header" / HEADER,
    "records" / RepeatUntil(lambda obj, _lst, _ctx: obj.body.value.type == RecordType.END, RECORD),
    "trailer" / GreedyBytes,
)

# Bytes a record takes besides its payload: the frame before it and the CRC after it.
RECORD_OVERHEAD: Final = packer(FRAME_FIELDS).size + packer(CRC_FIELDS).size


def payload_failure_path(type_code: int, payload: bytes) -> str | None:
    """Re-parse a payload with the schema and name the field where it fails.

    The fast decoder calls this only after it has found an error, to add the field
    path to its message: decoding stays compiled, only a failure pays for this
    interpreted re-parse (docs/formats.md §8.2). None when the schema parses the payload or the type is unknown.
    """
    schema = PAYLOADS.get(type_code)
    if schema is None:
        return None
    try:
        schema.parse(payload)
    except ConstructError as exc:
        # construct writes "(parsing) -> entries -> value"; keep the field part.
        fields = [part.strip() for part in str(exc.path or "").split("->")[1:]]
        return ".".join(fields) or None
    return None
