"""The sustainability model: what each hub, plan tier and pilot costs and brings in, side by side.

Built on the usage reports, never beside them: metered cost is `cost_report`'s total (as `hubfleet cost`), active
users are `monthly_active_users` (as `hubfleet mau`), pilots' readiness is `pilot_statuses` (as `hubfleet pilots`).
On top of those:

- **fee**: a paid plan's `monthly_fee` (what the community pays; pilots and hubs without a plan pay nothing);
- **staff cost**: `organisation.staff` hours per hub per month times `hourly_rate`;
- **cost** = metered cost + staff cost; **margin** = fee - cost;
- **cost per active user** = cost / monthly active users; **idle share** = the idle-capacity line / metered cost;
- per **tier** (a paid plan's `tier`, else `paid`; `pilot`; `no plan`): the sums, and the **break-even fee** per hub
  (the tier's cost / its hubs) and per active user (the tier's cost / its active users);
- per **pilot**: its readiness and the monthly fee that would cover its cost.

What-if scenarios change the model, never the fleet: a hub's fee, a hub moved to another tier (it takes the tier's
average fee), or N more hubs of a tier (each with the tier's average cost, fee and active users).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from dataclasses import dataclass

from sqlalchemy.orm import Session

from hubfleet.spec.models import Fleet, PaidPlan, PilotPlan
from hubfleet.usage.cost import IDLE
from hubfleet.usage.reports import PilotStatus, cost_report, month_span, monthly_active_users, pilot_statuses

NO_PLAN = "no plan"


@dataclass(frozen=True)
class HubEconomics:
    """One hub in one month."""

    hub: str
    tier: str
    fee: float
    metered_cost: float  # `hubfleet cost`'s total for the hub
    staff_hours: float
    staff_cost: float
    active_users: int
    idle_cost: float

    @property
    def cost(self) -> float:
        return self.metered_cost + self.staff_cost

    @property
    def margin(self) -> float:
        return self.fee - self.cost

    @property
    def cost_per_active_user(self) -> float | None:
        return self.cost / self.active_users if self.active_users else None

    @property
    def idle_share(self) -> float | None:
        return self.idle_cost / self.metered_cost if self.metered_cost > 0 else None


@dataclass(frozen=True)
class TierEconomics:
    """A plan tier's hubs together."""

    tier: str
    hubs: int
    fees: float
    cost: float
    active_users: int

    @property
    def margin(self) -> float:
        return self.fees - self.cost

    @property
    def break_even_fee(self) -> float | None:
        """The monthly fee per hub that would cover the tier's cost."""
        return self.cost / self.hubs if self.hubs else None

    @property
    def break_even_per_user(self) -> float | None:
        """The monthly fee per active user that would cover the tier's cost."""
        return self.cost / self.active_users if self.active_users else None


@dataclass(frozen=True)
class PilotEconomics:
    hub: str
    status: PilotStatus
    covering_fee: float  # the monthly fee that would cover the pilot's cost this month


@dataclass(frozen=True)
class Economics:
    month: dt.date
    currency: str
    hourly_rate: float
    hubs: list[HubEconomics]
    pilots: list[PilotEconomics]
    scenario: list[str] = dataclasses.field(default_factory=list)  # the what-if changes applied, as given

    @property
    def tiers(self) -> list[TierEconomics]:
        order = list(dict.fromkeys(hub.tier for hub in self.hubs))
        return [
            TierEconomics(
                tier=tier,
                hubs=len(members),
                fees=sum(h.fee for h in members),
                cost=sum(h.cost for h in members),
                active_users=sum(h.active_users for h in members),
            )
            for tier in order
            for members in [[h for h in self.hubs if h.tier == tier]]
        ]

    @property
    def fees(self) -> float:
        return sum(h.fee for h in self.hubs)

    @property
    def cost(self) -> float:
        return sum(h.cost for h in self.hubs)

    @property
    def margin(self) -> float:
        return self.fees - self.cost

    def hub(self, name: str) -> HubEconomics:
        return next(h for h in self.hubs if h.hub == name)


def tier_of(fleet: Fleet, hub: str) -> str:
    """The hub's plan tier: its paid plan's `tier` (else `paid`), `pilot`, or `no plan`."""
    spec = fleet.hubs.get(hub)
    plan = spec.plan if spec is not None else None
    if isinstance(plan, PaidPlan):
        return plan.tier or "paid"
    return "pilot" if isinstance(plan, PilotPlan) else NO_PLAN


def economics(session: Session, fleet: Fleet, *, month: dt.date, today: dt.date | None = None) -> Economics:
    """The model for `month` (any day of it); pilots are judged on `today` (default: the month's last day, or today
    for the current month)."""
    first, last = month_span(month)
    now = dt.datetime.now(dt.UTC).date()
    today = today or min(last, now)
    report = cost_report(session, fleet, month=first)
    active = monthly_active_users(session, fleet, month=first)
    staff = fleet.organisation.staff
    hubs = []
    for hub_cost in report.hubs:
        tier = tier_of(fleet, hub_cost.hub)
        plan = "none" if tier == NO_PLAN else "pilot" if tier == "pilot" else "paid"
        hours = staff.hours(hub_cost.hub, plan)  # type: ignore[arg-type]
        hubs.append(
            HubEconomics(
                hub=hub_cost.hub,
                tier=tier,
                fee=hub_cost.plan_fee or 0.0,
                metered_cost=hub_cost.total,
                staff_hours=hours,
                staff_cost=hours * staff.hourly_rate,
                active_users=active.get(hub_cost.hub, 0),
                idle_cost=sum(line.cost for line in hub_cost.of_kind("idle") if line.name == IDLE),
            )
        )
    by_hub = {h.hub: h for h in hubs}
    pilots = [
        PilotEconomics(hub=status.hub, status=status, covering_fee=by_hub[status.hub].cost)
        for status in pilot_statuses(session, fleet, today=today)
        if status.hub in by_hub
    ]
    return Economics(month=first, currency=report.currency, hourly_rate=staff.hourly_rate, hubs=hubs, pilots=pilots)


class WhatIfError(ValueError):
    """A what-if change that cannot be read (the message shows the forms)."""


WHAT_IF_FORMS = "fee:HUB=AMOUNT, tier:HUB=TIER or add:TIER=N"
_CHANGE = re.compile(r"^(fee|tier|add):([a-z0-9][a-z0-9_-]*)=(\S+)$")


def what_if(model: Economics, changes: list[str]) -> Economics:
    """The model with `changes` applied (each `fee:HUB=AMOUNT`, `tier:HUB=TIER` or `add:TIER=N`)."""
    hubs = list(model.hubs)
    for change in changes:
        match = _CHANGE.match(change.strip())
        if match is None:
            raise WhatIfError(f"cannot read what-if {change!r}: use {WHAT_IF_FORMS}")
        kind, name, value = match.groups()
        tiers = {tier.tier: tier for tier in Economics(model.month, model.currency, 0, hubs, []).tiers}
        if kind in ("fee", "tier"):
            index = next((i for i, h in enumerate(hubs) if h.hub == name), None)
            if index is None:
                raise WhatIfError(f"what-if {change!r}: no hub {name!r} (hubs: {', '.join(h.hub for h in hubs)})")
            if kind == "fee":
                hubs[index] = dataclasses.replace(hubs[index], fee=_number(change, value))
            else:
                tier = tiers.get(value)
                fee = tier.fees / tier.hubs if tier is not None and tier.hubs else hubs[index].fee
                hubs[index] = dataclasses.replace(hubs[index], tier=value, fee=fee)
            continue
        count = int(_number(change, value))
        members = [h for h in hubs if h.tier == name]
        if not members:
            raise WhatIfError(f"what-if {change!r}: no hub has tier {name!r} (tiers: {', '.join(tiers)})")
        average = {
            key: sum(getattr(h, key) for h in members) / len(members)
            for key in ("fee", "metered_cost", "staff_hours", "staff_cost", "idle_cost", "active_users")
        }
        for number in range(1, count + 1):
            hubs.append(
                HubEconomics(
                    hub=f"+{name}-{number}",
                    tier=name,
                    fee=average["fee"],
                    metered_cost=average["metered_cost"],
                    staff_hours=average["staff_hours"],
                    staff_cost=average["staff_cost"],
                    active_users=round(average["active_users"]),
                    idle_cost=average["idle_cost"],
                )
            )
    return dataclasses.replace(model, hubs=hubs, scenario=[*model.scenario, *changes])


def _number(change: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise WhatIfError(f"what-if {change!r}: {text!r} is not a number") from None
    if value < 0:
        raise WhatIfError(f"what-if {change!r}: must not be negative")
    return value
