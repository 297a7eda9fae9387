"""Safety flags: a patient who may have gone without drug (docs/coding-rules.md §8).

- `reservoir_depleted` (§8.1, rule 17): the interrogated `reservoir_volume` is at
  most `DEPLETED_MAX_UL` (500 µL) and below the interrogated
  `low_reservoir_alarm_volume`, or an `empty_reservoir` alarm is `active` (the
  ALARM record's state 1, "active at the interrogation", docs/formats.md §5). A
  volume or alarm volume the pump did not report is not compared (§7.2: unknown
  is not changed); an empty-reservoir alarm that is only `logged` or `cleared`
  still raises `critical_alarm` (§7.14) but not this flag.
- `refill_overdue` (§8.2, rule 18): the session's local start date is later than
  the prior session's end-state `refill_date`, or, when that is not set, its
  `low_reservoir_alarm_date`. Without a prior session it is never raised.

For baclofen, withdrawal is an emergency: both flags come first in the flag list
with `critical_alarm` and `battery_eri` (§8.3, `evidence.flags`).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Final

from parsers.model import AlarmEvent, Session
from parsers.params import ParamValue

# §8.1: an interrogated reservoir volume at most this many µL can be empty.
DEPLETED_MAX_UL: Final = 500
EMPTY_RESERVOIR_ALARM: Final = "empty_reservoir"
ACTIVE: Final = "active"


def _int(value: ParamValue) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _date(value: ParamValue) -> date | None:
    if isinstance(value, datetime):
        return value.date()
    return value if isinstance(value, date) else None


def is_reservoir_depleted(session: Session) -> bool:
    """§8.1 `reservoir_depleted`: the interrogated reservoir is (nearly) empty."""
    if any(
        isinstance(e, AlarmEvent) and e.alarm == EMPTY_RESERVOIR_ALARM and e.state == ACTIVE
        for e in session.events
    ):
        return True
    volume = _int(session.interrogated.get("reservoir_volume"))
    alarm_volume = _int(session.interrogated.get("low_reservoir_alarm_volume"))
    if volume is None or alarm_volume is None:
        return False
    return volume <= DEPLETED_MAX_UL and volume < alarm_volume


def due_date(prior: Session) -> date | None:
    """The date the prior session left for the next refill (§8.2): `refill_date`, else
    `low_reservoir_alarm_date`, from its end state; None when neither is set."""
    state = prior.end_state
    planned = _date(state.get("refill_date"))
    return planned if planned is not None else _date(state.get("low_reservoir_alarm_date"))


def is_refill_overdue(session: Session, prior: Session | None) -> bool:
    """§8.2 `refill_overdue`: the session starts (local date) after the prior's due date."""
    if prior is None:
        return False
    due = due_date(prior)
    return due is not None and session.session_start_local.date() > due
