"""Refill arithmetic: merged REFILL records, recomputed expected residual, discrepancy.

docs/coding-rules.md §4 and §7.10-7.12:

- Several REFILL records in one session merge: expected and aspirated from the
  first, `added_ul` summed, `new_volume_ul` from the last (§7.10).
- The expected residual is recomputed from the chain (§7.11): start from the
  `new_volume_ul` of the latest REFILL record in an earlier session; subtract
  `infusion_rate` (µL/day; the daily total in flex mode) times the elapsed UTC
  time in fractional days, the rate changing at each interrogation (the
  interrogated rate takes effect at its interrogation time) and at each
  transmission (the end-state rate at its phase-1 time); subtract every BOLUS
  given after that refill and before this one. Exact rational arithmetic, rounded
  to the nearest µL (halves up), never below 0.
- `discrepancy_ul` = the pump's expected residual minus the aspirated volume;
  flagged when its absolute value is strictly greater than the threshold for the
  reservoir capacity (§7.12; thresholds are data, `evidence.rules`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from fractions import Fraction
from typing import Final

from evidence.rules import Rules
from parsers.model import BolusEvent, Position, RefillEvent, Session

_MICROSECONDS_PER_DAY: Final = 86_400 * 1_000_000


@dataclass(frozen=True, slots=True)
class RateInterval:
    """A stretch of time at one programmed rate, from the refill to this one."""

    start_utc: datetime
    end_utc: datetime
    rate_ul_per_day: int

    @property
    def volume_ul(self) -> Fraction:
        """Rate x elapsed time in fractional days, exactly."""
        return self.rate_ul_per_day * _days(self.end_utc - self.start_utc)


@dataclass(frozen=True, slots=True)
class Recomputation:
    """How `recomputed_expected_ul` came about, step by step (for the coder view)."""

    from_session_id: str
    start_volume_ul: int
    from_utc: datetime
    to_utc: datetime
    intervals: tuple[RateInterval, ...]
    bolus_ul: int
    expected_ul: int


@dataclass(frozen=True, slots=True)
class RefillSummary:
    """A session's REFILL records merged (§7.10), with the chain's recomputation."""

    expected_residual_ul: int
    recomputed_expected_ul: int | None
    aspirated_ul: int | None
    added_ul: int
    new_volume_ul: int
    discrepancy_ul: int | None
    threshold_ul: int
    over_threshold: bool
    record_count: int
    first_position: Position
    first_time_utc: datetime | None
    recomputation: Recomputation | None


def _days(span: timedelta) -> Fraction:
    # timedelta // timedelta is an exact integer count of microseconds.
    return Fraction(span // timedelta(microseconds=1), _MICROSECONDS_PER_DAY)


def round_half_up(value: Fraction) -> int:
    """Nearest integer, halves up (no float, no banker's rounding)."""
    return math.floor(value + Fraction(1, 2))


def _refills(session: Session) -> list[RefillEvent]:
    return [e for e in session.events if isinstance(e, RefillEvent)]


def interrogated_utc(session: Session) -> datetime:
    """When the interrogated state was read; the session start when the time is unknown."""
    return session.utc(session.interrogated_at_local) or session.session_start_utc


def programmed_utc(session: Session) -> datetime:
    """When the last transmission happened; the interrogation when the time is unknown."""
    return session.utc(session.programmed_at_local) or interrogated_utc(session)


def _event_utc(session: Session, event: RefillEvent) -> datetime:
    return session.utc(event.time_local) or interrogated_utc(session)


def _rate(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def recompute_expected(session: Session, history: Sequence[Session]) -> Recomputation | None:
    """§7.11: the expected residual at this session's first REFILL, from the chain.

    None when no earlier session holds a REFILL record, when this session has no
    REFILL record, or when no infusion rate is known anywhere in the chain.
    """
    this_refills = _refills(session)
    if not this_refills:
        return None
    start_index = next((i for i in range(len(history) - 1, -1, -1) if _refills(history[i])), None)
    if start_index is None:
        return None
    chain = [*history[start_index:], session]
    refill_session = chain[0]
    # The latest REFILL record of the refill session (§7.11 "the latest REFILL").
    start_event = _refills(refill_session)[-1]
    start_at = _event_utc(refill_session, start_event)
    end_event = this_refills[0]
    end_at = _event_utc(session, end_event)

    # Rate breakpoints, in chain order: interrogated rate at the interrogation, then
    # the end-state rate at the transmission.
    breakpoints: list[tuple[datetime, int]] = []
    for member in chain:
        at_interrogation = _rate(member.interrogated.get("infusion_rate"))
        if at_interrogation is not None:
            breakpoints.append((interrogated_utc(member), at_interrogation))
        if member.programmed is not None:
            at_programming = _rate(member.end_state.get("infusion_rate"))
            if at_programming is not None:
                breakpoints.append((programmed_utc(member), at_programming))
    if not breakpoints:
        return None
    breakpoints.sort(key=lambda bp: bp[0])  # stable: chain order breaks ties

    # The rate in force at the refill: the last breakpoint at or before it, else the first known.
    rate = breakpoints[0][1]
    for at, value in breakpoints:
        if at <= start_at:
            rate = value
    intervals: list[RateInterval] = []
    cursor = start_at
    for at, value in breakpoints:
        if at <= start_at:
            continue
        if at >= end_at:
            break
        intervals.append(RateInterval(cursor, at, rate))
        cursor, rate = at, value
    if end_at > cursor:
        intervals.append(RateInterval(cursor, end_at, rate))

    bolus_ul = 0
    for position, member in enumerate(chain):
        after_refill = position != 0
        for event in member.events:
            if member is session and event is end_event:
                break
            if position == 0 and event is start_event:
                after_refill = True
                continue
            if after_refill and isinstance(event, BolusEvent):
                bolus_ul += event.volume_ul

    consumed = sum((interval.volume_ul for interval in intervals), Fraction(0))
    remaining = Fraction(start_event.new_volume_ul) - consumed - bolus_ul
    return Recomputation(
        from_session_id=refill_session.session_id,
        start_volume_ul=start_event.new_volume_ul,
        from_utc=start_at,
        to_utc=end_at,
        intervals=tuple(intervals),
        bolus_ul=bolus_ul,
        expected_ul=max(0, round_half_up(remaining)),
    )


def reservoir_capacity(session: Session) -> int | None:
    """Capacity from the end state, else the interrogated state (§7.12)."""
    return _rate(session.end_state.get("reservoir_capacity"))


def refill_summary(
    session: Session, history: Sequence[Session], rules: Rules
) -> RefillSummary | None:
    """The session's refill evidence; None without a REFILL record."""
    refills = _refills(session)
    if not refills:
        return None
    first, last = refills[0], refills[-1]
    discrepancy = (
        None if first.aspirated_ul is None else first.expected_residual_ul - first.aspirated_ul
    )
    threshold = rules.thresholds.for_capacity(reservoir_capacity(session))
    recomputation = recompute_expected(session, history)
    return RefillSummary(
        expected_residual_ul=first.expected_residual_ul,
        recomputed_expected_ul=None if recomputation is None else recomputation.expected_ul,
        aspirated_ul=first.aspirated_ul,
        added_ul=sum(r.added_ul for r in refills),
        new_volume_ul=last.new_volume_ul,
        discrepancy_ul=discrepancy,
        threshold_ul=threshold,
        over_threshold=discrepancy is not None and abs(discrepancy) > threshold,
        record_count=len(refills),
        first_position=first.position,
        first_time_utc=session.utc(first.time_local),
        recomputation=recomputation,
    )
