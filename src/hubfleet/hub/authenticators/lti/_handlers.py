"""The LTI endpoints' request handlers (JupyterHub handlers, added by the authenticator's `get_handlers`)."""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlparse

from jupyterhub.handlers import BaseHandler
from tornado import web

from hubfleet.edu.exchange.lineitems import link_line_item
from hubfleet.edu.exchange.lms import record_launch
from hubfleet.edu.links import AssignmentLink, Destination, course_content
from hubfleet.edu.lti.deeplinking import OFFERED_TYPES
from hubfleet.edu.lti.launch import Launch, LaunchError
from hubfleet.edu.lti.state import PendingLogin
from hubfleet.hub.authenticators.lti._toolconfig import PREFIX, canvas_developer_key, tool_configuration
from hubfleet.hub.courses import OrmCourses
from hubfleet.spec.edu import group_name

if TYPE_CHECKING:
    from hubfleet.hub.authenticators.lti._authenticator import LTI13Authenticator

STATE_COOKIE_PREFIX = "hubfleet-lti-"
MAX_PARAMETER = 4096
"""Longest login initiation parameter accepted (LMS hints are opaque but not huge)."""

NEW_WINDOW_TEMPLATE = "lti-new-window.html"
"""The page offering to open the launch in a window of its own (in this package's templates/)."""

PICKING_ROLES = ("instructor", "ta")
"""Course roles that may add the hub's content to the LMS course (deep linking)."""


@dataclass(frozen=True)
class LaunchLogin:
    """The login data the launch handler gives `login_user`: a validated launch and who it is."""

    launch: Launch
    username: str


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
    """OIDC third-party login initiation (IMS Security Framework §5.1.1): GET or POST from the LMS. Anonymous by
    nature, so rate-limited per client address and per platform (`InitiationLimits`): beyond the limits a short 429,
    logged once per burst rather than per request."""

    refused = False

    async def prepare(self) -> None:
        if self.within_limits():  # checked first: a refusal costs no more than this
            await super().prepare()

    async def get(self) -> None:
        await self.initiate()

    async def post(self) -> None:
        await self.initiate()

    def within_limits(self) -> bool:
        try:
            platform = self.lti.validator.platform(self.get_argument("iss", ""), self.get_argument("client_id", None))
            key = f"{platform.issuer} {platform.client_id}"
        except LaunchError:
            key = "(not registered)"
        verdict = self.lti.limits.check(self.request.remote_ip or "", key)
        if verdict.log:
            self.log.warning(verdict.log)
        if verdict.allowed:
            return True
        self.refused = True
        self.set_status(429)
        self.set_header("Retry-After", str(verdict.retry_after))
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish("Too many logins started from here: wait a moment, then launch again from your course.\n")
        return False

    def _log(self) -> None:
        if not self.refused:  # refusals are logged once per burst, by the limits
            super()._log()

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
            issuer=platform.issuer,
            client_id=platform.client_id,
            target_link_uri=target,
            initiation=initiation,
            client=self.request.remote_ip or "",
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
    """The launch (the platform's form POST of id_token and state) → logged in, in the course, on the server, where
    the link's custom parameters say (`answer`)."""

    async def get(self) -> None:
        raise self.fail(LaunchError(405, "a launch is a form POST from the LMS"))

    async def post(self) -> None:
        try:
            login = self.lti.validator.take_login(self.get_body_argument("state", None))
            browser_state = self.get_secure_cookie(self.state_cookie_name(login.state), max_age_days=1)
            self.clear_cookie(self.state_cookie_name(login.state), path=self.state_cookie_options()["path"])
            launch = await self.lti.validator.validate(self.get_body_argument("id_token", None), login)
            if browser_state is None or browser_state.decode(errors="replace") != login.state:
                await self.new_window(login)
                return
            if launch.is_deep_linking and launch.course_role not in PICKING_ROLES:
                raise LaunchError(403, "only the course's instructors and TAs can add content from this hub")
            if launch.is_deep_linking and launch.context_id is None:
                raise LaunchError(400, "content can be added from this hub only inside an LMS course")
            if launch.deep_linking is not None and not set(OFFERED_TYPES) & set(launch.deep_linking.accept_types):
                accepted, offered = ", ".join(launch.deep_linking.accept_types), ", ".join(OFFERED_TYPES)
                raise LaunchError(400, f"the LMS accepts only {accepted} here: this hub offers {offered}")
            destination = self.lti.destination(launch)
            courses = OrmCourses(self.db)
            course = await self.lti.course_for(courses, launch)
            username = await self.lti.usernames.of(launch.issuer, launch.sub, email=launch.email, name=launch.name)
        except LaunchError as error:
            self.log.warning("LTI launch refused (%s): %s", error.status, error.message)
            raise self.fail(error) from None
        user = await self.login_user(LaunchLogin(launch, username))
        if user is None:
            raise self.fail(LaunchError(403, "this hub does not let you in (blocked)"))
        if course is not None and launch.course_role is not None:
            await courses.set_member(course, user.name, launch.course_role)
            # grade passback needs the course's LMS link (platform, context, AGS line items)
            await asyncio.to_thread(
                record_launch, self.lti.sessions, hub=self.lti.hub_name, course=course, launch=launch
            )
            await self.lti.after_instructor_launch(courses, course, launch)
        self.log.info("LTI launch: %s (%s) in course %s", user.name, launch.course_role, course)
        await self.answer(launch, user.name, course, destination, courses)

    async def answer(
        self, launch: Launch, username: str, course: str | None, destination: Destination | None, courses: OrmCourses
    ) -> None:
        """Send the person where the link says (see the authenticator's `landing_url`). A link to an assignment
        whose LMS launch names a line item (the link's own grade column) makes that its column for passback."""
        line_item = launch.ags_endpoint.get("lineitem")
        if isinstance(destination, AssignmentLink) and course and isinstance(line_item, str):
            linked = await asyncio.to_thread(
                link_line_item,
                self.lti.sessions,
                hub=self.lti.hub_name,
                course=course,
                name=destination.name,
                line_item=line_item,
            )
            if linked:
                self.log.info("LTI: grades of %s/%s go to the LMS line item %s", course, destination.name, line_item)
        content = None
        if destination is None and course is not None:
            students = await courses.group(group_name(course, "student"))
            content = course_content(course, (students or {}).get("properties") or {})
        self.redirect(self.lti.landing_url(self.base_url, username, course, destination, content))

    async def new_window(self, login: PendingLogin) -> None:
        """This browser did not send back the login's cookie (an LMS iframe with third-party cookies blocked):
        nobody is logged in here; offer to start the launch again in a window of its own."""
        again = f"{self.lti.urls.login}?{urlencode(login.initiation)}"
        self.set_status(401)
        self.finish(await self.render_template(NEW_WINDOW_TEMPLATE, url=again, title=self.lti.hub_name))


class JWKSHandler(_LTIHandler):
    """The tool's public keys (the LMS verifies the tool's signed requests with them)."""

    async def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "max-age=300")
        self.finish(json.dumps(self.lti.tool_key.jwks()))


class ToolConfigHandler(_LTIHandler):
    async def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(tool_configuration(self.lti.tool), indent=2))


class CanvasConfigHandler(_LTIHandler):
    async def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(canvas_developer_key(self.lti.tool), indent=2))
