"""Reports over the usage ledger: cost per hub (by user, group, idle capacity, fees, storage), usage tables,
monthly active users and the pilots' status. Read by the CLI (`hubfleet usage|cost|mau|pilots`) and the console."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hubfleet.spec.models import Fleet, PaidPlan, PilotPlan
from hubfleet.usage.budgets import BudgetStatus, budget_period, budget_statuses
from hubfleet.usage.cost import FEE, GIB, IDLE, NO_GROUP, PREWARMED, Amounts, days_in_month, price, rate_cost
from hubfleet.usage.tables import DASK, Activity, Daily, GroupMember, HomeBytes

CostKind = Literal["user", "group", "idle", "prewarm", "fee", "storage"]
UsageBy = Literal["user", "group", "day"]


@dataclass(frozen=True)
class CostLine:
    """One line of a hub's cost: a user, a group (the same money seen by group), idle capacity, a fee or storage."""

    kind: CostKind
    name: str
    cpu_hours: float = 0.0
    memory_gb_hours: float = 0.0
    storage_gb_months: float = 0.0
    cost: float = 0.0


@dataclass(frozen=True)
class HubCost:
    """A hub's cost for one month.

    `total` = user lines + idle + fee + storage lines; group lines re-attribute the user lines and are not added again.
    `budget` is the paid plan's monthly budget, or the pilot's whole budget (then `budget_fraction` is the pilot's
    spend from its start to the end of this month over that budget).
    """

    hub: str
    plan: str  # "pilot", "paid" or "" (no plan)
    currency: str
    lines: list[CostLine]
    total: float
    budget: float | None
    budget_fraction: float | None
    plan_fee: float | None = None  # the paid plan's monthly fee (what the community pays), for comparison

    def of_kind(self, kind: CostKind) -> list[CostLine]:
        """The lines of one kind, most expensive first."""
        return sorted((line for line in self.lines if line.kind == kind), key=lambda line: -line.cost)


@dataclass(frozen=True)
class CostReport:
    """Every hub's cost for one month, priced by the rate card or shared out from a bill."""

    month: dt.date  # first day of the month
    currency: str
    source: Literal["rates", "bill"]
    hubs: list[HubCost]
    total: float = field(default=0.0)

    def hub(self, name: str) -> HubCost:
        """The cost of hub `name` (KeyError if it is not in the report)."""
        for hub_cost in self.hubs:
            if hub_cost.hub == name:
                return hub_cost
        raise KeyError(name)


@dataclass(frozen=True)
class UsageRow:
    """Usage of one user, group or day on one hub (charged = max(request, used), as OpenCost charges)."""

    hub: str
    key: str  # the user, the group, or the day (ISO date)
    cpu_hours: float  # charged vCPU-hours
    memory_gb_hours: float  # charged GiB-hours
    used_cpu_hours: float
    used_memory_gb_hours: float
    dask_cpu_hours: float  # Dask workers' core-hours (included in cpu_hours)
    server_hours: float  # hours user servers ran
    storage_gb: float  # home directories at the last measurement in the period
    logins: int
    cost: float  # the rate card applied to the charged usage and storage


@dataclass(frozen=True)
class PilotStatus:
    """Where a pilot hub stands."""

    hub: str
    start: dt.date
    end: dt.date
    active_non_staff_users: int  # distinct non-admin users active in the conversion window
    ready_to_convert: bool  # at least `conversion.min_active_users` of them
    expiring: bool  # ends within 14 days (and has not ended)
    idle: bool  # nobody active in the conversion window
    budget_fraction: float | None
    min_active_users: int = 5
    days_left: int = 0
    ended: bool = False


def month_span(month: dt.date) -> tuple[dt.date, dt.date]:
    """The first and last day of `month`'s month."""
    first = month.replace(day=1)
    return first, first.replace(day=days_in_month(first))


def cost_report(session: Session, fleet: Fleet, *, month: dt.date) -> CostReport:
    """Every hub's cost in `month` (any day of it), with its budget and how much of it is spent."""
    first, last = month_span(month)
    pricing = price(session, fleet, first, last)
    rates = fleet.usage.rates
    hubs = []
    for name, hub_pricing in pricing.items():
        spec = fleet.hubs.get(name)
        lines = [
            _line("user", user, amounts)
            for user, amounts in sorted(hub_pricing.users.items(), key=lambda item: -item[1].cost)
        ]
        lines += [
            _line("group", group, amounts)
            for group, amounts in sorted(hub_pricing.groups.items(), key=lambda item: -item[1].cost)
        ]
        lines.append(_line("idle", IDLE, hub_pricing.idle))
        if hub_pricing.prewarm.cost or hub_pricing.prewarm.cpu_hours:
            lines.append(_line("prewarm", PREWARMED, hub_pricing.prewarm))
        if hub_pricing.fee:
            lines.append(CostLine("fee", FEE, cost=hub_pricing.fee))
        budget, fraction = _budget(session, fleet, name, last, hub_pricing.total)
        plan = spec.plan if spec is not None else None
        hubs.append(
            HubCost(
                hub=name,
                plan=plan.type if plan is not None else "",
                currency=rates.currency,
                lines=lines,
                total=hub_pricing.total,
                budget=budget,
                budget_fraction=fraction,
                plan_fee=plan.monthly_fee if isinstance(plan, PaidPlan) else None,
            )
        )
    return CostReport(
        month=first,
        currency=rates.currency,
        source="bill" if fleet.usage.bill_csv is not None else "rates",
        hubs=hubs,
        total=sum(h.total for h in hubs),
    )


def _line(kind: CostKind, name: str, amounts: Amounts) -> CostLine:
    return CostLine(kind, name, amounts.cpu_hours, amounts.memory_gb_hours, amounts.storage_gb_months, amounts.cost)


def _budget(
    session: Session, fleet: Fleet, hub: str, last: dt.date, month_total: float
) -> tuple[float | None, float | None]:
    """The hub's budget and the fraction spent: this month's total (paid) or the pilot's spend up to `last`."""
    spec = fleet.hubs.get(hub)
    period = budget_period(spec, last) if spec is not None else None
    if period is None or period.budget is None:
        return None, None
    spent = month_total
    if isinstance(spec.plan, PilotPlan):
        until = min(period.last, last)
        spent = price(session, fleet, period.first, until)[hub].total if period.first <= until else 0.0
    status = BudgetStatus(hub, period, spent, fleet.usage.rates.currency)
    return period.budget, status.fraction


def usage_report(
    session: Session,
    fleet: Fleet,
    *,
    hub: str | None = None,
    by: UsageBy = "user",
    since: dt.date,
    until: dt.date | None = None,
) -> list[UsageRow]:
    """Usage per user, group or day from `since` to `until` (default: today), for one hub or all."""
    until = until or dt.datetime.now(dt.UTC).date()
    rates = fleet.usage.rates
    daily = select(Daily).where(Daily.day >= since, Daily.day <= until)
    homes = select(HomeBytes).where(HomeBytes.day >= since, HomeBytes.day <= until).order_by(HomeBytes.day)
    activity = select(Activity).where(Activity.day >= since, Activity.day <= until)
    members = select(GroupMember)
    if hub is not None:
        daily, homes = daily.where(Daily.hub == hub), homes.where(HomeBytes.hub == hub)
        activity, members = activity.where(Activity.hub == hub), members.where(GroupMember.hub == hub)

    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for member in session.execute(members.order_by(GroupMember.group)).scalars():
        groups[(member.hub, member.user)].append(member.group)

    def keys(row_hub: str, user: str, day: dt.date) -> list[tuple[str, float]]:
        if by == "day":
            return [(day.isoformat(), 1.0)]
        if by == "group":
            names = groups.get((row_hub, user)) or [NO_GROUP]
            return [(name, 1 / len(names)) for name in names]
        return [(user, 1.0)]

    amounts: dict[tuple[str, str], Amounts] = defaultdict(Amounts)
    for row in session.execute(daily).scalars():
        usage = Amounts(
            cpu_hours=row.cpu_charged / 3600,
            memory_gb_hours=row.memory_charged / 3600 / GIB,
            used_cpu_hours=row.cpu_used / 3600,
            used_memory_gb_hours=row.memory_used / 3600 / GIB,
            dask_cpu_hours=row.cpu_charged / 3600 if row.kind == DASK else 0.0,
            server_hours=row.seconds / 3600 if row.kind != DASK else 0.0,
        )
        for key, weight in keys(row.hub, row.user, row.day):
            amounts[(row.hub, key)].add(usage, weight)
    storage: dict[tuple[str, str], float] = defaultdict(float)
    latest: dict[tuple[str, str], HomeBytes] = {}
    for home in session.execute(homes).scalars():
        for key, weight in keys(home.hub, home.user, home.day):
            amounts[(home.hub, key)].storage_gb_months += weight * home.bytes / GIB / days_in_month(home.day)
            if by == "day":
                storage[(home.hub, key)] += home.bytes / GIB
        latest[(home.hub, home.user)] = home  # ordered by day: the last measurement wins
    if by != "day":
        for home in latest.values():
            for key, weight in keys(home.hub, home.user, home.day):
                storage[(home.hub, key)] += weight * home.bytes / GIB
    logins: dict[tuple[str, str], float] = defaultdict(float)
    for row in session.execute(activity).scalars():
        for key, weight in keys(row.hub, row.user, row.day):
            logins[(row.hub, key)] += weight * row.logins
            amounts.setdefault((row.hub, key), Amounts())  # active users appear even without usage

    rows = [
        UsageRow(
            hub=row_hub,
            key=key,
            cpu_hours=a.cpu_hours,
            memory_gb_hours=a.memory_gb_hours,
            used_cpu_hours=a.used_cpu_hours,
            used_memory_gb_hours=a.used_memory_gb_hours,
            dask_cpu_hours=a.dask_cpu_hours,
            server_hours=a.server_hours,
            storage_gb=storage.get((row_hub, key), 0.0),
            logins=round(logins.get((row_hub, key), 0.0)),
            cost=rate_cost(rates, a.cpu_hours, a.memory_gb_hours, a.storage_gb_months),
        )
        for (row_hub, key), a in amounts.items()
    ]
    if by == "day":
        return sorted(rows, key=lambda r: (r.hub, r.key))
    return sorted(rows, key=lambda r: (r.hub, -r.cost, r.key))


def monthly_active_users(session: Session, fleet: Fleet, *, month: dt.date) -> dict[str, int]:
    """Distinct users active on each hub in `month` (every hub of the fleet, 0 when nobody)."""
    first, last = month_span(month)
    counts = {name: 0 for name in fleet.hubs}
    for hub, count in session.execute(
        select(Activity.hub, func.count(func.distinct(Activity.user)))
        .where(Activity.day >= first, Activity.day <= last)
        .group_by(Activity.hub)
    ):
        counts[hub] = count
    return counts


EXPIRING_DAYS = 14


def pilot_statuses(session: Session, fleet: Fleet, *, today: dt.date) -> list[PilotStatus]:
    """Every pilot hub: active non-staff users in its conversion window, ready to convert, expiring, idle, budget."""
    budgets = {s.hub: s for s in budget_statuses(session, fleet, today)}
    statuses = []
    for name, hub in fleet.hubs.items():
        plan = hub.plan
        if not isinstance(plan, PilotPlan):
            continue
        window_start = today - dt.timedelta(days=plan.conversion.window_days - 1)
        active = set(
            session.execute(
                select(Activity.user).where(Activity.hub == name, Activity.day >= window_start, Activity.day <= today)
            ).scalars()
        )
        non_staff = active - set(hub.auth.admins)
        days_left = (plan.end - today).days
        budget = budgets.get(name)
        statuses.append(
            PilotStatus(
                hub=name,
                start=plan.start,
                end=plan.end,
                active_non_staff_users=len(non_staff),
                ready_to_convert=len(non_staff) >= plan.conversion.min_active_users,
                expiring=0 <= days_left <= EXPIRING_DAYS,
                idle=not active,
                budget_fraction=budget.fraction if budget is not None else None,
                min_active_users=plan.conversion.min_active_users,
                days_left=days_left,
                ended=days_left < 0,
            )
        )
    return statuses
