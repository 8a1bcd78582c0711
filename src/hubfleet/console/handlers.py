"""The console's pages and its login with the hubs."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy.exc import SQLAlchemyError
from tornado import web

from hubfleet.common.web import set_page_headers
from hubfleet.console import charts, data, urls
from hubfleet.console.auth import HubLogin, LoginAttempt, LoginError, Viewer, is_operator
from hubfleet.edu.courses import next_prewarm
from hubfleet.spec.models import Fleet
from hubfleet.spec.units import human_size

if TYPE_CHECKING:
    from hubfleet.console.app import Console

T = TypeVar("T")

SESSION_COOKIE = "hubfleet-console"
LOGIN_COOKIE = "hubfleet-console-login"
LOGIN_TTL = 600
"""Seconds a started login may take (the hub's login form included)."""

DAY = 86400.0

CONTENT_SECURITY_POLICY = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'"


class PageError(web.HTTPError):
    """An error page with an explanation for the person reading it (never a secret)."""

    def __init__(self, status: int, explanation: str):
        super().__init__(status)
        self.explanation = explanation


class ConsoleHandler(web.RequestHandler):
    """What every console page shares: who is looking, the page frame, error pages."""

    def initialize(self, console: Console) -> None:
        self.console = console

    @property
    def fleet(self) -> Fleet:
        return self.console.fleet()

    def set_default_headers(self) -> None:
        set_page_headers(self, CONTENT_SECURITY_POLICY)

    def get_current_user(self) -> Viewer | None:
        value = self.get_signed_cookie(SESSION_COOKIE, max_age_days=self.console.session_ttl / DAY)
        viewer = Viewer.from_cookie(value, self.fleet) if value else None
        return viewer if viewer is not None and viewer.may_use_console else None

    @property
    def viewer(self) -> Viewer:
        """The logged-in viewer (only in `@web.authenticated` methods)."""
        assert self.current_user is not None
        return self.current_user

    def operators_only(self, what: str) -> None:
        """Refuse anyone but the fleet's operators (`what`: the page's subject and its verb, "The pilots table is")."""
        if not self.viewer.operator:
            raise PageError(403, f"{what} for the fleet's operators.")

    def get_template_namespace(self) -> dict[str, Any]:
        namespace = super().get_template_namespace()
        namespace.update(fleet=self.fleet, viewer=self.current_user, urls=urls, charts=charts, money=money)
        return namespace

    def cookie_options(self) -> dict[str, Any]:
        return {"path": urls.PREFIX, "httponly": True, "samesite": "Lax", "secure": self.console.secure_cookies}

    def month_argument(self) -> dt.date:
        try:
            return data.parse_month(self.get_query_argument("month", None))
        except ValueError as exc:
            raise PageError(400, str(exc)) from None

    async def report(self, function: Callable[..., T], *args: Any) -> T:
        """Run a report on the fleet database in a thread; a database failure is a clear 503, not a crash."""
        try:
            sessions = await self.console.sessions()
            return await asyncio.to_thread(function, sessions, self.fleet, *args)
        except SQLAlchemyError as exc:
            raise PageError(503, f"The fleet database cannot be read right now ({type(exc).__name__}).") from None

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = kwargs.get("exc_info", (None, None, None))[1]
        explanation = getattr(error, "explanation", None) or self._reason
        self.render("error.html", status=status_code, explanation=explanation)


def money(amount: float | None, currency: str) -> str:
    """An amount as the console shows it (two decimals, as `hubfleet cost` does)."""
    return "—" if amount is None else f"{amount:,.2f} {currency}"


class LoginPage(ConsoleHandler):
    """`/` and `/console/login`: the hubs, a link to each, and a way to log in to the console with each."""

    def get(self) -> None:
        next_url = self.get_query_argument("next", urls.PREFIX)
        self.render("login.html", hubs=self.console.hubs(), next_url=next_url)


class StartLogin(ConsoleHandler):
    """`/console/login/<hub>`: off to the hub's OAuth authorization (its own login form when needed)."""

    def get(self, hub: str) -> None:
        if hub not in self.fleet.hubs:
            raise PageError(404, f"There is no hub named {hub!r} in this fleet.")
        try:
            login = HubLogin(self.console.state, hub)
        except LoginError as exc:
            raise PageError(exc.status, str(exc)) from None
        attempt = LoginAttempt.start(hub, self.get_query_argument("next", urls.PREFIX))
        self.set_signed_cookie(LOGIN_COOKIE, attempt.to_cookie(), expires_days=LOGIN_TTL / DAY, **self.cookie_options())
        self.redirect(login.authorize_url(attempt))


class OAuthCallback(ConsoleHandler):
    """`/console/oauth_callback/<hub>`: the hub sends the browser back with a code; find out who it is."""

    async def get(self, hub: str) -> None:
        attempt = LoginAttempt.from_cookie(self.get_signed_cookie(LOGIN_COOKIE, max_age_days=LOGIN_TTL / DAY))
        code = self.get_query_argument("code", "")
        state = self.get_query_argument("state", "")
        if attempt is None or not code or not attempt.matches(hub, state):
            raise PageError(400, "This login was not started here or took too long: please log in again.")
        self.clear_cookie(LOGIN_COOKIE, path=urls.PREFIX)
        try:
            name, admin = await HubLogin(self.console.state, hub).identify(code)
        except LoginError as exc:
            raise PageError(exc.status, str(exc)) from None
        viewer = Viewer(hub=hub, user=name, admin=admin, operator=is_operator(self.fleet, hub, name))
        if not viewer.may_use_console:
            raise PageError(
                403,
                f"You are {name} on hub {hub}. The console is for the fleet's operators and for hubs' admins; "
                "ask an operator if you need to see it.",
            )
        ttl_days = self.console.session_ttl / DAY
        self.set_signed_cookie(SESSION_COOKIE, viewer.to_cookie(), expires_days=ttl_days, **self.cookie_options())
        self.redirect(attempt.next_url)


class Logout(ConsoleHandler):
    """`POST /console/logout` (XSRF-checked): forget the console session (the hub's own login stays)."""

    def post(self) -> None:
        self.clear_cookie(SESSION_COOKIE, path=urls.PREFIX)
        self.redirect("/")


class OverviewPage(ConsoleHandler):
    """`/console/`: every hub the viewer may see, with its plan, health, active users and cost this month."""

    @web.authenticated
    async def get(self) -> None:
        month = self.month_argument()
        overview = await self.report(data.overview, month, self.console.visible_hubs(self.viewer))
        self.render("overview.html", overview=overview, month=month, shift_month=data.shift_month)


class HubPage(ConsoleHandler):
    """`/console/hubs/<hub>`: one hub's usage and cost charts, its cost lines, and its users' homes against the
    quota."""

    @web.authenticated
    async def get(self, hub: str) -> None:
        if hub not in self.fleet.hubs:
            raise PageError(404, f"There is no hub named {hub!r} in this fleet.")
        if not self.viewer.can_see(hub):
            raise PageError(403, f"You are an admin of hub {self.viewer.hub}, not of hub {hub}.")
        month = self.month_argument()
        detail = await self.report(data.hub_detail, month, hub)
        storage = await asyncio.to_thread(data.home_storage, self.fleet, hub)
        summary = next((h for h in self.console.hubs() if h.name == hub), None)
        currency = detail.cost.currency if detail.cost else self.fleet.usage.rates.currency
        figures = charts.hub_charts(detail, lambda amount: money(amount, currency))
        self.render(
            "hub.html",
            hub=self.fleet.hubs[hub],
            summary=summary,
            detail=detail,
            storage=storage,
            next_prewarm=next_prewarm,
            now=dt.datetime.now(),
            human_size=human_size,
            currency=currency,
            figures=figures,
            shift_month=data.shift_month,
        )


class PilotsPage(ConsoleHandler):
    """`/console/pilots`: every pilot hub, ready to convert, expiring or idle (operators only)."""

    @web.authenticated
    async def get(self) -> None:
        self.operators_only("The pilots table is")
        today = dt.datetime.now(dt.UTC).date()
        statuses = await self.report(data.pilots, today)
        self.render("pilots.html", pilots=statuses, today=today)


class EconomicsPage(ConsoleHandler):
    """`/console/economics`: the sustainability model per hub, plan tier and pilot (operators only)."""

    @web.authenticated
    async def get(self) -> None:
        self.operators_only("The economics are")
        month = self.month_argument()
        model = await self.report(data.economics, month)
        figure = charts.bars(
            [(hub.hub, hub.cost) for hub in model.hubs],
            label="Cost per hub (metered and staff)",
            fmt=lambda amount: money(amount, model.currency),
        )
        self.render("economics.html", model=model, month=month, figure=figure, shift_month=data.shift_month)


class ContributionsPage(ConsoleHandler):
    """`/console/contributions`: the organisation's upstream work in the last twelve months (operators only)."""

    @web.authenticated
    async def get(self) -> None:
        self.operators_only("The contribution ledger is")
        today = dt.datetime.now(dt.UTC).date()
        ledger = await self.report(data.contributions, today)
        figure = charts.bars(
            [(row.label, float(row.counts.activity)) for row in ledger.by_project.rows],
            label="Upstream activity by key project",
            fmt="{:.0f} items".format,
        )
        self.render("contributions.html", ledger=ledger, figure=figure)
