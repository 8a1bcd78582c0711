"""Who is looking at the console: logging in with a hub (the console is an OAuth client of each hub) and what a
logged-in person may see.

The flow is JupyterHub's own OAuth: the browser goes to the hub's `/hub/api/oauth2/authorize` (the hub asks it to
log in the usual way if needed), comes back to the console's callback with a code, and the console exchanges the code
for a token with the hub (on loopback, with its client secret) and asks the hub's `/hub/api/user` who that is.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from urllib.parse import urlencode

import httpx

from hubfleet.common.settings import CONSOLE_SERVICE_NAME, HubSettings
from hubfleet.common.state import FleetState
from hubfleet.console import urls
from hubfleet.spec.models import Fleet

CLIENT_ID = f"service-{CONSOLE_SERVICE_NAME}"
CLIENT_SECRET = "console_oauth_secret"
"""The name of the hub secret the console authenticates to the hub's token endpoint with."""

HUB_TIMEOUT = 10.0


class LoginError(Exception):
    """A login that cannot complete; the message is safe to show (it holds no secret), `status` is the answer's."""

    def __init__(self, message: str, status: int = 502):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Viewer:
    """A person logged in to the console: who they are on which hub, and whether they operate the fleet."""

    hub: str
    user: str
    admin: bool
    operator: bool

    @property
    def label(self) -> str:
        return f"{self.hub}:{self.user}"

    def can_see(self, hub: str) -> bool:
        """Operators see every hub; a hub's admins see their own."""
        return self.operator or (self.admin and hub == self.hub)

    @property
    def may_use_console(self) -> bool:
        return self.operator or self.admin

    def to_cookie(self) -> str:
        return json.dumps({"hub": self.hub, "user": self.user, "admin": self.admin})

    @classmethod
    def from_cookie(cls, value: bytes, fleet: Fleet) -> Viewer | None:
        """The viewer a session cookie names, judged against the current fleet (None if it no longer makes sense)."""
        try:
            data = json.loads(value)
            hub, user, admin = str(data["hub"]), str(data["user"]), bool(data["admin"])
        except (ValueError, KeyError, TypeError):
            return None
        if hub not in fleet.hubs:
            return None
        return cls(hub=hub, user=user, admin=admin, operator=is_operator(fleet, hub, user))


def is_operator(fleet: Fleet, hub: str, user: str) -> bool:
    """Whether `user` of `hub` is named in the fleet file's `console.operators`."""
    return f"{hub}:{user}" in fleet.console.operators


@dataclass(frozen=True)
class LoginAttempt:
    """A login started at the console and not finished yet (kept in a short-lived signed cookie)."""

    hub: str
    state: str
    next_url: str

    @classmethod
    def start(cls, hub: str, next_url: str) -> LoginAttempt:
        return cls(hub=hub, state=secrets.token_urlsafe(32), next_url=safe_next(next_url))

    def to_cookie(self) -> str:
        return json.dumps({"hub": self.hub, "state": self.state, "next": self.next_url})

    @classmethod
    def from_cookie(cls, value: bytes | None) -> LoginAttempt | None:
        if value is None:
            return None
        try:
            data = json.loads(value)
            return cls(hub=str(data["hub"]), state=str(data["state"]), next_url=safe_next(str(data["next"])))
        except (ValueError, KeyError, TypeError):
            return None

    def matches(self, hub: str, state: str) -> bool:
        return self.hub == hub and secrets.compare_digest(self.state.encode(), state.encode())


def safe_next(url: str) -> str:
    """Where to go after logging in: a console page, never another site (an open redirect)."""
    if url.startswith(urls.PREFIX) and "//" not in url and "\\" not in url:
        return url
    return urls.PREFIX


class HubLogin:
    """The console's OAuth client of one hub, from the settings the fleet wrote for that hub."""

    def __init__(self, state: FleetState, hub: str):
        path = state.hub(hub).settings_file
        if not path.exists():
            raise LoginError(f"hub {hub} is not running", 503)
        self.settings = HubSettings.read(path)
        if self.settings.console_redirect_uri is None:
            raise LoginError(f"hub {hub} does not offer console logins", 503)
        self.redirect_uri = self.settings.console_redirect_uri
        self.api_url = self.settings.address.hub_api_url

    def authorize_url(self, attempt: LoginAttempt) -> str:
        """Where the browser goes to log in (relative to the front door, as the hub's own pages are)."""
        query = urlencode(
            {"client_id": CLIENT_ID, "redirect_uri": self.redirect_uri, "response_type": "code", "state": attempt.state}
        )
        return f"{self.settings.base_url}hub/api/oauth2/authorize?{query}"

    async def identify(self, code: str) -> tuple[str, bool]:
        """Exchange the code the hub gave the browser for a token, and ask the hub whose it is: (name, admin)."""
        form = {
            "client_id": CLIENT_ID,
            "client_secret": self.settings.secret(CLIENT_SECRET),
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.redirect_uri,
        }
        async with httpx.AsyncClient(base_url=self.api_url, timeout=HUB_TIMEOUT) as client:
            try:
                response = await client.post("/oauth2/token", data=form)
                if response.status_code != 200:
                    raise LoginError("The hub refused this login (it may have expired): please log in again.", 400)
                token = response.json()["access_token"]
                response = await client.get("/user", headers={"Authorization": f"Bearer {token}"})
                response.raise_for_status()
                user = response.json()
                return str(user["name"]), bool(user.get("admin", False))
            except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
                raise LoginError(f"The hub did not answer the login ({type(exc).__name__}): try again later.") from None
