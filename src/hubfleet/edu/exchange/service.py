"""The exchange service of one hub: a JupyterHub service (tornado, OAuth through the hub) over the fleet database.

This module is the service's process: :class:`Service` (what every request shares: the exchange, background jobs
and their progress, grade passback, the hub's REST API, drafts of releases), the tornado application, and the loop
that delivers pending scores to the LMS. The REST API's handlers are in :mod:`.handlers`, the course pages' in
:mod:`.pages`. Run it with ``python -m hubfleet.edu.exchange.service`` and `$HUBFLEET_EXCHANGE_SETTINGS` naming its
settings file (the hub's own settings, for its courses and LMS registrations, are read from beside it).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tornado.web
from jupyterhub.services.auth import HubOAuth
from sqlalchemy import select
from tornado.httpserver import HTTPServer

from hubfleet.common.hubapi import HubAPI
from hubfleet.common.periodic import every
from hubfleet.common.settings import HubSettings
from hubfleet.common.state import HubState
from hubfleet.db import open_database
from hubfleet.edu.exchange import pages, passback, workflow
from hubfleet.edu.exchange.drafts import Drafts
from hubfleet.edu.exchange.handlers import body_limit, routes
from hubfleet.edu.exchange.instant import InstantGrader, InstantLimits
from hubfleet.edu.exchange.settings import ACCESS_SCOPE, SERVICE_NAME, SETTINGS_ENV, ExchangeSettings
from hubfleet.edu.exchange.store import Exchange
from hubfleet.edu.exchange.tables import Assignment, utcnow

log = logging.getLogger("hubfleet.exchange")


@dataclass
class Job:
    """Background work on one assignment (autograding, a regrade, feedback pages) and how far it got."""

    kind: str  # "grade" (autograde or regrade) or "feedback"
    what: str  # as people read it: "autograde", "regrade of sa's submission", "feedback"
    by: str
    started_at: dt.datetime = field(default_factory=utcnow)
    grading: workflow.GradingProgress | None = None
    made: int = 0  # feedback pages made so far
    of: int = 0
    future: asyncio.Future | None = None  # set when it starts

    @property
    def state(self) -> str:
        if self.future is None or not self.future.done():
            return "running"
        return "failed" if self.future.exception() else "done"

    def document(self) -> dict[str, Any]:
        """The job as the progress API answers it."""
        error = self.future.exception() if self.future is not None and self.future.done() else None
        document: dict[str, Any] = {
            "state": self.state,
            "what": self.what,
            "by": self.by,
            "started_at": self.started_at.isoformat(),
            "error": str(error) if error else None,
        }
        if self.grading is not None:
            document["counts"] = self.grading.counts()
            document["submissions"] = [entry.__dict__ for entry in self.grading.snapshot()]
        if self.kind == "feedback":
            document.update(made=self.made, of=self.of)
        return document


class Service:
    """What every handler shares: the exchange, the settings, background jobs, grade passback, instant feedback,
    the hub's REST API and its settings (courses, LMS registrations), drafts of releases."""

    def __init__(self, settings: ExchangeSettings, hub_settings: HubSettings | None = None) -> None:
        self.settings = settings
        self.hub_settings = hub_settings
        self.exchange = Exchange(open_database(settings.database_url), settings.hub)
        self.executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="exchange")
        self.jobs: dict[tuple[str, str, str], Job] = {}
        self.passback = passback.Passback(self.exchange, settings.lti_platforms, settings.tool_key_file)
        self.instant = InstantGrader(
            self.exchange,
            InstantLimits(
                workers=settings.instant_feedback_workers,
                per_student=settings.instant_feedback_per_student,
                window=settings.instant_feedback_window,
            ),
        )
        self.drafts = Drafts()
        self._hub_api: HubAPI | None = None

    @property
    def hub_api(self) -> HubAPI:
        """The hub's REST API as this service (its role: read the course's users and servers, sync rosters)."""
        if self._hub_api is None:
            self._hub_api = HubAPI(self.settings.hub_api_url, self.settings.secret("exchange_token"))
        return self._hub_api

    async def close(self) -> None:
        self.instant.close()
        self.drafts.close()
        await self.passback.close()
        if self._hub_api is not None:
            await self._hub_api.__aexit__()

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

    def busy(self) -> str | None:
        """What the service is doing that the hub must stay awake for (a grading or feedback job, scores being
        delivered to the LMS), or None."""
        running = [job.what for job in self.jobs.values() if job.state == "running"]
        if running:
            return f"{running[0]} under way"
        if self.passback.delivering:
            return "scores being sent to the LMS"
        return None

    def job(self, kind: str, course: str, name: str) -> Job | None:
        """The assignment's last job of `kind` (running or finished), if any."""
        return self.jobs.get((kind, course, name))

    def _start(self, course: str, name: str, job: Job, work: Callable[[], Any]) -> bool:
        """Start `work` as `job` in the background unless a job of its kind runs on the assignment (False)."""
        key = (job.kind, course, name)
        running = self.jobs.get(key)
        if running is not None and running.state == "running":
            return False
        job.future = asyncio.get_running_loop().run_in_executor(self.executor, work)
        job.future.add_done_callback(lambda future: _log_job(key, future))
        self.jobs[key] = job
        return True

    def start_grading(self, course: str, name: str, *, by: str = "") -> bool:
        """Autograde the assignment's collected submissions in the background; False when its grading runs."""
        workers = self.settings.grading_workers or None
        job = Job("grade", "autograde", by, grading=workflow.GradingProgress())
        return self._start(
            course,
            name,
            job,
            lambda: workflow.autograde(self.exchange, course, name, workers=workers, progress=job.grading),
        )

    def start_regrade(self, course: str, name: str, submission_id: int, *, by: str = "") -> bool:
        """Grade one submission again in the background; False when the assignment's grading runs."""
        submission = self.exchange.submission(course, name, submission_id)
        workflow.check_regradable(submission)
        student = submission.student
        job = Job("grade", f"regrade of {student}'s submission {submission_id}", by, grading=workflow.GradingProgress())
        return self._start(
            course,
            name,
            job,
            lambda: workflow.regrade(self.exchange, course, name, submission_id, progress=job.grading),
        )

    def start_feedback(self, course: str, name: str, *, by: str = "") -> bool:
        """Make (release) the assignment's feedback pages in the background; False when that already runs."""
        job = Job("feedback", "feedback", by)

        def counted(made: int, of: int) -> None:
            job.made, job.of = made, of

        return self._start(
            course, name, job, lambda: workflow.make_feedback(self.exchange, course, name, on_page=counted)
        )

    def job_state(self, kind: str, course: str, name: str) -> str:
        job = self.jobs.get((kind, course, name))
        return "idle" if job is None else job.state

    def progress(self, course: str, name: str) -> dict[str, Any]:
        """The assignment's grading and feedback jobs (None: none since the service started)."""
        jobs = {kind: self.job(kind, course, name) for kind in ("grade", "feedback")}
        return {kind: job.document() if job else None for kind, job in jobs.items()}


def _log_job(key: tuple[str, str, str], future: asyncio.Future) -> None:
    if future.exception() is not None:
        log.error("%s of %s/%s failed: %s", *key, future.exception())


def make_app(service: Service, hub_auth: HubOAuth, cookie_secret: bytes) -> tornado.web.Application:
    """The service's tornado application under its prefix: the REST API and the course pages."""
    return tornado.web.Application(
        [*routes(service, hub_auth), *pages.routes(service, hub_auth)],  # type: ignore[list-item]
        cookie_secret=cookie_secret,
        login_url=hub_auth.login_url,
        hub_auth=hub_auth,
        **pages.settings(service.settings.prefix),
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


def read_hub_settings(exchange_settings_file: Path) -> HubSettings | None:
    """The hub's own settings, beside the service's in the hub's state directory (None: not there)."""
    path = HubState(exchange_settings_file.parent).settings_file
    return HubSettings.read(path) if path.exists() else None


async def serve(settings: ExchangeSettings, hub_settings: HubSettings | None = None) -> None:
    """Run the service until cancelled: the HTTP API, the course pages and the passback delivery loop."""
    service = Service(settings, hub_settings)
    hub_auth = make_hub_auth(settings, settings.secret("exchange_token"))
    app = make_app(service, hub_auth, settings.secret("exchange_cookie_secret").encode())
    host, _, port = settings.address.rpartition(":")
    server = HTTPServer(app, max_body_size=body_limit(settings.max_upload_bytes), xheaders=True)
    server.listen(int(port), address=host)
    log.info("exchange of hub %s listening on %s%s", settings.hub, settings.address, settings.prefix)
    await service.run(service.warm_if_wanted)
    try:  # the loop outlives any one failure; the outbox keeps what was not delivered
        await every(settings.passback_every, service.passback.deliver_pending, log=log, what="passback", first=False)
    finally:
        await service.close()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = ExchangeSettings.read()
    os.umask(0o077)
    asyncio.run(serve(settings, read_hub_settings(Path(os.environ[SETTINGS_ENV]))))


if __name__ == "__main__":
    main()
