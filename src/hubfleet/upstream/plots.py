"""Plots of the contribution report (matplotlib; written as PNG or HTML by hubfleet.usage.plots.save)."""

from __future__ import annotations

from matplotlib.figure import Figure

from hubfleet.upstream.reports import ContributionReport

KINDS = (
    ("prs_opened", "PRs opened", "#4c72b0"),
    ("reviews", "reviews", "#55a868"),
    ("issues", "issues", "#c44e52"),
    ("comments", "comments", "#8172b2"),
    ("releases", "releases", "#ccb974"),
    ("noncode", "non-code", "#dd8452"),
)


def contributions_figure(report: ContributionReport) -> Figure:
    """Stacked bars: each engineer's, project's or month's upstream activity by kind (engineers: share vs target)."""
    figure = Figure(figsize=(9, 4.8), layout="constrained")
    axes = figure.subplots()
    names = [row.label for row in report.rows]
    bottoms = [0.0] * len(names)
    for key, label, colour in KINDS:
        values = [float(getattr(row.counts, key)) for row in report.rows]
        axes.bar(names, values, bottom=bottoms, label=label, color=colour)
        bottoms = [b + v for b, v in zip(bottoms, values, strict=True)]
    if report.by == "engineer":
        for index, row in enumerate(report.rows):
            if row.upstream_share is not None:
                text = f"{row.upstream_share:.0%}" + (" (below target)" if row.upstream_share < report.target else "")
                axes.annotate(text, (index, bottoms[index]), ha="center", va="bottom", fontsize=9)
    axes.margins(y=0.12)
    axes.set_ylabel("items")
    axes.tick_params(axis="x", labelrotation=30 if report.by != "engineer" else 0)
    axes.set_title(f"Upstream work by {report.by}, {report.since} to {report.until}")
    axes.legend(fontsize=8)
    return figure
