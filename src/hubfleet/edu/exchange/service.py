"""The exchange service of one hub: a JupyterHub service (tornado, OAuth through the hub) over the fleet database.

This module is the service's process: :class:`Service` (what every request shares: the exchange, background jobs,
grade passback), the tornado application, and the loop that delivers pending scores to the LMS. The HTTP handlers
are in :mod:`.handlers`. Run it with ``python -m hubfleet.edu.exchange.service`` and `$HUBFLEET_EXCHANGE_SETTINGS`
naming its settings file.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import tornado.web
from jupyterhub.services.auth import HubOAuth
from sqlalchemy import select
from tornado.httpserver import HTTPServer

from hubfleet.db import open_database
from hubfleet.edu.exchange import passback, workflow
from hubfleet.edu.exchange.handlers import body_limit, routes
from hubfleet.edu.exchange.instant import InstantGrader, InstantLimits
from hubfleet.edu.exchange.settings import ACCESS_SCOPE, SERVICE_NAME, ExchangeSettings
from hubfleet.edu.exchange.store import Exchange
from hubfleet.edu.exchange.tables import Assignment

log = logging.getLogger("hubfleet.exchange")


class Service:
    """What every handler shares: the exchange, the settings, background jobs, grade passback, instant feedback."""

    def __init__(self, settings: ExchangeSettings) -> None:
        self.settings = settings
        self.exchange = Exchange(open_database(settings.database_url), settings.hub)
        self.executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="exchange")
        self.jobs: dict[tuple[str, str, str], asyncio.Future] = {}
        self.passback = passback.Passback(self.exchange, settings.lti_platforms, settings.tool_key_file)
        self.instant = InstantGrader(
            self.exchange,
            InstantLimits(
                workers=settings.instant_feedback_workers,
                per_student=settings.instant_feedback_per_student,
                window=settings.instant_feedback_window,
            ),
        )

    def request_check(self, course: str, name: str, student: str, submission_id: int) -> str | None:
        """Queue instant feedback on a new submission if its assignment asks for it; the check's state (or None)."""
        spec = self.exchange.assignment(course, name).grading_spec
        if not spec.get("instant_feedback"):
            return None
        return self.instant.request(course, name, student, submission_id)

    def warm_if_wanted(self) -> None:
        """Start a warm grader now if any of the hub's assignments gives instant feedback."""
        with self.exchange.sessions() as session:
            specs = session.scalars(select(Assignment.grading_spec).where(Assignment.hub == self.exchange.hub))
            wanted = any(spec.get("instant_feedback") for spec in specs)
        if wanted:
            self.instant.warm()

    async def run(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run blocking work (database, files) off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, lambda: function(*args, **kwargs))

    def start_job(self, kind: str, course: str, name: str, function: Callable[[], Any]) -> bool:
        """Start `function` in the background unless the same job already runs; False when it does."""
        key = (kind, course, name)
        running = self.jobs.get(key)
        if running is not None and not running.done():
            return False
        future = asyncio.get_running_loop().run_in_executor(self.executor, function)
        future.add_done_callback(lambda f: _log_job(key, f))
        self.jobs[key] = future
        return True

    def start_grading(self, course: str, name: str) -> bool:
        """Autograde the assignment's collected submissions in the background; False when that already runs."""
        workers = self.settings.grading_workers or None
        return self.start_job(
            "grade", course, name, lambda: workflow.autograde(self.exchange, course, name, workers=workers)
        )

    def start_feedback(self, course: str, name: str) -> bool:
        """Make the assignment's feedback pages in the background; False when that already runs."""
        return self.start_job("feedback", course, name, lambda: workflow.make_feedback(self.exchange, course, name))

    def job_state(self, kind: str, course: str, name: str) -> str:
        future = self.jobs.get((kind, course, name))
        if future is None:
            return "idle"
        if not future.done():
            return "running"
        return "failed" if future.exception() else "done"


def _log_job(key: tuple[str, str, str], future: asyncio.Future) -> None:
    if future.exception() is not None:
        log.error("%s of %s/%s failed: %s", *key, future.exception())


def make_app(service: Service, hub_auth: HubOAuth, cookie_secret: bytes) -> tornado.web.Application:
    """The service's tornado application under its prefix."""
    return tornado.web.Application(
        routes(service, hub_auth),  # type: ignore[arg-type]
        cookie_secret=cookie_secret,
        login_url=hub_auth.login_url,
        hub_auth=hub_auth,
    )


def make_hub_auth(settings: ExchangeSettings, api_token: str) -> HubOAuth:
    """The hub's OAuth client for this service: identifies callers by token or cookie, requires the access scope."""
    prefix = settings.prefix if settings.prefix.endswith("/") else settings.prefix + "/"
    return HubOAuth(
        api_url=settings.hub_api_url,
        api_token=api_token,
        base_url=prefix,
        hub_prefix=settings.hub_prefix,
        oauth_client_id=f"service-{SERVICE_NAME}",
        oauth_redirect_uri=f"{prefix}oauth_callback",
        access_scopes={ACCESS_SCOPE},
        cache_max_age=30,
    )


async def serve(settings: ExchangeSettings) -> None:
    """Run the service until cancelled: the HTTP API and the passback delivery loop."""
    service = Service(settings)
    hub_auth = make_hub_auth(settings, settings.secret("exchange_token"))
    app = make_app(service, hub_auth, settings.secret("exchange_cookie_secret").encode())
    host, _, port = settings.address.rpartition(":")
    server = HTTPServer(app, max_body_size=body_limit(settings.max_upload_bytes), xheaders=True)
    server.listen(int(port), address=host)
    log.info("exchange of hub %s listening on %s%s", settings.hub, settings.address, settings.prefix)
    await service.run(service.warm_if_wanted)
    try:
        while True:
            await asyncio.sleep(settings.passback_every)
            try:
                await service.passback.deliver_pending()
            except Exception:  # the loop must outlive any one failure; the outbox keeps what was not delivered
                log.exception("passback delivery failed")
    finally:
        service.instant.close()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = ExchangeSettings.read()
    os.umask(0o077)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
