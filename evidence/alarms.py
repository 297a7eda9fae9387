"""Alarms and battery state: what goes to the top of the evidence.

docs/coding-rules.md §4 and §7.14: an empty-reservoir, end-of-service, motor-stall or
memory-error alarm, or any alarm of critical severity, in any state (active,
logged or cleared), is critical; so is a battery at end of service
(`critical_alarm`). A battery at ERI or EOS, or an elective-replacement alarm,
gives `battery_eri`. Alarms are listed critical first, then by severity, file
order within each rank.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

from parsers.model import AlarmEvent, Position, Session

CRITICAL_ALARMS: Final = frozenset(
    {"empty_reservoir", "end_of_service", "motor_stall", "pump_memory_error"}
)
_SEVERITY_RANK: Final = {"critical": 0, "non_critical": 1, "informational": 2}


@dataclass(frozen=True, slots=True)
class AlarmEntry:
    alarm: str
    severity: str
    state: str
    critical: bool
    time_utc: datetime | None
    occurred_at_utc: datetime | None
    position: Position


def is_critical(event: AlarmEvent) -> bool:
    return event.alarm in CRITICAL_ALARMS or event.severity == "critical"


def alarm_entries(session: Session) -> tuple[AlarmEntry, ...]:
    """The session's alarms, critical first (§4)."""
    entries = [
        AlarmEntry(
            alarm=event.alarm,
            severity=event.severity,
            state=event.state,
            critical=is_critical(event),
            time_utc=session.utc(event.time_local),
            occurred_at_utc=session.utc(event.occurred_local),
            position=event.position,
        )
        for event in session.events
        if isinstance(event, AlarmEvent)
    ]
    # sorted() is stable: file order within a rank.
    return tuple(
        sorted(
            entries,
            key=lambda e: 0 if e.critical else 1 + _SEVERITY_RANK.get(e.severity, 2),
        )
    )


def battery(session: Session) -> str | None:
    return None if session.pump_status is None else session.pump_status.battery


def has_critical_alarm(session: Session) -> bool:
    """§7.14 `critical_alarm`."""
    return battery(session) == "eos" or any(
        is_critical(e) for e in session.events if isinstance(e, AlarmEvent)
    )


def has_battery_eri(session: Session) -> bool:
    """§7.14 `battery_eri`."""
    return battery(session) in ("eri", "eos") or any(
        isinstance(e, AlarmEvent) and e.alarm == "elective_replacement" for e in session.events
    )
