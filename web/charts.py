"""Weekly figures as words and as bar charts drawn on the server in inline SVG (no script).

A count from 1 to 9 is never shown as such (docs/POLICY.md, "Dashboards"): its words are
"fewer than 10", and its bar is a dashed band of one fixed height drawn on a scale that such
counts never set, so that neither the page's text nor its drawing tells 3 from 7.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from markupsafe import Markup, escape

from node.community_figures import Series, Unit, Week
from web.templating import SMALL_COUNT_BELOW

FEWER = f"fewer than {SMALL_COUNT_BELOW}"
WIDTH, HEIGHT = 360, 180
LEFT, RIGHT, TOP, BOTTOM = 56, 352, 16, 142  # the plot area inside the view box
BAND = 8  # the height of a "fewer than 10" band
BAR_GAP = 0.3  # of each week's slot, between bars
FONT = 14
INK, ACCENT, MUTED = "#1d2433", "#0b5cad", "#5a6478"


def count_text(count: float) -> str:
    """A count as a page shows it: 0, "fewer than 10", or the number (with thousands
    separators)."""
    whole = round(count)
    if 0 < whole < SMALL_COUNT_BELOW:
        return FEWER
    return f"{whole:,}"


def duration_text(seconds: float) -> str:
    """A duration in the two largest units people use for it: "3 hours 20 minutes"."""
    minutes = round(seconds / 60)
    if minutes < 60:
        return _units(minutes, "minute") if minutes else "less than a minute"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return _units(hours, "hour") + (f" {_units(minutes, 'minute')}" if minutes else "")
    days, hours = divmod(hours, 24)
    return _units(days, "day") + (f" {_units(hours, 'hour')}" if hours else "")


def _units(number: int, unit: str) -> str:
    return f"{number} {unit}{'s' if number != 1 else ''}"


# What a week without a value reads (a median of no threads, an age of no report).
NOTHING = {
    "first_reply": "no answered thread",
    "oldest_report": "none open",
    "median_report": "none open",
}


def value_text(series: Series, value: float | None) -> str:
    if value is None:
        return NOTHING.get(series.key, "nothing to measure")
    return count_text(value) if series.unit == Unit.COUNT else duration_text(value)


def week_label(week: Week) -> datetime:
    """The day a week is named by: its last (weeks end at the clock's now, exclusive)."""
    return week.end


@dataclass(frozen=True)
class _Bar:
    x: float
    height: float
    small: bool  # a "fewer than 10" band


def _bars(series: Series, top: float | None) -> list[_Bar]:
    slot = (RIGHT - LEFT) / len(series.values)
    plot = BOTTOM - TOP
    bars = []
    for index, value in enumerate(series.values):
        x = LEFT + index * slot + slot * BAR_GAP / 2
        if value is None or value <= 0:
            continue
        if series.unit == Unit.COUNT and round(value) < SMALL_COUNT_BELOW:
            bars.append(_Bar(x, BAND, True))
            continue
        if top is None:
            continue  # never: a value shown exactly sets the top
        height = plot * value / top
        # Always taller than a band, so that no drawn count can be mistaken for a small one.
        floor = BAND + 6 if series.unit == Unit.COUNT else 2
        bars.append(_Bar(x, max(height, floor), False))
    return bars


def _top(series: Series) -> float | None:
    """The value at the top of the scale: the largest shown exactly (never a small count)."""
    shown = [
        value
        for value in series.values
        if value is not None
        and value > 0
        and (series.unit != Unit.COUNT or round(value) >= SMALL_COUNT_BELOW)
    ]
    return max(shown) if shown else None


def _text(x: float, y: float, words: str, anchor: str = "start") -> str:
    return (
        f'<text x="{x:g}" y="{y:g}" font-size="{FONT}" fill="{MUTED}" '
        f'text-anchor="{anchor}">{escape(words)}</text>'
    )


def bar_chart(series: Series, chart_id: str) -> Markup:
    """The twelve weeks of `series` as an accessible SVG bar chart that fits 360 px. Its
    text alternative is the table the page puts after it (see `dashboard.html`)."""
    top = _top(series)
    slot = (RIGHT - LEFT) / len(series.values)
    width = slot * (1 - BAR_GAP)
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" role="img" '
        f'aria-labelledby="{escape(chart_id)}-title {escape(chart_id)}-desc">',
        f'<title id="{escape(chart_id)}-title">{escape(series.label)}, each week for twelve'
        " weeks</title>",
        f'<desc id="{escape(chart_id)}-desc">Bar chart, oldest week on the left. A dashed'
        f" band marks a week with {FEWER}. The table after the chart gives each week's"
        " figure.</desc>",
        f'<line x1="{LEFT}" y1="{BOTTOM}" x2="{RIGHT}" y2="{BOTTOM}" stroke="{INK}" />',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{BOTTOM}" stroke="{MUTED}" />',
        _text(LEFT - 4, BOTTOM, "0", "end"),
    ]
    if top is not None:
        label = count_text(top) if series.unit == Unit.COUNT else _short_duration(top)
        parts.append(_text(LEFT - 4, TOP + FONT * 0.8, label, "end"))
    for bar in _bars(series, top):
        y = BOTTOM - bar.height
        if bar.small:
            parts.append(
                f'<rect x="{bar.x:.1f}" y="{y:.1f}" width="{width:.1f}" height="{bar.height}" '
                f'fill="#ffffff" stroke="{ACCENT}" stroke-width="1.5" stroke-dasharray="3 2" />'
            )
        else:
            parts.append(
                f'<rect x="{bar.x:.1f}" y="{y:.1f}" width="{width:.1f}" '
                f'height="{bar.height:.1f}" fill="{ACCENT}" />'
            )
    parts.append(_text(LEFT, HEIGHT - 6, "twelve weeks ago"))
    parts.append(_text(RIGHT, HEIGHT - 6, "this week", "end"))
    parts.append("</svg>")
    return Markup("".join(parts))


def _short_duration(seconds: float) -> str:
    """The scale's top as a duration that fits beside the chart: "36 h", "4 d", "20 min"."""
    if seconds < 3600:
        return f"{max(round(seconds / 60), 1)} min"
    if seconds < 48 * 3600:
        return f"{round(seconds / 3600)} h"
    return f"{round(seconds / 86400)} d"


def series_rows(series: Series, weeks: Sequence[Week]) -> list[tuple[datetime, str]]:
    """The chart's text alternative: each week's end and its figure in words."""
    return [
        (week_label(week), value_text(series, value))
        for week, value in zip(weeks, series.values, strict=True)
    ]
