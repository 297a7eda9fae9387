"""Shared pieces of the PSL binary tests: a base session using every record type, and a
plain frame walk (independent of the decoder) to find where each record sits."""

from __future__ import annotations

import binascii
import struct
import zlib
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from fixtures.binary_writer import NO_BREAKAGE, Breakage, encode_binary
from fixtures.scenario import UNPLACED, Scenario
from parsers.params import PARAMS_BY_NAME, FlexStep, ParamValue, ValueType
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

T0 = datetime(2026, 3, 14, 9, 32, 10)
HEADER = RawHeader(
    format_version="1.0",
    programmer_model="PX-200",
    programmer_serial="PX2-0001234",
    programmer_software="3.1.2045",
    pump_model="IT-40",
    pump_serial="ITP40-118822",
    session_id="0d5e2a8c-3b9f-4a7e-9c61-2f4b8d1e7a90",
    session_start_local=T0,
    utc_offset_min=-300,
)
UNKNOWN_PARAM = 0x0999


def entry(name: str, value: ParamValue) -> Entry:
    definition = PARAMS_BY_NAME[name]
    return Entry(name, definition.param_id, definition.value_type, value)


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


INTERROGATED = (
    entry("drug1_name", "Morphine"),
    entry("drug1_concentration", 10000),
    entry("drug1_daily_dose", 2000),
    entry("infusion_mode", "simple_continuous"),
    entry("infusion_rate", 200),
    entry("flex_step_0", FlexStep(360, 480)),
    entry("ptm_enabled", True),
    entry("ptm_lockout", 180),
    entry("low_reservoir_alarm_enabled", False),
    entry("reservoir_volume", 3400),
    entry("reservoir_capacity", 20000),
    entry("refill_date", None),
    entry("implant_date", date(2019, 4, 2)),
    entry("catheter_tip_level", "T10"),
)
PROGRAMMED = (
    entry("drug1_daily_dose", 2200),
    entry("infusion_rate", 220),
    entry("reservoir_volume", 20000),
)

# Index of each record in BASE_RECORDS.
SESSION_INFO, PATIENT, PUMP_STATUS, SNAPSHOT0, ALARM, REFILL, BOLUS = range(7)
CHANGE_DOSE, CHANGE_RATE, NOTE, SNAPSHOT1 = range(7, 11)

BASE_RECORDS: tuple[Record, ...] = (
    SessionInfoRec(0, UNPLACED, at(0), "dr.lee", "physician", "PAIN-01"),
    PatientRec(0, UNPLACED, at(1), "SYN-0042117", "Testperson, Alex", date(1956, 5, 2)),
    PumpStatusRec(0, UNPLACED, at(3), at(3 + 168), "2.3", "ok"),
    SnapshotRec(0, UNPLACED, at(5), 0, INTERROGATED),
    AlarmRec(0, UNPLACED, at(5), 0x0001, "non_critical", "logged", datetime(2026, 3, 9, 2, 16, 48)),
    RefillRec(0, UNPLACED, at(600), 3400, 3100, 20000, 20000),
    BolusRec(0, UNPLACED, at(660), "bridge", 250, 30),
    ParamChangeRec(0, UNPLACED, at(700), entry("drug1_daily_dose", 2000), 2200, "efficacy"),
    ParamChangeRec(0, UNPLACED, at(700), entry("infusion_rate", 200), 220, "efficacy"),
    NoteRec(0, UNPLACED, at(720), "Patient reports good pain control."),
    SnapshotRec(0, UNPLACED, at(760), 1, PROGRAMMED),
)
BASE = Scenario("base", HEADER, BASE_RECORDS, "every record type, no warnings")


def records_with(**changes: Record) -> list[Record]:
    """BASE_RECORDS with records replaced by index name, e.g. `records_with(BOLUS=...)`."""
    names = {
        "SESSION_INFO": SESSION_INFO,
        "PATIENT": PATIENT,
        "PUMP_STATUS": PUMP_STATUS,
        "SNAPSHOT0": SNAPSHOT0,
        "ALARM": ALARM,
        "REFILL": REFILL,
        "BOLUS": BOLUS,
        "CHANGE_DOSE": CHANGE_DOSE,
        "CHANGE_RATE": CHANGE_RATE,
        "NOTE": NOTE,
        "SNAPSHOT1": SNAPSHOT1,
    }
    records = list(BASE_RECORDS)
    for name, rec in changes.items():
        records[names[name]] = rec
    return records


def encode(
    records: list[Record] | tuple[Record, ...] = BASE_RECORDS,
    *,
    padding: int = 0,
    breakage: Breakage = NO_BREAKAGE,
) -> bytes:
    return encode_binary(HEADER, records, padding=padding, breakage=breakage)


def with_snapshot0(*entries: Entry) -> list[Record]:
    base = BASE_RECORDS[SNAPSHOT0]
    assert isinstance(base, SnapshotRec)
    return records_with(SNAPSHOT0=base._replace(entries=entries))


@dataclass(frozen=True)
class Frame:
    offset: int
    type_code: int
    length: int

    @property
    def payload(self) -> int:
        return self.offset + 10

    @property
    def crc(self) -> int:
        return self.payload + self.length

    @property
    def end(self) -> int:
        return self.crc + 2


def frames(data: bytes) -> list[Frame]:
    """Every record frame of a well-framed file, END included (a plain walk for tests)."""
    (header_size,) = struct.unpack_from("<H", data, 10)
    pos = header_size
    found: list[Frame] = []
    while pos + 10 <= len(data) and data[pos] == 0xA5:
        _sync, type_code, length = struct.unpack_from("<BBH", data, pos)
        frame = Frame(pos, type_code, length)
        found.append(frame)
        pos = frame.end
        if type_code == 0x7F:
            break
    return found


def refresh_crcs(data: bytes) -> bytes:
    """Recompute the header CRC, every record CRC and the END file CRC after a mutation,
    so that a test reaches the payload and sequence checks behind them."""
    out = bytearray(data)
    if len(out) < 12:
        return bytes(out)
    (header_size,) = struct.unpack_from("<H", out, 10)
    if header_size < 96 or header_size > len(out):
        return bytes(out)
    out[header_size - 2 : header_size] = binascii.crc_hqx(
        bytes(out[: header_size - 2]), 0xFFFF
    ).to_bytes(2, "little")
    pos = header_size
    while pos + 12 <= len(out) and out[pos] == 0xA5:
        type_code = out[pos + 1]
        (length,) = struct.unpack_from("<H", out, pos + 2)
        end = pos + 10 + length
        if end + 2 > len(out):
            break
        if type_code == 0x7F and length == 8:
            out[pos + 14 : pos + 18] = zlib.crc32(bytes(out[:pos])).to_bytes(4, "little")
        out[end : end + 2] = binascii.crc_hqx(bytes(out[pos + 1 : end]), 0xFFFF).to_bytes(
            2, "little"
        )
        pos = end + 2
        if type_code == 0x7F:
            break
    return bytes(out)


def value_type_of(name: str) -> ValueType:
    return PARAMS_BY_NAME[name].value_type
