"""Plans and budgets: how much of its budget a hub has spent, alerts at the thresholds, and the hard quota.

A paid hub's budget period is the calendar month (UTC); a pilot's is the whole pilot, start to end. Each threshold
alerts once per period (remembered in the ledger's `usage_alerts`). When a hub with `hard_quota` has spent its budget,
the collector writes `QUOTA_FILE` into the hub's state directory; the hub-side spawner refuses new servers while the
file exists, with the message it holds.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import httpx
from sqlalchemy.orm import Session

from hubfleet.common import events
from hubfleet.spec.models import Fleet, Hub, PaidPlan, PilotPlan
from hubfleet.usage.cost import days_in_month, price
from hubfleet.usage.quota import QUOTA_FILE
from hubfleet.usage.tables import AlertSent

log = logging.getLogger("hubfleet.usage.budgets")


@dataclass(frozen=True)
class BudgetPeriod:
    """The days a budget covers, and the budget."""

    label: str  # "2026-11" (a paid hub's month) or "pilot:2026-10-01"
    first: dt.date
    last: dt.date
    budget: float | None
    hard_quota: bool


def budget_period(hub: Hub, day: dt.date) -> BudgetPeriod | None:
    """The budget period holding `day` for `hub`'s plan (None without a plan)."""
    plan = hub.plan
    if isinstance(plan, PilotPlan):
        return BudgetPeriod(f"pilot:{plan.start.isoformat()}", plan.start, plan.end, plan.budget, plan.hard_quota)
    if isinstance(plan, PaidPlan):
        first = day.replace(day=1)
        last = day.replace(day=days_in_month(day))
        return BudgetPeriod(f"{day:%Y-%m}", first, last, plan.monthly_budget, plan.hard_quota)
    return None


@dataclass(frozen=True)
class BudgetStatus:
    """A hub's spend against its budget on a day."""

    hub: str
    period: BudgetPeriod
    spent: float
    currency: str

    @property
    def fraction(self) -> float | None:
        """Spent over budget (None without a budget; a zero budget is spent at once)."""
        budget = self.period.budget
        if budget is None:
            return None
        return self.spent / budget if budget > 0 else float("inf") if self.spent > 0 else 1.0

    @property
    def over(self) -> bool:
        """Whether the budget is spent."""
        return self.fraction is not None and self.fraction >= 1.0


def budget_statuses(session: Session, fleet: Fleet, day: dt.date) -> list[BudgetStatus]:
    """The spend of every hub with a plan, in its budget period up to `day` (one pricing per distinct period)."""
    statuses = []
    priced: dict[tuple[dt.date, dt.date], dict] = {}
    for name, hub in fleet.hubs.items():
        period = budget_period(hub, day)
        if period is None:
            continue
        last = min(period.last, day)
        span = (period.first, last)
        if span not in priced:
            priced[span] = price(session, fleet, period.first, last) if period.first <= last else {}
        pricing = priced[span].get(name)
        spent = pricing.total if pricing is not None else 0.0
        statuses.append(BudgetStatus(name, period, spent, fleet.usage.rates.currency))
    return statuses


def send_alerts(session: Session, fleet: Fleet, statuses: list[BudgetStatus], now: dt.datetime) -> list[dict]:
    """Alert (log, and POST JSON to `usage.alert_webhook`) every threshold newly crossed; returns the alerts sent."""
    sent = []
    for status in statuses:
        fraction = status.fraction
        if fraction is None:
            continue
        for threshold in sorted(fleet.usage.alert_thresholds):
            if fraction < threshold or session.get(AlertSent, (status.hub, status.period.label, threshold)):
                continue
            alert = {
                "hub": status.hub,
                "period": status.period.label,
                "threshold": threshold,
                "fraction": round(fraction, 4),
                "spent": round(status.spent, 2),
                "budget": status.period.budget,
                "currency": status.currency,
                "hard_quota": status.period.hard_quota,
                "message": (
                    f"hub {status.hub} has spent {fraction:.0%} of its budget "
                    f"({status.spent:.2f} of {status.period.budget:.2f} {status.currency}, {status.period.label})"
                ),
            }
            events.record(
                "budget.alert",
                f"budget alert: {alert['message']}",
                hub=status.hub,
                level=logging.WARNING,
                **{key: value for key, value in alert.items() if key not in ("hub", "message")},
            )
            if fleet.usage.alert_webhook is not None and not _post(str(fleet.usage.alert_webhook), alert):
                continue  # not remembered: tried again at the next sweep
            session.add(
                AlertSent(
                    hub=status.hub,
                    period=status.period.label,
                    threshold=threshold,
                    sent_at=now.replace(tzinfo=None),
                    fraction=fraction,
                )
            )
            sent.append(alert)
    return sent


def _post(url: str, alert: dict) -> bool:
    try:
        httpx.post(url, json=alert, timeout=10.0).raise_for_status()
    except httpx.HTTPError as exc:
        log.error("budget alert webhook failed for hub %s: %s", alert["hub"], exc)
        return False
    return True


def quota_message(status: BudgetStatus) -> str:
    """What a user sees when the hard quota refuses their server."""
    return (
        f"This hub has used its budget for {_period_words(status.period)} "
        f"({status.spent:.2f} of {status.period.budget:.2f} {status.currency}), so no new servers can start. "
        "Please contact the hub's administrators."
    )


def _period_words(period: BudgetPeriod) -> str:
    if period.label.startswith("pilot:"):
        return f"the pilot ({period.first:%d %b %Y} to {period.last:%d %b %Y})"
    return f"{period.first:%B %Y}"


def write_quota(state_dir: Path, status: BudgetStatus | None) -> None:
    """Write (over budget with a hard quota) or remove the hub's quota file."""
    path = Path(state_dir) / QUOTA_FILE
    if status is not None and status.period.hard_quota and status.over:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps({"message": quota_message(status), "period": status.period.label}))
        tmp.chmod(0o644)
        tmp.replace(path)
    else:
        path.unlink(missing_ok=True)
