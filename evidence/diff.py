"""The two diffs of a session's settings: in the session, and since the prior session.

docs/coding-rules.md §3 and §7.1-7.4, §7.6, §7.9, §7.14:

- In session: the interrogated state against the end state (the interrogated
  state overlaid with the phase-1 entries; without a phase-1 snapshot nothing
  reached the pump, so the end state is the interrogated state and every logged
  PARAM_CHANGE is `reverted_in_session`).
- Between sessions: the prior session's end state against this session's
  interrogated state, every setting but `reservoir_volume`; each difference is a
  change made outside recorded sessions.

Values compare exactly, except drug names (trimmed, case-insensitive). A setting
known on one side only is not compared (unknown is not changed), except a phase-1
write of a setting never interrogated, whose `before` is the old value of its
first PARAM_CHANGE, or unknown.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Final, Literal

from evidence.rules import match_key
from parsers.model import ChangeEvent, Position, RefillEvent, Session
from parsers.params import PARAM_ORDER, PARAMS_BY_NAME, ParamValue

When = Literal["in_session", "between_sessions", "reverted_in_session"]

IN_SESSION: Final = "in_session"
BETWEEN_SESSIONS: Final = "between_sessions"
REVERTED_IN_SESSION: Final = "reverted_in_session"

CONCENTRATION_ONLY: Final = "concentration_only"
UNLOGGED_CHANGE: Final = "unlogged_change"
CHANGED_OUTSIDE_SESSIONS: Final = "changed_outside_sessions"
# Change flags in the order docs/session-json.md lists them.
CHANGE_FLAG_ORDER: Final = (CONCENTRATION_ONLY, UNLOGGED_CHANGE, CHANGED_OUTSIDE_SESSIONS)

REFILL_BOOKKEEPING: Final = "refill_bookkeeping"
DRUG_NAMES: Final = frozenset({"drug1_name", "drug2_name"})
# drugN_concentration -> drugN_daily_dose, for `concentration_only` (§7.9).
CONCENTRATION_DOSE: Final = MappingProxyType(
    {"drug1_concentration": "drug1_daily_dose", "drug2_concentration": "drug2_daily_dose"}
)


@dataclass(frozen=True, slots=True)
class Change:
    """One setting that differs (or was changed and changed back), with its provenance.

    `before_known` is False when `before` is null because nothing said the value
    (a phase-1 write of a setting never interrogated and never logged), as
    opposed to a DATE that is "not set". `changed_at_local`/`position` name the
    parameter's last logged PARAM_CHANGE (None when none), for the coder view.
    """

    parameter: str
    category: str
    before: ParamValue
    after: ParamValue
    when: When
    reason: str | None
    flags: tuple[str, ...]
    before_known: bool = True
    logged_changes: int = 0
    changed_at_local: datetime | None = None
    changed_at_utc: datetime | None = None
    position: Position | None = None


def same_value(name: str, a: ParamValue, b: ParamValue) -> bool:
    """§7.2: exact comparison, except drug names (trimmed, case-insensitive)."""
    if name in DRUG_NAMES and isinstance(a, str) and isinstance(b, str):
        return match_key(a) == match_key(b)
    # Exact: a value of another type is another value (True is not 1).
    return type(a) is type(b) and a == b


def refill_accounts_for(session: Session, value: ParamValue) -> bool:
    """Whether a REFILL's new volume equals a reservoir_volume value (§7.3, §7.14)."""
    if isinstance(value, bool) or not isinstance(value, int):
        return False
    return any(
        isinstance(event, RefillEvent) and event.new_volume_ul == value for event in session.events
    )


def _order(change: Change) -> int:
    return PARAM_ORDER[change.parameter]


def in_session_changes(session: Session) -> tuple[Change, ...]:
    """Interrogated vs end state, plus changes logged and undone (§7.1-7.3, §7.9, §7.14)."""
    interrogated = session.interrogated
    programmed = session.programmed
    end_state = session.end_state
    logged: dict[str, list[ChangeEvent]] = {}
    for event in session.events:
        if isinstance(event, ChangeEvent) and event.parameter in PARAMS_BY_NAME:
            logged.setdefault(event.parameter, []).append(event)

    names = set(interrogated) | set(programmed or ()) | set(logged)
    changes: list[Change] = []
    for name in sorted((n for n in names if n in PARAMS_BY_NAME), key=PARAM_ORDER.__getitem__):
        records = logged.get(name, [])
        if name in interrogated:
            before: ParamValue = interrogated[name]
            before_known = True
        elif records:
            # Never interrogated: the first PARAM_CHANGE says what it was (§7.2).
            before, before_known = records[0].old, True
        else:
            before, before_known = None, False
        if programmed is not None and name in programmed:
            after: ParamValue = programmed[name]
        else:
            # Not transmitted, or omitted from phase 1: the pump kept its value (§7.1, §3 rule 4).
            after = before
        if before_known and same_value(name, before, after):
            if not records:
                continue
            when: When = REVERTED_IN_SESSION
        else:
            when = IN_SESSION

        last = records[-1] if records else None
        reason: str | None = None
        refill_accounted = name == "reservoir_volume" and refill_accounts_for(session, after)
        if last is not None:
            reason = last.reason
        elif when == IN_SESSION and refill_accounted:
            reason = REFILL_BOOKKEEPING

        flags: list[str] = []
        if when == IN_SESSION:
            dose_name = CONCENTRATION_DOSE.get(name)
            if dose_name is not None:
                dose_before = interrogated.get(dose_name)
                dose_after = end_state.get(dose_name)
                if (
                    dose_name in interrogated
                    and dose_name in end_state
                    and same_value(dose_name, dose_before, dose_after)
                ):
                    flags.append(CONCENTRATION_ONLY)
            ends_logged = any(same_value(name, r.new, after) for r in records)
            if not ends_logged and not refill_accounted:
                flags.append(UNLOGGED_CHANGE)
                # No logged change explains the end value, whatever earlier ones said (§7.3).
                reason = None

        changes.append(
            Change(
                parameter=name,
                category=PARAMS_BY_NAME[name].category,
                before=before,
                after=after,
                when=when,
                reason=reason,
                flags=tuple(flags),
                before_known=before_known,
                logged_changes=len(records),
                changed_at_local=None if last is None else last.time_local,
                changed_at_utc=None if last is None else session.utc(last.time_local),
                position=None if last is None else last.position,
            )
        )
    return tuple(changes)


def between_session_changes(session: Session, prior: Session | None) -> tuple[Change, ...]:
    """Prior end state vs this interrogated state, all but reservoir_volume (§7.6)."""
    if prior is None:
        return ()
    prior_end = prior.end_state
    current = session.interrogated
    changes: list[Change] = []
    for name in sorted(
        (n for n in current if n in prior_end and n in PARAMS_BY_NAME),
        key=PARAM_ORDER.__getitem__,
    ):
        if name == "reservoir_volume" or same_value(name, prior_end[name], current[name]):
            continue
        changes.append(
            Change(
                parameter=name,
                category=PARAMS_BY_NAME[name].category,
                before=prior_end[name],
                after=current[name],
                when=BETWEEN_SESSIONS,
                reason=None,
                flags=(CHANGED_OUTSIDE_SESSIONS,),
            )
        )
    return tuple(changes)


def all_changes(session: Session, prior: Session | None) -> tuple[Change, ...]:
    """§7.4: between-sessions entries first, then in-session and reverted ones, by table order."""
    between = sorted(between_session_changes(session, prior), key=_order)
    inside = sorted(in_session_changes(session), key=_order)
    return (*between, *inside)
