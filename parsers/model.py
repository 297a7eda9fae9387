"""The normalized session: what one programming session says, whatever format carried it.

Every decoder returns a `Session` (docs/session-json.md "Normalized session"). The model
is frozen: once decoded, a session is a fact. Instants are kept as the programmer's
local wall-clock time beside the UTC offset, and UTC is derived (docs/formats.md
§1, §5); pump-clock alarm times keep their raw value beside the corrected one.
Every event keeps where it came from (byte offset or line) so a coder can trace a
value to its bytes; that position is not part of the JSON document, since the
binary and CSV exports of one session must print the same document.

The session and its parts are frozen dataclasses; positions and events, of which a
session has dozens, are typed `NamedTuple`s (immutable too, and three times cheaper
to create, which the decoder's throughput depends on).
"""

from __future__ import annotations

import copyreg
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from types import MappingProxyType
from typing import Literal, NamedTuple

from parsers.params import ParamValue

SourceFormat = Literal["psl-binary", "psl-csv"]

EMPTY_SETTINGS: Mapping[str, ParamValue] = MappingProxyType({})


def _read_only(values: dict[str, ParamValue]) -> MappingProxyType[str, ParamValue]:
    return MappingProxyType(values)


# Read-only mappings cross process boundaries (the rules and refusals a parallel
# import sends between its writer and its workers): they pickle as the
# dictionaries they wrap and come back read-only.
copyreg.pickle(MappingProxyType, lambda proxy: (_read_only, (dict(proxy),)))


class Position(NamedTuple):
    """Where an item sits in its file: a byte offset (binary) or a physical line (CSV)."""

    kind: Literal["offset", "line"]
    value: int

    def __str__(self) -> str:
        return f"offset 0x{self.value:X}" if self.kind == "offset" else f"line {self.value}"


@dataclass(frozen=True, slots=True)
class Programmer:
    model: str
    serial: str
    software: str


@dataclass(frozen=True, slots=True)
class Pump:
    model: str
    serial: str


@dataclass(frozen=True, slots=True)
class Operator:
    id: str
    role: str


@dataclass(frozen=True, slots=True)
class Patient:
    id: str
    name: str
    birth_date: date | None


@dataclass(frozen=True, slots=True)
class PumpStatus:
    """The first PUMP_STATUS record (docs/formats.md §5, §7.7)."""

    pump_clock_local: datetime | None
    pump_clock_offset_s: int | None
    firmware: str
    battery: str


# The offsets met so far, made once each (§2.1 allows 1,561: -720..840 minutes).
_OFFSETS: dict[int, timedelta] = {}
_OFFSETS_KEPT = 2048


def to_utc(local: datetime | None, utc_offset_min: int) -> datetime | None:
    """UTC = local time minus the offset east of UTC (docs/formats.md §1)."""
    if local is None:
        return None
    offset = _OFFSETS.get(utc_offset_min)
    if offset is None:
        offset = timedelta(minutes=utc_offset_min)
        if len(_OFFSETS) < _OFFSETS_KEPT:
            _OFFSETS[utc_offset_min] = offset
    return local - offset


class AlarmEvent(NamedTuple):
    time_local: datetime | None
    position: Position
    alarm: str
    severity: str
    state: str
    # The pump's own clock as logged; `occurred_local` is corrected to the programmer clock.
    occurred_pump_clock: datetime | None
    occurred_local: datetime | None
    type: Literal["alarm"] = "alarm"


class RefillEvent(NamedTuple):
    time_local: datetime | None
    position: Position
    expected_residual_ul: int
    aspirated_ul: int | None
    added_ul: int
    new_volume_ul: int
    type: Literal["refill"] = "refill"


class BolusEvent(NamedTuple):
    time_local: datetime | None
    position: Position
    kind: str
    volume_ul: int
    duration_min: int
    type: Literal["bolus"] = "bolus"


class ChangeEvent(NamedTuple):
    time_local: datetime | None
    position: Position
    parameter: str
    old: ParamValue
    new: ParamValue
    reason: str
    type: Literal["change"] = "change"


class NoteEvent(NamedTuple):
    time_local: datetime | None
    position: Position
    text: str
    type: Literal["note"] = "note"


Event = AlarmEvent | RefillEvent | BolusEvent | ChangeEvent | NoteEvent


@dataclass(frozen=True, slots=True)
class Session:
    """One decoded programming session (docs/session-json.md)."""

    source: str
    source_format: SourceFormat
    format_version: str
    session_id: str
    session_start_local: datetime
    utc_offset_min: int
    programmer: Programmer
    pump: Pump
    operator: Operator
    clinic_id: str
    patient: Patient | None
    interrogated_at_local: datetime | None
    interrogated: Mapping[str, ParamValue]
    programmed_at_local: datetime | None
    # None when the programmer never transmitted (no phase-1 snapshot, §3 rule 4).
    programmed: Mapping[str, ParamValue] | None
    pump_status: PumpStatus | None
    events: tuple[Event, ...]
    warnings: tuple[str, ...] = field(default=())

    @property
    def session_start_utc(self) -> datetime:
        return self.session_start_local - timedelta(minutes=self.utc_offset_min)

    def utc(self, local: datetime | None) -> datetime | None:
        """This session's UTC for a programmer-local instant."""
        return to_utc(local, self.utc_offset_min)

    @property
    def end_state(self) -> Mapping[str, ParamValue]:
        """Interrogated state overlaid with the phase-1 entries (docs/coding-rules.md §7.1)."""
        if self.programmed is None:
            return self.interrogated
        merged = dict(self.interrogated)
        merged.update(self.programmed)
        return MappingProxyType(merged)
