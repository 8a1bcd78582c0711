"""The cost model: the rate card applied to charged usage, or a bill shared out by usage share.

Rules (also in docs/usage-guide.md):

- Charged usage is max(request, used) per sample (OpenCost's rule); Dask workers are charged what they use.
- Rate card: a user's cost is their charged vCPU-hours * `cpu_hour` + GiB-hours * `memory_gb_hour` + home GiB-months
  * `storage_gb_month`. Idle capacity is the machine's capacity over the time the collector covered, minus everything
  charged to users of every hub, priced the same way; it is shared among hubs in proportion to their users' cost
  (equally when nobody used anything) and shown as its own line.
- Bill CSV (`date,component,cost`, component cpu|memory|storage|fixed): each day's cpu (memory) cost is shared by the
  users' charged CPU (memory) over the machine's capacity that day; what is left (idle capacity, days the collector did
  not cover) is the idle line. Storage cost is shared by home bytes measured that day. Fixed cost is split equally
  among the hubs as their fee line.
- A home GiB measured on a day counts 1/(days in that month) GiB-month; days without a measurement count nothing.
- Users in several groups: a user's cost (and usage) is split equally among all their groups on that hub; users in
  no group count under the group "(no group)". Group lines are another view of the user lines, never added again.
- The rate card's `hub_monthly_fee` is charged in full for every month a report covers.
"""

from __future__ import annotations

import calendar
import csv
import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hubfleet.spec.models import Fleet
from hubfleet.spec.usage import RateCard
from hubfleet.usage.ledger import DAY
from hubfleet.usage.tables import DASK, Coverage, Daily, GroupMember, HomeBytes

GIB = 1024**3
NO_GROUP = "(no group)"
IDLE = "idle capacity"
PREWARMED = "pre-warmed servers"
"""The ledger's "user" of servers the fleet started before a course meeting until their student comes (no user has
this name: names have no spaces); priced as a line of its own, not billed to anyone."""
FEE = "hub fee"
BILL_COMPONENTS = ("cpu", "memory", "storage", "fixed")


class BillError(ValueError):
    """A bill CSV that cannot be read (the message names the file and line)."""


@dataclass
class Amounts:
    """Usage and its cost, summed."""

    cpu_hours: float = 0.0
    memory_gb_hours: float = 0.0
    storage_gb_months: float = 0.0
    cost: float = 0.0
    used_cpu_hours: float = 0.0
    used_memory_gb_hours: float = 0.0
    dask_cpu_hours: float = 0.0
    server_hours: float = 0.0

    def add(self, other: Amounts, weight: float = 1.0) -> None:
        """Add `other` * `weight` to these amounts."""
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + weight * getattr(other, name))


@dataclass
class HubPricing:
    """A hub's priced usage over a period."""

    users: dict[str, Amounts] = field(default_factory=lambda: defaultdict(Amounts))
    groups: dict[str, Amounts] = field(default_factory=lambda: defaultdict(Amounts))
    idle: Amounts = field(default_factory=Amounts)
    prewarm: Amounts = field(default_factory=Amounts)
    """Servers pre-warmed for course meetings that nobody had come to yet."""
    fee: float = 0.0

    @property
    def total(self) -> float:
        """Users' cost + idle capacity + pre-warmed servers + fee (groups re-attribute users and are not counted
        again)."""
        return sum(a.cost for a in self.users.values()) + self.idle.cost + self.prewarm.cost + self.fee


@dataclass(frozen=True)
class BillLine:
    """One row of a bill CSV."""

    day: dt.date
    component: str
    cost: float


def read_bill(path: Path) -> list[BillLine]:
    """The rows of a bill CSV with header `date,component,cost` (BillError naming the line on bad input)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise BillError(f"cannot read bill {path}: {exc.strerror}") from None
    reader = csv.DictReader(text.splitlines())
    if reader.fieldnames is None or not {"date", "component", "cost"} <= {f.strip() for f in reader.fieldnames}:
        raise BillError(f"{path}: expected a header line 'date,component,cost'")
    lines = []
    for number, row in enumerate(reader, start=2):
        row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
        try:
            day = dt.date.fromisoformat(row["date"])
            cost = float(row["cost"])
        except ValueError:
            got = f"{row['date']!r}, {row['cost']!r}"
            raise BillError(f"{path}:{number}: expected an ISO date and a number, got {got}") from None
        if row["component"] not in BILL_COMPONENTS:
            raise BillError(f"{path}:{number}: component must be one of {', '.join(BILL_COMPONENTS)}")
        lines.append(BillLine(day, row["component"], cost))
    return lines


def months_in(first: dt.date, last: dt.date) -> int:
    """How many calendar months the days first..last touch."""
    return (last.year - first.year) * 12 + last.month - first.month + 1


def days_in_month(day: dt.date) -> int:
    """The number of days in `day`'s month."""
    return calendar.monthrange(day.year, day.month)[1]


class _Ledger:
    """What the ledger holds for first..last, loaded once."""

    def __init__(self, session: Session, first: dt.date, last: dt.date):
        self.daily = session.execute(select(Daily).where(Daily.day >= first, Daily.day <= last)).scalars().all()
        self.homes = (
            session.execute(select(HomeBytes).where(HomeBytes.day >= first, HomeBytes.day <= last)).scalars().all()
        )
        first_second = calendar.timegm(first.timetuple())
        last_second = calendar.timegm(last.timetuple()) + DAY
        day_number = Coverage.start // DAY
        self.capacity: dict[dt.date, tuple[float, float]] = {
            _day(number): (cpu, memory)
            for number, cpu, memory in session.execute(
                select(
                    day_number,
                    func.sum(Coverage.cpu_count * Coverage.seconds),
                    func.sum(Coverage.memory_bytes * Coverage.seconds),
                )
                .where(Coverage.start >= first_second, Coverage.start < last_second)
                .group_by(day_number)
            )
        }
        self.groups: dict[tuple[str, str], list[str]] = defaultdict(list)
        for member in session.execute(select(GroupMember).order_by(GroupMember.group)).scalars():
            self.groups[(member.hub, member.user)].append(member.group)


def price(session: Session, fleet: Fleet, first: dt.date, last: dt.date) -> dict[str, HubPricing]:
    """Every hub's priced usage over the days first..last (inclusive): the rate card, or the bill when one is set."""
    rates = fleet.usage.rates
    ledger = _Ledger(session, first, last)
    hubs: dict[str, HubPricing] = {name: HubPricing() for name in fleet.hubs}
    for row in ledger.daily:
        amounts = hubs.setdefault(row.hub, HubPricing()).users[row.user]
        amounts.cpu_hours += row.cpu_charged / 3600
        amounts.memory_gb_hours += row.memory_charged / 3600 / GIB
        amounts.used_cpu_hours += row.cpu_used / 3600
        amounts.used_memory_gb_hours += row.memory_used / 3600 / GIB
        if row.kind == DASK:
            amounts.dask_cpu_hours += row.cpu_charged / 3600
        else:
            amounts.server_hours += row.seconds / 3600
    for home in ledger.homes:
        hubs.setdefault(home.hub, HubPricing()).users[home.user].storage_gb_months += (
            home.bytes / GIB / days_in_month(home.day)
        )
    if fleet.usage.bill_csv is not None:
        bill = [line for line in read_bill(fleet.usage.bill_csv) if first <= line.day <= last]
        _share_bill(hubs, ledger, bill)
    else:
        _apply_rates(hubs, ledger, rates, months_in(first, last))
    for name, pricing in hubs.items():
        prewarm = pricing.users.pop(PREWARMED, None)
        if prewarm is not None:
            pricing.prewarm = prewarm
        for user, amounts in pricing.users.items():
            groups = ledger.groups.get((name, user)) or [NO_GROUP]
            for group in groups:
                pricing.groups[group].add(amounts, 1 / len(groups))
    return hubs


def _apply_rates(hubs: dict[str, HubPricing], ledger: _Ledger, rates: RateCard, months: int) -> None:
    for pricing in hubs.values():
        pricing.fee = rates.hub_monthly_fee * months
        for amounts in pricing.users.values():
            amounts.cost = rate_cost(rates, amounts.cpu_hours, amounts.memory_gb_hours, amounts.storage_gb_months)
    capacity_cpu = sum(cpu for cpu, _ in ledger.capacity.values()) / 3600
    capacity_memory = sum(memory for _, memory in ledger.capacity.values()) / 3600 / GIB
    charged = [a for p in hubs.values() for a in p.users.values()]
    idle = Amounts(
        cpu_hours=max(0.0, capacity_cpu - sum(a.cpu_hours for a in charged)),
        memory_gb_hours=max(0.0, capacity_memory - sum(a.memory_gb_hours for a in charged)),
    )
    idle.cost = rate_cost(rates, idle.cpu_hours, idle.memory_gb_hours, 0.0)
    _share_idle(hubs, idle)


def rate_cost(rates: RateCard, cpu_hours: float, memory_gb_hours: float, storage_gb_months: float) -> float:
    """The rate card applied to usage."""
    return (
        cpu_hours * rates.cpu_hour + memory_gb_hours * rates.memory_gb_hour + storage_gb_months * rates.storage_gb_month
    )


def _share_bill(hubs: dict[str, HubPricing], ledger: _Ledger, bill: Iterable[BillLine]) -> None:
    charged: dict[dt.date, dict[tuple[str, str], tuple[float, float]]] = defaultdict(dict)
    for row in ledger.daily:
        cpu, memory = charged[row.day].get((row.hub, row.user), (0.0, 0.0))
        charged[row.day][(row.hub, row.user)] = (cpu + row.cpu_charged, memory + row.memory_charged)
    homes: dict[dt.date, dict[tuple[str, str], float]] = defaultdict(dict)
    for home in ledger.homes:
        homes[home.day][(home.hub, home.user)] = float(home.bytes)
    idle = Amounts()
    fixed = 0.0
    for line in bill:
        if line.component == "fixed":
            fixed += line.cost
            continue
        if line.component == "storage":
            weights, capacity = homes[line.day], sum(homes[line.day].values())
        else:
            index = 0 if line.component == "cpu" else 1
            weights = {key: usage[index] for key, usage in charged[line.day].items()}
            capacity = ledger.capacity.get(line.day, (0.0, 0.0))[index]
        # Users never get more than the whole line, even when requests overcommit the machine.
        scale = max(capacity, sum(weights.values()))
        shared = 0.0
        for (hub, user), weight in weights.items():
            if scale > 0 and weight > 0:
                share = line.cost * weight / scale
                hubs.setdefault(hub, HubPricing()).users[user].cost += share
                shared += share
        idle.cost += line.cost - shared
    if hubs:
        for pricing in hubs.values():
            pricing.fee = fixed / len(hubs)
    _share_idle(hubs, idle)


def _share_idle(hubs: dict[str, HubPricing], idle: Amounts) -> None:
    """Give each hub its share of the idle capacity: in proportion to its users' cost, equally if none."""
    if not hubs:
        return
    costs = {name: sum(a.cost for a in p.users.values()) for name, p in hubs.items()}
    whole = sum(costs.values())
    for name, pricing in hubs.items():
        pricing.idle = Amounts()
        pricing.idle.add(idle, costs[name] / whole if whole > 0 else 1 / len(hubs))


def _day(number: int) -> dt.date:
    return dt.date(1970, 1, 1) + dt.timedelta(days=int(number))
