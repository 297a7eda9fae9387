"""Stage one of decoding: the records of a file, as the file states them.

Both formats carry the same records (docs/formats.md §3, docs/format-psl-csv.md §3). Each
decoder turns its bytes into a `RawHeader` and a list of these records, each with
its position in the file; `parsers.assemble` then applies the sequence rules once
for both formats and builds the `Session`. The fixture builder writes files from
the same vocabulary, so a scenario is a header plus a record list.

Enumerations are held as the words of docs/session-json.md, already validated by the
decoder that read them (an out-of-table value is an error at its own field).

Records are typed `NamedTuple`s, immutable like the frozen dataclasses of the
session model but about three times cheaper to create: a realistic session has
60-80 of them and the decoder's throughput is bounded by that (bench/bench_decode.py).
Use `record._replace(field=value)` to derive a changed copy.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import NamedTuple

from parsers.model import Position
from parsers.params import ParamValue, ValueType


class RawHeader(NamedTuple):
    """The file-level facts: binary header (§2.1) or CSV metadata block (docs/format-psl-csv.md §2)."""

    format_version: str
    programmer_model: str
    programmer_serial: str
    programmer_software: str
    pump_model: str
    pump_serial: str
    session_id: str
    session_start_local: datetime
    utc_offset_min: int


class Entry(NamedTuple):
    """One parameter entry. `name` is None for a parameter id this decoder does not know."""

    name: str | None
    param_id: int
    value_type: ValueType
    value: ParamValue


class SessionInfoRec(NamedTuple):
    record_index: int
    position: Position
    time_local: datetime | None
    operator_id: str
    operator_role: str
    clinic_id: str


class PatientRec(NamedTuple):
    record_index: int
    position: Position
    time_local: datetime | None
    patient_id: str
    patient_name: str
    birth_date: date | None


class SnapshotRec(NamedTuple):
    record_index: int
    position: Position
    time_local: datetime | None
    phase: int
    entries: tuple[Entry, ...]


class ParamChangeRec(NamedTuple):
    record_index: int
    position: Position
    time_local: datetime | None
    entry_old: Entry
    new: ParamValue
    reason: str


class RefillRec(NamedTuple):
    record_index: int
    position: Position
    time_local: datetime | None
    expected_residual_ul: int
    aspirated_ul: int | None
    added_ul: int
    new_volume_ul: int


class BolusRec(NamedTuple):
    record_index: int
    position: Position
    time_local: datetime | None
    kind: str
    volume_ul: int
    duration_min: int


class AlarmRec(NamedTuple):
    record_index: int
    position: Position
    time_local: datetime | None
    code: int
    severity: str
    state: str
    occurred_pump_clock: datetime | None


class PumpStatusRec(NamedTuple):
    record_index: int
    position: Position
    time_local: datetime | None
    pump_clock: datetime | None
    firmware: str
    battery: str


class NoteRec(NamedTuple):
    record_index: int
    position: Position
    time_local: datetime | None
    text: str


class UnknownRec(NamedTuple):
    """A record type from a later minor version: skipped, counted, warned (§2.2)."""

    record_index: int
    position: Position
    time_local: datetime | None
    type_code: int
    payload: bytes
    # The CSV `Record` word a builder writes for it (an unknown word: docs/format-psl-csv.md §5.7).
    csv_word: str = "Calibration"


Record = (
    SessionInfoRec
    | PatientRec
    | SnapshotRec
    | ParamChangeRec
    | RefillRec
    | BolusRec
    | AlarmRec
    | PumpStatusRec
    | NoteRec
    | UnknownRec
)

RECORD_TYPE_NAMES: dict[type, str] = {
    SessionInfoRec: "SESSION_INFO",
    PatientRec: "PATIENT",
    SnapshotRec: "SNAPSHOT",
    ParamChangeRec: "PARAM_CHANGE",
    RefillRec: "REFILL",
    BolusRec: "BOLUS",
    AlarmRec: "ALARM",
    PumpStatusRec: "PUMP_STATUS",
    NoteRec: "NOTE",
    UnknownRec: "UNKNOWN",
}
