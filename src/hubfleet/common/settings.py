"""What a hub process is told: the contract between the fleet side (which writes it) and the hub side (which reads it).

The fleet side renders one `HubSettings` per hub from the fleet spec and writes it as JSON into the hub's state
directory; `hubfleet.hub.jupyterhub_config` reads it inside the JupyterHub process. Secrets are never in it: they
are files (mode 0600) named in `secrets`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict

from hubfleet.spec.auth import CILogonIdP, DirectoryGroups
from hubfleet.spec.edu import LTI, Course
from hubfleet.spec.models import Culling, Profile, SharedFolder

SETTINGS_ENV = "HUBFLEET_HUB_SETTINGS"
"""Environment variable holding the path of a hub's settings file."""

SERVICE_NAME = "hubfleet"
"""The JupyterHub service the fleet uses to manage a hub (status, users, groups, stopping servers)."""

CULLER_SERVICE_NAME = "idle-culler"

CONSOLE_SERVICE_NAME = "hubfleet-console"
"""The fleet console as an OAuth client of the hub: operators and hub admins log in to the console with the hub."""

CHECK_USER = "hubfleet-check"
"""The synthetic user `hubfleet check` logs in as."""


class SettingsFile(BaseModel):
    """Settings one process reads from a JSON file the fleet side wrote; secrets are files named in `secrets`."""

    model_config = ConfigDict(frozen=True)

    env_var: ClassVar[str]
    """The environment variable that names the file."""

    secrets: dict[str, Path] = {}

    def secret(self, name: str) -> str:
        """The content of secret file `name`."""
        return self.secrets[name].read_text(encoding="utf-8").strip()

    @classmethod
    def read(cls, path: str | Path | None = None) -> Self:
        """Read the settings file (by default the one the class's environment variable names)."""
        path = Path(path or os.environ[cls.env_var])
        return cls.model_validate_json(path.read_text(encoding="utf-8"))

    def write(self, path: Path) -> None:
        """Write atomically, readable by root only."""
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(self.model_dump(mode="json"), out, indent=2)
        os.replace(tmp, path)


class HubPorts(BaseModel):
    """Loopback ports of one hub's processes."""

    model_config = ConfigDict(frozen=True)

    hub: int
    gateway: int | None = None
    gateway_tcp: int | None = None
    gateway_api: int | None = None
    exchange: int | None = None
    """The assignment exchange service (hubs with courses or LTI)."""


class FrontDoorPorts(BaseModel):
    """Loopback ports of the front door's internal parts."""

    model_config = ConfigDict(frozen=True)

    landing: int
    """The front door's own app: the console, health, metrics, and requests for sleeping hubs."""
    proxy_api: int
    """The REST API of the front door's configurable-http-proxy (the fleet's only client of it)."""
    routes: int
    """The hubs' route API (`hubfleet.fleet.routes`)."""
    internal: int | None = None
    """With HTTPS: the proxy's plain-HTTP side on loopback, for the fleet's own traffic (None: no HTTPS)."""


LOOPBACK = "127.0.0.1"
"""Every internal process of a fleet listens on loopback only."""


def loopback_url(port: int, path: str = "", scheme: str = "http") -> str:
    """`scheme://127.0.0.1:port` followed by `path`."""
    return f"{scheme}://{LOOPBACK}:{port}{path}"


class ProxyLink(BaseModel):
    """The fleet's one proxy (the front door's configurable-http-proxy), as every hub reaches it."""

    model_config = ConfigDict(frozen=True)

    url: str
    """The proxy's public side on this machine (what users reach as the front door)."""
    api_url: str
    """The fleet's route API (`hubfleet.fleet.routes`): the proxy's routes, limited to the hub's own."""


class HubAddress(BaseModel):
    """Where one hub's processes are reached on this machine: the one place internal URLs are made."""

    model_config = ConfigDict(frozen=True)

    base_url: str
    """The hub's URL prefix behind the front door (`/hubs/<name>/`)."""
    ports: HubPorts
    proxy: ProxyLink

    @property
    def hub_url(self) -> str:
        """The JupyterHub process itself (what the proxy routes `<base_url>hub/` to)."""
        return loopback_url(self.ports.hub)

    @property
    def hub_api_url(self) -> str:
        """The hub's REST API, reached directly (not through a proxy)."""
        return loopback_url(self.ports.hub, f"{self.base_url}hub/api")

    def through_proxy(self, path: str) -> str:
        """`path` below the hub's prefix, through the fleet's proxy (as users' servers reach it)."""
        return f"{self.proxy.url}{self.base_url}{path}"

    def service_path(self, name: str) -> str:
        """The URL path of the hub's service `name` (no trailing slash)."""
        return f"{self.base_url}services/{name}"


class GatewayLink(BaseModel):
    """Where the hub's Dask Gateway is: for its service entry, and for users' servers to find it."""

    model_config = ConfigDict(frozen=True)

    url: str
    """The gateway's HTTP address (the hub proxies its service URL to it)."""
    address: str
    """The gateway API as users' servers reach it (through the hub's proxy)."""
    proxy_address: str
    """The gateway's TCP proxy for scheduler traffic."""
    public_address: str
    """The gateway as a browser reaches it (dashboards), through the front door."""


class ExchangeLink(BaseModel):
    """Where the hub's assignment exchange service is: for its service entry, and for users' servers to find it."""

    model_config = ConfigDict(frozen=True)

    url: str
    """The service's HTTP address (the hub proxies its service URL to it)."""
    address: str
    """The service as users' servers reach it (through the hub's proxy): `$HUBFLEET_EXCHANGE_URL` in servers."""


class SlurmLink(BaseModel):
    """How a Slurm hub's spawner reaches its cluster (hubs with `backend: slurm`)."""

    model_config = ConfigDict(frozen=True)

    conf: Path | None = None
    """The slurm.conf Slurm commands and jobs use: `$SLURM_CONF` of the supervisor (None: Slurm's default)."""


class EnvironmentChoice(BaseModel):
    """An environment a hub's profiles may name, as the spawner offers it (its versions are in the store)."""

    model_config = ConfigDict(frozen=True)

    key: str
    """Its key in the environment store (`hubfleet.common.environments`): `name` or `hub/name`."""
    title: str
    description: str = ""


class HubSettings(SettingsFile):
    """Everything one JupyterHub process needs to configure itself."""

    env_var: ClassVar[str] = SETTINGS_ENV

    fleet: str
    hub: str
    title: str
    base_url: str
    public_url: str
    ports: HubPorts
    state_dir: Path
    cgroup: str
    """The hub's cgroup (`hubfleet.common.state.hub_cgroup`), relative to each hierarchy's root: every user's
    server and Dask cluster gets a group below it."""
    user_env: Path
    """The environment of profiles that name none."""
    environments_root: Path | None = None
    """The environment store (None: the hub's profiles name no environment)."""
    environments: dict[str, EnvironmentChoice] = {}
    """Name (as profiles say it) → environment."""
    home_root: Path
    shared_root: Path
    isolation: Literal["unix-users", "same-user", "slurm"]
    auth_type: Literal["shared-password", "native", "github", "oidc", "cilogon", "ldap"]
    auth_options: dict[str, str | int | bool | list[str] | None] = {}
    directory: DirectoryGroups | None = None
    """Campus sign-on: what the directory's groups decide (None: not a directory login)."""
    cilogon_idps: dict[str, CILogonIdP] = {}
    """CILogon's allowed identity providers (hubs with `cilogon`)."""
    admins: list[str] = []
    allowed_users: list[str] = []
    allow_all: bool = False
    groups: dict[str, list[str]] = {}
    profiles: list[Profile]
    shared_folders: list[SharedFolder] = []
    courses: list[Course] = []
    """The fleet file's courses (courses created at run time live only in the hub's database)."""
    scratch_root: Path | None = None
    """The parent of the hub's per-user scratch folders (None: the hub has no scratch)."""
    home_quota: int | None = None
    """Bytes each user's home may hold, enforced by the kernel (None: no limit)."""
    culling: Culling
    gateway: GatewayLink | None = None
    slurm: SlurmLink | None = None
    exchange: ExchangeLink | None = None
    proxy: ProxyLink
    database_url: str
    """The fleet database (SQLAlchemy URL): LTI identities, courses' records, the exchange, usage."""
    console_redirect_uri: str | None = None
    """Where the hub sends a console login back to (the front door's callback; None: no console client)."""
    lti: LTI | None = None
    """LTI 1.3 launches from the hub's LMS registrations (None: no LTI); the tool's key is kept in `state_dir`."""

    @property
    def address(self) -> HubAddress:
        """Where the hub's processes are reached on this machine."""
        return HubAddress(base_url=self.base_url, ports=self.ports, proxy=self.proxy)

    def named_users(self) -> set[str]:
        """Everyone the fleet file names for this hub (plus the health-check user): they may log in, and no LMS
        person may take one of their names."""
        members = {user for users in self.groups.values() for user in users}
        members.update(user for course in self.courses for user in course.members)
        return set(self.allowed_users) | members | set(self.admins) | {CHECK_USER}
