"""Reports over the contribution ledger: per engineer, key project or month, what was done upstream.

Rules (also in docs/open-source-support.md):

- An item counts in the period when it was made: a pull request as *opened* when it was created, as *merged* when
  it was merged (both may fall in different periods); reviews, issues, comments and releases when created.
- Upstream means in a key project's repository (named in `repos`, or in one of its `orgs`); the repository's own
  listing wins over its organisation's. Non-code entries are upstream by definition.
- An engineer's *upstream share* is their upstream activity (pull requests opened, reviews, issues, comments,
  releases, non-code entries) over all their activity on GitHub (the same kinds, in any repository) plus the
  non-code entries. It is compared with the organisation's `upstream_target`.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field, fields
from typing import Literal

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from hubfleet.spec.organisation import KeyProject, Organisation
from hubfleet.upstream.tables import COMMENT, ISSUE, PULL_REQUEST, RELEASE, REVIEW, Item, NonCode

By = Literal["engineer", "project", "month"]
BY: tuple[By, ...] = ("engineer", "project", "month")


@dataclass
class Counts:
    """What was done upstream."""

    prs_opened: int = 0
    prs_merged: int = 0
    reviews: int = 0
    review_comments: int = 0
    issues: int = 0
    comments: int = 0
    releases: int = 0
    noncode: int = 0
    noncode_hours: float = 0.0

    @property
    def activity(self) -> int:
        """Items made: pull requests opened, reviews, issues, comments, releases, non-code entries (merges and review
        comments are parts of pull requests and reviews, not counted again)."""
        return self.prs_opened + self.reviews + self.issues + self.comments + self.releases + self.noncode

    def add(self, other: Counts) -> None:
        for name in (f.name for f in fields(self)):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class ContributionRow:
    """One engineer, key project or month."""

    key: str  # the engineer's login, the project's name, or the month (YYYY-MM)
    label: str  # the engineer's name, the project's name, or the month
    counts: Counts = field(default_factory=Counts)
    tier: int | None = None  # projects
    fte: float | None = None  # engineers
    all_activity: int | None = None  # engineers: activity anywhere on GitHub, plus non-code entries
    upstream_share: float | None = None  # engineers: counts.activity / all_activity


@dataclass
class ContributionReport:
    organisation: str
    by: By
    since: dt.date
    until: dt.date
    target: float
    rows: list[ContributionRow]
    total: Counts


def _month(day: dt.date | dt.datetime) -> str:
    return f"{day.year:04d}-{day.month:02d}"


def months_between(since: dt.date, until: dt.date) -> list[str]:
    """Every month from `since` to `until`, as YYYY-MM."""
    months, index, last = [], since.year * 12 + since.month - 1, until.year * 12 + until.month - 1
    while index <= last:
        months.append(f"{index // 12:04d}-{index % 12 + 1:02d}")
        index += 1
    return months


class ProjectMap:
    """Repository → key project, cached (reports map thousands of items)."""

    def __init__(self, organisation: Organisation):
        self.organisation = organisation
        self._cache: dict[str, KeyProject | None] = {}

    def __call__(self, repo: str) -> KeyProject | None:
        if repo not in self._cache:
            self._cache[repo] = self.organisation.project_of(repo)
        return self._cache[repo]


def _bounds(since: dt.date, until: dt.date) -> tuple[dt.datetime, dt.datetime]:
    return dt.datetime.combine(since, dt.time()), dt.datetime.combine(until + dt.timedelta(days=1), dt.time())


Key = Callable[[str, str, dt.date | dt.datetime], Hashable | None]
"""Where an item counts: from (engineer's login, key project, when) to a row key (None: nowhere)."""


def tally(
    session: Session, organisation: Organisation, since: dt.date, until: dt.date, key: Key
) -> tuple[dict[Hashable, Counts], Counter[str]]:
    """Upstream counts by `key` from `since` to `until` (inclusive), and each engineer's whole activity (items
    anywhere on GitHub and non-code entries), in one pass over the ledger."""
    start, end = _bounds(since, until)
    project_of = ProjectMap(organisation)
    counts: dict[Hashable, Counts] = defaultdict(Counts)
    activity: Counter[str] = Counter()
    query = select(Item.kind, Item.login, Item.repo, Item.created_at, Item.merged_at, Item.comments).where(
        Item.login.in_([e.github.lower() for e in organisation.engineers]),
        or_(
            Item.created_at.between(start, end),
            (Item.kind == PULL_REQUEST) & Item.merged_at.between(start, end),
        ),
    )
    for kind, login, repo, created, merged, comments in session.execute(query):
        made = start <= created < end
        if made:
            activity[login] += 1
        project = project_of(repo)
        if project is None:
            continue
        if kind == PULL_REQUEST and merged is not None and start <= merged < end:
            where = key(login, project.name, merged)
            if where is not None:
                counts[where].prs_merged += 1
        where = key(login, project.name, created) if made else None
        if where is None:
            continue
        found = counts[where]
        if kind == PULL_REQUEST:
            found.prs_opened += 1
        elif kind == REVIEW:
            found.reviews += 1
            found.review_comments += comments
        elif kind == ISSUE:
            found.issues += 1
        elif kind == COMMENT:
            found.comments += 1
        elif kind == RELEASE:
            found.releases += 1
    for entry in noncode_entries(session, since, until):
        activity[entry.login] += 1
        where = key(entry.login, entry.project, entry.day)
        if where is not None:
            counts[where].noncode += 1
            counts[where].noncode_hours += entry.hours
    return counts, activity


def contribution_report(
    session: Session, organisation: Organisation, *, by: By = "engineer", since: dt.date, until: dt.date
) -> ContributionReport:
    """Upstream work from `since` to `until` (inclusive), per engineer, key project or month."""
    rows: dict[str, ContributionRow] = {}
    if by == "engineer":
        for engineer in organisation.engineers:
            login = engineer.github.lower()
            rows[login] = ContributionRow(login, engineer.name, fte=engineer.fte)
    elif by == "project":
        for project in organisation.projects:
            rows[project.name] = ContributionRow(project.name, project.name, tier=project.tier)
    else:
        for month in months_between(since, until):
            rows[month] = ContributionRow(month, month)

    def key(login: str, project: str, when: dt.date | dt.datetime) -> str:
        return login if by == "engineer" else project if by == "project" else _month(when)

    counts, activity = tally(session, organisation, since, until, key)
    total = Counts()
    for name, row in rows.items():
        row.counts = counts.get(name, Counts())
        total.add(row.counts)
        if by == "engineer":
            row.all_activity = activity[name]
            row.upstream_share = row.counts.activity / row.all_activity if row.all_activity else None
    return ContributionReport(
        organisation=organisation.name,
        by=by,
        since=since,
        until=until,
        target=organisation.upstream_target,
        rows=list(rows.values()),
        total=total,
    )


def noncode_entries(session: Session, since: dt.date, until: dt.date) -> list[NonCode]:
    """Non-code entries from `since` to `until`, oldest first."""
    return list(
        session.execute(
            select(NonCode).where(NonCode.day.between(since, until)).order_by(NonCode.day, NonCode.id)
        ).scalars()
    )


NONCODE_KINDS = ("talk", "community-call", "mentoring", "docs-sprint", "review-meeting", "event", "other")


class EntryError(ValueError):
    """A non-code entry that names an unknown engineer, project or kind."""


def add_noncode(
    session: Session,
    organisation: Organisation,
    *,
    engineer: str,
    project: str,
    kind: str,
    day: dt.date,
    hours: float,
    title: str,
    url: str | None = None,
) -> NonCode:
    """Record non-code work (EntryError, naming the choices, when the engineer, project or kind is unknown)."""
    known = organisation.engineer(engineer)
    if known is None:
        logins = ", ".join(e.github for e in organisation.engineers) or "none in the fleet file"
        raise EntryError(f"no engineer with GitHub login {engineer!r} (engineers: {logins})")
    if project not in {p.name for p in organisation.projects}:
        names = ", ".join(p.name for p in organisation.projects) or "none in the fleet file"
        raise EntryError(f"no key project {project!r} (projects: {names})")
    if kind not in NONCODE_KINDS:
        raise EntryError(f"no kind {kind!r}: use one of {', '.join(NONCODE_KINDS)}")
    if hours < 0 or hours > 24 * 31:
        raise EntryError("hours must be between 0 and 744")
    if not title.strip():
        raise EntryError("give the entry a title (what was done)")
    entry = NonCode(
        login=known.github.lower(),
        project=project,
        kind=kind,
        day=day,
        hours=hours,
        title=title.strip()[:500],
        url=url,
        recorded_at=dt.datetime.now(dt.UTC).replace(tzinfo=None),
    )
    session.add(entry)
    session.flush()
    return entry


def highlights(
    session: Session, organisation: Organisation, since: dt.date, until: dt.date
) -> dict[str, dict[str, list[Item]]]:
    """Per key project, the pull requests merged and the releases made in the period (for the support report)."""
    start, end = _bounds(since, until)
    project_of = ProjectMap(organisation)
    found: dict[str, dict[str, list[Item]]] = defaultdict(lambda: defaultdict(list))
    query = select(Item).where(
        Item.login.in_([e.github.lower() for e in organisation.engineers]),
        or_(
            (Item.kind == PULL_REQUEST) & Item.merged_at.between(start, end),
            (Item.kind == RELEASE) & Item.created_at.between(start, end),
        ),
    )
    for item in session.execute(query).scalars():
        project = project_of(item.repo)
        when = item.merged_at if item.kind == PULL_REQUEST else item.created_at
        if project is not None and when is not None and start <= when < end:
            found[project.name][item.kind].append(item)
    return found
