"""Server-rendered SVG charts of a pump's timeline: daily dose and reservoir volume.

No JavaScript, no library: the page embeds the SVG text. Every string placed in
the markup is escaped here, and the result is handed to Jinja2 as `Markup`.

- Daily dose (µg/day) per drug is a step line: the end state of each session
  (docs/coding-rules.md §7.1) holds from the transmission (or the interrogation,
  without one) until the next session changes it.
- Reservoir volume (mL) is a sawtooth: the interrogated volume, then the volume
  the session left (after a refill, the new volume), joined by straight lines
  between sessions (the pump drains at the programmed rate in between). The
  low-reservoir alarm volume is the dashed step line.
- A session flagged `reservoir_depleted` or `refill_overdue` (docs/coding-rules.md
  §8.3) is marked on both charts by a solid red line with a triangle on top,
  linked to its evidence and titled with the flags (`SAFETY_FLAGS`).

Times on the axis are the programmer's local times of each session.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Final

from markupsafe import Markup, escape

from web.present import end_state, local_time, ml

WIDTH: Final = 960
HEIGHT: Final = 250
LEFT: Final = 70
RIGHT: Final = 20
TOP: Final = 40
BOTTOM: Final = 34
SERIES_CLASSES: Final = ("s1", "s2", "s3")
# The safety flags that mark a pump's timeline (docs/coding-rules.md §8.3).
SAFETY_FLAGS: Final = ("reservoir_depleted", "refill_overdue")


@dataclass(frozen=True, slots=True)
class Point:
    at: datetime
    value: int
    session_id: str
    label: str


@dataclass(frozen=True, slots=True)
class SafetyMark:
    """A session carrying a safety flag: where it sits on the time axis, and its flags."""

    at: datetime
    session_id: str
    flags: tuple[str, ...]


def safety_marks(entries: Sequence[Any]) -> list[SafetyMark]:
    """The sessions flagged `reservoir_depleted` or `refill_overdue`, in entry order."""
    marks = []
    for entry in entries:
        flags = tuple(f for f in SAFETY_FLAGS if f in entry.flags)
        if flags:
            marks.append(SafetyMark(entry.start_local, entry.session_id, flags))
    return marks


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    css: str
    points: list[Point]
    step: bool
    dashed: bool = False


def _at(entry_doc: Mapping[str, Any], key: str, offset: int) -> datetime | None:
    return local_time(entry_doc.get(key), offset)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def dose_series(entries: Sequence[Any]) -> list[Series]:
    """Daily dose per drug slot (drug1, drug2), from each session's end state."""
    series = []
    for slot, css in (("drug1", SERIES_CLASSES[0]), ("drug2", SERIES_CLASSES[1])):
        points: list[Point] = []
        names: list[str] = []
        for entry in entries:
            doc = entry.document
            offset = int(doc.get("utc_offset_min") or 0)
            state = end_state(doc) or {}
            dose = _int(state.get(f"{slot}_daily_dose"))
            if dose is None:
                continue
            at = _at(doc, "programmed_at_utc", offset) or _at(doc, "interrogated_at_utc", offset)
            at = at or entry.start_local
            name = str(state.get(f"{slot}_name") or slot)
            if name not in names:
                names.append(name)
            points.append(Point(at, dose, entry.session_id, f"{name}: {dose:,} µg/day"))
        if points:
            series.append(Series(" / ".join(names), css, points, step=True))
    return series


def reservoir_series(entries: Sequence[Any]) -> list[Series]:
    """Reservoir volume (interrogated, then left by the session) and the alarm volume."""
    volume: list[Point] = []
    alarm: list[Point] = []
    for entry in entries:
        doc = entry.document
        offset = int(doc.get("utc_offset_min") or 0)
        interrogated = doc.get("interrogated") or {}
        state = end_state(doc) or {}
        read_at = _at(doc, "interrogated_at_utc", offset) or entry.start_local
        left_at = _at(doc, "programmed_at_utc", offset) or read_at
        before = _int(interrogated.get("reservoir_volume"))
        after = _int(state.get("reservoir_volume"))
        if before is not None:
            volume.append(Point(read_at, before, entry.session_id, f"interrogated {ml(before)}"))
        if after is not None and (after != before or left_at != read_at):
            volume.append(Point(left_at, after, entry.session_id, f"after the session {ml(after)}"))
        threshold = _int(state.get("low_reservoir_alarm_volume"))
        if threshold is not None:
            alarm.append(Point(left_at, threshold, entry.session_id, f"alarm at {ml(threshold)}"))
    series = []
    if volume:
        series.append(Series("reservoir volume", SERIES_CLASSES[0], volume, step=False))
    if alarm:
        series.append(
            Series("low-reservoir alarm volume", SERIES_CLASSES[2], alarm, step=True, dashed=True)
        )
    return series


# ---------------------------------------------------------------------------
# Scales and ticks


def nice_step(span: float, ticks: int = 5) -> float:
    """A 1-2-5 step that cuts `span` into about `ticks` parts."""
    if span <= 0:
        return 1.0
    raw = span / ticks
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if raw <= factor * power:
            return float(factor * power)
    return float(10 * power)


def _month_start(day: date) -> date:
    return day.replace(day=1)


def _add_months(day: date, months: int) -> date:
    index = day.year * 12 + day.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def time_ticks(start: datetime, end: datetime) -> list[tuple[datetime, str]]:
    """Tick instants and labels: weeks for short spans, months, quarters or years for long."""
    days = (end - start).days
    ticks: list[tuple[datetime, str]] = []
    if days <= 70:
        day = start.date() + timedelta(days=(7 - start.weekday()) % 7)
        while datetime.combine(day, datetime.min.time()) <= end:
            ticks.append((datetime.combine(day, datetime.min.time()), day.strftime("%d %b")))
            day += timedelta(days=7)
        return ticks
    step = 1 if days <= 400 else 3 if days <= 1200 else 12
    month = _add_months(_month_start(start.date()), 1)
    while datetime.combine(month, datetime.min.time()) <= end:
        if step == 12 and month.month != 1:
            month = _add_months(month, 1)
            continue
        if step == 3 and (month.month - 1) % 3:
            month = _add_months(month, 1)
            continue
        label = month.strftime("%b %Y") if step > 1 or month.month == 1 else month.strftime("%b")
        ticks.append((datetime.combine(month, datetime.min.time()), label))
        month = _add_months(month, step)
    return ticks


class _Frame:
    def __init__(self, start: datetime, end: datetime, top: float) -> None:
        self.start = start
        self.span_s = max((end - start).total_seconds(), 1.0)
        self.top = top
        self.plot_w = WIDTH - LEFT - RIGHT
        self.plot_h = HEIGHT - TOP - BOTTOM

    def x(self, at: datetime) -> float:
        return LEFT + (at - self.start).total_seconds() / self.span_s * self.plot_w

    def y(self, value: float) -> float:
        return TOP + self.plot_h - value / self.top * self.plot_h


def _fmt(value: float) -> str:
    return f"{value:.1f}"


def _path(points: Iterable[tuple[float, float]]) -> str:
    return " ".join(
        f"{'M' if i == 0 else 'L'}{_fmt(x)},{_fmt(y)}" for i, (x, y) in enumerate(points)
    )


def render_chart(
    *,
    title: str,
    unit: str,
    series: Sequence[Series],
    start: datetime,
    end: datetime,
    value_text: Any = None,
    session_href: str = "/sessions/{}",
    refills: Sequence[datetime] = (),
    marks: Sequence[SafetyMark] = (),
) -> Markup:
    """One line chart as inline SVG; `value_text(v)` labels the y ticks."""
    values = [p.value for s in series for p in s.points]
    top_value = max(values) if values else 1
    step = nice_step(top_value * 1.1 or 1)
    top = step * math.ceil((top_value * 1.1 or 1) / step)
    frame = _Frame(start, end, top)
    label = value_text or (lambda v: f"{int(v):,}")
    parts: list[str] = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
    ]
    # Grid and y ticks.
    tick = 0.0
    while tick <= top + 1e-9:
        y = frame.y(tick)
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{_fmt(y)}" y2="{_fmt(y)}"/>'
        )
        parts.append(
            f'<text class="tick" x="{LEFT - 8}" y="{_fmt(y + 4)}" text-anchor="end">'
            f"{escape(label(tick))}</text>"
        )
        tick += step
    parts.append(
        f'<text class="unit" x="{LEFT - 8}" y="{TOP - 12}" text-anchor="end">{escape(unit)}</text>'
    )
    # Time ticks.
    base_y = frame.y(0)
    for at, text in time_ticks(start, end):
        x = frame.x(at)
        parts.append(
            f'<line class="xtick" x1="{_fmt(x)}" x2="{_fmt(x)}" y1="{_fmt(base_y)}" '
            f'y2="{_fmt(base_y + 5)}"/>'
        )
        parts.append(
            f'<text class="tick" x="{_fmt(x)}" y="{_fmt(base_y + 18)}" text-anchor="middle">'
            f"{escape(text)}</text>"
        )
    parts.append(
        f'<line class="axis" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{_fmt(base_y)}" '
        f'y2="{_fmt(base_y)}"/>'
    )
    for at in refills:
        x = frame.x(at)
        parts.append(
            f'<line class="refill" x1="{_fmt(x)}" x2="{_fmt(x)}" y1="{TOP}" y2="{_fmt(base_y)}">'
            f"<title>refill {escape(at.strftime('%Y-%m-%d'))}</title></line>"
        )
    for mark in marks:
        x = frame.x(mark.at)
        words = ", ".join(f.replace("_", " ") for f in mark.flags)
        tip = f"{mark.at:%Y-%m-%d} {words}"
        parts.append(
            f'<a class="safety-link" href="{escape(session_href.format(mark.session_id))}" '
            f'data-flags="{escape(" ".join(mark.flags))}">'
            f'<line class="safety" x1="{_fmt(x)}" x2="{_fmt(x)}" y1="{TOP}" y2="{_fmt(base_y)}"/>'
            f'<path class="safety-mark" d="M{_fmt(x - 6)},{TOP - 2} L{_fmt(x + 6)},{TOP - 2} '
            f'L{_fmt(x)},{TOP + 8} Z"><title>{escape(tip)}</title></path></a>'
        )
    # Series.
    for s in series:
        coords: list[tuple[float, float]] = []
        for index, point in enumerate(s.points):
            x, y = frame.x(point.at), frame.y(point.value)
            if s.step and index > 0:
                coords.append((x, coords[-1][1]))
            coords.append((x, y))
        if s.step and s.points:
            coords.append((frame.x(end), coords[-1][1]))
        dash = ' stroke-dasharray="6 4"' if s.dashed else ""
        parts.append(f'<path class="line {s.css}" d="{_path(coords)}"{dash}/>')
        if s.dashed:
            continue
        for point in s.points:
            x, y = frame.x(point.at), frame.y(point.value)
            tip = f"{point.at:%Y-%m-%d %H:%M} {point.label}"
            parts.append(
                f'<a href="{escape(session_href.format(point.session_id))}">'
                f'<circle class="dot {s.css}" cx="{_fmt(x)}" cy="{_fmt(y)}" r="4">'
                f"<title>{escape(tip)}</title></circle></a>"
            )
    # Legend.
    x = LEFT + 8
    for s in series:
        parts.append(
            f'<rect class="key {s.css}" x="{x}" y="{TOP - 20}" width="14" height="4"/>'
            f'<text class="legend" x="{x + 20}" y="{TOP - 14}">{escape(s.name)}</text>'
        )
        x += 30 + 7 * len(s.name)
    parts.append("</svg>")
    # Every text and attribute value above went through escape().
    return Markup("".join(parts))  # noqa: S704


def timeline_charts(entries: Sequence[Any], *, session_href: str = "/sessions/{}") -> list[Markup]:
    """The dose chart and the reservoir chart of a pump's sessions (empty when none)."""
    if not entries:
        return []
    starts = [e.start_local for e in entries]
    first, last = min(starts), max(starts)
    span = max(last - first, timedelta(days=14))
    start = first - span * 0.04
    end = last + span * 0.06
    refills = [e.start_local for e in entries if e.has_refill]
    marks = safety_marks(entries)
    charts = []
    doses = dose_series(entries)
    if doses:
        charts.append(
            render_chart(
                title="Daily dose (µg/day) programmed at each session",
                unit="µg/day",
                series=doses,
                start=start,
                end=end,
                session_href=session_href,
                refills=refills,
                marks=marks,
            )
        )
    reservoir = reservoir_series(entries)
    if reservoir:
        charts.append(
            render_chart(
                title="Reservoir volume (mL): interrogated and after each session",
                unit="mL",
                series=reservoir,
                start=start,
                end=end,
                value_text=lambda v: format((Decimal(round(v)) / Decimal(1000)).normalize(), "f"),
                session_href=session_href,
                refills=refills,
                marks=marks,
            )
        )
    return charts
