"""The open-source support report: a Markdown document for funders, boards and the projects themselves.

Per key project (tier 1 first): who contributed what, the largest merged pull requests, the releases and the
non-code work. Per engineer: their upstream share against the organisation's target. Built from the same
`contribution_report` as `hubfleet contributions report`.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session

from hubfleet.spec.organisation import Organisation
from hubfleet.upstream.reports import Counts, contribution_report, highlights, noncode_entries, tally
from hubfleet.upstream.tables import PULL_REQUEST, RELEASE, Item

HIGHLIGHTS = 5
"""Largest merged pull requests shown per project."""

COLUMNS = (
    ("prs_opened", "PRs opened"),
    ("prs_merged", "merged"),
    ("reviews", "reviews"),
    ("review_comments", "review comments"),
    ("issues", "issues"),
    ("comments", "comments"),
    ("releases", "releases"),
    ("noncode", "non-code"),
)
TIERS = {1: "maintained with others", 2: "regular contributions", 3: "dependency we help"}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(cell) for cell in row) + " |" for row in rows]
    return lines


def _counts_cells(counts: Counts) -> list[str]:
    cells = [str(getattr(counts, key)) for key, _ in COLUMNS]
    if counts.noncode_hours:
        cells[-1] += f" ({counts.noncode_hours:g} h)"
    return cells


def support_report(session: Session, organisation: Organisation, *, since: dt.date, until: dt.date) -> str:
    """The report as Markdown."""
    names = {e.github.lower(): e.name for e in organisation.engineers}
    by_engineer = contribution_report(session, organisation, by="engineer", since=since, until=until)
    by_project = contribution_report(session, organisation, by="project", since=since, until=until)
    title = f"Open-source support report{': ' + organisation.name if organisation.name else ''}"
    lines = [
        f"# {title}",
        "",
        f"{since:%d %B %Y} to {until:%d %B %Y}. Policy: {organisation.upstream_target:.0%} of engineering activity "
        f"goes to the key projects. {len(organisation.engineers)} engineers, {len(organisation.projects)} key "
        "projects.",
        "",
        "## Summary",
        "",
        *_table(
            ["project", "tier", *(heading for _, heading in COLUMNS)],
            [[row.label, str(row.tier), *_counts_cells(row.counts)] for row in by_project.rows]
            + [["**all key projects**", "", *_counts_cells(by_project.total)]],
        ),
        "",
        "## Key projects",
    ]
    noncode = noncode_entries(session, since, until)
    per_project, _ = tally(session, organisation, since, until, lambda login, project, _when: (project, login))
    notable = highlights(session, organisation, since, until)
    for project in sorted(organisation.projects, key=lambda p: p.tier):
        where = ", ".join([*project.repos, *(f"{org}/*" for org in project.orgs)])
        lines += ["", f"### {project.name} (tier {project.tier}: {TIERS[project.tier]})", ""]
        if project.description:
            lines += [project.description, ""]
        lines += [f"Repositories: {where}.", ""]
        people = [
            (e.github.lower(), per_project[(project.name, e.github.lower())])
            for e in organisation.engineers
            if (project.name, e.github.lower()) in per_project
        ]
        if not people:
            lines += ["No recorded contributions in this period."]
            continue
        lines += _table(
            ["engineer", *(heading for _, heading in COLUMNS)],
            [[names.get(login, login), *_counts_cells(counts)] for login, counts in people],
        )
        items = notable.get(project.name, {})
        merged = sorted(items.get(PULL_REQUEST, []), key=lambda pr: -(pr.additions + pr.deletions))
        if merged:
            lines += ["", "Largest merged pull requests:", ""]
            lines += [
                f"- {_link(pr)} by {names.get(pr.login, pr.login)} (+{pr.additions} -{pr.deletions})"
                for pr in merged[:HIGHLIGHTS]
            ]
        releases = sorted(items.get(RELEASE, []), key=lambda r: r.created_at)
        if releases:
            lines += ["", "Releases:", ""]
            lines += [
                f"- [{r.title}]({r.url}) ({r.created_at:%d %b %Y}, {names.get(r.login, r.login)})" for r in releases
            ]
        entries = [entry for entry in noncode if entry.project == project.name]
        if entries:
            lines += ["", "Community and non-code work:", ""]
            for entry in entries:
                text = f"[{entry.title}]({entry.url})" if entry.url else entry.title
                lines.append(
                    f"- {entry.day:%d %b %Y}: {text} ({entry.kind}, {names.get(entry.login, entry.login)}, "
                    f"{entry.hours:g} h)"
                )
    lines += ["", "## Engineers", ""]
    lines += _table(
        ["engineer", "FTE", "upstream activity", "all activity", "upstream share", "target"],
        [
            [
                row.label,
                f"{row.fte:g}",
                str(row.counts.activity),
                str(row.all_activity or 0),
                "—" if row.upstream_share is None else f"{row.upstream_share:.0%}",
                "below"
                if row.upstream_share is not None and row.upstream_share < by_engineer.target
                else "met"
                if row.upstream_share is not None
                else "no activity",
            ]
            for row in by_engineer.rows
        ],
    )
    lines += [
        "",
        f"Activity counts pull requests opened, reviews, issues, comments, releases and non-code entries; the "
        f"upstream share is the part of it in the key projects (target {by_engineer.target:.0%}).",
        "",
        f"*Generated by hubfleet on {dt.datetime.now(dt.UTC):%Y-%m-%d} from the contribution ledger.*",
    ]
    return "\n".join(lines) + "\n"


def _link(item: Item) -> str:
    return f"[{item.repo}#{item.number}: {item.title}]({item.url})"
