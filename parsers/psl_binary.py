"""Decoder of the PSL binary session log v1 (docs/formats.md): bytes in, `Session` out.

Stage one walks the file with precompiled `struct.Struct`s derived from the field
tables of `parsers.psl_binary_schema` (the construct schema is built from the same
tables, so the two cannot drift) and produces a `RawHeader` and the records of
`parsers.records`; stage two, `parsers.assemble.assemble`, applies the record
sequence rules. Positions are byte offsets.

Checks run in the order of §7.2: the file-size limit, the header (signature,
version, size, CRC, then fields in offset order), then each record in file order
(framing, CRC, sequence number, payload fields in order), then the END record
(record count, file CRC, the header's body size, what follows END), then the
sequence rules. The first failure is raised as a `DecodeError` whose position is
the offset of the field at fault; where no single field is at fault, where the
problem shows (§7.2). Limits are checked against the length field before any
slice is taken. When a payload fails, the construct schema re-parses it to name
the failing field in the message (parsing stays compiled and fast; only a failure
pays for the interpreted re-parse, docs/formats.md §8.2); the code and offset come
from this decoder.

Every error code this decoder raises, with the offset it reports, is in the table
of docs/formats.md §9.1; the warnings (`unknown_record_type`, `unknown_parameter`,
and those of `parsers.assemble`) are in docs/formats.md §10. With strict=True a warning is raised
as `StrictModeWarning` with the code ``strict:<code>``. A skipped value of an
unknown parameter is not interpreted, so no BOOL, minute or UTF-8 check applies to
it (invalid UTF-8 is replaced), but its TEXT length is still held to 64 bytes.
"""

from __future__ import annotations

import binascii
import struct
import zlib
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Final, NoReturn

from parsers.assemble import WarningLog, assemble, describe_time
from parsers.errors import DecodeError, LimitExceeded, UnsupportedVersion, check_file_size
from parsers.model import Position, Session
from parsers.params import (
    ALARM_STATES,
    BATTERY_STATES,
    BOLUS_KINDS,
    INFUSION_MODES,
    MAX_MINUTE,
    MAX_NOTE_BYTES,
    MAX_PADDING_BYTES,
    MAX_PAYLOAD_BYTES,
    MAX_SNAPSHOT_ENTRIES,
    MAX_TEXT_BYTES,
    OPERATOR_ROLES,
    PARAMS_BY_ID,
    PHASE_INTERROGATED,
    PHASE_PROGRAMMED,
    REASONS,
    SEVERITIES,
    FlexStep,
    ParamValue,
    ValueType,
)
from parsers.psl_binary_schema import (
    ALARM_FIELDS,
    BOLUS_FIELDS,
    CRC_FIELDS,
    DATE_FIELD,
    END_FIELDS,
    ENTRY_HEAD_FIELDS,
    ENUM_FIELD,
    FRAME_FIELDS,
    HEADER_FIELDS,
    HEADER_SIZE_V1_0,
    PADDING_BYTE,
    PUMP_STATUS_FIELDS,
    REFILL_FIELDS,
    SIGNATURE,
    SNAPSHOT_HEAD_FIELDS,
    SUPPORTED_MAJOR,
    SYNC,
    TEXT8_PREFIX,
    TEXT16_PREFIX,
    VALUE_FIELDS,
    Layout,
    RecordType,
    field_offsets,
    packer,
    payload_failure_path,
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
    UnknownRec,
)
from parsers.wiretime import (
    EPOCH_POSIX,
    TIMESTAMP_NOT_APPLICABLE,
    date_from_days,
    local_from_timestamp,
    naive_from_posix,
)

FORMAT_NAME: Final = "psl-binary"
UTC_OFFSET_MIN: Final = -720
UTC_OFFSET_MAX: Final = 840
# §3: REFILL.aspirated_ul 0xFFFFFFFF means "not measured".
NOT_MEASURED: Final = 0xFFFFFFFF
# §3: SESSION_INFO and PATIENT texts are limited only by their u8 length prefix.
MAX_NAME_BYTES: Final = 0xFF


def _single(fmt: str) -> struct.Struct:
    return struct.Struct("<" + fmt)


# Precompiled views of the schema's field tables.
_HEADER = packer(HEADER_FIELDS)
_HEADER_AT = field_offsets(HEADER_FIELDS)
_FRAME = packer(FRAME_FIELDS)
_FRAME_AT = field_offsets(FRAME_FIELDS)
_FRAME_SIZE = _FRAME.size
_CRC = packer(CRC_FIELDS)
_CRC_SIZE = _CRC.size
_HEADER_SIZE_FIELD = _single(dict(HEADER_FIELDS)["header_size"])
_ENTRY_HEAD = packer(ENTRY_HEAD_FIELDS)
_ENTRY_HEAD_SIZE = _ENTRY_HEAD.size
_SNAPSHOT_HEAD = packer(SNAPSHOT_HEAD_FIELDS)
_TEXT8 = _single(TEXT8_PREFIX)
_TEXT16 = _single(TEXT16_PREFIX)
_ENUM_BYTE = _single(ENUM_FIELD)
_DATE_VALUE = _single(DATE_FIELD)
_ASCII_FIELDS = ("programmer_model", "programmer_serial", "pump_model", "pump_serial")

_U32 = int(ValueType.U32)
_I32 = int(ValueType.I32)
_DATE = int(ValueType.DATE)
_ENUM = int(ValueType.ENUM)
_TEXT = int(ValueType.TEXT)
_BOOL = int(ValueType.BOOL)
_FLEX_STEP = int(ValueType.FLEX_STEP)
# Value type code -> precompiled struct, for every value type but TEXT.
_VALUE_STRUCTS: Final[dict[int, struct.Struct]] = {
    int(vt): packer(layout) for vt, layout in VALUE_FIELDS.items()
}
_U32_VALUE = _VALUE_STRUCTS[_U32]
_VALUE_TYPES: Final[dict[int, ValueType]] = {int(vt): vt for vt in ValueType}
# The enumeration table of each ENUM parameter (§4).
_PARAM_ENUMS: Final[dict[str, Mapping[int, str]]] = {"infusion_mode": INFUSION_MODES}
# Parameter id -> (name, value type code, enumeration table of an ENUM parameter).
_PARAMS: Final[dict[int, tuple[str, int, Mapping[int, str] | None]]] = {
    pid: (p.name, int(p.value_type), _PARAM_ENUMS.get(p.name)) for pid, p in PARAMS_BY_ID.items()
}
_ROLES = dict(OPERATOR_ROLES)
_REASONS = dict(REASONS)
_KINDS = dict(BOLUS_KINDS)
_SEVERITIES = dict(SEVERITIES)
_STATES = dict(ALARM_STATES)
_BATTERY = dict(BATTERY_STATES)
_PHASES = (PHASE_INTERROGATED, PHASE_PROGRAMMED)
_TYPE_NAMES: Final[dict[int, str]] = {int(t): t.name for t in RecordType}


class _Fixed:
    """A fixed-size payload (§3): its packer, size and the offset and size of each field."""

    __slots__ = ("fields", "name", "offsets", "packer", "size")

    def __init__(self, name: str, layout: Layout) -> None:
        self.name = name
        self.packer = packer(layout)
        self.size = self.packer.size
        self.offsets = field_offsets(layout)
        self.fields = [(self.offsets[field], _single(fmt).size) for field, fmt in layout]

    def length_fail(self, p: int, end: int) -> _Fail:
        """§7.4: the first field that does not fit, or the first byte after the last field."""
        length = end - p
        offset = p + self.size
        if length < self.size:
            offset = next(p + at for at, size in self.fields if at + size > length)
        return _Fail(
            "payload_length",
            f"{self.name} payload has the wrong length for its fields",
            offset,
            expected=f"{self.size} bytes",
            found=f"{length} bytes",
        )


_REFILL = _Fixed("REFILL", REFILL_FIELDS)
_BOLUS = _Fixed("BOLUS", BOLUS_FIELDS)
_ALARM = _Fixed("ALARM", ALARM_FIELDS)
_PUMP_STATUS = _Fixed("PUMP_STATUS", PUMP_STATUS_FIELDS)
_END = _Fixed("END", END_FIELDS)


def sniff(data: bytes) -> str | None:
    """None when `data` is a PSL binary file (starts with the signature, §2.1), else why not."""
    if data.startswith(SIGNATURE):
        return None
    return "no PSL signature"


def decode(data: bytes, *, source: str, strict: bool = False) -> Session:
    """Decode one PSL binary export into a `Session` (docs/formats.md)."""
    header, records, end_offset, log = decode_records(data, source=source, strict=strict)
    return assemble(
        header,
        records,
        source=source,
        source_format=FORMAT_NAME,
        end_position=Position("offset", end_offset),
        log=log,
    )


def type_name(type_code: int) -> str:
    """The §3 name of a record type, or its code for a type this decoder does not know."""
    return _TYPE_NAMES.get(type_code) or f"0x{type_code:02X}"


def _hex(value: int, digits: int) -> str:
    return f"0x{value:0{digits}X}"


class _Fail(Exception):
    """A payload check failed at `offset`; the record loop adds the record context."""

    def __init__(
        self,
        code: str,
        message: str,
        offset: int,
        *,
        expected: object = None,
        found: object = None,
        kind: type[DecodeError] = DecodeError,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.offset = offset
        self.expected = expected
        self.found = found
        self.kind = kind


class _Cursor:
    """The record being decoded: one per file, updated in place to spare the hot loop."""

    __slots__ = ("index", "log", "position", "time_local", "times")

    def __init__(self, log: WarningLog) -> None:
        self.log = log
        self.index = 0
        self.position = Position("offset", 0)
        self.time_local: datetime | None = None
        # Raw timestamp -> local time for this file: records share times (a snapshot's
        # entries, the alarms read with it), and a datetime costs more than a lookup.
        self.times: dict[int, datetime | None] = {}

    def local(self, seconds: int) -> datetime | None:
        """A timestamp as programmer-local time, None for "not applicable" (§1)."""
        times = self.times
        if seconds in times:
            return times[seconds]
        value = times[seconds] = local_from_timestamp(seconds)
        return value


def _short(p: int, end: int, field: str, size: int) -> _Fail:
    return _Fail(
        "payload_length",
        f"payload ends inside {field}",
        p,
        expected=f"{size} bytes",
        found=f"{max(end - p, 0)} bytes",
    )


def _too_long(q: int, p: int, end: int) -> _Fail:
    return _Fail(
        "payload_length",
        "payload longer than its fields",
        q,
        expected=f"{q - p} bytes",
        found=f"{end - p} bytes",
    )


def _enum(table: Mapping[int, str], value: int, offset: int, field: str) -> str:
    word = table.get(value)
    if word is None:
        raise _Fail(
            "enum_range",
            f"{field} outside its table",
            offset,
            expected=f"one of {sorted(table)}",
            found=value,
        )
    return word


def _enum_at(data: bytes, q: int, end: int, table: Mapping[int, str], field: str) -> str:
    if q + _ENUM_BYTE.size > end:
        raise _short(q, end, field, _ENUM_BYTE.size)
    return _enum(table, data[q], q, field)


def _text(
    data: bytes,
    p: int,
    end: int,
    prefix: struct.Struct,
    *,
    limit: int,
    field: str,
    lenient: bool = False,
) -> tuple[str, int]:
    """A length-prefixed UTF-8 text at `p`; returns it and the offset after it.

    The length is checked against `limit` and the payload before the text is sliced.
    `lenient` (an unknown parameter's value, only skipped) replaces invalid UTF-8.
    """
    if p + prefix.size > end:
        raise _short(p, end, field, prefix.size)
    (n,) = prefix.unpack_from(data, p)
    if n > limit:
        raise _Fail(
            "text_too_long",
            f"{field} longer than the limit",
            p,
            expected=f"at most {limit} bytes",
            found=f"{n} bytes",
            kind=LimitExceeded,
        )
    q = p + prefix.size
    stop = q + n
    if stop > end:
        raise _short(p, end, field, prefix.size + n)
    raw = data[q:stop]
    try:
        return raw.decode("utf-8", "replace" if lenient else "strict"), stop
    except UnicodeDecodeError as exc:
        raise _Fail(
            "bad_utf8",
            f"{field} is not valid UTF-8",
            q + exc.start,
            expected="UTF-8",
            found=_hex(raw[exc.start], 2),
        ) from None


def _value(
    data: bytes,
    q: int,
    end: int,
    vt: int,
    *,
    table: Mapping[int, str] | None,
    checked: bool,
    field: str,
) -> tuple[ParamValue, int]:
    """A parameter value of value type `vt` at `q` (§2.3); returns it and the offset after it.

    `checked` is False for an unknown parameter: its value is only skipped by its
    type (§2.3), so its ranges are not checked and it keeps its raw number.
    `table` is the enumeration table of an ENUM parameter.
    """
    if vt == _TEXT:
        return _text(data, q, end, _TEXT8, limit=MAX_TEXT_BYTES, field=field, lenient=not checked)
    unpack = _VALUE_STRUCTS[vt]
    stop = q + unpack.size
    if stop > end:
        raise _short(q, end, field, unpack.size)
    if vt in (_U32, _I32):
        return unpack.unpack_from(data, q)[0], stop
    if vt == _DATE:
        return date_from_days(unpack.unpack_from(data, q)[0]), stop
    if vt == _FLEX_STEP:
        start, rate = unpack.unpack_from(data, q)
        if checked and start > MAX_MINUTE:
            raise _Fail(
                "minute_range",
                f"{field} start minute out of range",
                q,
                expected=f"0..{MAX_MINUTE}",
                found=start,
            )
        return FlexStep(start, rate), stop
    (raw,) = unpack.unpack_from(data, q)
    if not checked:
        return raw, stop
    if vt == _ENUM:
        return (raw if table is None else _enum(table, raw, q, field)), stop
    if vt == _BOOL:
        if raw > 1:
            raise _Fail("bool_value", f"{field} is not a BOOL", q, expected="0 or 1", found=raw)
        return raw == 1, stop
    # MINUTES, the one value type left.
    if raw > MAX_MINUTE:
        raise _Fail(
            "minute_range", f"{field} out of range", q, expected=f"0..{MAX_MINUTE}", found=raw
        )
    return raw, stop


def _entry_head(
    data: bytes, p: int, end: int, field: str
) -> tuple[int, int, str | None, Mapping[int, str] | None]:
    """An entry's param_id and value_type, with the parameter's name and enumeration table.

    §2.3: a known parameter must carry its own value type; §7.6: an unknown one can be
    skipped only when its value type is known.
    """
    if p + _ENTRY_HEAD_SIZE > end:
        raise _short(p, end, f"{field} param_id and value_type", _ENTRY_HEAD_SIZE)
    pid, vt = _ENTRY_HEAD.unpack_from(data, p)
    param = _PARAMS.get(pid)
    if param is not None:
        name, expected_vt, table = param
        if vt != expected_vt:
            raise _Fail(
                "value_type_mismatch",
                f"{field}: {name} has the wrong value type",
                p + 2,
                expected=f"{_VALUE_TYPES[expected_vt].name} ({_hex(expected_vt, 2)})",
                found=f"{_VALUE_TYPES[vt].name} ({_hex(vt, 2)})"
                if vt in _VALUE_TYPES
                else _hex(vt, 2),
            )
        return pid, vt, name, table
    if vt not in _VALUE_TYPES:
        raise _Fail(
            "unknown_value_type",
            f"{field}: unknown parameter {_hex(pid, 4)} has an unknown value type, "
            "so it cannot be skipped",
            p + 2,
            expected="a value type of §2.3 (0x01..0x08)",
            found=_hex(vt, 2),
        )
    return pid, vt, None, None


def _session_info(data: bytes, p: int, end: int, cur: _Cursor) -> Record:
    operator_id, q = _text(data, p, end, _TEXT8, limit=MAX_NAME_BYTES, field="operator_id")
    role = _enum_at(data, q, end, _ROLES, "operator_role")
    clinic_id, q = _text(data, q + 1, end, _TEXT8, limit=MAX_NAME_BYTES, field="clinic_id")
    if q != end:
        raise _too_long(q, p, end)
    return SessionInfoRec(cur.index, cur.position, cur.time_local, operator_id, role, clinic_id)


def _patient(data: bytes, p: int, end: int, cur: _Cursor) -> Record:
    patient_id, q = _text(data, p, end, _TEXT8, limit=MAX_NAME_BYTES, field="patient_id")
    patient_name, q = _text(data, q, end, _TEXT8, limit=MAX_NAME_BYTES, field="patient_name")
    if q + _DATE_VALUE.size > end:
        raise _short(q, end, "birth_date", _DATE_VALUE.size)
    (days,) = _DATE_VALUE.unpack_from(data, q)
    q += _DATE_VALUE.size
    if q != end:
        raise _too_long(q, p, end)
    return PatientRec(
        cur.index, cur.position, cur.time_local, patient_id, patient_name, date_from_days(days)
    )


def _snapshot(data: bytes, p: int, end: int, cur: _Cursor) -> Record:
    if p + _SNAPSHOT_HEAD.size > end:
        raise _short(p if p == end else p + 1, end, "phase and count", _SNAPSHOT_HEAD.size)
    phase, count = _SNAPSHOT_HEAD.unpack_from(data, p)
    if phase not in _PHASES:
        raise _Fail(
            "enum_range",
            "phase outside its table",
            p,
            expected=f"one of {list(_PHASES)}",
            found=phase,
        )
    if count > MAX_SNAPSHOT_ENTRIES:
        raise _Fail(
            "snapshot_count",
            "SNAPSHOT count over the limit",
            p + 1,
            expected=f"at most {MAX_SNAPSHOT_ENTRIES}",
            found=count,
            kind=LimitExceeded,
        )
    q = p + _SNAPSHOT_HEAD.size
    entries: list[Entry] = []
    append = entries.append
    seen: set[int] = set()
    params = _PARAMS
    unpack_head = _ENTRY_HEAD.unpack_from
    unpack_u32 = _U32_VALUE.unpack_from
    u32_size = _U32_VALUE.size
    u32_type = ValueType.U32
    date_type = ValueType.DATE
    bool_type = ValueType.BOOL
    text_type = ValueType.TEXT
    enum_type = ValueType.ENUM
    head_size = _ENTRY_HEAD_SIZE
    unpack_date = _DATE_VALUE.unpack_from
    date_size = _DATE_VALUE.size
    new_tuple = tuple.__new__
    for i in range(count):
        # The common cases inline: a known parameter, not seen before, whose value fits
        # and is valid. Anything else (and every error) takes the checked path below.
        if q + head_size <= end:
            pid, vt = unpack_head(data, q)
            param = params.get(pid)
            if param is not None and vt == param[1] and pid not in seen:
                at = q + head_size
                if vt == _U32:
                    if at + u32_size <= end:
                        seen.add(pid)
                        append(new_tuple(Entry, (param[0], pid, u32_type, unpack_u32(data, at)[0])))
                        q = at + u32_size
                        continue
                elif vt == _DATE:
                    if at + date_size <= end:
                        seen.add(pid)
                        (days,) = unpack_date(data, at)
                        append(new_tuple(Entry, (param[0], pid, date_type, date_from_days(days))))
                        q = at + date_size
                        continue
                elif vt == _BOOL:
                    if at < end and data[at] <= 1:
                        seen.add(pid)
                        append(new_tuple(Entry, (param[0], pid, bool_type, data[at] == 1)))
                        q = at + 1
                        continue
                elif vt == _TEXT:
                    if at < end:
                        stop = at + 1 + data[at]
                        if data[at] <= MAX_TEXT_BYTES and stop <= end:
                            try:
                                text = data[at + 1 : stop].decode("utf-8")
                            except UnicodeDecodeError:
                                pass  # the checked path reports the offending byte
                            else:
                                seen.add(pid)
                                append(new_tuple(Entry, (param[0], pid, text_type, text)))
                                q = stop
                                continue
                elif vt == _ENUM and at < end and param[2] is not None:
                    word = param[2].get(data[at])
                    if word is not None:
                        seen.add(pid)
                        append(new_tuple(Entry, (param[0], pid, enum_type, word)))
                        q = at + 1
                        continue
        field = f"entries[{i}]"
        pid, vt, name, table = _entry_head(data, q, end, field)
        if pid in seen:
            raise _Fail(
                "duplicate_parameter",
                f"{field}: parameter {name or _hex(pid, 4)} twice in one SNAPSHOT",
                q,
                expected="each param_id once",
                found=_hex(pid, 4),
            )
        seen.add(pid)
        value, next_q = _value(
            data,
            q + _ENTRY_HEAD_SIZE,
            end,
            vt,
            table=table,
            checked=name is not None,
            field=f"{field}.value",
        )
        if name is None:
            cur.log.warn(
                f"SNAPSHOT at {describe_time(cur.time_local)} holds unknown parameter "
                f"{_hex(pid, 4)} ({_VALUE_TYPES[vt].name}); skipped",
                code="unknown_parameter",
                position=Position("offset", q),
            )
        append(Entry(name, pid, _VALUE_TYPES[vt], value))
        q = next_q
    if q != end:
        raise _too_long(q, p, end)
    return SnapshotRec(cur.index, cur.position, cur.time_local, phase, tuple(entries))


# A PARAM_CHANGE of a U32 parameter (§3): entry head, old value, new value, reason;
# laid out from the schema's own field tables.
_U32_CHANGE = packer(
    (
        *ENTRY_HEAD_FIELDS,
        ("old", VALUE_FIELDS[ValueType.U32][0][1]),
        ("new", VALUE_FIELDS[ValueType.U32][0][1]),
        ("reason", ENUM_FIELD),
    )
)


def _param_change(data: bytes, p: int, end: int, cur: _Cursor) -> Record:
    if end - p == _U32_CHANGE.size:
        # The common case inline: a known U32 parameter and a reason in its table.
        pid, vt, old_u32, new_u32, reason_code = _U32_CHANGE.unpack_from(data, p)
        param = _PARAMS.get(pid)
        reason_word = _REASONS.get(reason_code)
        if vt == _U32 and param is not None and param[1] == _U32 and reason_word is not None:
            return tuple.__new__(
                ParamChangeRec,
                (
                    cur.index,
                    cur.position,
                    cur.time_local,
                    tuple.__new__(Entry, (param[0], pid, ValueType.U32, old_u32)),
                    new_u32,
                    reason_word,
                ),
            )
    pid, vt, name, table = _entry_head(data, p, end, "old value")
    checked = name is not None
    old, q = _value(data, p + _ENTRY_HEAD_SIZE, end, vt, table=table, checked=checked, field="old")
    new, q = _value(data, q, end, vt, table=table, checked=checked, field="new")
    reason = _enum_at(data, q, end, _REASONS, "reason")
    q += _ENUM_BYTE.size
    if q != end:
        raise _too_long(q, p, end)
    if name is None:
        # §7.6: a warning, and no change event (assemble skips an entry without a name).
        cur.log.warn(
            f"PARAM_CHANGE at {describe_time(cur.time_local)} changes unknown parameter "
            f"{_hex(pid, 4)}; no change event",
            code="unknown_parameter",
            position=cur.position,
        )
    return ParamChangeRec(
        cur.index,
        cur.position,
        cur.time_local,
        Entry(name, pid, _VALUE_TYPES[vt], old),
        new,
        reason,
    )


def _refill(data: bytes, p: int, end: int, cur: _Cursor) -> Record:
    if end - p != _REFILL.size:
        raise _REFILL.length_fail(p, end)
    expected, aspirated, added, new_volume = _REFILL.packer.unpack_from(data, p)
    return RefillRec(
        cur.index,
        cur.position,
        cur.time_local,
        expected,
        None if aspirated == NOT_MEASURED else aspirated,
        added,
        new_volume,
    )


_BOLUS_KIND_AT = _BOLUS.offsets["kind"]


def _bolus(data: bytes, p: int, end: int, cur: _Cursor) -> Record:
    if end - p != _BOLUS.size:
        raise _BOLUS.length_fail(p, end)
    kind, volume, duration = _BOLUS.packer.unpack_from(data, p)
    return BolusRec(
        cur.index,
        cur.position,
        cur.time_local,
        _enum(_KINDS, kind, p + _BOLUS_KIND_AT, "kind"),
        volume,
        duration,
    )


_ALARM_SEVERITY_AT = _ALARM.offsets["severity"]
_ALARM_STATE_AT = _ALARM.offsets["state"]
# ALARM is most of a realistic file (the pump's log since the last visit): bind early.
_ALARM_SIZE = _ALARM.size
_unpack_alarm = _ALARM.packer.unpack_from
# A whole ALARM record (frame, payload, CRC) in one struct, derived from the same layouts:
# the record loop reads a well-formed ALARM with one call and sends anything else down
# the checked path.
_ALARM_RECORD = packer(FRAME_FIELDS + ALARM_FIELDS + CRC_FIELDS)
_ALARM_RECORD_SIZE = _ALARM_RECORD.size


def _alarm(data: bytes, p: int, end: int, cur: _Cursor) -> Record:
    if end - p != _ALARM_SIZE:
        raise _ALARM.length_fail(p, end)
    code, severity, state, occurred = _unpack_alarm(data, p)
    # The lookups inline; `_enum` only to raise for an out-of-table byte.
    severity_word = _SEVERITIES.get(severity)
    if severity_word is None:
        severity_word = _enum(_SEVERITIES, severity, p + _ALARM_SEVERITY_AT, "severity")
    state_word = _STATES.get(state)
    if state_word is None:
        state_word = _enum(_STATES, state, p + _ALARM_STATE_AT, "state")
    # An unknown alarm code is kept as its number; assemble warns (§7.5).
    return AlarmRec(
        cur.index,
        cur.position,
        cur.time_local,
        code,
        severity_word,
        state_word,
        cur.local(occurred),
    )


_BATTERY_AT = _PUMP_STATUS.offsets["battery"]


def _pump_status(data: bytes, p: int, end: int, cur: _Cursor) -> Record:
    if end - p != _PUMP_STATUS.size:
        raise _PUMP_STATUS.length_fail(p, end)
    clock, major, minor, battery = _PUMP_STATUS.packer.unpack_from(data, p)
    return PumpStatusRec(
        cur.index,
        cur.position,
        cur.time_local,
        local_from_timestamp(clock),
        f"{major}.{minor}",
        _enum(_BATTERY, battery, p + _BATTERY_AT, "battery"),
    )


def _note(data: bytes, p: int, end: int, cur: _Cursor) -> Record:
    if end - p >= _TEXT16.size:
        (n,) = _TEXT16.unpack_from(data, p)
        if n <= MAX_NOTE_BYTES and p + _TEXT16.size + n == end:
            try:
                text = data[p + _TEXT16.size : end].decode("utf-8")
            except UnicodeDecodeError:
                pass  # the checked path below reports the offending byte
            else:
                return tuple.__new__(NoteRec, (cur.index, cur.position, cur.time_local, text))
    text, q = _text(data, p, end, _TEXT16, limit=MAX_NOTE_BYTES, field="text")
    if q != end:
        raise _too_long(q, p, end)
    return NoteRec(cur.index, cur.position, cur.time_local, text)


_HANDLERS: Final[dict[int, Callable[[bytes, int, int, _Cursor], Record]]] = {
    RecordType.SESSION_INFO: _session_info,
    RecordType.PATIENT: _patient,
    RecordType.SNAPSHOT: _snapshot,
    RecordType.PARAM_CHANGE: _param_change,
    RecordType.REFILL: _refill,
    RecordType.BOLUS: _bolus,
    RecordType.ALARM: _alarm,
    RecordType.PUMP_STATUS: _pump_status,
    RecordType.NOTE: _note,
}


def _error(
    code: str,
    message: str,
    offset: int,
    *,
    source: str,
    expected: object = None,
    found: object = None,
    kind: type[DecodeError] = DecodeError,
    index: int | None = None,
    type_code: int | None = None,
) -> DecodeError:
    return kind(
        code,
        message,
        source=source,
        position=Position("offset", offset),
        record_index=index,
        record_type=None if type_code is None else type_name(type_code),
        expected=expected,
        found=found,
    )


def _ascii_field(raw: bytes, offset: int, name: str, source: str) -> str:
    """§7.10: ASCII, then NUL padding to the end of the field; the first offending byte fails."""
    text = raw.rstrip(b"\0")
    if text.isascii() and b"\0" not in text:
        return text.decode("ascii")
    padding = False
    for k, byte in enumerate(raw):
        if byte == 0:
            padding = True
        elif padding or byte > 0x7F:
            raise _error(
                "bad_ascii_field",
                f"{name}: non-NUL byte after the NUL padding"
                if padding
                else f"{name}: non-ASCII byte",
                offset + k,
                source=source,
                expected="0x00" if padding else "ASCII",
                found=_hex(byte, 2),
            )
    raise AssertionError("unreachable: the loop finds the offending byte")  # pragma: no cover


def _uuid_text(raw: bytes) -> str:
    """RFC 4122 bytes in canonical 8-4-4-4-12 form (what str(uuid.UUID(bytes=...)) gives)."""
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _truncated_header(n: int, size: int, source: str) -> DecodeError:
    return _error(
        "truncated_header",
        "file ends inside the header",
        0,
        source=source,
        expected=f"{size} bytes",
        found=f"{n} bytes",
    )


def _header(data: bytes, source: str) -> tuple[RawHeader, int, int]:
    """The header (§2.1): signature, version, size, CRC, then the fields in offset order."""
    n = len(data)
    if not data.startswith(SIGNATURE):
        if SIGNATURE.startswith(data):
            raise _truncated_header(n, HEADER_SIZE_V1_0, source)
        raise _error(
            "bad_signature",
            "not a PSL binary file: no signature",
            0,
            source=source,
            expected="0x" + SIGNATURE.hex().upper(),
            found="0x" + data[: len(SIGNATURE)].hex().upper(),
        )
    major_at = _HEADER_AT["version_major"]
    if n <= major_at:
        raise _truncated_header(n, HEADER_SIZE_V1_0, source)
    if data[major_at] != SUPPORTED_MAJOR:
        # A later major version may change everything after the signature: stop here.
        raise _error(
            "unsupported_version",
            "unsupported major version",
            major_at,
            source=source,
            expected=SUPPORTED_MAJOR,
            found=data[major_at],
            kind=UnsupportedVersion,
        )
    size_at = _HEADER_AT["header_size"]
    if n < size_at + _HEADER_SIZE_FIELD.size:
        raise _truncated_header(n, HEADER_SIZE_V1_0, source)
    (header_size,) = _HEADER_SIZE_FIELD.unpack_from(data, size_at)
    if header_size < HEADER_SIZE_V1_0:
        raise _error(
            "header_too_small",
            "header_size smaller than the v1.0 header",
            size_at,
            source=source,
            expected=f"at least {HEADER_SIZE_V1_0}",
            found=header_size,
        )
    if n < header_size:
        raise _truncated_header(n, header_size, source)
    # §2.1: the CRC is the header's last two bytes, over every header byte before it;
    # a later minor version's extra bytes sit between offset 94 and the CRC.
    crc_at = header_size - _CRC_SIZE
    (stored,) = _CRC.unpack_from(data, crc_at)
    computed = binascii.crc_hqx(data[:crc_at], 0xFFFF)
    if stored != computed:
        raise _error(
            "header_crc",
            "header CRC mismatch",
            crc_at,
            source=source,
            expected=_hex(computed, 4),
            found=_hex(stored, 4),
        )
    (
        _signature,
        _major,
        minor,
        _size,
        programmer_model,
        programmer_serial,
        sw_major,
        sw_minor,
        sw_build,
        pump_model,
        pump_serial,
        session_id,
        session_start,
        utc_offset_min,
        body_size,
        _reserved,  # §2.1: zero, ignored when non-zero
    ) = _HEADER.unpack_from(data, 0)
    texts = {
        name: _ascii_field(raw, _HEADER_AT[name], name, source)
        for name, raw in zip(
            _ASCII_FIELDS,
            (programmer_model, programmer_serial, pump_model, pump_serial),
            strict=True,
        )
    }
    if not texts["pump_serial"]:
        raise _error(
            "empty_pump_serial",
            "pump_serial is empty",
            _HEADER_AT["pump_serial"],
            source=source,
            expected="a serial number",
            found="'' (all NUL)",
        )
    if not any(session_id):
        raise _error(
            "zero_session_id",
            "session_id is all zero",
            _HEADER_AT["session_id"],
            source=source,
            expected="a UUID",
            found="0x" + "00" * len(session_id),
        )
    start = local_from_timestamp(session_start)
    if start is None:
        raise _error(
            "missing_session_start",
            "session_start is 'not applicable', which §7.1 does not allow",
            _HEADER_AT["session_start"],
            source=source,
            expected="a timestamp",
            found=_hex(session_start, 8),
        )
    if not UTC_OFFSET_MIN <= utc_offset_min <= UTC_OFFSET_MAX:
        raise _error(
            "utc_offset_range",
            "utc_offset_min out of range",
            _HEADER_AT["utc_offset_min"],
            source=source,
            expected=f"{UTC_OFFSET_MIN}..{UTC_OFFSET_MAX}",
            found=utc_offset_min,
        )
    header = RawHeader(
        format_version=f"{SUPPORTED_MAJOR}.{minor}",
        programmer_model=texts["programmer_model"],
        programmer_serial=texts["programmer_serial"],
        programmer_software=f"{sw_major}.{sw_minor}.{sw_build}",
        pump_model=texts["pump_model"],
        pump_serial=texts["pump_serial"],
        session_id=_uuid_text(session_id),
        session_start_local=start,
        utc_offset_min=utc_offset_min,
    )
    return header, header_size, body_size


def decode_records(
    data: bytes, *, source: str, strict: bool = False
) -> tuple[RawHeader, list[Record], int, WarningLog]:
    """Stage one: the header, the records before END, END's offset and the warning log.

    Every framing, CRC, sequence-number, payload and END rule is checked here; the
    record-sequence rules are `assemble`'s.
    """
    n = len(data)
    check_file_size(n, source=source, position=Position("offset", 0))
    header, header_size, body_size = _header(data, source)
    log = WarningLog(source=source, strict=strict)
    cur = _Cursor(log)
    records: list[Record] = []
    append = records.append
    handlers = _HANDLERS
    unpack_frame = _FRAME.unpack_from
    unpack_crc = _CRC.unpack_from
    crc_hqx = binascii.crc_hqx
    times = cur.times
    frame_size = _FRAME_SIZE
    crc_size = _CRC_SIZE
    # Plain ints for the per-record comparisons.
    end_type = int(RecordType.END)
    alarm_type = int(RecordType.ALARM)
    not_applicable = TIMESTAMP_NOT_APPLICABLE
    from_posix = naive_from_posix
    epoch = EPOCH_POSIX
    # tuple.__new__ skips the NamedTuple's Python-level __new__: 2.5x cheaper per record.
    new_tuple = tuple.__new__
    alarm_size = _ALARM_SIZE
    severities = _SEVERITIES
    states = _STATES
    unpack_alarm_record = _ALARM_RECORD.unpack_from
    alarm_record_size = _ALARM_RECORD_SIZE
    alarm_crc_end = alarm_record_size - crc_size
    sync_byte = SYNC
    pos = header_size
    index = 0
    while True:
        if pos + alarm_record_size <= n and data[pos + 1] == alarm_type:
            # The pump's alarm log is most of a session: a well-formed ALARM in one unpack
            # (the same checks as the general path and `_alarm`; a failing one goes on to
            # that path, which reports it).
            (sync, _type, length, seq, t, code, severity, state, occurred, stored) = (
                unpack_alarm_record(data, pos)
            )
            severity_word = severities.get(severity)
            state_word = states.get(state)
            if (
                length == alarm_size
                and sync == sync_byte
                and seq == index & 0xFFFF
                and severity_word is not None
                and state_word is not None
                and crc_hqx(data[pos + 1 : pos + alarm_crc_end], 0xFFFF) == stored
            ):
                if t in times:
                    time_local = times[t]
                else:
                    time_local = times[t] = None if t == not_applicable else from_posix(t + epoch)
                append(
                    new_tuple(
                        AlarmRec,
                        (
                            index,
                            new_tuple(Position, ("offset", pos)),
                            time_local,
                            code,
                            severity_word,
                            state_word,
                            # Pump-clock instants are each alarm's own: no reuse to look up.
                            None if occurred == not_applicable else from_posix(occurred + epoch),
                        ),
                    )
                )
                pos += alarm_record_size
                index += 1
                continue
        if pos + frame_size > n or data[pos] != SYNC:
            _frame_fail(data, pos, index, source)
        _sync, rtype, length, seq, t = unpack_frame(data, pos)
        if length > MAX_PAYLOAD_BYTES:
            raise _error(
                "payload_too_long",
                "payload length over the limit",
                pos + _FRAME_AT["length"],
                source=source,
                expected=f"at most {MAX_PAYLOAD_BYTES} bytes",
                found=f"{length} bytes",
                kind=LimitExceeded,
                index=index,
                type_code=rtype,
            )
        p = pos + frame_size
        end = p + length
        if end + crc_size > n:
            raise _error(
                "truncated_record",
                "file ends inside the record",
                pos,
                source=source,
                expected=f"{frame_size + length + crc_size} bytes",
                found=f"{n - pos} bytes",
                index=index,
                type_code=rtype,
            )
        # §2.2: the CRC covers type..payload end, every frame byte but sync and crc.
        computed = crc_hqx(data[pos + 1 : end], 0xFFFF)
        (stored,) = unpack_crc(data, end)
        if computed != stored:
            raise _error(
                "record_crc",
                "record CRC mismatch",
                end,
                source=source,
                expected=_hex(computed, 4),
                found=_hex(stored, 4),
                index=index,
                type_code=rtype,
            )
        # §7.8: seq counts every record, unknown types included, and wraps at 65536.
        if seq != index & 0xFFFF:
            raise _error(
                "seq_gap",
                "record sequence number out of order",
                pos + _FRAME_AT["seq"],
                source=source,
                expected=index & 0xFFFF,
                found=seq,
                index=index,
                type_code=rtype,
            )
        if rtype == end_type:
            break
        position = new_tuple(Position, ("offset", pos))
        # §7.1: a record time may be 0xFFFFFFFF, "not applicable" (None). Records share
        # times (a snapshot's entries, the alarms read with it): each is converted once.
        if t in times:
            time_local = times[t]
        else:
            time_local = times[t] = None if t == not_applicable else from_posix(t + epoch)
        cur.index = index
        cur.position = position
        cur.time_local = time_local
        handler = handlers.get(rtype)
        if handler is None:
            # §2.2: a type from a later minor version, valid frame and CRC: skip, warn, keep.
            log.warn(
                f"record type 0x{rtype:02X} at {describe_time(time_local)} is not known to "
                f"this decoder; skipped its {length} bytes",
                code="unknown_record_type",
                position=position,
            )
            append(UnknownRec(index, position, time_local, rtype, data[p:end]))
        else:
            try:
                append(handler(data, p, end, cur))
            except _Fail as fail:
                raise _payload_error(
                    fail, data, p=p, end=end, index=index, rtype=rtype, source=source
                ) from None
        pos = end + crc_size
        index += 1
    _check_end(
        data,
        pos,
        length=length,
        index=index,
        header_size=header_size,
        body_size=body_size,
        source=source,
    )
    return header, records, pos, log


def _frame_fail(data: bytes, pos: int, index: int, source: str) -> NoReturn:
    """The frame at `pos` is missing, cut short or does not start with sync."""
    n = len(data)
    if not data[pos:].strip(bytes([PADDING_BYTE])):
        raise _error(
            "missing_end",
            "no END record: the records stop here",
            pos,
            source=source,
            expected="an END record",
            found="end of file" if pos >= n else "0x1A padding",
            index=index,
        )
    if data[pos] != SYNC:
        raise _error(
            "bad_sync",
            "record does not start with the sync byte",
            pos,
            source=source,
            expected=_hex(SYNC, 2),
            found=_hex(data[pos], 2),
            index=index,
        )
    raise _error(
        "truncated_record",
        "file ends inside the record frame",
        pos,
        source=source,
        expected=f"at least {_FRAME_SIZE + _CRC_SIZE} bytes",
        found=f"{n - pos} bytes",
        index=index,
        type_code=data[pos + 1] if pos + 1 < n else None,
    )


def _payload_error(
    fail: _Fail, data: bytes, *, p: int, end: int, index: int, rtype: int, source: str
) -> DecodeError:
    """A payload failure with its record context; the schema names the field where it helps."""
    message = fail.message
    if fail.code in ("payload_length", "unknown_value_type"):
        path = payload_failure_path(rtype, data[p:end])
        if path:
            message += f" (schema field {path})"
    return _error(
        fail.code,
        message,
        fail.offset,
        source=source,
        expected=fail.expected,
        found=fail.found,
        kind=fail.kind,
        index=index,
        type_code=rtype,
    )


def _check_end(
    data: bytes, pos: int, *, length: int, index: int, header_size: int, body_size: int, source: str
) -> None:
    """The END record at `pos` and what follows it (§3 rule 5, §6, §7.3).

    Its frame, CRC and seq were checked by the record loop.
    """
    end_type = RecordType.END
    p = pos + _FRAME_SIZE
    end = p + length
    if length != _END.size:
        raise _payload_error(
            _END.length_fail(p, end), data, p=p, end=end, index=index, rtype=end_type, source=source
        )
    record_count, file_crc32 = _END.packer.unpack_from(data, p)
    if record_count != index:
        raise _error(
            "end_record_count",
            "END record_count differs from the number of records before it",
            p + _END.offsets["record_count"],
            source=source,
            expected=index,
            found=record_count,
            index=index,
            type_code=end_type,
        )
    # §3: CRC-32 of every byte from offset 0 up to the END record's sync byte.
    computed = zlib.crc32(data[:pos])
    if computed != file_crc32:
        raise _error(
            "file_crc",
            "file CRC-32 mismatch",
            p + _END.offsets["file_crc32"],
            source=source,
            expected=_hex(computed, 8),
            found=_hex(file_crc32, 8),
            index=index,
            type_code=end_type,
        )
    after = end + _CRC_SIZE
    # §6: header_size + body_size is where a receiver cuts off the padding.
    if header_size + body_size != after:
        raise _error(
            "body_size",
            "header body_size does not end at the END record",
            _HEADER_AT["body_size"],
            source=source,
            expected=after - header_size,
            found=body_size,
        )
    rest = data[after:]
    tail = rest.lstrip(bytes([PADDING_BYTE]))
    padding = len(rest) - len(tail)
    # §7.2, §7.3: whichever shows first, a non-0x1A byte or the 1024th padding byte.
    if padding > MAX_PADDING_BYTES:
        raise _error(
            "padding_too_long",
            "more 0x1A padding after the END record than a transfer adds",
            after + MAX_PADDING_BYTES,
            source=source,
            expected=f"at most {MAX_PADDING_BYTES} bytes",
            found=f"{padding} bytes",
        )
    if tail:
        raise _error(
            "trailing_data",
            "data after the END record",
            after + padding,
            source=source,
            expected="0x1A padding or end of file",
            found=_hex(tail[0], 2),
        )
