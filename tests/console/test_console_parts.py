"""The console's parts that need no fleet: where a login may send the browser, months, charts, who sees what."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from hubfleet.console import charts
from hubfleet.console.auth import LoginAttempt, Viewer, safe_next
from hubfleet.console.data import parse_month, shift_month
from hubfleet.spec import parse

FLEET = """\
name: parts
hubs:
  alpha: {auth: {type: shared-password, password: long-enough}}
  beta: {auth: {type: shared-password, password: long-enough}}
console: {operators: ["alpha:olga"]}
"""


@pytest.mark.parametrize(
    ("asked", "goes_to"),
    [
        ("/console/hubs/alpha?month=2026-10", "/console/hubs/alpha?month=2026-10"),
        ("/console/", "/console/"),
        ("https://evil.example/", "/console/"),
        ("//evil.example/console/", "/console/"),
        ("/console//evil.example", "/console/"),
        ("/console/\\evil.example", "/console/"),
        ("/hubs/alpha/", "/console/"),
        ("", "/console/"),
    ],
)
def test_a_login_only_ever_returns_to_a_console_page(asked: str, goes_to: str) -> None:
    assert safe_next(asked) == goes_to


def test_a_login_attempt_matches_only_its_hub_and_state() -> None:
    attempt = LoginAttempt.start("alpha", "https://evil.example/")
    assert attempt.next_url == "/console/"
    again = LoginAttempt.from_cookie(attempt.to_cookie().encode())
    assert again == attempt
    assert again.matches("alpha", attempt.state)
    assert not again.matches("beta", attempt.state)
    assert not again.matches("alpha", attempt.state[:-1] + "x")
    assert LoginAttempt.from_cookie(b"not json") is None
    assert LoginAttempt.from_cookie(b'{"hub": "alpha"}') is None


def test_operators_see_every_hub_and_admins_their_own() -> None:
    fleet = parse(FLEET, Path("fleet.yaml"))
    operator = Viewer.from_cookie(b'{"hub": "alpha", "user": "olga", "admin": false}', fleet)
    admin = Viewer.from_cookie(b'{"hub": "beta", "user": "bea", "admin": true}', fleet)
    user = Viewer.from_cookie(b'{"hub": "beta", "user": "bo", "admin": false}', fleet)
    assert operator is not None and admin is not None and user is not None
    assert operator.operator and operator.can_see("alpha") and operator.can_see("beta")
    assert not admin.operator and admin.can_see("beta") and not admin.can_see("alpha")
    assert not user.may_use_console and not user.can_see("beta")
    # an operator of another hub with the same name is not an operator
    assert not Viewer.from_cookie(b'{"hub": "beta", "user": "olga", "admin": false}', fleet).operator
    # a hub that left the fleet, or a mangled cookie, is no login
    assert Viewer.from_cookie(b'{"hub": "gone", "user": "olga", "admin": true}', fleet) is None
    assert Viewer.from_cookie(b"[]", fleet) is None


@pytest.mark.parametrize("text", ["2026-13", "26-11", "2026-1", "0000-01", "9999-12", "last month", "2026-11-01"])
def test_bad_months_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_month(text)


def test_months() -> None:
    assert parse_month("2026-02") == dt.date(2026, 2, 1)
    assert parse_month(None) == dt.datetime.now(dt.UTC).date().replace(day=1)
    assert shift_month(dt.date(2026, 1, 1), -1) == dt.date(2025, 12, 1)
    assert shift_month(dt.date(2026, 12, 1), 1) == dt.date(2027, 1, 1)


def test_charts_escape_names_and_sum_the_smallest_as_others() -> None:
    items = [("<script>alert(1)</script>", 50.0)] + [(f"user{i}", float(i)) for i in range(1, 20)]
    svg = charts.bars(items, label="Cost by user", fmt="{:.2f}".format, limit=5)
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert svg.count("<rect") == 5
    assert "16 others" in svg  # 20 items: the 4 largest, then the 16 others together
    assert "nothing recorded" in charts.bars([("idle", 0.0)], label="Cost", fmt=str)


def test_day_columns_cover_every_day_and_budget_bars_change_colour() -> None:
    days = [dt.date(2026, 11, 1) + dt.timedelta(days=n) for n in range(30)]
    svg = charts.columns({days[3]: 2.0, days[10]: 1.0}, days, label="CPU", fmt="{:.1f} h".format)
    assert svg.count("<rect") == 30
    assert 'data-day="2026-11-04"' in svg
    assert charts.BUDGET_COLOURS[0][1] in charts.budget_bar(0.5)
    assert charts.BUDGET_COLOURS[1][1] in charts.budget_bar(0.9)
    assert charts.BUDGET_COLOURS[2][1] in charts.budget_bar(1.7)
    assert charts.budget_bar(None) == ""
