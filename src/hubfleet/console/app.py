"""The console's part of the front door's tornado app: its routes, its settings (signed cookies, XSRF) and the fleet
database it reads the usage reports from."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker
from tornado import web
from tornado.log import access_log

from hubfleet.common.files import write_private
from hubfleet.common.state import FleetState, database_url
from hubfleet.common.status import HubStatus
from hubfleet.console import handlers, urls
from hubfleet.console.auth import Viewer
from hubfleet.console.data import HubSummary, hub_summaries
from hubfleet.db import open_database
from hubfleet.spec.models import Fleet

HERE = Path(__file__).parent
SECRET_FILE = "console_cookie_secret"


class Console:
    """The fleet console, served by the front door: pages, logins with the hubs, and the usage reports."""

    def __init__(self, fleet: Callable[[], Fleet], state: FleetState, statuses: Callable[[], dict[str, HubStatus]]):
        self.fleet = fleet
        self.state = state
        self.statuses = statuses
        self._sessions: sessionmaker[Session] | None = None
        self._opening = asyncio.Lock()

    @property
    def session_ttl(self) -> float:
        """How long a login lasts, in seconds."""
        return float(self.fleet().console.session_ttl)

    @property
    def secure_cookies(self) -> bool:
        """Cookies only over HTTPS when people reach the front door over HTTPS."""
        return self.fleet().front_door.url.startswith("https://")

    def hubs(self) -> list[HubSummary]:
        """Every hub of the fleet file, in its order, as the supervisor last saw it."""
        return hub_summaries(self.fleet(), self.statuses())

    def visible_hubs(self, viewer: Viewer) -> list[HubSummary]:
        """The hubs `viewer` may see, in the fleet file's order."""
        return [hub for hub in self.hubs() if viewer.can_see(hub.name)]

    async def sessions(self) -> sessionmaker[Session]:
        """The fleet database (connected and migrated on first use, in a thread)."""
        async with self._opening:
            if self._sessions is None:
                url = database_url(self.fleet(), self.state.root)
                self._sessions = await asyncio.to_thread(open_database, url)
        return self._sessions

    def _cookie_secret(self) -> str:
        path = self.state.frontdoor_dir / SECRET_FILE
        if not path.exists():
            write_private(path, secrets.token_hex(32))
        return path.read_text(encoding="utf-8").strip()

    def settings(self) -> dict[str, Any]:
        """Settings of the front door's tornado application (they apply to the whole app)."""
        return {
            "template_path": str(HERE / "templates"),
            "static_path": str(HERE / "static"),
            "static_url_prefix": urls.STATIC,
            "cookie_secret": self._cookie_secret(),
            "login_url": urls.LOGIN,
            "xsrf_cookies": True,
            "xsrf_cookie_kwargs": {
                "path": urls.PREFIX,
                "httponly": True,
                "samesite": "Strict",
                "secure": self.secure_cookies,
            },
            "log_function": log_request,
        }

    def handlers(self) -> list[tuple[str, type[web.RequestHandler], dict[str, Any]]]:
        """The console's routes: `/` (the hubs and how to log in) and everything under `/console/`."""
        given = {"console": self}
        return [
            (r"/", handlers.LoginPage, given),
            (rf"{urls.LOGIN}", handlers.LoginPage, given),
            (rf"{urls.LOGIN}/([^/]+)", handlers.StartLogin, given),
            (rf"{urls.PREFIX}oauth_callback/([^/]+)", handlers.OAuthCallback, given),
            (rf"{urls.PREFIX}logout", handlers.Logout, given),
            (rf"{urls.PREFIX}", handlers.OverviewPage, given),
            (rf"{urls.PREFIX}hubs/([^/]+)", handlers.HubPage, given),
            (rf"{urls.PREFIX}pilots", handlers.PilotsPage, given),
            (rf"{urls.PREFIX}economics", handlers.EconomicsPage, given),
            (rf"{urls.PREFIX}contributions", handlers.ContributionsPage, given),
        ]


def log_request(handler: web.RequestHandler) -> None:
    """Tornado's access log without query strings: OAuth codes and states travel in them."""
    status = handler.get_status()
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    request = handler.request
    duration = 1000 * request.request_time()
    access_log.log(level, "%d %s %s (%s) %.1fms", status, request.method, request.path, request.remote_ip, duration)
