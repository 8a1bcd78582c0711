"""What the console's pages show, read from the usage reports (the same functions as `hubfleet cost|usage|pilots`)
and the supervisor's last status of each hub. Everything here is synchronous database work: run it in a thread."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from hubfleet.common.status import HubStatus
from hubfleet.spec.models import Fleet, PaidPlan, PilotPlan
from hubfleet.system.homes import QuotaError
from hubfleet.upstream.reports import ContributionReport, contribution_report
from hubfleet.usage.economics import Economics
from hubfleet.usage.economics import economics as model_of
from hubfleet.usage.reports import (
    HubCost,
    PilotStatus,
    UsageRow,
    cost_report,
    month_span,
    monthly_active_users,
    pilot_statuses,
    usage_report,
)
from hubfleet.usage.storage import HomeRow, storage_report

MONTH = re.compile(r"^(\d{4})-(\d{2})$")


def this_month() -> dt.date:
    """The first day of the current month (UTC, as the ledger counts days)."""
    return dt.datetime.now(dt.UTC).date().replace(day=1)


def parse_month(text: str | None) -> dt.date:
    """`YYYY-MM` as the first day of that month (None or empty: this month); ValueError if it is not one."""
    if not text:
        return this_month()
    match = MONTH.match(text)
    if match is None or not 1970 <= int(match[1]) <= 9000:
        raise ValueError(f"month must look like 2026-11, not {text!r}")
    return dt.date(int(match[1]), int(match[2]), 1)


def shift_month(month: dt.date, months: int) -> dt.date:
    """The first day of the month `months` away from `month`."""
    index = month.year * 12 + month.month - 1 + months
    return dt.date(index // 12, index % 12 + 1, 1)


@dataclass(frozen=True)
class HubSummary:
    """A hub as the front page and the console list it: its spec and the supervisor's last status of it."""

    name: str
    title: str
    community: str
    plan: str
    url: str
    healthy: bool
    state: str
    users: int | None
    running_servers: int | None
    last_wake: float | None = None
    wakes: int = 0

    @property
    def state_label(self) -> str:
        """Up, asleep (the first request wakes it), or what is wrong."""
        if self.state == "asleep":
            return "asleep"
        return "up" if self.healthy else self.state

    @property
    def woke(self) -> str:
        """When it last woke from sleep, for people ("" if it did not since the fleet started)."""
        if self.last_wake is None:
            return ""
        when = dt.datetime.fromtimestamp(self.last_wake).strftime("%d %b %H:%M")
        return f"woke {self.wakes} time{'s' if self.wakes != 1 else ''}, last {when}"


def describe_plan(plan_spec: PilotPlan | PaidPlan | None) -> str:
    """One line about a hub's plan."""
    if isinstance(plan_spec, PilotPlan):
        return f"Pilot {plan_spec.start:%d %b %Y} to {plan_spec.end:%d %b %Y}"
    if isinstance(plan_spec, PaidPlan):
        return "Paid plan"
    return ""


def hub_summaries(fleet: Fleet, statuses: dict[str, HubStatus]) -> list[HubSummary]:
    """Every hub of `fleet`, in the fleet file's order (a hub with no status yet is starting)."""
    summaries = []
    for name, hub in fleet.hubs.items():
        status = statuses.get(name)
        summaries.append(
            HubSummary(
                name=name,
                title=hub.title,
                community=hub.community.name if hub.community else "",
                plan=describe_plan(hub.plan),
                url=f"/hubs/{name}/",
                healthy=bool(status and status.healthy),
                state=status.state if status else "starting",
                users=status.users if status else None,
                running_servers=status.running_servers if status else None,
                last_wake=status.last_wake if status else None,
                wakes=status.wakes if status else 0,
            )
        )
    return summaries


@dataclass(frozen=True)
class HubCard:
    """One hub on the overview: the supervisor's view of it and its cost this month."""

    hub: HubSummary
    active_users: int
    cost: HubCost | None


@dataclass(frozen=True)
class Overview:
    month: dt.date
    currency: str
    cards: list[HubCard]
    total: float
    """The whole fleet's cost in the month (`hubfleet cost`'s total; shown to operators only)."""


@dataclass(frozen=True)
class HubDetail:
    """A hub's page: its cost lines and its usage by day, user and group over one month."""

    month: dt.date
    cost: HubCost | None
    days: list[dt.date]
    by_day: list[UsageRow]
    by_user: list[UsageRow]
    by_group: list[UsageRow]


def overview(sessions: sessionmaker[Session], fleet: Fleet, month: dt.date, summaries: list[HubSummary]) -> Overview:
    """The cards of the hubs in `summaries` (already limited to what the viewer may see)."""
    with sessions() as session:
        report = cost_report(session, fleet, month=month)
        active = monthly_active_users(session, fleet, month=month)
    costs = {hub_cost.hub: hub_cost for hub_cost in report.hubs}
    cards = [
        HubCard(hub=summary, active_users=active.get(summary.name, 0), cost=costs.get(summary.name))
        for summary in summaries
    ]
    return Overview(month=report.month, currency=report.currency, cards=cards, total=report.total)


def hub_detail(sessions: sessionmaker[Session], fleet: Fleet, month: dt.date, hub: str) -> HubDetail:
    """Hub `hub`'s cost and usage in `month`."""
    first, last = month_span(month)
    with sessions() as session:
        report = cost_report(session, fleet, month=first)
        usage = {
            by: usage_report(session, fleet, hub=hub, by=by, since=first, until=last) for by in ("day", "user", "group")
        }
    cost = next((hub_cost for hub_cost in report.hubs if hub_cost.hub == hub), None)
    days = [first + dt.timedelta(days=offset) for offset in range((last - first).days + 1)]
    return HubDetail(
        month=first, cost=cost, days=days, by_day=usage["day"], by_user=usage["user"], by_group=usage["group"]
    )


@dataclass(frozen=True)
class HomeStorage:
    """A hub page's home folders: each user's use against the quota, now (as `hubfleet usage --storage`)."""

    quota: int | None
    rows: list[HomeRow]
    problem: str = ""
    """Why the homes could not be read (shown instead of the rows)."""


def home_storage(fleet: Fleet, hub: str) -> HomeStorage:
    """The homes of hub `hub` on this machine, fullest first; only for hubs with a home quota (without one, the
    usage table's home sizes, measured by the collector, say it, and walking every home on each page view would
    cost too much). Machine work: run it in a thread."""
    quota = fleet.hubs[hub].storage.home_quota
    if quota is None:
        return HomeStorage(quota, [])
    try:
        rows = storage_report(fleet, hub)
    except (OSError, QuotaError) as exc:
        return HomeStorage(quota, [], f"The home folders cannot be read here ({exc}).")
    return HomeStorage(quota, sorted(rows, key=lambda row: (-(row.percent or 0.0), row.user)))


def economics(sessions: sessionmaker[Session], fleet: Fleet, month: dt.date) -> Economics:
    """The sustainability model for `month` (as `hubfleet economics`)."""
    with sessions() as session:
        return model_of(session, fleet, month=month)


@dataclass(frozen=True)
class Contributions:
    """The contribution ledger's page: the last twelve months by engineer and by key project."""

    by_engineer: ContributionReport
    by_project: ContributionReport


def contributions(sessions: sessionmaker[Session], fleet: Fleet, until: dt.date) -> Contributions:
    """Upstream work in the year up to `until` (as `hubfleet contributions report`)."""
    since = until - dt.timedelta(days=365)
    with sessions() as session:
        return Contributions(
            by_engineer=contribution_report(session, fleet.organisation, by="engineer", since=since, until=until),
            by_project=contribution_report(session, fleet.organisation, by="project", since=since, until=until),
        )


def pilots(sessions: sessionmaker[Session], fleet: Fleet, today: dt.date) -> list[PilotStatus]:
    """Every pilot hub's status today."""
    with sessions() as session:
        return pilot_statuses(session, fleet, today=today)
