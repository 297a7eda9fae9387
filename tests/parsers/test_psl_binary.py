"""The PSL binary decoder against docs/formats.md: every rule, its error code and offset."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime

import pytest

from fixtures.binary_writer import Breakage, encode_binary, frame_bytes, payload_bytes
from fixtures.scenario import UNPLACED
from parsers.errors import (
    DecodeError,
    LimitExceeded,
    StrictModeWarning,
    UnsupportedVersion,
)
from parsers.model import AlarmEvent, BolusEvent, ChangeEvent, NoteEvent, Position, RefillEvent
from parsers.params import FlexStep, ValueType
from parsers.psl_binary import decode, decode_records, sniff
from parsers.psl_binary_schema import SIGNATURE, RecordType
from parsers.records import (
    AlarmRec,
    Entry,
    NoteRec,
    ParamChangeRec,
    PatientRec,
    PumpStatusRec,
    RefillRec,
    SessionInfoRec,
    SnapshotRec,
    UnknownRec,
)
from parsers.session_json import session_document
from tests.parsers.psl_binary_helpers import (
    ALARM,
    BASE,
    BASE_RECORDS,
    BOLUS,
    CHANGE_DOSE,
    CHANGE_RATE,
    HEADER,
    NOTE,
    PATIENT,
    PUMP_STATUS,
    REFILL,
    SESSION_INFO,
    SNAPSHOT0,
    SNAPSHOT1,
    T0,
    UNKNOWN_PARAM,
    at,
    encode,
    entry,
    frames,
    records_with,
    refresh_crcs,
    with_snapshot0,
)

GOOD = encode()
LAYOUT = frames(GOOD)
END = LAYOUT[-1]


def fails(
    data: bytes,
    code: str,
    offset: int,
    *texts: str,
    kind: type[DecodeError] = DecodeError,
    strict: bool = False,
) -> DecodeError:
    """Decoding `data` raises `kind` with this code at this offset, naming `texts`."""
    with pytest.raises(kind) as info:
        decode(data, source="bad.psl", strict=strict)
    error = info.value
    assert error.code == code, str(error)
    assert error.position == Position("offset", offset), str(error)
    line = str(error)
    assert line.startswith(f"bad.psl: offset 0x{offset:X}: "), line
    for text in texts:
        assert text in line, line
    return error


def raw_record(
    type_code: int, fields: Mapping[str, object], time: datetime | None = None
) -> UnknownRec:
    """A known record type with a payload of the test's making, written verbatim."""
    return UnknownRec(0, UNPLACED, time, type_code, payload_bytes(type_code, fields))


def raw_payload(type_code: int, payload: bytes, time: datetime | None = None) -> UnknownRec:
    return UnknownRec(0, UNPLACED, time, type_code, payload)


def patch(data: bytes, offset: int, new: bytes) -> bytes:
    return data[:offset] + new + data[offset + len(new) :]


# --- the good file --------------------------------------------------------------------


def test_base_scenario_decodes_to_its_session() -> None:
    session = decode(GOOD, source="base.psl")
    assert session.source == "base.psl"
    assert session.source_format == "psl-binary"
    assert session.format_version == "1.0"
    assert session.session_id == HEADER.session_id
    assert session.session_start_local == T0
    assert session.utc_offset_min == -300
    assert (session.programmer.model, session.programmer.serial) == ("PX-200", "PX2-0001234")
    assert session.programmer.software == "3.1.2045"
    assert (session.pump.model, session.pump.serial) == ("IT-40", "ITP40-118822")
    assert (session.operator.id, session.operator.role, session.clinic_id) == (
        "dr.lee",
        "physician",
        "PAIN-01",
    )
    assert session.patient is not None
    assert session.patient.birth_date == date(1956, 5, 2)
    assert session.interrogated_at_local == at(5)
    assert dict(session.interrogated) == {
        "drug1_name": "Morphine",
        "drug1_concentration": 10000,
        "drug1_daily_dose": 2000,
        "infusion_mode": "simple_continuous",
        "infusion_rate": 200,
        "flex_step_0": FlexStep(360, 480),
        "ptm_enabled": True,
        "ptm_lockout": 180,
        "low_reservoir_alarm_enabled": False,
        "reservoir_volume": 3400,
        "reservoir_capacity": 20000,
        "refill_date": None,
        "implant_date": date(2019, 4, 2),
        "catheter_tip_level": "T10",
    }
    assert session.programmed == {
        "drug1_daily_dose": 2200,
        "infusion_rate": 220,
        "reservoir_volume": 20000,
    }
    assert session.programmed_at_local == at(760)
    assert session.pump_status is not None
    assert session.pump_status.firmware == "2.3"
    assert session.pump_status.battery == "ok"
    assert session.pump_status.pump_clock_offset_s == 168
    assert session.warnings == ()


def test_events_keep_file_order_values_and_byte_offsets() -> None:
    session = decode(GOOD, source="base.psl")
    alarm, refill, bolus, dose, rate, note = session.events
    assert isinstance(alarm, AlarmEvent)
    assert (alarm.alarm, alarm.severity, alarm.state) == ("low_reservoir", "non_critical", "logged")
    # §5: the pump clock runs 168 s ahead; the corrected instant is 168 s earlier.
    assert alarm.occurred_pump_clock == datetime(2026, 3, 9, 2, 16, 48)
    assert alarm.occurred_local == datetime(2026, 3, 9, 2, 14, 0)
    assert isinstance(refill, RefillEvent)
    assert (
        refill.expected_residual_ul,
        refill.aspirated_ul,
        refill.added_ul,
        refill.new_volume_ul,
    ) == (
        3400,
        3100,
        20000,
        20000,
    )
    assert isinstance(bolus, BolusEvent)
    assert (bolus.kind, bolus.volume_ul, bolus.duration_min) == ("bridge", 250, 30)
    assert isinstance(dose, ChangeEvent)
    assert (dose.parameter, dose.old, dose.new, dose.reason) == (
        "drug1_daily_dose",
        2000,
        2200,
        "efficacy",
    )
    assert isinstance(rate, ChangeEvent)
    assert rate.parameter == "infusion_rate"
    assert isinstance(note, NoteEvent)
    assert note.text == "Patient reports good pain control."
    expected = [ALARM, REFILL, BOLUS, CHANGE_DOSE, CHANGE_RATE, NOTE]
    assert [e.position for e in session.events] == [
        Position("offset", LAYOUT[i].offset) for i in expected
    ]


def test_stage_one_records_equal_the_scenario_with_index_and_offset() -> None:
    header, records, end_offset, log = decode_records(GOOD, source="base.psl")
    assert header == HEADER
    assert end_offset == END.offset
    assert log.messages == []
    assert len(records) == len(BASE_RECORDS)
    for i, (got, written) in enumerate(zip(records, BASE_RECORDS, strict=True)):
        assert got == written._replace(
            record_index=i, position=Position("offset", LAYOUT[i].offset)
        )


def test_session_document_of_the_base_file() -> None:
    document = session_document(decode(GOOD, source="base.psl"))
    assert document["session_start_utc"] == "2026-03-14T14:32:10Z"
    assert document["pump_status"]["firmware"] == "2.3"
    assert document["interrogated"]["flex_step_0"] == {"start_minute": 360, "rate_ul_per_day": 480}
    assert document["interrogated"]["implant_date"] == "2019-04-02"
    assert document["interrogated"]["refill_date"] is None


def test_layout_of_the_base_file() -> None:
    """The writer puts records right after the 96-byte header and END last (§2)."""
    assert GOOD.startswith(SIGNATURE)
    assert LAYOUT[0].offset == 96
    assert [f.type_code for f in LAYOUT] == [
        0x01,
        0x02,
        0x50,
        0x10,
        0x40,
        0x30,
        0x31,
        0x20,
        0x20,
        0x60,
        0x10,
        0x7F,
    ]
    assert END.end == len(GOOD)


def test_sniff() -> None:
    assert sniff(GOOD) is None
    assert sniff(SIGNATURE) is None
    assert sniff(b"PSL Session Export,1.0\r\n") == "no PSL signature"
    assert sniff(b"") == "no PSL signature"
    assert sniff(SIGNATURE[:7]) == "no PSL signature"


# --- §3 limits and §2.1 header ----------------------------------------------------------


def test_file_over_4_mib_is_refused_at_offset_0() -> None:
    data = GOOD + b"\x1a" * (4 * 1024 * 1024 + 1 - len(GOOD))
    fails(data, "file_too_large", 0, "4 MiB", "found '4194305 bytes'", kind=LimitExceeded)


def test_bad_signature() -> None:
    error = fails(
        b"GIF89a" + GOOD[6:],
        "bad_signature",
        0,
        "expected 0x8950534C0D0A1A0A, found 0x474946383961",
    )
    assert error.record_index is None


@pytest.mark.parametrize("length", [0, 5, 9, 11, 50, 95])
def test_truncated_header(length: int) -> None:
    fails(GOOD[:length], "truncated_header", 0, f"expected '96 bytes', found '{length} bytes'")


def test_major_version_2_is_unsupported_before_anything_else() -> None:
    # A v2 header may be laid out differently: no CRC or size check comes first.
    data = patch(GOOD, 8, b"\x02\xff\xff\xff")
    fails(data, "unsupported_version", 8, "expected 1, found 2", kind=UnsupportedVersion)


def test_header_size_below_96() -> None:
    data = encode(breakage=Breakage(header={"header_size": 90}))
    fails(data, "header_too_small", 10, "expected 'at least 96', found 90")


def test_header_crc_mismatch() -> None:
    data = encode(breakage=Breakage(header_crc=0xBEEF))
    error = fails(data, "header_crc", 94, "header CRC mismatch: expected 0x", "found 0xBEEF")
    assert error.expected == f"0x{int.from_bytes(GOOD[94:96], 'little'):04X}"


def test_header_crc_is_crc16_ccitt_false() -> None:
    import binascii

    assert binascii.crc_hqx(b"123456789", 0xFFFF) == 0x29B1
    assert int.from_bytes(GOOD[94:96], "little") == binascii.crc_hqx(GOOD[:94], 0xFFFF)


@pytest.mark.parametrize(
    ("field", "raw", "offset", "text"),
    [
        (
            "programmer_model",
            b"PX-200\xe9".ljust(12, b"\0"),
            12 + 6,
            "non-ASCII byte: expected 'ASCII', found 0xE9",
        ),
        ("programmer_serial", b"PX2\x00001234\0\0", 24 + 4, "non-NUL byte after the NUL padding"),
        (
            "pump_model",
            b"IT-40\0\0\0\0\0\0X",
            40 + 11,
            "pump_model: non-NUL byte after the NUL padding",
        ),
        ("pump_serial", b"\x80" + b"\0" * 11, 52, "pump_serial: non-ASCII byte"),
    ],
)
def test_ascii_header_fields(field: str, raw: bytes, offset: int, text: str) -> None:
    """§7.10: the offset is the offending byte's."""
    data = encode(breakage=Breakage(header={field: raw}))
    fails(data, "bad_ascii_field", offset, text)


def test_ascii_fields_may_fill_all_12_bytes_and_only_pump_serial_must_be_non_empty() -> None:
    data = encode(
        breakage=Breakage(
            header={"programmer_model": b"ABCDEFGHIJKL", "programmer_serial": b"\0" * 12}
        )
    )
    session = decode(data, source="x.psl")
    assert session.programmer.model == "ABCDEFGHIJKL"
    assert session.programmer.serial == ""


def test_empty_pump_serial() -> None:
    data = encode(breakage=Breakage(header={"pump_serial": b"\0" * 12}))
    fails(data, "empty_pump_serial", 52, "pump_serial is empty")


def test_all_zero_session_id() -> None:
    data = encode(breakage=Breakage(header={"session_id": bytes(16)}))
    fails(data, "zero_session_id", 64, "session_id is all zero")


def test_session_start_not_applicable_is_an_error() -> None:
    """§7.1: record times may be 0xFFFFFFFF, session_start may not."""
    data = encode(breakage=Breakage(header={"session_start": 0xFFFFFFFF}))
    fails(data, "missing_session_start", 80, "found 0xFFFFFFFF")


@pytest.mark.parametrize("offset_min", [-721, 841, -32768, 32767])
def test_utc_offset_out_of_range(offset_min: int) -> None:
    data = encode(breakage=Breakage(header={"utc_offset_min": offset_min}))
    fails(data, "utc_offset_range", 84, f"expected '-720..840', found {offset_min}")


@pytest.mark.parametrize("offset_min", [-720, 0, 840])
def test_utc_offset_limits_are_accepted(offset_min: int) -> None:
    data = encode(breakage=Breakage(header={"utc_offset_min": offset_min}))
    assert decode(data, source="x.psl").utc_offset_min == offset_min


def test_reserved_header_bytes_are_ignored() -> None:
    data = encode(breakage=Breakage(header={"reserved": 0xDEADBEEF}))
    assert decode(data, source="x.psl").session_id == HEADER.session_id


def test_later_minor_version_with_a_larger_header() -> None:
    """§2.1: extra header bytes sit before the CRC, which is the header's last two bytes."""
    extra = bytes(range(1, 21))
    records = [
        *BASE_RECORDS[:NOTE],
        UnknownRec(0, UNPLACED, at(715), 0x70, b"\x01\x02"),
        *BASE_RECORDS[NOTE:],
    ]
    data = encode_binary(HEADER, records, minor_version=2, extra_header=extra)
    assert int.from_bytes(data[10:12], "little") == 116
    assert data[94:114] == extra
    session = decode(data, source="x.psl")
    assert session.format_version == "1.2"
    assert session.programmed == decode(GOOD, source="x").programmed
    assert session.warnings == (
        "record type 0x70 at 2026-03-14 09:44:05 is not known to this decoder; skipped its 2 bytes",
    )


def test_larger_header_crc_is_checked_at_its_end() -> None:
    data = encode_binary(
        HEADER,
        BASE_RECORDS,
        minor_version=1,
        extra_header=b"\0" * 8,
        breakage=Breakage(header_crc=1),
    )
    fails(data, "header_crc", 102, "found 0x0001")


def test_header_size_past_the_end_of_the_file() -> None:
    data = encode(breakage=Breakage(header={"header_size": 4000}))
    fails(data, "truncated_header", 0, "expected '4000 bytes', found '510 bytes'")


# --- §2.2 frames ----------------------------------------------------------------------


def test_bad_sync_byte() -> None:
    target = LAYOUT[BOLUS]
    data = patch(GOOD, target.offset, b"\x5a")
    error = fails(
        data,
        "bad_sync",
        target.offset,
        "record 6: record does not start with the sync byte",
        "0x5A",
    )
    assert error.record_index == BOLUS


@pytest.mark.parametrize("cut", [1, 5, 9, 10, 14, 20])
def test_truncated_record_reports_the_record_start(cut: int) -> None:
    target = LAYOUT[REFILL]
    data = GOOD[: target.offset + cut]
    fails(data, "truncated_record", target.offset, f"record {REFILL}")


def test_truncated_inside_the_last_crc() -> None:
    fails(
        GOOD[:-1],
        "truncated_record",
        END.offset,
        "record 11 (END)",
        "expected '20 bytes', found '19 bytes'",
    )


def test_payload_length_over_4096_is_refused_before_reading_it() -> None:
    records = [*BASE_RECORDS[:NOTE], raw_payload(0x70, bytes(4097)), *BASE_RECORDS[NOTE:]]
    data = encode(records)
    offset = frames(data)[NOTE].offset
    # Cut the file right after the length field: the limit is checked before the payload.
    fails(
        data[: offset + 10],
        "payload_too_long",
        offset + 2,
        "found '4097 bytes'",
        kind=LimitExceeded,
    )
    fails(data, "payload_too_long", offset + 2, "expected 'at most 4096 bytes'", kind=LimitExceeded)


def test_payload_of_4096_bytes_is_accepted() -> None:
    records = [*BASE_RECORDS[:NOTE], raw_payload(0x70, bytes(4096)), *BASE_RECORDS[NOTE:]]
    session = decode(encode(records), source="x.psl")
    assert "skipped its 4096 bytes" in session.warnings[0]


def test_record_crc_mismatch() -> None:
    target = LAYOUT[PATIENT]
    data = encode(breakage=Breakage(record_crc={PATIENT: 0xBEEF}))
    stored = int.from_bytes(GOOD[target.crc : target.crc + 2], "little")
    error = fails(
        data,
        "record_crc",
        target.crc,
        f"record 1 (PATIENT): record CRC mismatch: expected 0x{stored:04X}, found 0xBEEF",
    )
    assert (error.record_index, error.record_type) == (1, "PATIENT")


def test_record_crc_covers_type_through_payload() -> None:
    target = LAYOUT[BOLUS]
    flipped = patch(GOOD, target.payload + 2, bytes([GOOD[target.payload + 2] ^ 0x01]))
    fails(flipped, "record_crc", target.crc)
    flipped_time = patch(GOOD, target.offset + 6, bytes([GOOD[target.offset + 6] ^ 0x80]))
    fails(flipped_time, "record_crc", target.crc)


def test_alarm_record_faults_are_reported_like_any_other_record() -> None:
    """Well-formed ALARMs take a one-unpack path; every broken one must still be refused."""
    target = LAYOUT[ALARM]
    stored = int.from_bytes(GOOD[target.crc : target.crc + 2], "little")
    fails(
        encode(breakage=Breakage(record_crc={ALARM: stored ^ 0x0101})),
        "record_crc",
        target.crc,
        "record 4 (ALARM)",
    )
    fails(patch(GOOD, target.offset, b"\x5a"), "bad_sync", target.offset, "found 0x5A")
    # An ALARM frame whose length says 11: the payload check names the type's size.
    records = list(BASE_RECORDS)
    records[ALARM] = raw_payload(0x40, bytes(11), BASE_RECORDS[ALARM].time_local)
    data = encode(records)
    error = fails(data, "payload_length", frames(data)[ALARM].payload + 8, "expected '8 bytes'")
    assert error.record_type == "ALARM"


def test_seq_gap() -> None:
    data = encode(breakage=Breakage(seq={ALARM: 7}))
    fails(data, "seq_gap", LAYOUT[ALARM].offset + 4, "record 4 (ALARM)", "expected 4, found 7")


def test_seq_of_first_record_must_be_zero() -> None:
    data = encode(breakage=Breakage(seq={0: 1}))
    fails(data, "seq_gap", 96 + 4, "expected 0, found 1")


def test_seq_wraps_from_65535_to_0_and_counts_every_record() -> None:
    """§7.8: 65,537 records before END; record 65536 carries seq 0."""
    notes = [NoteRec(0, UNPLACED, None, "")] * (65536 - 2)
    records = [BASE_RECORDS[SESSION_INFO], BASE_RECORDS[SNAPSHOT0], *notes, raw_payload(0x70, b"")]
    data = encode(records)
    last = frames(data)[-2]
    assert int.from_bytes(data[last.offset + 4 : last.offset + 6], "little") == 0
    _header, decoded, _end, log = decode_records(data, source="big.psl")
    assert len(decoded) == 65537
    assert isinstance(decoded[-1], UnknownRec)
    assert len(log.messages) == 1
    # The same file with record 65536 numbered 0xFFFF instead of wrapping to 0.
    wrong = refresh_crcs(patch(data, last.offset + 4, b"\xff\xff"))
    fails(wrong, "seq_gap", last.offset + 4, "record 65536", "expected 0, found 65535")


# --- §3 payloads -----------------------------------------------------------------------


def test_payload_shorter_than_a_fixed_record_fails_at_the_first_missing_field() -> None:
    full = payload_bytes(
        RecordType.REFILL,
        {"expected_residual_ul": 1, "aspirated_ul": 2, "added_ul": 3, "new_volume_ul": 4},
    )
    data = encode(records_with(REFILL=raw_payload(0x30, full[:14], at(600))))
    target = frames(data)[REFILL]
    fails(
        data,
        "payload_length",
        target.payload + 12,
        "record 5 (REFILL): REFILL payload has the wrong length for its fields (schema field new_volume_ul)",
        "expected '16 bytes', found '14 bytes'",
    )


def test_payload_longer_than_a_fixed_record_fails_after_the_last_field() -> None:
    full = payload_bytes(RecordType.BOLUS, {"kind": 1, "volume_ul": 250, "duration_min": 30})
    data = encode(records_with(BOLUS=raw_payload(0x31, full + b"\0", at(660))))
    target = frames(data)[BOLUS]
    fails(data, "payload_length", target.payload + 7, "expected '7 bytes', found '8 bytes'")


@pytest.mark.parametrize(
    ("index", "type_code", "length", "missing_at"),
    [
        (ALARM, 0x40, 0, 0),
        (ALARM, 0x40, 3, 3),
        (ALARM, 0x40, 7, 4),
        (PUMP_STATUS, 0x50, 6, 6),
        (BOLUS, 0x31, 1, 1),
    ],
)
def test_short_fixed_payloads(index: int, type_code: int, length: int, missing_at: int) -> None:
    payload = GOOD[LAYOUT[index].payload : LAYOUT[index].payload + length]
    records = list(BASE_RECORDS)
    records[index] = raw_payload(type_code, payload, BASE_RECORDS[index].time_local)
    data = encode(records)
    fails(data, "payload_length", frames(data)[index].payload + missing_at)


def test_variable_payload_too_long() -> None:
    note = payload_bytes(RecordType.NOTE, {"text": "hi"})
    data = encode(records_with(NOTE=raw_payload(0x60, note + b"!", at(720))))
    target = frames(data)[NOTE]
    fails(
        data,
        "payload_length",
        target.payload + 4,
        "payload longer than its fields",
        "expected '4 bytes', found '5 bytes'",
    )


def test_snapshot_cut_inside_an_entry_value_names_the_schema_field() -> None:
    payload = payload_bytes(
        RecordType.SNAPSHOT,
        {"phase": 0, "entries": [{"param_id": 0x0102, "value_type": 1, "value": 10000}]},
    )
    data = encode(records_with(SNAPSHOT0=raw_payload(0x10, payload[:-2], at(5))))
    target = frames(data)[SNAPSHOT0]
    fails(
        data,
        "payload_length",
        target.payload + 5,
        "payload ends inside entries[0].value (schema field entries.value)",
        "expected '4 bytes', found '2 bytes'",
    )


def test_session_info_without_clinic_id() -> None:
    payload = payload_bytes(
        RecordType.SESSION_INFO, {"operator_id": "dr.lee", "operator_role": 1, "clinic_id": ""}
    )
    data = encode(records_with(SESSION_INFO=raw_payload(0x01, payload[:-1], at(0))))
    fails(
        data,
        "payload_length",
        96 + 10 + 8,
        "payload ends inside clinic_id (schema field clinic_id)",
    )


def test_patient_without_birth_date_bytes() -> None:
    payload = payload_bytes(
        RecordType.PATIENT, {"patient_id": "SYN-1", "patient_name": "", "birth_date": 0}
    )
    data = encode(records_with(PATIENT=raw_payload(0x02, payload[:-1], at(1))))
    target = frames(data)[PATIENT]
    fails(data, "payload_length", target.payload + 7, "payload ends inside birth_date")


@pytest.mark.parametrize(
    ("index", "type_code", "fields", "field_offset", "text"),
    [
        (
            SESSION_INFO,
            0x01,
            {"operator_id": "x", "operator_role": 5, "clinic_id": "C"},
            2,
            "operator_role",
        ),
        (BOLUS, 0x31, {"kind": 0, "volume_ul": 1, "duration_min": 1}, 0, "kind"),
        (BOLUS, 0x31, {"kind": 4, "volume_ul": 1, "duration_min": 1}, 0, "kind"),
        (ALARM, 0x40, {"code": 1, "severity": 0, "state": 1, "occurred_at": 0}, 2, "severity"),
        (ALARM, 0x40, {"code": 1, "severity": 3, "state": 4, "occurred_at": 0}, 3, "state"),
        (
            PUMP_STATUS,
            0x50,
            {"pump_clock": 0, "firmware_major": 1, "firmware_minor": 0, "battery": 4},
            6,
            "battery",
        ),
        (SNAPSHOT0, 0x10, {"phase": 2, "entries": []}, 0, "phase"),
    ],
)
def test_enumeration_out_of_table(
    index: int, type_code: int, fields: dict[str, object], field_offset: int, text: str
) -> None:
    """§7.5: an error at the enumeration byte."""
    records = list(BASE_RECORDS)
    records[index] = raw_record(type_code, fields, BASE_RECORDS[index].time_local)
    data = encode(records)
    error = fails(
        data, "enum_range", frames(data)[index].payload + field_offset, f"{text} outside its table"
    )
    assert error.record_index == index


def test_reason_out_of_table() -> None:
    fields = {"param_id": 0x0103, "value_type": 1, "old": 2000, "new": 2200, "reason": 7}
    data = encode(records_with(CHANGE_DOSE=raw_record(0x20, fields, at(700))))
    fails(
        data,
        "enum_range",
        frames(data)[CHANGE_DOSE].payload + 11,
        "reason outside its table",
        "found 7",
    )


def test_infusion_mode_value_out_of_table() -> None:
    data = encode(with_snapshot0(Entry("infusion_mode", 0x0120, ValueType.ENUM, 2)))
    assert decode(data, source="x").interrogated["infusion_mode"] == "flex"
    fields = {"phase": 0, "entries": [{"param_id": 0x0120, "value_type": 4, "value": 4}]}
    data = encode(records_with(SNAPSHOT0=raw_record(0x10, fields, at(5))))
    fails(
        data,
        "enum_range",
        frames(data)[SNAPSHOT0].payload + 5,
        "entries[0].value outside its table",
        "found 4",
    )


def test_unknown_alarm_code_is_kept_with_a_warning() -> None:
    """§7.5: the alarm code is the one enumeration that only warns."""
    alarm = BASE_RECORDS[ALARM]
    assert isinstance(alarm, AlarmRec)
    session = decode(encode(records_with(ALARM=alarm._replace(code=0x00AB))), source="x")
    event = session.events[0]
    assert isinstance(event, AlarmEvent)
    assert event.alarm == "unknown:0x00ab"
    assert session.warnings == ("ALARM at 2026-03-14 09:32:15 has unknown alarm code 0x00ab",)


def test_bool_value_other_than_0_or_1() -> None:
    fields = {"phase": 0, "entries": [{"param_id": 0x0201, "value_type": 6, "value": 2}]}
    data = encode(records_with(SNAPSHOT0=raw_record(0x10, fields, at(5))))
    fails(data, "bool_value", frames(data)[SNAPSHOT0].payload + 5, "expected '0 or 1', found 2")


def test_flex_step_start_minute_over_1439() -> None:
    value = {"start_minute": 1440, "rate_ul_per_day": 10}
    fields = {"phase": 0, "entries": [{"param_id": 0x0131, "value_type": 8, "value": value}]}
    data = encode(records_with(SNAPSHOT0=raw_record(0x10, fields, at(5))))
    fails(
        data, "minute_range", frames(data)[SNAPSHOT0].payload + 5, "expected '0..1439', found 1440"
    )


def test_flex_step_start_minute_1439_is_accepted() -> None:
    data = encode(with_snapshot0(entry("flex_step_7", FlexStep(1439, 5))))
    assert decode(data, source="x").interrogated == {"flex_step_7": FlexStep(1439, 5)}


def test_minutes_value_type_range(monkeypatch: pytest.MonkeyPatch) -> None:
    """No v1.0 parameter is MINUTES; a known one would be checked 0..1439 (§2.3)."""
    import parsers.psl_binary as module

    monkeypatch.setitem(module._PARAMS, 0x0777, ("minutes_param", int(ValueType.MINUTES), None))
    good = encode(with_snapshot0(Entry("minutes_param", 0x0777, ValueType.MINUTES, 1439)))
    _header, records, _end, _log = decode_records(good, source="x")
    snapshot = records[SNAPSHOT0]
    assert isinstance(snapshot, SnapshotRec)
    assert snapshot.entries[0].value == 1439
    bad = encode(with_snapshot0(Entry("minutes_param", 0x0777, ValueType.MINUTES, 1440)))
    fails(bad, "minute_range", frames(bad)[SNAPSHOT0].payload + 5, "found 1440")


def test_text_value_of_64_bytes_is_accepted_and_65_refused() -> None:
    name = "é" * 32  # 64 bytes of UTF-8
    session = decode(encode(with_snapshot0(entry("drug1_name", name))), source="x")
    assert session.interrogated["drug1_name"] == name
    data = encode(with_snapshot0(entry("drug1_name", name + "x")))
    fails(
        data,
        "text_too_long",
        frames(data)[SNAPSHOT0].payload + 5,
        "entries[0].value longer than the limit: expected 'at most 64 bytes', found '65 bytes'",
        kind=LimitExceeded,
    )


def test_note_of_2000_bytes_is_accepted_and_2001_refused() -> None:
    note = BASE_RECORDS[NOTE]
    assert isinstance(note, NoteRec)
    session = decode(encode(records_with(NOTE=note._replace(text="n" * 2000))), source="x")
    assert any(isinstance(e, NoteEvent) and len(e.text) == 2000 for e in session.events)
    data = encode(records_with(NOTE=note._replace(text="n" * 2001)))
    fails(
        data, "text_too_long", frames(data)[NOTE].payload, "found '2001 bytes'", kind=LimitExceeded
    )


def test_session_info_texts_are_limited_by_their_u8_prefix_only() -> None:
    info = BASE_RECORDS[SESSION_INFO]
    assert isinstance(info, SessionInfoRec)
    session = decode(
        encode(records_with(SESSION_INFO=info._replace(operator_id="o" * 255))), source="x"
    )
    assert session.operator.id == "o" * 255


def test_text_that_is_not_utf8() -> None:
    payload = b"\x05\x00" + b"ab\xffcd"
    data = encode(records_with(NOTE=raw_payload(0x60, payload, at(720))))
    fails(data, "bad_utf8", frames(data)[NOTE].payload + 4, "text is not valid UTF-8", "found 0xFF")


def test_known_parameter_with_another_value_type() -> None:
    fields = {"phase": 0, "entries": [{"param_id": 0x0102, "value_type": 5, "value": "10"}]}
    data = encode(records_with(SNAPSHOT0=raw_record(0x10, fields, at(5))))
    fails(
        data,
        "value_type_mismatch",
        frames(data)[SNAPSHOT0].payload + 4,
        "drug1_concentration has the wrong value type: expected 'U32 (0x01)', found 'TEXT (0x05)'",
    )


def test_known_parameter_with_an_unknown_value_type() -> None:
    payload = bytes([0, 1]) + (0x0102).to_bytes(2, "little") + b"\x42" + bytes(4)
    data = encode(records_with(SNAPSHOT0=raw_payload(0x10, payload, at(5))))
    fails(data, "value_type_mismatch", frames(data)[SNAPSHOT0].payload + 4, "found 0x42")


def test_unknown_parameter_with_an_unknown_value_type_cannot_be_skipped() -> None:
    """§7.6."""
    payload = bytes([0, 1]) + UNKNOWN_PARAM.to_bytes(2, "little") + b"\x42" + bytes(4)
    data = encode(records_with(SNAPSHOT0=raw_payload(0x10, payload, at(5))))
    fails(
        data,
        "unknown_value_type",
        frames(data)[SNAPSHOT0].payload + 4,
        "unknown parameter 0x0999 has an unknown value type",
        "(schema field entries.value)",
        "found 0x42",
    )


def test_unknown_parameters_are_skipped_by_value_type_with_a_warning() -> None:
    """§2.3: every value type can be skipped; the values are kept with name None."""
    unknown = (
        Entry(None, 0x0990, ValueType.U32, 7),
        Entry(None, 0x0991, ValueType.I32, -5),
        Entry(None, 0x0992, ValueType.DATE, date(2079, 6, 5)),
        Entry(None, 0x0993, ValueType.ENUM, 200),
        Entry(None, 0x0994, ValueType.TEXT, "hello"),
        Entry(None, 0x0995, ValueType.BOOL, True),
        Entry(None, 0x0996, ValueType.MINUTES, 1439),
        Entry(None, 0x0997, ValueType.FLEX_STEP, FlexStep(0, 1)),
    )
    data = encode(with_snapshot0(entry("infusion_rate", 200), *unknown))
    session = decode(data, source="x")
    assert dict(session.interrogated) == {"infusion_rate": 200}
    assert len(session.warnings) == 8
    assert (
        session.warnings[1]
        == "SNAPSHOT at 2026-03-14 09:32:15 holds unknown parameter 0x0991 (I32); skipped"
    )
    _header, records, _end, _log = decode_records(data, source="x")
    snapshot = records[SNAPSHOT0]
    assert isinstance(snapshot, SnapshotRec)
    assert snapshot.entries[1:] == unknown


def test_unknown_parameter_values_are_skipped_not_checked() -> None:
    """A skipped value is not interpreted: no BOOL, range or UTF-8 check applies."""
    entries = [
        {"param_id": 0x0990, "value_type": 6, "value": 9},
        {"param_id": 0x0991, "value_type": 7, "value": 5000},
    ]
    payload = payload_bytes(RecordType.SNAPSHOT, {"phase": 0, "entries": entries})
    payload = (
        payload[:1]
        + b"\x03"
        + payload[2:]
        + UNKNOWN_PARAM.to_bytes(2, "little")
        + b"\x05\x02\xff\xfe"
    )
    data = encode(records_with(SNAPSHOT0=raw_payload(0x10, payload, at(5))))
    _header, records, _end, log = decode_records(data, source="x")
    snapshot = records[SNAPSHOT0]
    assert isinstance(snapshot, SnapshotRec)
    assert [e.value for e in snapshot.entries] == [9, 5000, "\ufffd\ufffd"]
    assert len(log.messages) == 3


def test_unknown_parameter_text_is_still_held_to_64_bytes() -> None:
    payload = (
        bytes([0, 1]) + UNKNOWN_PARAM.to_bytes(2, "little") + b"\x05" + bytes([65]) + b"x" * 65
    )
    data = encode(records_with(SNAPSHOT0=raw_payload(0x10, payload, at(5))))
    fails(data, "text_too_long", frames(data)[SNAPSHOT0].payload + 5, kind=LimitExceeded)


def test_unknown_parameter_in_param_change_warns_and_gives_no_event() -> None:
    """§7.6."""
    change = ParamChangeRec(
        0, UNPLACED, at(710), Entry(None, UNKNOWN_PARAM, ValueType.U32, 1), 2, "efficacy"
    )
    records = [*BASE_RECORDS[:NOTE], change, *BASE_RECORDS[NOTE:]]
    session = decode(encode(records), source="x")
    assert [e.type for e in session.events] == [
        "alarm",
        "refill",
        "bolus",
        "change",
        "change",
        "note",
    ]
    assert session.warnings == (
        "PARAM_CHANGE at 2026-03-14 09:44:00 changes unknown parameter 0x0999; no change event",
    )
    with pytest.raises(StrictModeWarning) as info:
        decode(encode(records), source="x.psl", strict=True)
    assert info.value.code == "strict:unknown_parameter"
    assert info.value.position == Position("offset", frames(encode(records))[NOTE].offset)


def test_param_change_of_every_known_value_type_round_trips() -> None:
    changes = [
        ParamChangeRec(
            0, UNPLACED, at(700), entry("drug2_name", "Clonidine"), "Baclofen", "drug_change"
        ),
        ParamChangeRec(
            0, UNPLACED, at(700), entry("infusion_mode", "simple_continuous"), "flex", "efficacy"
        ),
        ParamChangeRec(0, UNPLACED, at(700), entry("ptm_enabled", True), False, "patient_request"),
        ParamChangeRec(
            0, UNPLACED, at(700), entry("refill_date", None), date(2026, 6, 1), "refill_bookkeeping"
        ),
        ParamChangeRec(
            0,
            UNPLACED,
            at(700),
            entry("flex_step_1", FlexStep(0, 1)),
            FlexStep(60, 2),
            "entry_correction",
        ),
        ParamChangeRec(0, UNPLACED, at(700), entry("ptm_lockout", 180), 240, "unspecified"),
    ]
    records = [*BASE_RECORDS[:SNAPSHOT1], *changes]
    _header, decoded, _end, _log = decode_records(encode(records), source="x")
    assert [r._replace(record_index=0, position=UNPLACED) for r in decoded[SNAPSHOT1:]] == changes


def test_duplicate_parameter_in_one_snapshot() -> None:
    """§7.6: the error points at the second entry."""
    data = encode(
        with_snapshot0(
            entry("infusion_rate", 200), entry("ptm_lockout", 1), entry("infusion_rate", 210)
        )
    )
    fails(
        data,
        "duplicate_parameter",
        frames(data)[SNAPSHOT0].payload + 2 + 7 + 7,
        "entries[2]: parameter infusion_rate twice in one SNAPSHOT",
    )
    unknown_twice = with_snapshot0(
        Entry(None, UNKNOWN_PARAM, ValueType.U32, 1), Entry(None, UNKNOWN_PARAM, ValueType.U32, 2)
    )
    fails(
        encode(unknown_twice),
        "duplicate_parameter",
        frames(data)[SNAPSHOT0].payload + 2 + 7,
        "0x0999",
    )


def test_snapshot_count_over_64() -> None:
    entries = [Entry(None, 0x1000 + i, ValueType.BOOL, False) for i in range(65)]
    data = encode(with_snapshot0(*entries))
    fails(
        data,
        "snapshot_count",
        frames(data)[SNAPSHOT0].payload + 1,
        "expected 'at most 64', found 65",
        kind=LimitExceeded,
    )
    ok = encode(with_snapshot0(*entries[:64]))
    assert len(decode(ok, source="x").warnings) == 64


def test_snapshot_count_larger_than_the_entries() -> None:
    payload = payload_bytes(
        RecordType.SNAPSHOT,
        {"phase": 1, "entries": [{"param_id": 0x0121, "value_type": 1, "value": 1}]},
    )
    payload = payload[:1] + b"\x02" + payload[2:]
    data = encode(records_with(SNAPSHOT1=raw_payload(0x10, payload, at(760))))
    fails(
        data,
        "payload_length",
        frames(data)[SNAPSHOT1].payload + 9,
        "entries[1] param_id and value_type",
    )


def test_empty_phase1_snapshot() -> None:
    data = encode(records_with(SNAPSHOT1=SnapshotRec(0, UNPLACED, at(760), 1, ())))
    session = decode(data, source="x")
    assert session.programmed == {}


def test_dates_not_set_and_the_last_date() -> None:
    """§1: 0xFFFF is "not set"; day 0xFFFE is 2079-06-05; day 0 is 1900-01-01."""
    data = encode(
        with_snapshot0(
            entry("refill_date", None),
            entry("eri_date", date(2079, 6, 5)),
            entry("implant_date", date(1900, 1, 1)),
        )
    )
    target = frames(data)[SNAPSHOT0].payload
    assert data[target + 5 : target + 7] == b"\xff\xff"
    assert data[target + 10 : target + 12] == b"\xfe\xff"
    assert data[target + 15 : target + 17] == b"\x00\x00"
    session = decode(data, source="x")
    assert dict(session.interrogated) == {
        "refill_date": None,
        "eri_date": date(2079, 6, 5),
        "implant_date": date(1900, 1, 1),
    }


def test_patient_without_birth_date() -> None:
    patient = BASE_RECORDS[PATIENT]
    assert isinstance(patient, PatientRec)
    data = encode(records_with(PATIENT=patient._replace(birth_date=None)))
    session = decode(data, source="x")
    assert session.patient is not None
    assert session.patient.birth_date is None


def test_refill_not_measured() -> None:
    refill = BASE_RECORDS[REFILL]
    assert isinstance(refill, RefillRec)
    data = encode(records_with(REFILL=refill._replace(aspirated_ul=None)))
    assert (
        data[frames(data)[REFILL].payload + 4 : frames(data)[REFILL].payload + 8]
        == b"\xff\xff\xff\xff"
    )
    event = decode(data, source="x").events[1]
    assert isinstance(event, RefillEvent)
    assert event.aspirated_ul is None


def test_pump_status_firmware_and_battery_words() -> None:
    status = PumpStatusRec(0, UNPLACED, at(3), None, "12.0", "eri")
    session = decode(encode(records_with(PUMP_STATUS=status)), source="x")
    assert session.pump_status is not None
    assert (session.pump_status.firmware, session.pump_status.battery) == ("12.0", "eri")
    # §7.7: no pump clock, no offset; alarm instants are unknown.
    assert session.pump_status.pump_clock_offset_s is None
    alarm = session.events[0]
    assert isinstance(alarm, AlarmEvent)
    assert alarm.occurred_local is None


def test_second_pump_status_warns() -> None:
    """§7.7: the first PUMP_STATUS supplies the status and clock offset."""
    second = PumpStatusRec(0, UNPLACED, at(800), at(900), "2.4", "eos")
    session = decode(encode([*BASE_RECORDS, second]), source="x")
    assert session.pump_status is not None
    assert (session.pump_status.firmware, session.pump_status.pump_clock_offset_s) == ("2.3", 168)
    assert len(session.warnings) == 1
    assert "another PUMP_STATUS" in session.warnings[0]


def test_record_time_not_applicable() -> None:
    """§7.1: a record time 0xFFFFFFFF is None, and rule 6 skips it."""
    data = encode(breakage=Breakage(times={BOLUS: 0xFFFFFFFF, NOTE: 0xFFFFFFFF}))
    session = decode(data, source="x")
    assert session.warnings == ()
    bolus = session.events[2]
    assert isinstance(bolus, BolusEvent)
    assert bolus.time_local is None
    assert session.utc(bolus.time_local) is None


def test_record_time_going_backwards_warns() -> None:
    """§3 rule 6: a warning, never an error."""
    data = encode(breakage=Breakage(times={BOLUS: 0}))
    assert decode(data, source="x").warnings == (
        "BOLUS at 2000-01-01 00:00:00 is earlier than the REFILL before it at 2026-03-14 09:42:10",
    )


def test_unknown_record_type_is_skipped_counted_and_warned() -> None:
    """§2.2, §7.8: it counts in seq and record_count; strict mode makes it an error."""
    unknown = UnknownRec(0, UNPLACED, at(730), 0x33, b"raw bytes")
    records = [*BASE_RECORDS[:SNAPSHOT1], unknown, BASE_RECORDS[SNAPSHOT1]]
    data = encode(records)
    assert (
        int.from_bytes(data[frames(data)[-1].payload : frames(data)[-1].payload + 4], "little")
        == 12
    )
    session = decode(data, source="x")
    assert session.warnings == (
        "record type 0x33 at 2026-03-14 09:44:20 is not known to this decoder; skipped its 9 bytes",
    )
    _header, decoded, _end, _log = decode_records(data, source="x")
    assert decoded[SNAPSHOT1] == unknown._replace(
        record_index=SNAPSHOT1, position=Position("offset", frames(data)[SNAPSHOT1].offset)
    )
    with pytest.raises(StrictModeWarning) as info:
        decode(data, source="x.psl", strict=True)
    assert info.value.code == "strict:unknown_record_type"
    assert info.value.position == Position("offset", frames(data)[SNAPSHOT1].offset)


def test_unknown_record_type_with_a_bad_crc_is_an_error() -> None:
    records = [*BASE_RECORDS, UnknownRec(0, UNPLACED, at(800), 0x33, b"x")]
    data = encode(records, breakage=Breakage(record_crc={len(BASE_RECORDS): 0}))
    fails(data, "record_crc", frames(data)[len(BASE_RECORDS)].crc, "record 11 (0x33)")


# --- END, padding, trailing data (§3 rule 5, §6, §7.3) -----------------------------------


def test_missing_end_at_end_of_file() -> None:
    data = encode(breakage=Breakage(end=False))
    fails(data, "missing_end", len(data), "record 11: no END record", "found 'end of file'")


def test_missing_end_before_padding() -> None:
    data = encode_binary(HEADER, BASE_RECORDS, padding=100, breakage=Breakage(end=False))
    fails(data, "missing_end", len(data) - 100, "found 0x1A padding")


def test_end_record_count_mismatch() -> None:
    data = encode(breakage=Breakage(record_count=10))
    fails(data, "end_record_count", END.payload, "record 11 (END)", "expected 11, found 10")


def test_file_crc_mismatch() -> None:
    data = encode(breakage=Breakage(file_crc32=0x12345678))
    fails(data, "file_crc", END.payload + 4, "file CRC-32 mismatch", "found 0x12345678")


def test_file_crc_covers_the_header() -> None:
    import zlib

    assert int.from_bytes(GOOD[END.payload + 4 : END.payload + 8], "little") == zlib.crc32(
        GOOD[: END.offset]
    )


def test_end_payload_of_the_wrong_length() -> None:
    body = encode(breakage=Breakage(end=False))
    end = frame_bytes(len(BASE_RECORDS), RecordType.END, at(800), b"\x0b\x00\x00\x00")
    fails(
        body + end,
        "payload_length",
        len(body) + 10 + 4,
        "record 11 (END): END payload has the wrong length",
        "(schema field file_crc32)",
    )


def test_body_size_mismatch() -> None:
    data = encode(breakage=Breakage(header={"body_size": 10}))
    fails(data, "body_size", 86, f"expected {len(GOOD) - 96}, found 10")


def test_padding_up_to_1023_bytes_is_dropped() -> None:
    data = encode(padding=1023)
    assert len(data) == len(GOOD) + 1023
    assert decode(data, source="x") == decode(GOOD, source="x")


def test_padding_of_1024_bytes_is_an_error() -> None:
    data = encode(padding=1024)
    fails(
        data,
        "padding_too_long",
        len(GOOD) + 1023,
        "expected 'at most 1023 bytes', found '1024 bytes'",
    )


def test_trailing_data_after_end() -> None:
    data = encode_binary(HEADER, BASE_RECORDS, padding=3, breakage=Breakage(trailing=b"\x00\x1a"))
    fails(data, "trailing_data", len(GOOD) + 3, "data after the END record", "found 0x00")


def test_a_second_end_record_is_trailing_data() -> None:
    extra = frame_bytes(len(BASE_RECORDS) + 1, RecordType.END, at(900), bytes(8))
    fails(GOOD + extra, "trailing_data", len(GOOD), "found 0xA5")


def test_trailing_data_beyond_1023_padding_bytes_reports_the_padding() -> None:
    data = encode_binary(HEADER, BASE_RECORDS, padding=1100, breakage=Breakage(trailing=b"x"))
    fails(data, "padding_too_long", len(GOOD) + 1023)


# --- §3 sequence rules reach assemble ---------------------------------------------------


def test_first_record_must_be_session_info() -> None:
    records = [BASE_RECORDS[PATIENT], BASE_RECORDS[SESSION_INFO], *BASE_RECORDS[PUMP_STATUS:]]
    data = encode(records)
    error = fails(data, "first_record_not_session_info", 96, "record 0 (PATIENT)")
    assert error.record_index == 0


def test_empty_file_body_reports_at_end() -> None:
    data = encode([])
    fails(data, "first_record_not_session_info", 96, "record 0 must be SESSION_INFO")


def test_change_after_programmed_snapshot() -> None:
    records = [*BASE_RECORDS[:CHANGE_DOSE], BASE_RECORDS[SNAPSHOT1], BASE_RECORDS[CHANGE_DOSE]]
    data = encode(records)
    fails(data, "change_after_programmed_snapshot", frames(data)[CHANGE_DOSE + 1].offset)


# --- §7.2 check order ------------------------------------------------------------------


def test_header_errors_come_before_record_errors() -> None:
    data = encode(breakage=Breakage(header={"utc_offset_min": 900}, record_crc={0: 0}))
    fails(data, "utc_offset_range", 84)


def test_header_crc_comes_before_header_fields() -> None:
    data = encode(breakage=Breakage(header={"session_id": bytes(16)}, header_crc=0))
    fails(data, "header_crc", 94)


def test_crc_comes_before_seq_and_seq_before_payload() -> None:
    bad_kind = raw_record(0x31, {"kind": 9, "volume_ul": 1, "duration_min": 1}, at(660))
    records = records_with(BOLUS=bad_kind)
    fails(
        encode(records, breakage=Breakage(seq={BOLUS: 0}, record_crc={BOLUS: 0})),
        "record_crc",
        LAYOUT[BOLUS].crc,
    )
    fails(encode(records, breakage=Breakage(seq={BOLUS: 0})), "seq_gap", LAYOUT[BOLUS].offset + 4)
    fails(encode(records), "enum_range", LAYOUT[BOLUS].payload)


def test_records_fail_in_file_order() -> None:
    data = encode(breakage=Breakage(seq={NOTE: 0}, record_crc={BOLUS: 0}))
    fails(data, "record_crc", LAYOUT[BOLUS].crc)


def test_payload_errors_come_before_end_errors() -> None:
    bad_kind = raw_record(0x31, {"kind": 9, "volume_ul": 1, "duration_min": 1}, at(660))
    data = encode(records_with(BOLUS=bad_kind), breakage=Breakage(record_count=0, file_crc32=0))
    fails(data, "enum_range", LAYOUT[BOLUS].payload)


def test_end_fields_come_in_order_then_body_size_then_trailing_data() -> None:
    fails(encode(breakage=Breakage(record_count=0, file_crc32=0)), "end_record_count", END.payload)
    fails(
        encode(breakage=Breakage(file_crc32=0, header={"body_size": 1})),
        "file_crc",
        END.payload + 4,
    )
    fails(encode(breakage=Breakage(header={"body_size": 1}, trailing=b"x")), "body_size", 86)


def test_end_errors_come_before_sequence_rules() -> None:
    records = [BASE_RECORDS[PATIENT], *BASE_RECORDS[PATIENT:]]
    fails(encode(records, breakage=Breakage(trailing=b"x")), "trailing_data", len(encode(records)))


def test_payload_errors_after_a_sequence_rule_breach_still_come_first() -> None:
    """The sequence rules run after every record has been read (§7.2)."""
    bad_kind = raw_record(0x31, {"kind": 9, "volume_ul": 1, "duration_min": 1}, at(660))
    records = records_with(SESSION_INFO=BASE_RECORDS[PATIENT], BOLUS=bad_kind)
    fails(encode(records), "enum_range", frames(encode(records))[BOLUS].payload)


# --- robustness of the messages ------------------------------------------------------------


def test_error_as_dict_carries_code_position_and_record() -> None:
    data = encode(breakage=Breakage(seq={ALARM: 9}))
    with pytest.raises(DecodeError) as info:
        decode(data, source="bad.psl")
    assert info.value.as_dict() == {
        "code": "seq_gap",
        "position": {"kind": "offset", "value": LAYOUT[ALARM].offset + 4},
        "record_index": ALARM,
        "record_type": "ALARM",
        "message": f"offset 0x{LAYOUT[ALARM].offset + 4:X}: record 4 (ALARM): record sequence number out of order: expected 4, found 9",
    }


def test_mutated_payload_with_fixed_crcs_reaches_payload_checks() -> None:
    target = LAYOUT[PUMP_STATUS]
    data = refresh_crcs(patch(GOOD, target.payload + 6, b"\x07"))
    fails(data, "enum_range", target.payload + 6, "battery outside its table", "found 7")


def test_scenario_object_and_header_records_pair_write_the_same_bytes() -> None:
    assert encode_binary(BASE) == GOOD


# --- the schema and the fast decoder's structs come from one table ---------------------------


def test_header_field_offsets_are_those_of_the_spec_table() -> None:
    """§2.1, offsets as the spec's table lists them."""
    from parsers.psl_binary_schema import HEADER_FIELDS, field_offsets, packer

    assert field_offsets(HEADER_FIELDS) == {
        "signature": 0,
        "version_major": 8,
        "version_minor": 9,
        "header_size": 10,
        "programmer_model": 12,
        "programmer_serial": 24,
        "programmer_sw_major": 36,
        "programmer_sw_minor": 37,
        "programmer_sw_build": 38,
        "pump_model": 40,
        "pump_serial": 52,
        "session_id": 64,
        "session_start": 80,
        "utc_offset_min": 84,
        "body_size": 86,
        "reserved": 90,
    }
    assert packer(HEADER_FIELDS).size == 94


@pytest.mark.parametrize("type_code", [0x30, 0x31, 0x40, 0x50, 0x7F])
def test_fixed_payload_schema_and_struct_agree(type_code: int) -> None:
    from parsers.psl_binary_schema import FIXED_PAYLOAD_FIELDS, PAYLOADS, packer

    layout = FIXED_PAYLOAD_FIELDS[type_code]
    values = {name: i + 1 for i, (name, _fmt) in enumerate(layout)}
    built = PAYLOADS[type_code].build(values)
    assert len(built) == packer(layout).size
    assert packer(layout).unpack(built) == tuple(values.values())


def test_payload_failure_path_names_the_field() -> None:
    from parsers.psl_binary_schema import payload_failure_path

    assert payload_failure_path(0x40, b"\x01\x00\x01") == "state"
    assert payload_failure_path(0x10, b"\x00\x01\x01\x01\x07") == "entries.value"
    assert payload_failure_path(0x10, b"\x00\x00") is None  # parses
    assert payload_failure_path(0x10, b"\x00\x00\x00") is None  # extra byte: no field to name
    assert payload_failure_path(0x70, b"") is None  # unknown type
