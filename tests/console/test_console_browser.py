"""The console in a real browser (headless Debian Chromium through Playwright): log in through a hub's own login form,
see the hubs with the figures `hubfleet cost` gives, open a hub page with its charts; a hub admin cannot open another
hub's page. Screenshots go to tests/artifacts/console/."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

import pytest
from playwright import sync_api as playwright_api

from tests.browser import ARTIFACTS as BROWSER_ARTIFACTS
from tests.browser import chromium
from tests.console.shared import HUB_ADMIN, OPERATOR, A, B, ConsoleFleet, password

ARTIFACTS = BROWSER_ARTIFACTS / "console"


@pytest.fixture(scope="module")
def browser() -> Iterator[playwright_api.Browser]:
    with chromium("console") as (browser, _):
        yield browser


@contextlib.contextmanager
def logged_in(browser: playwright_api.Browser, url: str, hub: str, user: str) -> Iterator[playwright_api.Page]:
    """A fresh browser that logs in to the console with `hub`, through that hub's own login form; closed at the
    end."""
    page = browser.new_context(viewport={"width": 1200, "height": 480}).new_page()  # full-page shots fit the content
    try:
        page.goto(url + "/")
        page.locator(f'[data-hub="{hub}"] a.login').click()
        page.wait_for_url(f"**/hubs/{hub}/hub/login**")  # the hub's normal login form
        page.fill("#username_input", user)
        page.fill("#password_input", password(user))
        page.click("#login_submit")
        page.wait_for_url(f"{url}/console/")
        yield page
    finally:
        page.context.close()


def money(amount: float, currency: str) -> str:
    return f"{amount:,.2f} {currency}"


def test_the_login_page_lists_the_hubs(browser: playwright_api.Browser, console_fleet: ConsoleFleet) -> None:
    page = browser.new_context(viewport={"width": 1280, "height": 700}).new_page()
    page.goto(console_fleet.fleet.url + "/")
    for hub in (A, B):
        card = page.locator(f'[data-hub="{hub}"]')
        assert card.locator("a.open").get_attribute("href") == f"/hubs/{hub}/"
        assert card.locator("a.login").is_visible()
    page.screenshot(path=ARTIFACTS / "login.png", full_page=True)
    page.context.close()


def test_an_operator_sees_every_hub_with_the_figures_of_hubfleet_cost(
    browser: playwright_api.Browser, console_fleet: ConsoleFleet
) -> None:
    fleet = console_fleet.fleet
    with logged_in(browser, fleet.url, A, OPERATOR) as page:
        assert page.locator("[data-viewer]").get_attribute("data-viewer") == f"{A}:{OPERATOR}"
        # The collector keeps metering while the test reads: the page must equal `hubfleet cost` just before or after.
        before = console_fleet.cost_json()
        page.goto(f"{fleet.url}/console/?month={console_fleet.month_text}")
        shown = {hub: page.locator(f'article[data-hub="{hub}"] dd.cost').inner_text() for hub in (A, B)}
        after = console_fleet.cost_json()
        for hub in (A, B):
            expected = {money(report_hub(report, hub)["total"], report["currency"]) for report in (before, after)}
            assert shown[hub] in expected, (hub, shown[hub], expected)
            assert report_hub(before, hub)["total"] > 0
        assert page.locator(f'article[data-hub="{A}"] .budget svg').count() == 1
        page.screenshot(path=ARTIFACTS / "overview.png", full_page=True)

        page.locator(f'article[data-hub="{A}"] h2 a').click()
        page.wait_for_url(f"**/console/hubs/{A}?month={console_fleet.month_text}")
        for chart in ("cost-by-group", "cost-by-user", "cost-by-day", "cpu-by-day", "cpu-by-group", "cpu-by-user"):
            assert page.locator(f"#{chart} svg.chart").count() == 1, chart
        assert page.locator('#cost-by-group svg [data-name="physics"]').count() == 1
        lines = page.locator("table.lines tr.line")
        assert lines.count() == len(report_hub(before, A)["lines"])
        page.screenshot(path=ARTIFACTS / "hub.png", full_page=True)

        page.goto(f"{fleet.url}/console/pilots")
        assert page.locator(f'table.pilots tr[data-hub="{B}"]').count() == 1
        page.screenshot(path=ARTIFACTS / "pilots.png", full_page=True)


def test_an_operator_sees_the_economics_and_the_upstream_ledger_as_the_cli_reports_them(
    browser: playwright_api.Browser, console_fleet: ConsoleFleet
) -> None:
    fleet = console_fleet.fleet
    with logged_in(browser, fleet.url, A, OPERATOR) as page:
        before = console_fleet.cost_json()
        page.locator("nav a", has_text="Economics").click()
        page.wait_for_url("**/console/economics")
        shown = {
            hub: float(page.locator(f'table.economics tr[data-hub="{hub}"]').get_attribute("data-metered") or 0)
            for hub in (A, B)
        }
        fees = {
            hub: float(page.locator(f'table.economics tr[data-hub="{hub}"]').get_attribute("data-fee") or 0)
            for hub in (A, B)
        }
        after = console_fleet.cost_json()
        for hub in (A, B):
            # The collector keeps metering: the page equals `hubfleet cost` just before or just after.
            assert min(report_hub(r, hub)["total"] for r in (before, after)) <= shown[hub]
            assert shown[hub] <= max(report_hub(r, hub)["total"] for r in (before, after))
            assert fees[hub] == (report_hub(before, hub)["plan_fee"] or 0)
        assert fees[A] == 40
        assert page.locator('table.tiers tr[data-tier="pilot"]').count() == 1
        assert page.locator(f'table.pilot-fees tr[data-hub="{B}"]').count() == 1
        assert page.locator("#cost-by-hub svg.chart").count() == 1
        page.screenshot(path=ARTIFACTS / "economics.png", full_page=True)

        report = json.loads(fleet.cli("contributions", "report", "--json").stdout)
        page.locator("nav a", has_text="Upstream").click()
        page.wait_for_url("**/console/contributions")
        for row in report["rows"]:
            line = page.locator(f'table.engineers tr[data-engineer="{row["key"]}"]')
            assert int(line.get_attribute("data-prs") or -1) == row["prs_opened"]
            assert int(line.get_attribute("data-reviews") or -1) == row["reviews"]
        assert [r["prs_opened"] for r in report["rows"]] == [2, 1]
        assert "67%" in page.locator('tr[data-engineer="bob"] td.share').inner_text(), "a PR and a talk of 3 items"
        assert page.locator('#activity-by-project svg [data-name="jupyterhub"]').count() == 1
        page.screenshot(path=ARTIFACTS / "contributions.png", full_page=True)


def test_a_hub_admin_cannot_open_another_hubs_page(
    browser: playwright_api.Browser, console_fleet: ConsoleFleet
) -> None:
    fleet = console_fleet.fleet
    with logged_in(browser, fleet.url, B, HUB_ADMIN) as page:
        assert page.locator(f'article[data-hub="{B}"]').count() == 1
        assert page.locator(f'article[data-hub="{A}"]').count() == 0
        response = page.goto(f"{fleet.url}/console/hubs/{A}")
        assert response is not None and response.status == 403
        assert page.locator('[data-status="403"]').is_visible()
        page.screenshot(path=ARTIFACTS / "forbidden.png", full_page=True)


def test_an_anonymous_visitor_is_sent_to_the_login_page(
    browser: playwright_api.Browser, console_fleet: ConsoleFleet
) -> None:
    page = browser.new_context().new_page()
    page.goto(f"{console_fleet.fleet.url}/console/hubs/{A}")
    assert page.url.startswith(f"{console_fleet.fleet.url}/console/login?next=")
    assert page.locator(f'[data-hub="{A}"] a.login').is_visible()
    page.context.close()


def report_hub(report: dict, hub: str) -> dict:
    """One hub of `hubfleet cost --json`."""
    return next(h for h in report["hubs"] if h["hub"] == hub)
