"""Charts as inline SVG, drawn on the server: no script, nothing fetched from elsewhere, readable without styles.

Every mark carries a `<title>` (the browser shows it on hover) and every chart an `aria-label`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from html import escape
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hubfleet.console.data import HubDetail

WIDTH = 640
LABEL_WIDTH = 170
ROW_HEIGHT = 24
BAR_COLOUR = "#f37726"
OTHERS_COLOUR = "#9aa4ae"
BUDGET_COLOURS = ((0.8, "#2da44e"), (1.0, "#d4a72c"), (float("inf"), "#cf222e"))
"""Budget bar colour by spent fraction: below 80 %, below 100 %, over budget."""

Format = Callable[[float], str]


def _svg(width: int, height: int, label: str, body: list[str], css_class: str) -> str:
    return (
        f'<svg class="{css_class}" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(label)}">' + "".join(body) + "</svg>"
    )


def _empty(label: str) -> str:
    return f'<p class="empty">{escape(label)}: nothing recorded for this period.</p>'


def _top(items: Sequence[tuple[str, float]], limit: int) -> list[tuple[str, float, bool]]:
    """The `limit` largest items, the rest summed into one "others" item (flagged True)."""
    ranked = sorted(items, key=lambda item: -item[1])
    if len(ranked) <= limit:
        return [(name, value, False) for name, value in ranked]
    rest = ranked[limit - 1 :]
    return [(name, value, False) for name, value in ranked[: limit - 1]] + [
        (f"{len(rest)} others", sum(value for _, value in rest), True)
    ]


def bars(items: Sequence[tuple[str, float]], *, label: str, fmt: Format, limit: int = 12) -> str:
    """Horizontal bars, largest first: one per (name, value); past `limit`, the smallest are summed as others."""
    rows = _top([(name, value) for name, value in items if value > 0], limit)
    if not rows:
        return _empty(label)
    largest = max(value for _, value, _ in rows)
    span = WIDTH - LABEL_WIDTH - 90
    body = []
    for index, (name, value, others) in enumerate(rows):
        y = index * ROW_HEIGHT
        width = max(1.0, span * value / largest)
        colour = OTHERS_COLOUR if others else BAR_COLOUR
        text = f"{escape(name)}: {escape(fmt(value))}"
        body.append(
            f'<g data-name="{escape(name)}"><title>{text}</title>'
            f'<text x="{LABEL_WIDTH - 8}" y="{y + 16}" text-anchor="end">{escape(_clip(name))}</text>'
            f'<rect x="{LABEL_WIDTH}" y="{y + 4}" width="{width:.1f}" height="{ROW_HEIGHT - 8}" fill="{colour}"/>'
            f'<text x="{LABEL_WIDTH + width + 6:.1f}" y="{y + 16}">{escape(fmt(value))}</text></g>'
        )
    return _svg(WIDTH, len(rows) * ROW_HEIGHT, label, body, "chart bars")


def columns(values: dict[dt.date, float], days: Sequence[dt.date], *, label: str, fmt: Format) -> str:
    """One column per day of `days` (zero where `values` has none), with the largest value marked on the axis."""
    if not any(values.get(day, 0) > 0 for day in days):
        return _empty(label)
    height, top, bottom, left = 200, 12, 24, 70
    plot_width, plot_height = WIDTH - left - 10, height - top - bottom
    largest = max(values.get(day, 0.0) for day in days)
    step = plot_width / len(days)
    body = [
        f'<line x1="{left}" y1="{top + plot_height}" x2="{WIDTH - 10}" y2="{top + plot_height}" class="axis"/>',
        f'<line x1="{left}" y1="{top}" x2="{WIDTH - 10}" y2="{top}" class="grid"/>',
        f'<text x="{left - 6}" y="{top + 4}" text-anchor="end">{escape(fmt(largest))}</text>',
        f'<text x="{left - 6}" y="{top + plot_height + 4}" text-anchor="end">0</text>',
    ]
    for index, day in enumerate(days):
        value = values.get(day, 0.0)
        x = left + index * step
        bar = plot_height * value / largest if largest else 0.0
        body.append(
            f'<g data-day="{day.isoformat()}"><title>{day:%d %b}: {escape(fmt(value))}</title>'
            f'<rect x="{x + 1:.1f}" y="{top + plot_height - bar:.1f}" width="{max(step - 2, 1):.1f}" '
            f'height="{bar:.1f}" fill="{BAR_COLOUR}"/></g>'
        )
        if index % 5 == 0:
            body.append(f'<text x="{x + step / 2:.1f}" y="{height - 6}" text-anchor="middle">{day.day}</text>')
    return _svg(WIDTH, height, label, body, "chart columns")


def budget_bar(fraction: float | None, of: str = "the budget") -> str:
    """A small bar of the budget spent, or of another limit `of` (full width = the limit; past it, red and full)."""
    if fraction is None:
        return ""
    colour = next(colour for limit, colour in BUDGET_COLOURS if fraction < limit)
    width, height = 160, 10
    filled = width * min(max(fraction, 0.0), 1.0)
    text = f"{fraction:.0%} of {of}"
    body = [
        f"<title>{text}</title>",
        f'<rect x="0" y="0" width="{width}" height="{height}" rx="3" fill="#eaeef2"/>',
        f'<rect x="0" y="0" width="{filled:.1f}" height="{height}" rx="3" fill="{colour}"/>',
    ]
    return _svg(width, height, text, body, "budget")


def _clip(name: str, length: int = 24) -> str:
    return name if len(name) <= length else name[: length - 1] + "…"


def hub_charts(detail: HubDetail, money: Format) -> list[tuple[str, str, str]]:
    """A hub page's charts as (id, title, SVG): cost and CPU-hours by group, by user and by day."""
    cost = detail.cost
    hours: Format = "{:.2f} h".format
    figures = {
        "cost-by-group": ("Cost by group", [(line.name, line.cost) for line in cost.of_kind("group")] if cost else []),
        "cost-by-user": ("Cost by user", [(line.name, line.cost) for line in cost.of_kind("user")] if cost else []),
        "cpu-by-group": ("CPU-hours by group", [(row.key, row.cpu_hours) for row in detail.by_group]),
        "cpu-by-user": ("CPU-hours by user", [(row.key, row.cpu_hours) for row in detail.by_user]),
    }
    result = [
        (key, title, bars(items, label=title, fmt=hours if key.startswith("cpu") else money))
        for key, (title, items) in figures.items()
    ]
    by_day = {dt.date.fromisoformat(row.key): row for row in detail.by_day}
    result += [
        (
            "cost-by-day",
            "Cost of usage by day",
            columns({d: r.cost for d, r in by_day.items()}, detail.days, label="Cost of usage by day", fmt=money),
        ),
        (
            "cpu-by-day",
            "CPU-hours by day",
            columns({d: r.cpu_hours for d, r in by_day.items()}, detail.days, label="CPU-hours by day", fmt=hours),
        ),
    ]
    return result
