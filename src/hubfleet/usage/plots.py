"""Plots of the usage reports: PNG with matplotlib, or an HTML page with the PNG inline (no JavaScript)."""

from __future__ import annotations

import base64
import html
import io
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from hubfleet.usage.economics import Economics
from hubfleet.usage.reports import CostReport, PilotStatus, UsageRow

PLOT_SUFFIXES = (".png", ".html")


def cost_figure(report: CostReport) -> Figure:
    """Stacked bars: each hub's cost split into users, idle capacity and fees."""
    figure = Figure(figsize=(8, 4.5), layout="constrained")
    axes = figure.subplots()
    names = [hub.hub for hub in report.hubs]
    bottoms = [0.0] * len(names)
    for kind, label, colour in (
        ("user", "users", "#4c72b0"),
        ("idle", "idle capacity", "#c0c0c0"),
        ("prewarm", "pre-warmed servers", "#8fbc8f"),
        ("fee", "hub fee (cost)", "#dd8452"),
    ):
        values = [sum(line.cost for line in hub.of_kind(kind)) for hub in report.hubs]  # type: ignore[arg-type]
        axes.bar(names, values, bottom=bottoms, label=label, color=colour)
        bottoms = [b + v for b, v in zip(bottoms, values, strict=True)]
    tallest = max(bottoms, default=0.0)
    for index, hub in enumerate(report.hubs):
        label = f"{hub.total:,.2f}"
        if hub.budget is not None:
            label += f" ({hub.budget_fraction:.0%} of {hub.budget:,.0f})"
            if hub.budget <= 1.5 * tallest:  # a budget far above every bar would flatten them: text only
                axes.hlines(hub.budget, index - 0.4, index + 0.4, colors="#c44e52", linestyles="dashed")
        axes.annotate(label, (index, hub.total), ha="center", va="bottom", fontsize=9)
    axes.margins(y=0.12)  # room for the labels above the bars
    axes.set_ylabel(report.currency)
    axes.set_title(f"Cost per hub, {report.month:%B %Y} ({'bill' if report.source == 'bill' else 'rate card'})")
    axes.legend()
    return figure


def usage_figure(rows: Sequence[UsageRow], by: str) -> Figure:
    """Charged vCPU-hours and GiB-hours per user, group or day (one series per hub)."""
    figure = Figure(figsize=(9, 6), layout="constrained")
    cpu_axes, memory_axes = figure.subplots(2, 1, sharex=True)
    per_hub: dict[str, list[UsageRow]] = defaultdict(list)
    for row in rows:
        per_hub[row.hub].append(row)
    keys = sorted({row.key for row in rows}) if by == "day" else list(dict.fromkeys(row.key for row in rows))
    width = 0.8 / max(1, len(per_hub))
    for offset, (hub, hub_rows) in enumerate(sorted(per_hub.items())):
        values = {row.key: row for row in hub_rows}
        positions = [i + offset * width for i in range(len(keys))]
        cpu_axes.bar(positions, [values[k].cpu_hours if k in values else 0 for k in keys], width, label=hub)
        memory_axes.bar(positions, [values[k].memory_gb_hours if k in values else 0 for k in keys], width, label=hub)
    cpu_axes.set_ylabel("vCPU-hours (charged)")
    memory_axes.set_ylabel("GiB-hours (charged)")
    memory_axes.set_xticks([i + 0.4 - width / 2 for i in range(len(keys))], keys, rotation=45, ha="right")
    cpu_axes.set_title(f"Usage by {by}")
    cpu_axes.legend()
    return figure


def counts_figure(counts: dict[str, int], title: str) -> Figure:
    """Bars of one count per hub (monthly active users)."""
    figure = Figure(figsize=(7, 4), layout="constrained")
    axes = figure.subplots()
    axes.bar(list(counts), list(counts.values()), color="#55a868")
    axes.set_title(title)
    return figure


def pilots_figure(pilots: Sequence[PilotStatus]) -> Figure:
    """Active non-staff users of each pilot against its conversion threshold."""
    figure = Figure(figsize=(7, 4), layout="constrained")
    axes = figure.subplots()
    names = [p.hub for p in pilots]
    colours = ["#55a868" if p.ready_to_convert else "#4c72b0" for p in pilots]
    axes.bar(names, [p.active_non_staff_users for p in pilots], color=colours)
    for index, pilot in enumerate(pilots):
        axes.hlines(pilot.min_active_users, index - 0.4, index + 0.4, colors="#c44e52", linestyles="dashed")
    axes.set_title("Pilots: active non-staff users (dashed: needed to convert)")
    return figure


def save(figure: Figure, path: Path, title: str, table_html: str = "") -> None:
    """Write `figure` as a PNG, or as an HTML page with the PNG inline (chosen by `path`'s suffix)."""
    path = Path(path)
    if path.suffix.lower() not in PLOT_SUFFIXES:
        raise ValueError(f"a plot is written as .png or .html, not {path.suffix or 'a file without suffix'}")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    if path.suffix.lower() == ".png":
        path.write_bytes(buffer.getvalue())
        return
    image = base64.b64encode(buffer.getvalue()).decode()
    path.write_text(
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right}th{background:#f4f4f4}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><img alt='{html.escape(title)}' src='data:image/png;base64,{image}'>"
        f"{table_html}</body></html>\n",
        encoding="utf-8",
    )


def html_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain HTML table (every cell escaped)."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def economics_figure(model: Economics) -> Figure:
    """Per hub: the fee beside the cost (metered and staff, stacked); the margin written above."""
    figure = Figure(figsize=(9, 4.8), layout="constrained")
    axes = figure.subplots()
    positions = list(range(len(model.hubs)))
    fees = [hub.fee for hub in model.hubs]
    metered = [hub.metered_cost for hub in model.hubs]
    staff = [hub.staff_cost for hub in model.hubs]
    axes.bar([p - 0.2 for p in positions], fees, 0.4, label="fee", color="#55a868")
    axes.bar([p + 0.2 for p in positions], metered, 0.4, label="metered cost", color="#4c72b0")
    axes.bar([p + 0.2 for p in positions], staff, 0.4, bottom=metered, label="staff cost", color="#dd8452")
    for index, hub in enumerate(model.hubs):
        top = max(hub.fee, hub.cost)
        axes.annotate(f"{hub.margin:+,.0f}", (index, top), ha="center", va="bottom", fontsize=9)
    axes.set_xticks(positions, [f"{hub.hub}\n({hub.tier})" for hub in model.hubs], fontsize=8)
    axes.margins(y=0.12)
    axes.set_ylabel(model.currency)
    axes.set_title(f"Fee and cost per hub, {model.month:%B %Y} (margin above)")
    axes.legend()
    return figure
