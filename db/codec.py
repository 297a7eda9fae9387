"""A `Session` to stored rows and back.

Storing: the session's normalized document (docs/session-json.md, `parsers.session_json`)
goes into `sessions.document`, its snapshots and events into `setting_values` and
`events` rows, with what the document leaves out (each event's byte offset or CSV
line, the raw pump-clock times) in their own columns.

Loading: evidence is re-derived from stored sessions without re-decoding the raw
files, so a `parsers.model.Session` is rebuilt from the document.
Parameter values get their Python types back from the parameter table
(docs/formats.md §4): DATE `YYYY-MM-DD` to `date`, FLEX_STEP objects to
`FlexStep`, enumeration words stay words. Local instants are UTC plus the session's
offset (docs/formats.md §1). Without the event rows a rebuilt session has no file
positions; with them it equals the decoded session.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from types import MappingProxyType
from typing import Any

from parsers.errors import PumptrailError
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
)
from parsers.params import (
    PARAMS_BY_NAME,
    PHASE_INTERROGATED,
    PHASE_PROGRAMMED,
    FlexStep,
    ParamValue,
    ValueType,
)

# Position given to events of a session rebuilt from its document alone.
NO_POSITION = Position("offset", 0)


class StoredDocumentError(PumptrailError, ValueError):
    """Raised when a stored document, rebuilt into a `Session`, lacks a field or has one
    of the wrong shape (docs/session-json.md)."""


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def dumps(document: Any) -> str:
    """JSON text as stored: compact, UTF-8 kept, key order kept."""
    return _ENCODER.encode(document)


def loads(text: str) -> Any:
    return json.loads(text)


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """What the `events` table adds to the document's event: where, and the raw pump clock."""

    position: Position
    pump_clock_local: datetime | None


# ---------------------------------------------------------------------------
# Session -> rows


def has_refill(session: Session) -> bool:
    """At least one REFILL record (docs/coding-rules.md §7.11 starts from the latest one)."""
    return any(isinstance(event, RefillEvent) for event in session.events)


def session_columns(session: Session, document: Mapping[str, Any]) -> dict[str, Any]:
    """The `sessions` columns that come from the session itself (not pump, source, times)."""
    patient = session.patient
    status = session.pump_status
    return {
        "session_id": session.session_id,
        "session_start_utc": session.session_start_utc,
        "session_start_local": session.session_start_local,
        "utc_offset_min": session.utc_offset_min,
        "pump_model": session.pump.model,
        "programmer_model": session.programmer.model,
        "programmer_serial": session.programmer.serial,
        "programmer_software": session.programmer.software,
        "operator_id": session.operator.id,
        "operator_role": session.operator.role,
        "clinic_id": session.clinic_id,
        "patient_id": None if patient is None else patient.id,
        "patient_name": None if patient is None else patient.name,
        "patient_birth_date": None if patient is None else patient.birth_date,
        "has_refill": has_refill(session),
        "pump_clock_local": None if status is None else status.pump_clock_local,
        "source_format": session.source_format,
        "format_version": session.format_version,
        "document": dumps(document),
    }


def setting_rows(
    session_pk: int, session: Session, document: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """`setting_values` rows: phase 0 (interrogated) and phase 1 (programmed) entries."""
    phases = [(PHASE_INTERROGATED, document["interrogated"])]
    if document.get("programmed") is not None:
        phases.append((PHASE_PROGRAMMED, document["programmed"]))
    return [
        {"session_pk": session_pk, "phase": phase, "param": name, "value": dumps(value)}
        for phase, values in phases
        for name, value in values.items()
    ]


def event_rows(
    session_pk: int, session: Session, document: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """`events` rows, one per event in file order, the event document in `data`."""
    rows: list[dict[str, Any]] = []
    for seq, (event, doc) in enumerate(zip(session.events, document["events"], strict=True)):
        rows.append(
            {
                "session_pk": session_pk,
                "seq": seq,
                "type": event.type,
                "time_utc": session.utc(event.time_local),
                "position_kind": event.position.kind,
                "position_value": event.position.value,
                "pump_clock_local": event.occurred_pump_clock
                if isinstance(event, AlarmEvent)
                else None,
                "data": dumps(doc),
            }
        )
    return rows


# ---------------------------------------------------------------------------
# Document -> Session


def _fail(what: str, found: object) -> StoredDocumentError:
    return StoredDocumentError(f"stored document: {what}, found {found!r}")


def _instant(text: object, what: str) -> datetime | None:
    """ISO 8601 UTC `...Z` (docs/session-json.md "Values") to a naive UTC datetime."""
    if text is None:
        return None
    if not isinstance(text, str) or not text.endswith("Z"):
        raise _fail(f"{what}: expected an ISO 8601 UTC instant", text)
    try:
        return datetime.fromisoformat(text[:-1])
    except ValueError as exc:
        raise _fail(f"{what}: expected an ISO 8601 UTC instant", text) from exc


def _date(text: object, what: str) -> date | None:
    if text is None:
        return None
    if not isinstance(text, str):
        raise _fail(f"{what}: expected YYYY-MM-DD", text)
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise _fail(f"{what}: expected YYYY-MM-DD", text) from exc


def _int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(f"{what}: expected an integer", value)
    return value


def _opt_int(value: object, what: str) -> int | None:
    return None if value is None else _int(value, what)


def _str(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise _fail(f"{what}: expected text", value)
    return value


def value_from_json(name: str, value: Any) -> ParamValue:
    """A parameter value from its JSON form, typed by the parameter table (§4)."""
    definition = PARAMS_BY_NAME.get(name)
    if definition is None or value is None:
        return value  # type: ignore[no-any-return]
    kind = definition.value_type
    if kind is ValueType.DATE:
        return _date(value, name)
    if kind is ValueType.FLEX_STEP:
        if not isinstance(value, dict):
            raise _fail(f"{name}: expected a flex step object", value)
        return FlexStep(
            _int(value.get("start_minute"), f"{name}.start_minute"),
            _int(value.get("rate_ul_per_day"), f"{name}.rate_ul_per_day"),
        )
    if kind is ValueType.BOOL:
        if not isinstance(value, bool):
            raise _fail(f"{name}: expected true or false", value)
        return value
    if kind in (ValueType.TEXT, ValueType.ENUM):
        return _str(value, name)
    return _int(value, name)


def settings_from_json(settings: Mapping[str, Any]) -> Mapping[str, ParamValue]:
    typed = {name: value_from_json(name, value) for name, value in settings.items()}
    return MappingProxyType(typed)


def session_from_document(
    document: Mapping[str, Any],
    *,
    source: str = "",
    stored_events: Sequence[StoredEvent] | None = None,
    pump_clock_local: datetime | None = None,
) -> Session:
    """Rebuild the `Session` a stored document was made from.

    `stored_events` (from the `events` rows, in order) restore each event's file
    position and raw pump-clock time; without them positions are `NO_POSITION`
    and an alarm's pump-clock time is recomputed from the clock offset.
    """
    try:
        offset_min = _int(document["utc_offset_min"], "utc_offset_min")
        shift = timedelta(minutes=offset_min)

        def local(text: object, what: str) -> datetime | None:
            instant = _instant(text, what)
            return None if instant is None else instant + shift

        start_local = local(document["session_start_utc"], "session_start_utc")
        if start_local is None:
            raise _fail("session_start_utc: expected an instant", None)
        programmer = document["programmer"]
        pump = document["pump"]
        operator = document["operator"]
        patient_doc = document.get("patient")
        status_doc = document.get("pump_status")
        clock_offset = (
            None
            if status_doc is None
            else _opt_int(status_doc.get("pump_clock_offset_s"), "pump_status.pump_clock_offset_s")
        )
        event_docs = document["events"]
        if stored_events is not None and len(stored_events) != len(event_docs):
            raise _fail(
                f"events: {len(event_docs)} in the document, {len(stored_events)} rows", None
            )
        events: list[Event] = []
        for index, event_doc in enumerate(event_docs):
            stored = None if stored_events is None else stored_events[index]
            events.append(_event(event_doc, local, clock_offset, stored))
        programmed = document.get("programmed")
        return Session(
            source=source,
            source_format=document["source_format"],
            format_version=_str(document["format_version"], "format_version"),
            session_id=_str(document["session_id"], "session_id"),
            session_start_local=start_local,
            utc_offset_min=offset_min,
            programmer=Programmer(
                _str(programmer["model"], "programmer.model"),
                _str(programmer["serial"], "programmer.serial"),
                _str(programmer["software"], "programmer.software"),
            ),
            pump=Pump(_str(pump["model"], "pump.model"), _str(pump["serial"], "pump.serial")),
            operator=Operator(
                _str(operator["id"], "operator.id"), _str(operator["role"], "operator.role")
            ),
            clinic_id=_str(document["clinic_id"], "clinic_id"),
            patient=None
            if patient_doc is None
            else Patient(
                _str(patient_doc["id"], "patient.id"),
                _str(patient_doc["name"], "patient.name"),
                _date(patient_doc.get("birth_date"), "patient.birth_date"),
            ),
            interrogated_at_local=local(document.get("interrogated_at_utc"), "interrogated_at_utc"),
            interrogated=settings_from_json(document["interrogated"]),
            programmed_at_local=local(document.get("programmed_at_utc"), "programmed_at_utc"),
            programmed=None if programmed is None else settings_from_json(programmed),
            pump_status=None
            if status_doc is None
            else PumpStatus(
                pump_clock_local,
                clock_offset,
                _str(status_doc["firmware"], "pump_status.firmware"),
                _str(status_doc["battery"], "pump_status.battery"),
            ),
            events=tuple(events),
            warnings=tuple(_str(w, "warnings[]") for w in document.get("warnings", ())),
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise StoredDocumentError(f"stored document: missing or malformed field: {exc}") from exc


def _event(
    doc: Mapping[str, Any],
    local: Any,
    clock_offset: int | None,
    stored: StoredEvent | None,
) -> Event:
    kind = doc["type"]
    time_local = local(doc.get("time_utc"), "events[].time_utc")
    position = NO_POSITION if stored is None else stored.position
    if kind == "alarm":
        occurred_local = local(doc.get("occurred_at_utc"), "alarm.occurred_at_utc")
        if stored is not None:
            pump_clock = stored.pump_clock_local
        elif occurred_local is not None and clock_offset is not None:
            # docs/formats.md §5: corrected = pump clock - offset.
            pump_clock = occurred_local + timedelta(seconds=clock_offset)
        else:
            pump_clock = None
        return AlarmEvent(
            time_local,
            position,
            _str(doc["alarm"], "alarm.alarm"),
            _str(doc["severity"], "alarm.severity"),
            _str(doc["state"], "alarm.state"),
            pump_clock,
            occurred_local,
        )
    if kind == "refill":
        return RefillEvent(
            time_local,
            position,
            _int(doc["expected_residual_ul"], "refill.expected_residual_ul"),
            _opt_int(doc.get("aspirated_ul"), "refill.aspirated_ul"),
            _int(doc["added_ul"], "refill.added_ul"),
            _int(doc["new_volume_ul"], "refill.new_volume_ul"),
        )
    if kind == "bolus":
        return BolusEvent(
            time_local,
            position,
            _str(doc["kind"], "bolus.kind"),
            _int(doc["volume_ul"], "bolus.volume_ul"),
            _int(doc["duration_min"], "bolus.duration_min"),
        )
    if kind == "change":
        parameter = _str(doc["parameter"], "change.parameter")
        return ChangeEvent(
            time_local,
            position,
            parameter,
            value_from_json(parameter, doc.get("old")),
            value_from_json(parameter, doc.get("new")),
            _str(doc["reason"], "change.reason"),
        )
    if kind == "note":
        return NoteEvent(time_local, position, _str(doc["text"], "note.text"))
    raise _fail("events[].type: expected alarm, refill, bolus, change or note", kind)
