"""LTI 1.3 launches on a hub, next to its normal login (`hub.lti` in the fleet file).

`with_lti(base)` makes the hub's authenticator class (shared password, native, GitHub …) into one that also takes
LTI launches: JupyterHub 6 runs one authenticator per hub, and an authenticator may add request handlers
(`get_handlers`). The LTI handlers validate a launch (`hubfleet.edu.lti.launch`) and then log the person in through
JupyterHub's own `login_user` with the validated launch as the login data; `authenticate` recognises that data
and passes everything else (the login form, OAuth callbacks) to the base class. So one hub keeps its password or
GitHub login and gains LTI, with JupyterHub's allow/block lists, admin flags and login cookies unchanged.

Endpoints (under the hub's prefix, e.g. `/hubs/<hub>/hub/`):

- `lti13/login` (GET, POST): OIDC third-party login initiation from the LMS → redirect to the platform's
  authorization endpoint, with `state` and `nonce` kept server-side.
- `lti13/launch` (POST): the id_token → the person, their course and role → their server, in the course folder.
  After an instructor's launch of a course whose roster comes from the LMS, the roster is synced in the background
  (`hubfleet.edu.roster.sync_course` over NRPS, with the tool's key).
- `lti13/jwks`: the tool's public key set; `lti13/config`: every value an LMS admin needs (JSON);
  `lti13/canvas.json`: the Canvas developer key configuration (paste its URL into Canvas).
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlparse

import httpx
from jupyterhub import orm, roles
from jupyterhub.auth import Authenticator
from jupyterhub.handlers import BaseHandler
from jupyterhub.utils import maybe_future
from tornado import web
from traitlets import Dict, Unicode
from traitlets import Set as SetTrait

from hubfleet.db import open_database
from hubfleet.edu.exchange.lms import record_launch
from hubfleet.edu.lti.identity import IdentityStore
from hubfleet.edu.lti.jwks import PlatformKeys
from hubfleet.edu.lti.keys import ToolKey
from hubfleet.edu.lti.launch import Launch, LaunchError, LaunchValidator
from hubfleet.edu.lti.services import Member, ServiceClient
from hubfleet.edu.lti.state import LoginStore, PendingLogin, UsedNonces
from hubfleet.edu.roster import sync_course
from hubfleet.hub.authenticators import LoginRecorderMixin
from hubfleet.hub.courses import ensure_course, find_course, set_member
from hubfleet.spec.edu import COURSE_NAME_RE, COURSES_FOLDER, LTI, group_name

PREFIX = "lti13"
"""Path of the LTI endpoints below the hub's prefix (`<public hub URL>hub/lti13/…`)."""

STATE_COOKIE_PREFIX = "hubfleet-lti-"
MAX_PARAMETER = 4096
"""Longest login initiation parameter accepted (LMS hints are opaque but not huge)."""

ROSTER_SYNC_INTERVAL = 300.0
"""Seconds between two background roster syncs of one course (instructors launch often)."""

NONCE_MEMORY = 3600.0
"""Seconds used nonces are remembered: longer than any id_token lives (exp) plus the leeway."""

SCOPES = [
    "https://purl.imsglobal.org/spec/lti-nrps/scope/contextmembership.readonly",
    "https://purl.imsglobal.org/spec/lti-ags/scope/lineitem",
    "https://purl.imsglobal.org/spec/lti-ags/scope/lineitem.readonly",
    "https://purl.imsglobal.org/spec/lti-ags/scope/result.readonly",
    "https://purl.imsglobal.org/spec/lti-ags/scope/score",
]
"""What the tool asks the LMS for: the course roster (roster sync) and grades (assignments)."""


@dataclass(frozen=True)
class ToolURLs:
    """The hub's LTI endpoints as the LMS reaches them."""

    login: str
    launch: str
    jwks: str
    config: str
    canvas: str

    @classmethod
    def of(cls, hub_public_url: str) -> ToolURLs:
        """For a hub whose public URL (front door + hub prefix, ending in `/`) is `hub_public_url`."""
        base = f"{hub_public_url.rstrip('/')}/hub/{PREFIX}/"
        return cls(
            login=f"{base}login",
            launch=f"{base}launch",
            jwks=f"{base}jwks",
            config=f"{base}config",
            canvas=f"{base}canvas.json",
        )


@dataclass(frozen=True)
class LaunchLogin:
    """The login data the launch handler gives `login_user`: a validated launch and who it is."""

    launch: Launch
    username: str


def course_slug(text: str) -> str:
    """A course name from an LMS course's label or title: lower-case letters, digits and `-`, at most 32."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:32].rstrip("-")
    return slug if COURSE_NAME_RE.fullmatch(slug) else "course"


class LTI13Authenticator(LoginRecorderMixin, Authenticator):
    """LTI 1.3 launches as logins (see the module's docstring); combine with the hub's own login by `with_lti`."""

    lti = Dict(config=True, help="the hub's `lti:` settings (hubfleet.spec.edu.LTI, as JSON)")
    hub_public_url = Unicode(config=True, help="the hub's public URL (front door + prefix, ending in '/')")
    key_file = Unicode(config=True, help="the tool's private key (PEM), made on first start")
    database_url = Unicode(config=True, help="the fleet database (LMS identities)")
    hub_name = Unicode(config=True, help="the hub's name (shown in the tool configuration)")
    reserved_usernames = SetTrait(
        Unicode(), config=True, help="names no LMS person may get (the fleet file's own users)"
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lti_settings = settings = LTI.model_validate(self.lti)
        self.urls = ToolURLs.of(self.hub_public_url)
        self.tool_key = ToolKey.load_or_create(self.key_file)
        self.sessions = open_database(self.database_url)
        self.identities = IdentityStore(self.sessions)
        self.logins = LoginStore(ttl=settings.login_ttl, max_entries=settings.max_pending_logins)
        self.validator = LaunchValidator(
            settings.platforms,
            PlatformKeys(),
            self.logins,
            UsedNonces(ttl=NONCE_MEMORY + settings.leeway, max_entries=10 * settings.max_pending_logins),
            leeway=settings.leeway,
        )
        self._background: set[asyncio.Task] = set()
        self._http = httpx.AsyncClient(timeout=30)
        self._services: dict[tuple[str, str], ServiceClient] = {}
        self._syncing: set[str] = set()
        self._synced: dict[str, float] = {}

    def get_handlers(self, app: Any) -> list[tuple[str, Any]]:
        return [
            *super().get_handlers(app),
            (f"/{PREFIX}/login", LoginInitiationHandler),
            (f"/{PREFIX}/launch", LaunchHandler),
            (f"/{PREFIX}/jwks", JWKSHandler),
            (f"/{PREFIX}/config", ToolConfigHandler),
            (f"/{PREFIX}/canvas.json", CanvasConfigHandler),
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

    async def username_for(self, issuer: str, sub: str, *, email: str | None, name: str | None) -> str:
        """The hub user name of an LMS person (durable, collision-checked; see hubfleet.edu.lti.identity)."""
        return await asyncio.to_thread(
            self.identities.username_for,
            issuer,
            sub,
            email=email,
            name=name,
            rule=self.lti_settings.username,
            taken=self.reserved_usernames.__contains__,
        )

    def course_for(self, db: Any, launch: Launch) -> str | None:
        """The hub course of the launch's LMS course: the linked one, else a new one (created now) when the hub
        allows it and the launcher is an instructor. None for a launch without a course; LaunchError 403 when the
        person may not come in through this course."""
        if launch.context_id is None:
            return None
        role = launch.course_role
        if role is None:
            raise LaunchError(403, "your role in this LMS course gives no access to this hub")
        course = find_course(db, lti_context=launch.context_id)
        if course is not None:
            return course
        auto_create = self.lti_settings.auto_create_courses
        if role != "instructor" or not auto_create:
            who = "its instructor's first launch links it" if auto_create else "ask the hub admin"
            raise LaunchError(403, f"this LMS course is not linked to a course on this hub yet: {who}")
        base = course_slug(launch.context_label or launch.context_title or launch.context_id)
        for number in range(1, 1000):
            name = base if number == 1 else f"{base[: 31 - len(str(number))]}-{number}"
            if orm.Group.find(db, group_name(name, "student")) is None:
                # created before anything awaits: two launches of new LMS courses cannot take the same name
                properties = {"lti_context": launch.context_id, "lti_issuer": launch.issuer, "origin": "lti"}
                ensure_course(db, name, title=launch.context_title, properties=properties | {"roster": "lms"})
                self.log.info("LTI: course %s created for LMS course %s of %s", name, launch.context_id, launch.issuer)
                return name
        raise LaunchError(403, "no free course name left for this LMS course")

    def after_instructor_launch(self, db: Any, course: str, launch: Launch) -> None:
        """An instructor launched a course whose roster comes from the LMS: sync it in the background (NRPS), at
        most once per `ROSTER_SYNC_INTERVAL` per course."""
        if launch.course_role != "instructor" or not launch.nrps_url or course in self._syncing:
            return
        students = orm.Group.find(db, group_name(course, "student"))
        if students is None or (students.properties or {}).get("roster") != "lms":
            return
        if time.monotonic() - self._synced.get(course, -ROSTER_SYNC_INTERVAL) < ROSTER_SYNC_INTERVAL:
            return
        self._syncing.add(course)
        task = asyncio.ensure_future(self.sync_roster(db, course, launch))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def sync_roster(self, db: Any, course: str, launch: Launch) -> None:
        """Bring the course's groups in line with the LMS roster of the launch (failures are logged, not raised)."""
        platform = self.validator.platforms[(launch.issuer, launch.client_id)]
        key = (platform.issuer, platform.client_id)
        if key not in self._services:
            self._services[key] = ServiceClient(platform, self.tool_key, http=self._http)

        async def username(member: Member) -> str:
            return await self.username_for(platform.issuer, member.user_id, email=member.email, name=member.name)

        try:
            report = await sync_course(
                DatabaseGroups(db),
                self._services[key],
                course=course,
                context_memberships_url=str(launch.nrps_url),
                usernames=username,
            )
            self.log.info("LTI roster sync of course %s: %s", course, report.to_dict())
        except Exception as error:  # a background sync must never take the hub down; the next launch retries
            self.log.warning("LTI roster sync of course %s failed: %s", course, error)
        else:
            self._synced[course] = time.monotonic()
        finally:
            self._syncing.discard(course)

    def landing_url(self, base_url: str, username: str, course: str | None) -> str:
        """Start (or open) the user's server, then land in the course's folder."""
        path = f"lab/tree/{COURSES_FOLDER}/{course}" if course else "lab"
        target = f"{base_url}user/{quote(username)}/{path}"
        return f"{base_url}hub/spawn/{quote(username)}?{urlencode({'next': target})}"


class DatabaseGroups:
    """Roster sync's view of the hub (`hubfleet.edu.roster.HubGroups`), straight in JupyterHub's database."""

    def __init__(self, db: Any) -> None:
        self.db = db

    async def group(self, name: str) -> dict | None:
        group = orm.Group.find(self.db, name)
        return None if group is None else {"name": group.name, "users": [user.name for user in group.users]}

    async def ensure_users(self, names: Iterable[str]) -> None:
        for name in names:
            if orm.User.find(self.db, name) is None:
                user = orm.User(name=name)
                self.db.add(user)
                roles.assign_default_roles(self.db, entity=user)
        self.db.commit()

    async def add_members(self, group: str, users: Iterable[str]) -> None:
        self._change(group, users, add=True)

    async def remove_members(self, group: str, users: Iterable[str]) -> None:
        self._change(group, users, add=False)

    def _change(self, name: str, users: Iterable[str], *, add: bool) -> None:
        group = orm.Group.find(self.db, name)
        if group is None:
            return
        for username in users:
            user = orm.User.find(self.db, username)
            if user is None:
                continue
            if add and group not in user.groups:
                user.groups.append(group)
            elif not add and group in user.groups:
                user.groups.remove(group)
        self.db.commit()


def with_lti(base: type[Authenticator]) -> type[Authenticator]:
    """`base` with LTI 1.3 launches added (its own login keeps working)."""
    if issubclass(base, LTI13Authenticator):
        return base
    return type(f"LTI13{base.__name__}", (LTI13Authenticator, base), {"__module__": __name__})


def state_cookie_options(base_url: str, public_url: str) -> dict[str, Any]:
    """The login state cookie, scoped to the LTI endpoints, must come back on the LMS's cross-site form POST:
    SameSite=None (which browsers accept only with Secure, i.e. on https)."""
    options: dict[str, Any] = {"path": f"{base_url}{PREFIX}/", "httponly": True}
    if urlparse(public_url).scheme == "https":
        options |= {"secure": True, "samesite": "None"}
    return options


class _LTIHandler(BaseHandler):
    """Shared parts of the LTI endpoints: cross-site by design (the LMS posts them), and framable (LMS iframes)."""

    def set_default_headers(self) -> None:
        super().set_default_headers()
        # The LMS may show the tool in an iframe: let these pages (errors, the new-window page) be shown there.
        self.set_header("Content-Security-Policy", "frame-ancestors *")

    def check_xsrf_cookie(self) -> None:
        """LTI requests come from the LMS's pages: state, nonce and the signature protect them instead."""
        return None

    @property
    def lti(self) -> LTI13Authenticator:
        return self.authenticator

    def fail(self, error: LaunchError) -> web.HTTPError:
        """The hub's error page with `error`'s status and message."""
        failure = web.HTTPError(error.status)
        failure.jupyterhub_message = error.message  # type: ignore[attr-defined]
        return failure

    def state_cookie_name(self, state: str) -> str:
        return STATE_COOKIE_PREFIX + hashlib.sha256(state.encode()).hexdigest()[:16]

    def state_cookie_options(self) -> dict[str, Any]:
        return state_cookie_options(self.hub.base_url, self.lti.hub_public_url)


class LoginInitiationHandler(_LTIHandler):
    """OIDC third-party login initiation (IMS Security Framework §5.1.1): GET or POST from the LMS."""

    async def get(self) -> None:
        await self.initiate()

    async def post(self) -> None:
        await self.initiate()

    def parameter(self, name: str, required: bool = False) -> str | None:
        value = self.get_argument(name, None)
        if value is not None and len(value) > MAX_PARAMETER:
            raise self.fail(LaunchError(400, f"the login parameter {name} is too long"))
        if required and not value:
            raise self.fail(LaunchError(400, f"the login initiation has no {name}: start it from the LMS"))
        return value or None

    async def initiate(self) -> None:
        issuer = self.parameter("iss", required=True)
        login_hint = self.parameter("login_hint", required=True)
        target = self.parameter("target_link_uri", required=True)
        client_id = self.parameter("client_id")
        deployment = self.parameter("lti_deployment_id")
        message_hint = self.parameter("lti_message_hint")
        assert issuer and login_hint and target
        try:
            platform = self.lti.validator.platform(issuer, client_id)
        except LaunchError as error:
            raise self.fail(error) from None
        if deployment is not None and deployment not in platform.deployment_ids:
            raise self.fail(LaunchError(403, "this deployment of the tool is not registered with this hub"))
        if not target.startswith(self.lti.hub_public_url):
            raise self.fail(LaunchError(400, "target_link_uri is not on this hub"))
        initiation = {
            name: value
            for name, value in (
                ("iss", issuer),
                ("login_hint", login_hint),
                ("target_link_uri", target),
                ("client_id", platform.client_id),
                ("lti_deployment_id", deployment),
                ("lti_message_hint", message_hint),
            )
            if value is not None
        }
        login = self.lti.logins.start(
            issuer=platform.issuer, client_id=platform.client_id, target_link_uri=target, initiation=initiation
        )
        self._set_cookie(
            self.state_cookie_name(login.state),
            login.state,
            encrypted=True,
            expires_days=None,
            max_age=int(self.lti.lti_settings.login_ttl),
            **self.state_cookie_options(),
        )
        request = {
            "scope": "openid",
            "response_type": "id_token",
            "response_mode": "form_post",
            "prompt": "none",
            "client_id": platform.client_id,
            "redirect_uri": self.lti.urls.launch,
            "login_hint": login_hint,
            "state": login.state,
            "nonce": login.nonce,
        }
        if message_hint is not None:
            request["lti_message_hint"] = message_hint
        auth_url = str(platform.auth_login_url)
        self.redirect(f"{auth_url}{'&' if '?' in auth_url else '?'}{urlencode(request)}")


class LaunchHandler(_LTIHandler):
    """The launch (the platform's form POST of id_token and state) → logged in, in the course, on the server."""

    async def get(self) -> None:
        raise self.fail(LaunchError(405, "a launch is a form POST from the LMS"))

    async def post(self) -> None:
        try:
            login = self.lti.validator.take_login(self.get_body_argument("state", None))
            browser_state = self.get_secure_cookie(self.state_cookie_name(login.state), max_age_days=1)
            self.clear_cookie(self.state_cookie_name(login.state), path=self.state_cookie_options()["path"])
            launch = await self.lti.validator.validate(self.get_body_argument("id_token", None), login)
            if browser_state is None or browser_state.decode(errors="replace") != login.state:
                self.new_window(login)
                return
            course = self.lti.course_for(self.db, launch)
            username = await self.lti.username_for(launch.issuer, launch.sub, email=launch.email, name=launch.name)
        except LaunchError as error:
            self.log.warning("LTI launch refused (%s): %s", error.status, error.message)
            raise self.fail(error) from None
        user = await self.login_user(LaunchLogin(launch, username))
        if user is None:
            raise self.fail(LaunchError(403, "this hub does not let you in (blocked)"))
        if course is not None and launch.course_role is not None:
            set_member(self.db, course, user.name, launch.course_role)
            # grade passback needs the course's LMS link (platform, context, AGS line items)
            await asyncio.to_thread(
                record_launch, self.lti.sessions, hub=self.lti.hub_name, course=course, launch=launch
            )
            self.lti.after_instructor_launch(self.db, course, launch)
        self.log.info("LTI launch: %s (%s) in course %s", user.name, launch.course_role, course)
        self.redirect(self.lti.landing_url(self.base_url, user.name, course))

    def new_window(self, login: PendingLogin) -> None:
        """This browser did not send back the login's cookie (an LMS iframe with third-party cookies blocked):
        nobody is logged in here; offer to start the launch again in a window of its own."""
        again = f"{self.lti.urls.login}?{urlencode(login.initiation)}"
        self.set_status(401)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(NEW_WINDOW_PAGE.format(url=html.escape(again, quote=True), title=html.escape(self.lti.hub_name)))


NEW_WINDOW_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Open {title} in a new window</title></head>
<body style="font-family: sans-serif; margin: 2em">
<h1>Open {title} in a new window</h1>
<p>Your browser blocks the cookies this hub needs inside the LMS page, so you cannot be logged in here.</p>
<p><a id="open" href="{url}" target="_blank" rel="noopener">Open {title} in a new window</a></p>
</body></html>
"""


class JWKSHandler(_LTIHandler):
    """The tool's public keys (the LMS verifies the tool's signed requests with them)."""

    async def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "max-age=300")
        self.finish(json.dumps(self.lti.tool_key.jwks()))


def tool_configuration(lti: LTI13Authenticator) -> dict[str, Any]:
    """Every value an LMS admin needs, per kind of LMS (see docs/lms-admin-guide.md)."""
    urls = lti.urls
    common = {
        "tool_name": lti.hub_name,
        "login_initiation_url": urls.login,
        "redirect_uris": [urls.launch],
        "target_link_uri": urls.launch,
        "jwks_url": urls.jwks,
        "public_key": lti.tool_key.public_jwk(),
        "scopes": SCOPES,
    }
    return {
        "tool": common,
        "canvas": {"developer_key_json_url": urls.canvas, "redirect_uris": [urls.launch]},
        "moodle": {
            "tool_url": urls.launch,
            "lti_version": "LTI 1.3",
            "public_key_type": "Keyset URL",
            "public_keyset": urls.jwks,
            "initiate_login_url": urls.login,
            "redirection_uris": [urls.launch],
            "services": {"ims_lti_names_and_role_provisioning": "use", "ims_lti_assignment_and_grade_services": "use"},
            "privacy": {"share_launcher_name": "always", "share_launcher_email": "always"},
        },
        "openedx": {
            "lti_version": "LTI 1.3",
            "tool_launch_url": urls.launch,
            "tool_initiate_login_url": urls.login,
            "tool_public_key_mode": "Keyset URL",
            "tool_keyset_url": urls.jwks,
            "request_username": True,
            "request_email": True,
        },
        "registrations": [
            {"label": p.label, "issuer": p.issuer, "client_id": p.client_id, "deployment_ids": p.deployment_ids}
            for p in lti.lti_settings.platforms
        ],
    }


def canvas_developer_key(lti: LTI13Authenticator) -> dict[str, Any]:
    """The Canvas developer key configuration (Developer Keys → + LTI Key → Method: Enter URL / Paste JSON)."""
    urls = lti.urls
    host = urlparse(urls.launch).hostname or ""
    placement = {"message_type": "LtiResourceLinkRequest", "target_link_uri": urls.launch, "windowTarget": "_blank"}
    return {
        "title": lti.hub_name,
        "description": f"JupyterHub {lti.hub_name}: your own Jupyter server, in your course's folder",
        "oidc_initiation_url": urls.login,
        "target_link_uri": urls.launch,
        "public_jwk_url": urls.jwks,
        "scopes": SCOPES,
        "extensions": [
            {
                "platform": "canvas.instructure.com",
                "domain": host,
                "tool_id": f"hubfleet-{lti.hub_name}",
                "privacy_level": "public",
                "settings": {
                    "text": lti.hub_name,
                    "placements": [
                        {"placement": "course_navigation", "text": lti.hub_name, **placement},
                        {"placement": "link_selection", "text": lti.hub_name, **placement},
                    ],
                },
            }
        ],
        "custom_fields": {},
    }


class ToolConfigHandler(_LTIHandler):
    async def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(tool_configuration(self.lti), indent=2))


class CanvasConfigHandler(_LTIHandler):
    async def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(canvas_developer_key(self.lti), indent=2))
