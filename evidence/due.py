"""Refills due: which pumps need a refill visit soon, overdue ones first.

A pump's schedule is what its latest session left programmed: the end state
(docs/coding-rules.md §7.1, the interrogated state overlaid with the phase-1
entries) holds `low_reservoir_alarm_date` (when the pump will start alarming) and
`refill_date` (the planned refill), both programmer-local dates
(docs/formats.md §4, category `schedule`; docs/session-json.md
dates). A pump is listed when the earlier of the two is within `due_within_days`
of today or already past.

Order: overdue pumps first, then by that date (the most overdue on top), then
withdrawal-risk pumps before others on the same date. A pump holding baclofen
(by name or alias, e.g. Lioresal, Gablofen; the drug table of `evidence.rules`)
is flagged: running out of intrathecal baclofen causes a withdrawal syndrome that
can be fatal, so a missed baclofen refill is an emergency.

Pure functions of stored session documents, dates and `Rules`; reading the latest
session of every pump from the database is `db.due`, whose `due_report` is what
`pumptrail due`, the web view and the daily job of `pumptrail run` call.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Protocol

from evidence.rules import Rules, match_key


class LatestSessionRow(Protocol):
    """A pump's latest stored session as the rule reads it (`db.due.LatestSession` is one)."""

    @property
    def pump_serial(self) -> str: ...
    @property
    def pump_model(self) -> str: ...
    @property
    def session_id(self) -> str: ...
    @property
    def session_start_utc(self) -> datetime: ...
    # The stored normalized document, JSON text (docs/session-json.md).
    @property
    def document(self) -> str: ...
    @property
    def patient_id(self) -> str | None: ...
    @property
    def patient_name(self) -> str | None: ...


# The drug whose missed refill is an emergency (name in evidence/data/drugs.toml).
WITHDRAWAL_RISK_DRUG = "baclofen"
DRUG_SLOTS = ("drug1_name", "drug2_name")


@dataclass(frozen=True, slots=True)
class RefillDue:
    """One pump due (or overdue) for a refill."""

    pump_serial: str
    pump_model: str
    session_id: str
    last_session_utc: datetime
    drugs: tuple[str, ...]
    low_reservoir_alarm_date: date | None
    refill_date: date | None
    # The earlier of the two dates: when the pump is due.
    due_date: date
    # Negative when overdue.
    days_left: int
    withdrawal_risk: bool
    patient_id: str | None
    patient_name: str | None

    @property
    def overdue(self) -> bool:
        return self.days_left < 0

    @property
    def status(self) -> str:
        return "overdue" if self.overdue else "due"

    def as_dict(self, *, with_patient: bool = False) -> dict[str, Any]:
        """The JSON object of `pumptrail due --json` (dates as YYYY-MM-DD, instants with Z)."""
        data: dict[str, Any] = {
            "pump_serial": self.pump_serial,
            "pump_model": self.pump_model,
            "status": self.status,
            "due_date": self.due_date.isoformat(),
            "days_left": self.days_left,
            "low_reservoir_alarm_date": _iso(self.low_reservoir_alarm_date),
            "refill_date": _iso(self.refill_date),
            "drugs": list(self.drugs),
            "withdrawal_risk": self.withdrawal_risk,
            "last_session_id": self.session_id,
            "last_session_utc": self.last_session_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        if with_patient:
            data["patient_id"] = self.patient_id
            data["patient_name"] = self.patient_name
        return data


def _iso(value: date | None) -> str | None:
    return None if value is None else value.isoformat()


def end_state(document: Mapping[str, Any]) -> dict[str, Any]:
    """A stored session document's end state (docs/coding-rules.md §7.1)."""
    state = dict(document.get("interrogated") or {})
    programmed = document.get("programmed")
    if isinstance(programmed, Mapping):
        state.update(programmed)
    return state


def _date(value: Any) -> date | None:
    """A docs/session-json.md date (`YYYY-MM-DD`; `null` is not set)."""
    if not isinstance(value, str):
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


def is_withdrawal_risk(drug: str, rules: Rules) -> bool:
    """Baclofen by name or alias; any name mentioning baclofen too (err on the safe side)."""
    code = rules.drug_for(drug)
    if code is not None and match_key(code.name) == WITHDRAWAL_RISK_DRUG:
        return True
    return WITHDRAWAL_RISK_DRUG in match_key(drug)


def refill_due(latest: LatestSessionRow, *, today: date, rules: Rules) -> RefillDue | None:
    """The schedule of one pump's latest session; None when it programs no date."""
    state = end_state(json.loads(latest.document))
    alarm_date = _date(state.get("low_reservoir_alarm_date"))
    refill_date = _date(state.get("refill_date"))
    known = [d for d in (alarm_date, refill_date) if d is not None]
    if not known:
        return None
    due_date = min(known)
    drugs = tuple(
        str(state[slot]).strip()
        for slot in DRUG_SLOTS
        if isinstance(state.get(slot), str) and str(state[slot]).strip()
    )
    return RefillDue(
        pump_serial=latest.pump_serial,
        pump_model=latest.pump_model,
        session_id=latest.session_id,
        last_session_utc=latest.session_start_utc,
        drugs=drugs,
        low_reservoir_alarm_date=alarm_date,
        refill_date=refill_date,
        due_date=due_date,
        days_left=(due_date - today).days,
        withdrawal_risk=any(is_withdrawal_risk(drug, rules) for drug in drugs),
        patient_id=latest.patient_id,
        patient_name=latest.patient_name,
    )


def sort_key(item: RefillDue) -> tuple[bool, date, bool, str]:
    """Overdue first, then by due date, withdrawal risk first on a date, then serial."""
    return (not item.overdue, item.due_date, not item.withdrawal_risk, item.pump_serial)


def refills_due(
    latest: Iterable[LatestSessionRow], *, today: date, within_days: int, rules: Rules
) -> list[RefillDue]:
    """Pumps whose due date is at most `within_days` away or past, in report order."""
    found = []
    for row in latest:
        item = refill_due(row, today=today, rules=rules)
        if item is not None and item.days_left <= within_days:
            found.append(item)
    return sorted(found, key=sort_key)
