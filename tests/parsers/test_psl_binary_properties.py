"""Property tests of the PSL binary decoder (docs/formats.md §7.2; Hypothesis).

- The construct schema (the spec in code) and the fast decoder read the same
  records from generated files.
- Truncations, bit flips, payload mutations behind fixed-up CRCs, and random
  bytes give a `Session` or a `DecodeError`, never another exception or a hang.
"""

from __future__ import annotations

import random
import uuid
import zlib
from datetime import date, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fixtures.binary_writer import encode_binary, payload_fields
from fixtures.scenario import UNPLACED
from fixtures.scenarios import realistic_scenario
from parsers.errors import DecodeError, StrictModeWarning
from parsers.params import (
    ALARM_STATES,
    BATTERY_STATES,
    BOLUS_KINDS,
    INFUSION_MODES,
    OPERATOR_ROLES,
    PARAMS,
    PARAMS_BY_ID,
    REASONS,
    SEVERITIES,
    FlexStep,
    ParamValue,
    ValueType,
)
from parsers.psl_binary import decode, decode_records
from parsers.psl_binary_schema import PSL_FILE, SIGNATURE, RecordType
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
from parsers.wiretime import LAST_DATE, LAST_TIMESTAMP, PSL_EPOCH, timestamp_from_local
from tests.parsers.psl_binary_helpers import BASE, frames, refresh_crcs

# --- strategies: valid files ----------------------------------------------------------

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFE)  # 0xFFFFFFFF means "not measured" in REFILL
instants = st.datetimes(min_value=PSL_EPOCH, max_value=LAST_TIMESTAMP).map(
    lambda d: d.replace(microsecond=0)
)
times = st.none() | instants
dates = st.none() | st.dates(min_value=date(1900, 1, 1), max_value=LAST_DATE)
names = st.text(max_size=30).filter(lambda s: len(s.encode()) <= 255)
text64 = st.text(max_size=40).filter(lambda s: len(s.encode()) <= 64)
ascii12 = st.text(alphabet=st.characters(min_codepoint=1, max_codepoint=0x7F), max_size=12)
flex = st.builds(FlexStep, st.integers(0, 1439), u32)


def known_value(value_type: ValueType) -> st.SearchStrategy[ParamValue]:
    strategies: dict[ValueType, st.SearchStrategy[Any]] = {
        ValueType.U32: u32,
        ValueType.TEXT: text64,
        ValueType.ENUM: st.sampled_from(sorted(INFUSION_MODES.values())),
        ValueType.BOOL: st.booleans(),
        ValueType.DATE: dates,
        ValueType.FLEX_STEP: flex,
    }
    return strategies[value_type]


def unknown_value(value_type: ValueType) -> st.SearchStrategy[ParamValue]:
    strategies: dict[ValueType, st.SearchStrategy[Any]] = {
        ValueType.U32: u32,
        ValueType.I32: st.integers(-(2**31), 2**31 - 1),
        ValueType.DATE: dates,
        ValueType.ENUM: u8,
        ValueType.TEXT: text64,
        ValueType.BOOL: st.integers(0, 1),
        ValueType.MINUTES: st.integers(0, 1439),
        ValueType.FLEX_STEP: flex,
    }
    return strategies[value_type]


@st.composite
def entries(draw: st.DrawFn) -> Entry:
    if draw(st.integers(0, 4)) == 0:
        pid = draw(u16.filter(lambda i: i not in PARAMS_BY_ID))
        value_type = draw(st.sampled_from(list(ValueType)))
        return Entry(None, pid, value_type, draw(unknown_value(value_type)))
    definition = draw(st.sampled_from(PARAMS))
    return Entry(
        definition.name,
        definition.param_id,
        definition.value_type,
        draw(known_value(definition.value_type)),
    )


@st.composite
def param_changes(draw: st.DrawFn) -> ParamChangeRec:
    old = draw(entries())
    new_strategy = (
        unknown_value(old.value_type) if old.name is None else known_value(old.value_type)
    )
    return ParamChangeRec(
        0,
        UNPLACED,
        draw(times),
        old,
        draw(new_strategy),
        draw(st.sampled_from(list(REASONS.values()))),
    )


records: st.SearchStrategy[Record] = st.one_of(
    st.builds(
        SessionInfoRec,
        st.just(0),
        st.just(UNPLACED),
        times,
        names,
        st.sampled_from(list(OPERATOR_ROLES.values())),
        names,
    ),
    st.builds(PatientRec, st.just(0), st.just(UNPLACED), times, names, names, dates),
    st.builds(
        SnapshotRec,
        st.just(0),
        st.just(UNPLACED),
        times,
        st.integers(0, 1),
        st.lists(entries(), max_size=12, unique_by=lambda e: e.param_id).map(tuple),
    ),
    param_changes(),
    st.builds(RefillRec, st.just(0), st.just(UNPLACED), times, u32, st.none() | u32, u32, u32),
    st.builds(
        BolusRec,
        st.just(0),
        st.just(UNPLACED),
        times,
        st.sampled_from(list(BOLUS_KINDS.values())),
        u32,
        u16,
    ),
    st.builds(
        AlarmRec,
        st.just(0),
        st.just(UNPLACED),
        times,
        u16,
        st.sampled_from(list(SEVERITIES.values())),
        st.sampled_from(list(ALARM_STATES.values())),
        times,
    ),
    st.builds(
        PumpStatusRec,
        st.just(0),
        st.just(UNPLACED),
        times,
        times,
        st.tuples(u8, u8).map(lambda v: f"{v[0]}.{v[1]}"),
        st.sampled_from(list(BATTERY_STATES.values())),
    ),
    st.builds(NoteRec, st.just(0), st.just(UNPLACED), times, st.text(max_size=100)),
    st.builds(
        UnknownRec,
        st.just(0),
        st.just(UNPLACED),
        times,
        st.integers(0x00, 0xFF).filter(lambda t: t not in set(RecordType)),
        st.binary(max_size=40),
    ),
)

headers = st.builds(
    RawHeader,
    st.just("1.0"),
    ascii12,
    ascii12,
    st.tuples(u8, u8, u16).map(lambda v: f"{v[0]}.{v[1]}.{v[2]}"),
    ascii12,
    ascii12.filter(bool),
    st.uuids().filter(lambda u: u.int != 0).map(str),
    instants,
    st.integers(-720, 840),
)


def plain(value: Any) -> Any:
    """A construct Container/ListContainer as plain dicts and lists, without `_io`."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items() if not k.startswith("_")}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def schema_view(record: Record) -> tuple[int, Any]:
    """What the schema should parse for a decoded record: its wire fields."""
    if isinstance(record, UnknownRec):
        return record.type_code, record.payload
    type_code, fields = payload_fields(record)
    return int(type_code), plain(fields)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    header=headers,
    body=st.lists(records, max_size=12),
    minor=st.integers(0, 3),
    padding=st.integers(0, 1023),
)
def test_schema_and_fast_decoder_read_the_same_records(
    header: RawHeader, body: list[Record], minor: int, padding: int
) -> None:
    data = encode_binary(
        header, body, minor_version=minor, extra_header=bytes(minor * 3), padding=padding
    )
    parsed = PSL_FILE.parse(data)
    raw_header, decoded, end_offset, _log = decode_records(data, source="gen.psl")

    fields = parsed.header.fields.value
    assert raw_header.format_version == f"{fields.version_major}.{fields.version_minor}"
    assert raw_header.pump_serial == fields.pump_serial.rstrip(b"\0").decode("ascii")
    assert raw_header.programmer_model == fields.programmer_model.rstrip(b"\0").decode("ascii")
    assert raw_header.programmer_software == (
        f"{fields.programmer_sw_major}.{fields.programmer_sw_minor}.{fields.programmer_sw_build}"
    )
    assert raw_header.session_id == str(uuid.UUID(bytes=fields.session_id))
    assert timestamp_from_local(raw_header.session_start_local) == fields.session_start
    assert raw_header.utc_offset_min == fields.utc_offset_min

    assert len(parsed.records) == len(decoded) + 1
    for index, (frame, record) in enumerate(zip(parsed.records, decoded, strict=False)):
        body_fields = frame.body.value
        assert record.record_index == index
        assert record.position.value == frame.body.offset1 - 1  # the sync byte
        assert body_fields.seq == index & 0xFFFF
        assert body_fields.time == timestamp_from_local(record.time_local)
        type_code, payload = schema_view(record)
        assert body_fields.type == type_code
        expected = plain(body_fields.payload)
        if type_code == RecordType.SNAPSHOT:
            assert expected.pop("count") == len(payload["entries"])
        assert expected == payload
    end = parsed.records[-1].body.value
    assert end.type == RecordType.END
    assert end.payload.record_count == len(decoded)
    assert end.payload.file_crc32 == zlib.crc32(data[:end_offset])
    assert parsed.trailer == b"\x1a" * padding


# --- robustness -----------------------------------------------------------------------


def _realistic(seed: int) -> bytes:
    return encode_binary(realistic_scenario(random.Random(seed)))


SAMPLES = (encode_binary(BASE), _realistic(1), _realistic(2))
sample = st.sampled_from(SAMPLES)
ROBUST = settings(max_examples=300, deadline=timedelta(milliseconds=1000))


def decode_or_error(data: bytes, *, strict: bool = False) -> DecodeError | None:
    """Decode; only the project's own errors may come out."""
    try:
        decode(data, source="fuzz.psl", strict=strict)
    except DecodeError as error:
        assert error.code
        if error.position is None:
            # assemble's consistency warnings name no record; only strict mode raises them.
            assert isinstance(error, StrictModeWarning), str(error)
        else:
            assert error.position.kind == "offset"
            assert 0 <= error.position.value <= len(data)
        return error
    return None


def test_samples_decode() -> None:
    for data in SAMPLES:
        assert decode_or_error(data) is None


@pytest.mark.timeout(120)
@ROBUST
@given(data=sample, cut=st.floats(0, 1, exclude_max=True))
def test_every_truncation_is_an_error(data: bytes, cut: float) -> None:
    error = decode_or_error(data[: int(len(data) * cut)])
    assert error is not None


@pytest.mark.timeout(120)
@ROBUST
@given(data=sample, position=st.integers(0), bit=st.integers(0, 7))
def test_every_single_bit_flip_is_an_error(data: bytes, position: int, bit: int) -> None:
    """Header CRC, record CRCs (CRC-16 finds every 1-bit error) and sync catch them all."""
    position %= len(data)
    flipped = bytearray(data)
    flipped[position] ^= 1 << bit
    error = decode_or_error(bytes(flipped))
    assert error is not None


@pytest.mark.timeout(120)
@ROBUST
@given(
    data=sample,
    flips=st.lists(st.tuples(st.integers(0), st.integers(0, 7)), min_size=2, max_size=16),
)
def test_bit_flips_give_only_decode_errors(data: bytes, flips: list[tuple[int, int]]) -> None:
    flipped = bytearray(data)
    for position, bit in flips:
        flipped[position % len(data)] ^= 1 << bit
    decode_or_error(bytes(flipped))


@pytest.mark.timeout(120)
@ROBUST
@given(
    data=sample,
    changes=st.lists(st.tuples(st.integers(0), u8), min_size=1, max_size=8),
    strict=st.booleans(),
)
def test_mutations_behind_valid_crcs_give_only_decode_errors(
    data: bytes, changes: list[tuple[int, int]], strict: bool
) -> None:
    """With CRCs fixed up, mutated payloads reach the field checks and assemble."""
    mutated = bytearray(data)
    for position, value in changes:
        # Bytes after the header, so the mutation lands in frames and payloads.
        mutated[96 + position % (len(data) - 96)] = value
    decode_or_error(refresh_crcs(bytes(mutated)), strict=strict)


@pytest.mark.timeout(120)
@ROBUST
@given(data=sample, index=st.integers(0), payload=st.binary(max_size=64))
def test_records_with_random_payloads_give_only_decode_errors(
    data: bytes, index: int, payload: bytes
) -> None:
    """A record's payload replaced by random bytes of another length, framing kept valid."""
    layout = frames(data)
    frame = layout[index % (len(layout) - 1)]
    head = bytearray(data[frame.offset : frame.payload])
    head[2:4] = len(payload).to_bytes(2, "little")
    rebuilt = data[: frame.offset] + bytes(head) + payload + b"\0\0" + data[frame.end :]
    body_size = int.from_bytes(rebuilt[86:90], "little") + len(payload) - frame.length
    patched = rebuilt[:86] + body_size.to_bytes(4, "little") + rebuilt[90:]
    decode_or_error(refresh_crcs(patched))


@pytest.mark.timeout(120)
@ROBUST
@given(tail=st.binary(max_size=600), signed=st.booleans())
def test_random_bytes_give_only_decode_errors(tail: bytes, signed: bool) -> None:
    data = (SIGNATURE + tail) if signed else tail
    assume(data)
    error = decode_or_error(data)
    assert error is not None


@pytest.mark.timeout(120)
@ROBUST
@given(tail=st.binary(min_size=86, max_size=400))
def test_random_headers_behind_a_valid_crc_give_only_decode_errors(tail: bytes) -> None:
    """Signature, version 1 and header size 96 fixed, the rest random, the CRC made right."""
    data = SIGNATURE + b"\x01\x00\x60\x00" + tail
    error = decode_or_error(refresh_crcs(data))
    assert error is not None


def test_decoding_a_realistic_session_is_deterministic() -> None:
    data = SAMPLES[1]
    assert decode(data, source="a") == decode(data, source="a")
