"""The authenticator: LTI launches as logins, courses from LMS contexts, roster syncs after instructors' launches."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import httpx
from jupyterhub.auth import Authenticator
from jupyterhub.utils import maybe_future
from traitlets import Instance, Unicode
from traitlets import Set as SetTrait

from hubfleet.db import open_database
from hubfleet.edu.course_store import find_course
from hubfleet.edu.courses import course_folder_path
from hubfleet.edu.links import (
    AssignmentLink,
    Destination,
    GitContent,
    LinkError,
    Notebook,
    course_folder_url,
    destination_of,
    git_pull_path,
    notebook_path,
)
from hubfleet.edu.lti.deeplinking import PickSessions
from hubfleet.edu.lti.identity import IdentityStore, Usernames
from hubfleet.edu.lti.jwks import PlatformKeys
from hubfleet.edu.lti.keys import ToolKey
from hubfleet.edu.lti.launch import Launch, LaunchError, LaunchValidator
from hubfleet.edu.lti.services import ServiceClient
from hubfleet.edu.lti.state import InitiationLimits, LoginStore, UsedNonces
from hubfleet.edu.roster import sync_course
from hubfleet.hub.authenticators import LoginRecorderMixin
from hubfleet.hub.authenticators.lti import _handlers as handlers
from hubfleet.hub.authenticators.lti._deeplinking import (
    DEEP_LINKING_PATH,
    DeepLinkingLaunchHandler,
    DeepLinkingResponseHandler,
)
from hubfleet.hub.authenticators.lti._handlers import LaunchLogin
from hubfleet.hub.authenticators.lti._landing import ASSIGNMENT_PATH, AssignmentLandingHandler, assignment_url
from hubfleet.hub.authenticators.lti._toolconfig import PREFIX, ToolIdentity, ToolURLs
from hubfleet.hub.courses import OrmCourses
from hubfleet.spec.edu import COURSE_NAME_RE, LTI, LTIPlatform, group_name

TEMPLATES = Path(__file__).parent / "templates"
"""The LTI pages' templates: JupyterHub's `template_paths` include this folder on LTI hubs."""

ROSTER_SYNC_INTERVAL = 300.0
"""Seconds between two background roster syncs of one course (instructors launch often)."""

NONCE_MEMORY = 3600.0
"""Seconds used nonces are remembered: longer than any id_token lives (exp) plus the leeway."""

PICK_TTL = 3600.0
"""Seconds an instructor has to choose content on the deep linking picker page."""


def course_slug(text: str) -> str:
    """A course name from an LMS course's label or title: lower-case letters, digits and `-`, at most 32."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:32].rstrip("-")
    return slug if COURSE_NAME_RE.fullmatch(slug) else "course"


class LTI13Authenticator(LoginRecorderMixin, Authenticator):
    """LTI 1.3 launches as logins (see the module's docstring); combine with the hub's own login by `with_lti`."""

    lti = Instance(LTI, config=True, help="the hub's `lti:` settings")
    hub_public_url = Unicode(config=True, help="the hub's public URL (front door + prefix, ending in '/')")
    key_file = Unicode(config=True, help="the tool's private key (PEM), made on first start")
    database_url = Unicode(config=True, help="the fleet database (LMS identities)")
    hub_name = Unicode(config=True, help="the hub's name (shown in the tool configuration)")
    shared_root = Unicode(config=True, help="the fleet's shared root (course folders: <root>/<hub>/courses/<course>)")
    reserved_usernames = SetTrait(
        Unicode(), config=True, help="names no LMS person may get (the fleet file's own users)"
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lti_settings = settings = self.lti
        self.urls = ToolURLs.of(self.hub_public_url)
        self.tool_key = ToolKey.load_or_create(self.key_file)
        self.sessions = open_database(self.database_url)
        self.usernames = Usernames(IdentityStore(self.sessions), settings.username, frozenset(self.reserved_usernames))
        self.tool = ToolIdentity(self.hub_name, self.urls, self.tool_key.public_jwk(), list(settings.platforms))
        self.logins = LoginStore(ttl=settings.login_ttl, max_entries=settings.max_pending_logins)
        self.limits = InitiationLimits(settings.initiations_per_address, settings.initiations_per_platform)
        self.validator = LaunchValidator(
            settings.platforms,
            PlatformKeys(),
            self.logins,
            UsedNonces(ttl=NONCE_MEMORY + settings.leeway, max_entries=10 * settings.max_pending_logins),
            leeway=settings.leeway,
        )
        self.picks = PickSessions(ttl=PICK_TTL, max_entries=settings.max_pending_logins)
        self._background: set[asyncio.Task] = set()
        self._http = httpx.AsyncClient(timeout=30)
        self._services: dict[tuple[str, str], ServiceClient] = {}
        self._syncing: set[str] = set()
        self._synced: dict[str, float] = {}

    def get_handlers(self, app: Any) -> list[tuple[str, Any]]:
        return [
            *super().get_handlers(app),
            (f"/{PREFIX}/login", handlers.LoginInitiationHandler),
            (f"/{PREFIX}/launch", DeepLinkingLaunchHandler),
            (f"/{PREFIX}/jwks", handlers.JWKSHandler),
            (f"/{PREFIX}/config", handlers.ToolConfigHandler),
            (f"/{PREFIX}/canvas.json", handlers.CanvasConfigHandler),
            (DEEP_LINKING_PATH, DeepLinkingResponseHandler),
            (ASSIGNMENT_PATH, AssignmentLandingHandler),
        ]

    async def authenticate(self, handler: Any, data: Any) -> dict | str | None:
        if isinstance(data, LaunchLogin):
            return {"name": data.username, "auth_state": {"lti": data.launch.auth_state()}}
        fallback = super().authenticate
        if getattr(fallback, "__func__", None) is Authenticator.authenticate:
            return None  # LTI alone: no other way in
        return await maybe_future(fallback(handler, data))

    def check_allowed(self, username: str, authentication: dict | None = None) -> Any:
        """Anyone a registered LMS launches is allowed in (the LMS is the gate); others by the base rules."""
        if authentication and "lti" in (authentication.get("auth_state") or {}):
            return True
        return super().check_allowed(username, authentication)

    async def course_for(self, courses: OrmCourses, launch: Launch) -> str | None:
        """The hub course of the launch's LMS course: the linked one, else a new one (created now) when the hub
        allows it and the launcher is an instructor. None for a launch without a course; LaunchError 403 when the
        person may not come in through this course. The store's coroutines never wait: nothing else runs between
        choosing a free name and creating the course, so two launches of new LMS courses cannot take one name."""
        if launch.context_id is None:
            return None
        role = launch.course_role
        if role is None:
            raise LaunchError(403, "your role in this LMS course gives no access to this hub")
        course = await find_course(courses, lti_context=launch.context_id)
        if course is not None:
            return course
        auto_create = self.lti_settings.auto_create_courses
        if role != "instructor" or not auto_create:
            who = "its instructor's first launch links it" if auto_create else "ask the hub admin"
            raise LaunchError(403, f"this LMS course is not linked to a course on this hub yet: {who}")
        base = course_slug(launch.context_label or launch.context_title or launch.context_id)
        for number in range(1, 1000):
            name = base if number == 1 else f"{base[: 31 - len(str(number))]}-{number}"
            if await courses.group(group_name(name, "student")) is None:
                properties = {"lti_context": launch.context_id, "lti_issuer": launch.issuer, "origin": "lti"}
                await courses.ensure_course(name, title=launch.context_title, properties=properties | {"roster": "lms"})
                self.log.info("LTI: course %s created for LMS course %s of %s", name, launch.context_id, launch.issuer)
                return name
        raise LaunchError(403, "no free course name left for this LMS course")

    async def after_instructor_launch(self, courses: OrmCourses, course: str, launch: Launch) -> None:
        """An instructor launched a course whose roster comes from the LMS: sync it in the background (NRPS), at
        most once per `ROSTER_SYNC_INTERVAL` per course."""
        if launch.course_role != "instructor" or not launch.nrps_url or course in self._syncing:
            return
        students = await courses.group(group_name(course, "student"))
        if students is None or (students["properties"] or {}).get("roster") != "lms":
            return
        if time.monotonic() - self._synced.get(course, -ROSTER_SYNC_INTERVAL) < ROSTER_SYNC_INTERVAL:
            return
        self._syncing.add(course)
        task = asyncio.ensure_future(self.sync_roster(courses, course, launch))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def sync_roster(self, courses: OrmCourses, course: str, launch: Launch) -> None:
        """Bring the course's groups in line with the LMS roster of the launch (failures are logged, not raised)."""
        platform = self.validator.platforms[(launch.issuer, launch.client_id)]
        try:
            report = await sync_course(
                courses,
                self.services(platform),
                course=course,
                context_memberships_url=str(launch.nrps_url),
                usernames=self.usernames.of_members(platform.issuer),
            )
            self.log.info("LTI roster sync of course %s: %s", course, report.to_dict())
        except Exception as error:  # a background sync must never take the hub down; the next launch retries
            self.log.warning("LTI roster sync of course %s failed: %s", course, error)
        else:
            self._synced[course] = time.monotonic()
        finally:
            self._syncing.discard(course)

    def services(self, platform: LTIPlatform) -> ServiceClient:
        """The LTI Advantage services (NRPS, AGS) of `platform`, called with the tool's key (one client each)."""
        key = (platform.issuer, platform.client_id)
        if key not in self._services:
            self._services[key] = ServiceClient(platform, self.tool_key, http=self._http)
        return self._services[key]

    def course_folder(self, course: str) -> Path:
        """The course's shared folder on this machine."""
        return course_folder_path(self.shared_root, self.hub_name, course)

    @staticmethod
    def destination(launch: Launch) -> Destination | None:
        """Where the launched link says to land (its custom parameters); LaunchError 400 when they cannot be used."""
        try:
            destination = destination_of(launch.custom)
        except LinkError as exc:
            raise LaunchError(400, f"this link cannot be opened: {exc} (ask the course's instructor)") from None
        if isinstance(destination, Notebook | AssignmentLink) and launch.context_id is None:
            raise LaunchError(400, "this link names course content but was not launched from a course")
        return destination

    def landing_url(
        self,
        base_url: str,
        username: str,
        course: str | None,
        destination: Destination | None = None,
        content: GitContent | None = None,
    ) -> str:
        """Start (or open) the user's server, then land where the link says: a notebook of the course folder, an
        assignment (fetched into the home first), content pulled from git; else the course's own content (pulled),
        else the course's folder."""
        server = f"{base_url}user/{quote(username)}/"
        if isinstance(destination, AssignmentLink) and course:
            target = assignment_url(base_url, course, destination.name)
        elif isinstance(destination, Notebook) and course:
            target = server + notebook_path(course, destination)
        elif isinstance(destination, GitContent) or content is not None:
            target = server + git_pull_path(destination if isinstance(destination, GitContent) else content)
        else:
            target = server + course_folder_url(course)
        return f"{base_url}hub/spawn/{quote(username)}?{urlencode({'next': target})}"


def with_lti(base: type[Authenticator]) -> type[Authenticator]:
    """`base` with LTI 1.3 launches added (its own login keeps working)."""
    if issubclass(base, LTI13Authenticator):
        return base
    return type(f"LTI13{base.__name__}", (LTI13Authenticator, base), {"__module__": __name__})
