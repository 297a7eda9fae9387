"""Stage two of decoding: the record sequence rules and the normalized `Session`.

Both formats reach this module with a `RawHeader` and their records in file order,
so the rules of docs/formats.md §3 (sequence rules 1-7), the consistency checks of
§4 and the clock correction of §5 are written once (docs/format-psl-csv.md §5.8 applies them
to the CSV as well). Errors name the record where the problem shows; warnings are
sentences that name record kinds and times, never offsets (docs/session-json.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from types import MappingProxyType

from parsers.errors import DecodeError, StrictModeWarning
from parsers.model import (
    AlarmEvent,
    BolusEvent,
    ChangeEvent,
    Event,
    NoteEvent,
    Operator,
    Patient,
    Position,
    Programmer,
    Pump,
    PumpStatus,
    RefillEvent,
    Session,
    SourceFormat,
)
from parsers.params import (
    ALARM_CODES,
    PHASE_INTERROGATED,
    FlexStep,
    ParamValue,
    alarm_word,
)
from parsers.records import (
    RECORD_TYPE_NAMES,
    AlarmRec,
    BolusRec,
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

MINUTES_PER_DAY = 1440
# The parameter names the §4 consistency checks read.
_DRUG_DOSES = tuple((n, f"drug{n}_concentration", f"drug{n}_daily_dose") for n in (1, 2))
_FLEX_STEPS = tuple(f"flex_step_{k}" for k in range(8))
# A plain dict: looked up once per ALARM record, faster than the mapping proxy.
_ALARM_WORDS: dict[int, str] = dict(ALARM_CODES)


class WarningLog:
    """Collects a decoder's warnings; with strict=True the first one is an error (cantools-style)."""

    __slots__ = ("messages", "source", "strict")

    def __init__(self, *, source: str, strict: bool = False) -> None:
        self.source = source
        self.strict = strict
        self.messages: list[str] = []

    def warn(
        self, message: str, *, code: str = "warning", position: Position | None = None
    ) -> None:
        if self.strict:
            raise StrictModeWarning(
                f"strict:{code}",
                f"warning treated as error: {message}",
                source=self.source,
                position=position,
            )
        self.messages.append(message)


def describe_time(local: datetime | None) -> str:
    """A record time for warning sentences."""
    return "an unknown time" if local is None else local.isoformat(sep=" ")


def show_value(value: ParamValue) -> str:
    if isinstance(value, FlexStep):
        return f"{value.start_minute}@{value.rate_ul_per_day}"
    if value is None:
        return "not set"
    return str(value)


def _error(
    code: str, message: str, rec: Record | None, source: str, fallback: Position
) -> DecodeError:
    if rec is None:
        return DecodeError(code, message, source=source, position=fallback)
    return DecodeError(
        code,
        message,
        source=source,
        position=rec.position,
        record_index=rec.record_index,
        record_type=RECORD_TYPE_NAMES[type(rec)],
    )


def assemble(
    header: RawHeader,
    records: Sequence[Record],
    *,
    source: str,
    source_format: SourceFormat,
    end_position: Position,
    log: WarningLog,
) -> Session:
    """Apply §3 rules 1-7 to `records` and build the session.

    `end_position` is where the END record (binary) or `End` row (CSV) sits: the
    place a missing record "shows" (§7.2).
    """
    first = records[0] if records else None
    if not isinstance(first, SessionInfoRec):
        raise _error(
            "first_record_not_session_info",
            "record 0 must be SESSION_INFO",
            first,
            source,
            end_position,
        )
    info = first
    patient_rec: PatientRec | None = None
    phase0: SnapshotRec | None = None
    phase1: SnapshotRec | None = None
    status_rec: PumpStatusRec | None = None
    changes: list[ParamChangeRec] = []
    refills: list[RefillRec] = []
    events: list[Event] = []
    # Alarms seen before the first PUMP_STATUS: their clock correction waits for it (§5).
    uncorrected: list[int] = []
    clock_shift: timedelta | None = None
    # The latest record time so far; datetime.min until a record has one.
    last_time = datetime.min
    last_time_rec: Record = first
    known_alarms = _ALARM_WORDS
    # tuple.__new__ skips the NamedTuple's Python-level __new__ (alarms are most records).
    new_tuple = tuple.__new__

    for rec in records:
        kind = type(rec)
        time_local = rec.time_local
        if time_local is not None:
            if time_local < last_time:
                log.warn(
                    f"{RECORD_TYPE_NAMES[kind]} at {describe_time(time_local)} is earlier than the "
                    f"{RECORD_TYPE_NAMES[type(last_time_rec)]} before it at {describe_time(last_time)}",
                    code="time_decreases",
                    position=rec.position,
                )
            last_time = time_local
            last_time_rec = rec
        # ALARM first: the pump's log makes most of a session's records.
        if kind is AlarmRec:
            alarm: AlarmRec = rec  # type: ignore[assignment]
            # One unpack instead of an attribute lookup per field.
            _index, position, _time, code, severity, state, pump_time = alarm
            word = known_alarms.get(code)
            if word is None:
                word = alarm_word(code)
                log.warn(
                    f"ALARM at {describe_time(time_local)} has unknown alarm code 0x{code:04x}",
                    code="unknown_alarm_code",
                    position=position,
                )
            if pump_time is None:
                occurred = None
            elif clock_shift is not None:
                occurred = pump_time - clock_shift
            else:
                occurred = None
                if status_rec is None:
                    uncorrected.append(len(events))
            events.append(
                new_tuple(
                    AlarmEvent,
                    (
                        time_local,
                        position,
                        word,
                        severity,
                        state,
                        pump_time,
                        occurred,
                        "alarm",
                    ),
                )
            )
        elif kind is SnapshotRec:
            snap: SnapshotRec = rec  # type: ignore[assignment]
            if snap.phase == PHASE_INTERROGATED:
                if phase0 is not None:
                    raise _error(
                        "second_interrogated_snapshot",
                        "a second SNAPSHOT with phase 0 (interrogated)",
                        rec,
                        source,
                        end_position,
                    )
                phase0 = snap
            else:
                if phase1 is not None:
                    raise _error(
                        "second_programmed_snapshot",
                        "a second SNAPSHOT with phase 1 (programmed)",
                        rec,
                        source,
                        end_position,
                    )
                phase1 = snap
        elif kind is ParamChangeRec or kind is RefillRec or kind is BolusRec:
            if phase0 is None:
                raise _error(
                    "before_interrogated_snapshot",
                    f"{RECORD_TYPE_NAMES[kind]} before the phase-0 (interrogated) SNAPSHOT",
                    rec,
                    source,
                    end_position,
                )
            if kind is ParamChangeRec:
                change: ParamChangeRec = rec  # type: ignore[assignment]
                if phase1 is not None:
                    raise _error(
                        "change_after_programmed_snapshot",
                        "PARAM_CHANGE after the phase-1 (programmed) SNAPSHOT",
                        rec,
                        source,
                        end_position,
                    )
                changes.append(change)
                old = change.entry_old
                if old.name is not None:
                    events.append(
                        ChangeEvent(
                            time_local, rec.position, old.name, old.value, change.new, change.reason
                        )
                    )
            elif kind is RefillRec:
                refill: RefillRec = rec  # type: ignore[assignment]
                refills.append(refill)
                events.append(
                    RefillEvent(
                        time_local,
                        rec.position,
                        refill.expected_residual_ul,
                        refill.aspirated_ul,
                        refill.added_ul,
                        refill.new_volume_ul,
                    )
                )
            else:
                bolus: BolusRec = rec  # type: ignore[assignment]
                events.append(
                    BolusEvent(
                        time_local, rec.position, bolus.kind, bolus.volume_ul, bolus.duration_min
                    )
                )
        elif kind is NoteRec:
            events.append(NoteEvent(time_local, rec.position, rec.text))  # type: ignore[union-attr]
        elif kind is PumpStatusRec:
            if status_rec is None:
                status_rec = rec  # type: ignore[assignment]
                clock_offset = _clock_offset(status_rec)  # type: ignore[arg-type]
                if clock_offset is not None:
                    clock_shift = timedelta(seconds=clock_offset)
            else:
                log.warn(
                    f"another PUMP_STATUS at {describe_time(time_local)} ignored; the first one "
                    "supplies the pump status and clock offset",
                    code="extra_pump_status",
                    position=rec.position,
                )
        elif kind is PatientRec:
            if patient_rec is not None:
                raise _error("second_patient", "a second PATIENT record", rec, source, end_position)
            patient_rec = rec  # type: ignore[assignment]
        elif kind is SessionInfoRec and rec is not info:
            raise _error(
                "second_session_info", "a second SESSION_INFO record", rec, source, end_position
            )

    if phase0 is None:
        raise DecodeError(
            "missing_interrogated_snapshot",
            "no SNAPSHOT with phase 0 (interrogated)",
            source=source,
            position=end_position,
        )
    if uncorrected and clock_shift is not None:
        for at in uncorrected:
            early: AlarmEvent = events[at]  # type: ignore[assignment]
            if early.occurred_pump_clock is not None:
                events[at] = early._replace(occurred_local=early.occurred_pump_clock - clock_shift)

    interrogated = _snapshot_values(phase0)
    programmed = None if phase1 is None else _snapshot_values(phase1)
    _check_change_chain(interrogated, programmed, changes, refills, log)
    _check_consistency("interrogated", interrogated, log)
    if programmed is not None:
        end_state = dict(interrogated)
        end_state.update(programmed)
        _check_consistency("programmed", end_state, log)

    status = None
    if status_rec is not None:
        status = PumpStatus(
            status_rec.pump_clock,
            _clock_offset(status_rec),
            status_rec.firmware,
            status_rec.battery,
        )
    patient = (
        None
        if patient_rec is None
        else Patient(patient_rec.patient_id, patient_rec.patient_name, patient_rec.birth_date)
    )
    return Session(
        source=source,
        source_format=source_format,
        format_version=header.format_version,
        session_id=header.session_id,
        session_start_local=header.session_start_local,
        utc_offset_min=header.utc_offset_min,
        programmer=Programmer(
            header.programmer_model, header.programmer_serial, header.programmer_software
        ),
        pump=Pump(header.pump_model, header.pump_serial),
        operator=Operator(info.operator_id, info.operator_role),
        clinic_id=info.clinic_id,
        patient=patient,
        interrogated_at_local=phase0.time_local,
        interrogated=MappingProxyType(interrogated),
        programmed_at_local=None if phase1 is None else phase1.time_local,
        programmed=None if programmed is None else MappingProxyType(programmed),
        pump_status=status,
        events=tuple(events),
        warnings=tuple(log.messages),
    )


def _snapshot_values(snapshot: SnapshotRec) -> dict[str, ParamValue]:
    return {entry.name: entry.value for entry in snapshot.entries if entry.name is not None}


def _check_change_chain(
    interrogated: Mapping[str, ParamValue],
    programmed: Mapping[str, ParamValue] | None,
    changes: Sequence[ParamChangeRec],
    refills: Sequence[RefillRec],
    log: WarningLog,
) -> None:
    """§3 rule 7: logged changes chain from phase 0 and end at phase 1 (warnings)."""
    current: dict[str, ParamValue] = dict(interrogated)
    logged: set[str] = set()
    for change in changes:
        name = change.entry_old.name
        if name is None:
            continue
        old = change.entry_old.value
        if name in current and current[name] != old:
            log.warn(
                f"PARAM_CHANGE of {name} at {describe_time(change.time_local)} starts from "
                f"{show_value(old)}, but the value before it was {show_value(current[name])}",
                code="change_old_mismatch",
                position=change.position,
            )
        current[name] = change.new
        logged.add(name)
    if programmed is None:
        return
    for name in logged:
        if name in programmed:
            final: ParamValue = programmed[name]
        elif name in interrogated:
            final = interrogated[name]
        else:
            continue
        if current[name] != final:
            log.warn(
                f"the last PARAM_CHANGE of {name} ends at {show_value(current[name])}, "
                f"but the programmed SNAPSHOT holds {show_value(final)}",
                code="change_end_mismatch",
            )
    refill_volumes = {refill.new_volume_ul for refill in refills}
    for name, value in programmed.items():
        if name in logged or name not in interrogated or interrogated[name] == value:
            continue
        if name == "reservoir_volume" and value in refill_volumes:
            continue
        log.warn(
            f"unlogged change: {name} was {show_value(interrogated[name])} at interrogation and is "
            f"programmed as {show_value(value)} with no PARAM_CHANGE",
            code="unlogged_change",
        )


def _check_consistency(label: str, state: Mapping[str, ParamValue], log: WarningLog) -> None:
    """§4 consistency: daily dose vs rate x concentration; flex total vs steps (warnings)."""
    rate = state.get("infusion_rate")
    if isinstance(rate, int):
        for n, concentration_name, dose_name in _DRUG_DOSES:
            conc = state.get(concentration_name)
            dose = state.get(dose_name)
            if isinstance(conc, int) and isinstance(dose, int):
                # Nearest µg, halves up: integer arithmetic, no float.
                expected = (rate * conc + 500) // 1000
                if expected != dose:
                    log.warn(
                        f"{label} drug{n}_daily_dose {dose} ug/day differs from infusion_rate x "
                        f"drug{n}_concentration / 1000 = {expected} ug/day",
                        code="dose_inconsistent",
                    )
        if state.get("infusion_mode") == "flex":
            steps = sorted(
                (step for name in _FLEX_STEPS if isinstance(step := state.get(name), FlexStep)),
                key=lambda step: step.start_minute,
            )
            if steps:
                total_x1440 = 0
                for i, step in enumerate(steps):
                    end = (
                        steps[i + 1].start_minute
                        if i + 1 < len(steps)
                        else steps[0].start_minute + MINUTES_PER_DAY
                    )
                    total_x1440 += step.rate_ul_per_day * (end - step.start_minute)
                expected_total = (total_x1440 + MINUTES_PER_DAY // 2) // MINUTES_PER_DAY
                if expected_total != rate:
                    log.warn(
                        f"{label} infusion_rate {rate} uL/day differs from the time-weighted total of "
                        f"the flex steps, {expected_total} uL/day",
                        code="flex_total_inconsistent",
                    )


def _clock_offset(rec: PumpStatusRec) -> int | None:
    """Pump clock minus the record's programmer time, in seconds (§5); None when unknown."""
    if rec.pump_clock is None or rec.time_local is None:
        return None
    return int((rec.pump_clock - rec.time_local).total_seconds())
