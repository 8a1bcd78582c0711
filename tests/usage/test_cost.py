"""The cost model: rate card, idle capacity, fees, the group rule, bills shared by usage, budgets, reports."""

from __future__ import annotations

import calendar
import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from hubfleet.usage import ledger
from hubfleet.usage.budgets import budget_statuses, send_alerts
from hubfleet.usage.cost import NO_GROUP, BillError, read_bill
from hubfleet.usage.reports import cost_report, monthly_active_users, pilot_statuses, usage_report
from tests.usage.conftest import make_fleet

GIB = 2**30
DAY = dt.date(2026, 11, 3)
T0 = calendar.timegm(dt.datetime(2026, 11, 3, 10).timetuple())
AUTH = "auth: {type: shared-password, password: secret-password, admins: [boss]}"
HUBS = f"""
a:
  {AUTH}
  plan: {{type: paid, monthly_budget: 1.0}}
  groups: {{g1: [u1, u2], g2: [u2]}}
b:
  {AUTH}
  plan: {{type: pilot, start: 2026-10-20, end: 2026-11-10, budget: 2.0}}
"""


def one_hour(session: Session, hub: str, user: str, cores: float, memory_gib: float, request: float = 1.0) -> None:
    """An hour of a user's server: `cores` used on average, `memory_gib` in use, requesting 1 core and 1 GiB."""
    ledger.record_samples(
        session,
        [
            ledger.Reading(hub, user, "server", T0 + 60 * i, 60, 60 * cores, request, int(memory_gib * GIB), GIB)
            for i in range(60)
        ],
    )
    ledger.rollup(session, T0)


def capacity(session: Session, cores: float, memory_gib: float, hours: float = 1) -> None:
    for i in range(int(hours * 60)):
        ledger.record_coverage(session, T0 + 60 * i, 60, cores, int(memory_gib * GIB))


def test_the_rate_card_prices_charged_usage_and_idle_capacity_is_its_own_line(sessions: sessionmaker) -> None:
    fleet = make_fleet(
        HUBS, "usage: {rates: {cpu_hour: 1, memory_gb_hour: 0.5, storage_gb_month: 3, hub_monthly_fee: 7}}"
    )
    with sessions.begin() as session:
        one_hour(session, "a", "u1", cores=0.25, memory_gib=0.5)  # charged its request: 1 core, 1 GiB
        one_hour(session, "a", "u2", cores=2, memory_gib=3)  # charged its use
        capacity(session, cores=4, memory_gib=8)
        for day in range(1, 31):  # 3 GiB of home every day of November: 3 GiB-months
            ledger.record_home_bytes(session, "a", "u1", dt.date(2026, 11, day), 3 * GIB)
    with sessions() as session:
        report = cost_report(session, fleet, month=DAY)
    a, b = report.hub("a"), report.hub("b")
    users = {line.name: line for line in a.of_kind("user")}
    assert users["u1"].cpu_hours == pytest.approx(1) and users["u1"].memory_gb_hours == pytest.approx(1)
    assert users["u1"].storage_gb_months == pytest.approx(3)
    assert users["u1"].cost == pytest.approx(1 + 0.5 + 9)
    assert users["u2"].cost == pytest.approx(2 + 1.5)
    (idle,) = a.of_kind("idle")
    assert idle.cpu_hours == pytest.approx(1) and idle.memory_gb_hours == pytest.approx(4), "capacity minus charged"
    assert idle.cost == pytest.approx(1 + 2), "hub b used nothing: a gets all the idle capacity"
    assert b.of_kind("idle")[0].cost == 0
    assert a.of_kind("fee")[0].cost == 7 and b.of_kind("fee")[0].cost == 7
    assert a.total == pytest.approx(10.5 + 3.5 + 3 + 7)
    assert a.budget == 1.0 and a.budget_fraction == pytest.approx(a.total)
    assert b.plan == "pilot" and b.budget_fraction == pytest.approx(2 * 7 / 2.0), "the pilot ran in October too"
    assert report.total == pytest.approx(a.total + b.total)


def test_users_in_several_groups_are_split_equally(sessions: sessionmaker) -> None:
    fleet = make_fleet(HUBS, "usage: {rates: {cpu_hour: 1, memory_gb_hour: 0, storage_gb_month: 0}}")
    with sessions.begin() as session:
        one_hour(session, "a", "u1", cores=1, memory_gib=1)
        one_hour(session, "a", "u2", cores=2, memory_gib=1)
        one_hour(session, "a", "loner", cores=1, memory_gib=1)
        ledger.set_group_members(session, "a", {"g1": ["u1", "u2"], "g2": ["u2"]})
    with sessions() as session:
        hub = cost_report(session, fleet, month=DAY).hub("a")
        by_group = {row.key: row for row in usage_report(session, fleet, hub="a", by="group", since=DAY)}
    groups = {line.name: line.cost for line in hub.of_kind("group")}
    assert groups == pytest.approx({"g1": 1 + 1, "g2": 1, NO_GROUP: 1})
    assert sum(groups.values()) == pytest.approx(sum(line.cost for line in hub.of_kind("user")))
    assert by_group["g1"].cpu_hours == pytest.approx(2) and by_group["g2"].cpu_hours == pytest.approx(1)


def write_bill(tmp_path: Path, rows: str) -> Path:
    path = tmp_path / "bill.csv"
    path.write_text("date,component,cost\n" + rows)
    return path


def test_a_bill_is_shared_by_usage_and_the_rest_is_idle(sessions: sessionmaker, tmp_path: Path) -> None:
    bill = write_bill(
        tmp_path,
        "2026-11-03,cpu,24\n2026-11-03,memory,12\n2026-11-03,storage,5\n2026-11-03,fixed,10\n2026-11-04,cpu,24\n",
    )
    fleet = make_fleet(HUBS, f"usage: {{bill_csv: {bill}}}")
    with sessions.begin() as session:
        one_hour(session, "a", "u1", cores=2, memory_gib=2)  # 2 core-hours, 2 GiB-hours charged
        one_hour(session, "b", "u9", cores=1, memory_gib=1)  # 1 core-hour (its request), 1 GiB-hour
        capacity(session, cores=4, memory_gib=4, hours=6)  # 24 core-hours, 24 GiB-hours covered on the 3rd
        ledger.record_home_bytes(session, "a", "u1", DAY, 3 * GIB)
        ledger.record_home_bytes(session, "b", "u9", DAY, 1 * GIB)
    with sessions() as session:
        report = cost_report(session, fleet, month=DAY)
    u1 = report.hub("a").of_kind("user")[0]
    u9 = report.hub("b").of_kind("user")[0]
    assert u1.cost == pytest.approx(24 * 2 / 24 + 12 * 2 / 24 + 5 * 3 / 4)
    assert u9.cost == pytest.approx(24 * 1 / 24 + 12 * 1 / 24 + 5 * 1 / 4)
    assert report.hub("a").of_kind("fee")[0].cost == 5 and report.hub("b").of_kind("fee")[0].cost == 5
    idle = sum(hub.of_kind("idle")[0].cost for hub in report.hubs)
    assert idle == pytest.approx(24 - 3 + 12 - 1.5 + 24), "the uncovered 4th is all idle"
    assert report.source == "bill"
    assert report.total == pytest.approx(24 + 12 + 5 + 10 + 24), "every cent of the bill lands somewhere"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("date;component;cost\n", "header"),
        ("date,component,cost\n2026-11-3x,cpu,1\n", ":2: expected an ISO date"),
        ("date,component,cost\n2026-11-03,gpu,1\n", ":2: component must be one of"),
    ],
)
def test_a_bad_bill_is_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bill.csv"
    path.write_text(text)
    with pytest.raises(BillError, match=message):
        read_bill(path)
    with pytest.raises(BillError, match="cannot read"):
        read_bill(tmp_path / "missing.csv")


def test_thresholds_alert_once_per_budget_period(sessions: sessionmaker) -> None:
    fleet = make_fleet(HUBS, "usage: {rates: {cpu_hour: 1, memory_gb_hour: 0, storage_gb_month: 0}}")
    with sessions.begin() as session:
        one_hour(session, "a", "u1", cores=0.9, memory_gib=0)  # 1.0 charged (its request) of a 1.0 budget
    now = dt.datetime(2026, 11, 3, 12, tzinfo=dt.UTC)
    with sessions.begin() as session:
        sent = send_alerts(session, fleet, budget_statuses(session, fleet, DAY), now)
    assert [(a["hub"], a["threshold"]) for a in sent] == [("a", 0.8), ("a", 1.0)]
    assert sent[0]["period"] == "2026-11" and "100%" in sent[1]["message"]
    with sessions.begin() as session:
        assert send_alerts(session, fleet, budget_statuses(session, fleet, DAY), now) == []


def test_mau_and_pilots(sessions: sessionmaker) -> None:
    fleet = make_fleet(HUBS)
    when = dt.datetime(2026, 11, 3, 9, tzinfo=dt.UTC)
    with sessions.begin() as session:
        for user in ("boss", "s1", "s2", "s3", "s4"):
            ledger.record_activity(session, "b", user, when)
        ledger.record_activity(session, "a", "u1", when - dt.timedelta(days=1))
        ledger.record_activity(session, "a", "u0", when - dt.timedelta(days=5))  # in October
    with sessions() as session:
        assert monthly_active_users(session, fleet, month=DAY) == {"a": 1, "b": 5}
        (pilot,) = pilot_statuses(session, fleet, today=DAY)
    assert pilot.active_non_staff_users == 4 and not pilot.ready_to_convert, "the admin is staff"
    assert pilot.expiring and pilot.days_left == 7 and not pilot.idle
    with sessions.begin() as session:
        ledger.record_activity(session, "b", "s5", when)
    with sessions() as session:
        (pilot,) = pilot_statuses(session, fleet, today=DAY)
        (later,) = pilot_statuses(session, fleet, today=DAY + dt.timedelta(days=20))
    assert pilot.ready_to_convert
    assert later.idle and later.ended and not later.expiring and not later.ready_to_convert
