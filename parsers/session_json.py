"""The normalized session as the JSON document of docs/session-json.md.

`pumptrail decode` prints it, the API serves it, replay compares it. Instants are
ISO 8601 UTC with `Z` at seconds precision; dates `YYYY-MM-DD`; parameter values in
canonical units. Positions (offsets, lines) stay out: the binary and CSV exports of
one session must print the same document but for `source_format`,
`format_version` and `warnings`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date, datetime
from typing import Any

from parsers.model import (
    AlarmEvent,
    BolusEvent,
    ChangeEvent,
    Event,
    NoteEvent,
    RefillEvent,
    Session,
)
from parsers.params import FlexStep, ParamValue

JsonValue = None | bool | int | str | dict[str, Any] | list[Any]


def utc_text(instant: datetime | None) -> str | None:
    """ISO 8601 UTC with `Z`, seconds precision; None stays None."""
    if instant is None:
        return None
    return instant.isoformat(timespec="seconds") + "Z"


def _local_to_utc_text(session: Session) -> Callable[[datetime | None], str | None]:
    """`utc_text(session.utc(local))`, remembered: the alarms read at one interrogation
    share their record time, so a session converts far fewer instants than it prints."""
    texts: dict[datetime, str | None] = {}

    def convert(local: datetime | None) -> str | None:
        if local is None:
            return None
        text = texts.get(local)
        if text is None:
            text = texts[local] = utc_text(session.utc(local))
        return text

    return convert


def value_json(value: ParamValue) -> JsonValue:
    """A parameter value in canonical JSON form (docs/session-json.md "Values")."""
    if isinstance(value, FlexStep):
        return {"start_minute": value.start_minute, "rate_ul_per_day": value.rate_ul_per_day}
    if isinstance(value, date):
        return value.isoformat()
    return value


def settings_json(settings: Mapping[str, ParamValue]) -> dict[str, JsonValue]:
    return {name: value_json(value) for name, value in settings.items()}


def event_json(
    event: Event, to_utc_text: Callable[[datetime | None], str | None]
) -> dict[str, Any]:
    """An event as docs/session-json.md writes it (`to_utc_text`: its session's converter)."""
    doc: dict[str, Any] = {"type": event.type, "time_utc": to_utc_text(event.time_local)}
    if isinstance(event, AlarmEvent):
        doc.update(
            alarm=event.alarm,
            severity=event.severity,
            state=event.state,
            occurred_at_utc=to_utc_text(event.occurred_local),
        )
    elif isinstance(event, RefillEvent):
        doc.update(
            expected_residual_ul=event.expected_residual_ul,
            aspirated_ul=event.aspirated_ul,
            added_ul=event.added_ul,
            new_volume_ul=event.new_volume_ul,
        )
    elif isinstance(event, BolusEvent):
        doc.update(kind=event.kind, volume_ul=event.volume_ul, duration_min=event.duration_min)
    elif isinstance(event, ChangeEvent):
        doc.update(
            parameter=event.parameter,
            old=value_json(event.old),
            new=value_json(event.new),
            reason=event.reason,
        )
    elif isinstance(event, NoteEvent):
        doc["text"] = event.text
    return doc


def session_document(session: Session) -> dict[str, Any]:
    """The `pumptrail decode` document for one session."""
    patient = session.patient
    status = session.pump_status
    to_utc_text = _local_to_utc_text(session)
    return {
        "source_format": session.source_format,
        "format_version": session.format_version,
        "session_id": session.session_id,
        "session_start_utc": utc_text(session.session_start_utc),
        "session_start_local": session.session_start_local.isoformat(),
        "utc_offset_min": session.utc_offset_min,
        "programmer": {
            "model": session.programmer.model,
            "serial": session.programmer.serial,
            "software": session.programmer.software,
        },
        "pump": {"model": session.pump.model, "serial": session.pump.serial},
        "operator": {"id": session.operator.id, "role": session.operator.role},
        "clinic_id": session.clinic_id,
        "patient": None
        if patient is None
        else {
            "id": patient.id,
            "name": patient.name,
            "birth_date": None if patient.birth_date is None else patient.birth_date.isoformat(),
        },
        "interrogated_at_utc": to_utc_text(session.interrogated_at_local),
        "interrogated": settings_json(session.interrogated),
        "programmed_at_utc": to_utc_text(session.programmed_at_local),
        "programmed": None if session.programmed is None else settings_json(session.programmed),
        "pump_status": None
        if status is None
        else {
            "pump_clock_offset_s": status.pump_clock_offset_s,
            "firmware": status.firmware,
            "battery": status.battery,
        },
        "events": [event_json(event, to_utc_text) for event in session.events],
        "warnings": list(session.warnings),
    }


FORMAT_SPECIFIC_KEYS = frozenset({"source_format", "format_version", "warnings"})


def comparable_document(document: Mapping[str, Any]) -> dict[str, Any]:
    """The document without the keys allowed to differ between formats (docs/coding-rules.md §7.16)."""
    return {key: value for key, value in document.items() if key not in FORMAT_SPECIFIC_KEYS}
