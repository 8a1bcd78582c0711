"""The typed model of a fleet file: one `Fleet` of many `Hub`s. Every other part of hubfleet reads these."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AnyHttpUrl,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from hubfleet.spec.auth import Auth
from hubfleet.spec.base import HubName, Slug, SpecModel, Username, refuse_doubles
from hubfleet.spec.edu import LTI, Course
from hubfleet.spec.environments import Builds, Environment, EnvironmentName
from hubfleet.spec.organisation import Organisation
from hubfleet.spec.tls import TLS
from hubfleet.spec.units import ByteSize, OrNever, Seconds
from hubfleet.spec.usage import Console, Usage


class FrontDoor(SpecModel):
    """The one address users reach every hub through."""

    host: str = Field("127.0.0.1", description="address the front door listens on")
    port: int = Field(8000, ge=1, le=65535, description="port the front door listens on (443 with `tls`, usually)")
    public_url: AnyHttpUrl | None = Field(
        None,
        description="URL users type, if it differs from http(s)://host:port (a DNS name, or a TLS-terminating proxy "
        "in front)",
    )
    tls: TLS | None = Field(None, description="HTTPS at the front door: certificate files, or ACME")
    wake_timeout: Seconds = Field(
        60, description="how long a request for a sleeping hub is held while the hub wakes (then 503, Retry-After)"
    )

    @field_validator("wake_timeout")
    @classmethod
    def _wake_timeout(cls, value: int) -> int:
        if not 1 <= value <= 600:
            raise ValueError("must be between 1s and 10m")
        return value

    @model_validator(mode="after")
    def _https(self) -> FrontDoor:
        if self.tls is None:
            return self
        if self.public_url is not None and self.public_url.scheme != "https":
            raise ValueError("with tls, public_url must be an https:// URL")
        if self.tls.http_port == self.port:
            raise ValueError("tls.http_port must differ from port")
        if self.tls.acme is not None and not self.tls.acme.domains and self.public_url is None:
            raise ValueError("ACME needs the names to certify: set public_url (https://your.domain) or acme.domains")
        return self

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"

    @property
    def url(self) -> str:
        """The public base URL, without a trailing slash."""
        if self.public_url is not None:
            return str(self.public_url).rstrip("/")
        return self.local_url

    @property
    def local_url(self) -> str:
        """The front door as this machine reaches it (its own address, loopback when it listens on all)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host
        default = 443 if self.tls is not None else 80
        return f"{self.scheme}://{host}" + ("" if self.port == default else f":{self.port}")

    def certificate_names(self) -> list[str]:
        """The names an ACME certificate is for: `acme.domains`, else the public URL's host."""
        if self.tls is None or self.tls.acme is None:
            return []
        if self.tls.acme.domains:
            return list(self.tls.acme.domains)
        return [self.public_url.host] if self.public_url is not None and self.public_url.host else []


class Paths(SpecModel):
    """Where hubfleet keeps things on this machine."""

    user_env: Path = Field(
        Path("/opt/hubfleet/user-env"),
        description="Python environment user servers run from (must be readable by every user)",
    )
    environments: Path = Field(
        Path("/opt/hubfleet/envs"),
        description="where hubfleet builds the `environments:` (versions, a shared package cache; readable by every "
        "user)",
    )
    home_root: Path = Field(Path("/home"), description="parent directory of users' home directories")
    shared_root: Path = Field(Path("/srv/hubfleet"), description="parent directory of hubs' shared folders")


class Logs(SpecModel):
    """How large the fleet's logs grow before they are rotated, and how many rotated copies of each are kept:
    supervisor.log, events.jsonl, the front door's and every hub's process logs. A change applies within a minute
    of `hubfleet apply`."""

    max_size: ByteSize = Field(20 * 1024**2, description="a log's size before it is rotated (at least 1M)")
    keep: int = Field(3, ge=1, le=100, description="rotated copies kept of each log (`.1` the newest)")

    @field_validator("max_size")
    @classmethod
    def _at_least_a_mebibyte(cls, size: int) -> int:
        if size < 1024**2:
            raise ValueError("must be at least 1M (a smaller log would be rotated all the time)")
        return size


class PortRange(SpecModel):
    """Loopback ports hubfleet may give to hubs' internal services (hub API, proxies, services)."""

    start: int = Field(18100, ge=1024, le=65535, description="first port of the range")
    end: int = Field(
        18999,
        ge=1024,
        le=65535,
        description="last port of the range (a hub takes 1, 3 more with Dask, 1 more with courses or LTI; "
        "the front door takes 3)",
    )

    @field_validator("end")
    @classmethod
    def _ordered(cls, end: int, info: ValidationInfo) -> int:
        start = info.data.get("start")
        if start is not None and end <= start:
            raise ValueError("end must be greater than start")
        return end


class Community(SpecModel):
    """Who a hub is for."""

    name: str = Field(description="the community's name")
    url: AnyHttpUrl | None = Field(None, description="the community's web site")
    contact: str | None = Field(None, description="who to contact about this hub (e-mail or URL)")


class Template(StrEnum):
    """Community templates a hub starts from (`hubfleet template list`; files in hubfleet/spec/templates/)."""

    generic = "generic"
    course = "course"
    pangeo = "pangeo"
    r_stats = "r-stats"


class Conversion(SpecModel):
    """When a pilot is ready to become a paid hub."""

    min_active_users: int = Field(5, ge=1, description="non-staff users active in the window")
    window_days: int = Field(14, ge=1, description="the window, in days before today")


class PilotPlan(SpecModel):
    """A time-limited pilot hub."""

    type: Literal["pilot"]
    start: dt.date = Field(description="first day of the pilot")
    end: dt.date = Field(description="last day of the pilot")
    budget: float | None = Field(None, ge=0, description="budget for the whole pilot (currency units)")
    hard_quota: bool = Field(False, description="refuse new servers once the budget is spent")
    conversion: Conversion = Field(default_factory=Conversion, description="when the pilot is ready to convert")

    @field_validator("end")
    @classmethod
    def _ordered(cls, end: dt.date, info: ValidationInfo) -> dt.date:
        start = info.data.get("start")
        if start is not None and end < start:
            raise ValueError("the pilot must end on or after its start date")
        return end


class PaidPlan(SpecModel):
    """A paid hub with a monthly fee and budget."""

    type: Literal["paid"]
    monthly_fee: float = Field(0, ge=0, description="fixed monthly fee (currency units)")
    monthly_budget: float | None = Field(None, ge=0, description="monthly budget (currency units)")
    hard_quota: bool = Field(False, description="refuse new servers once this month's budget is spent")
    tier: Slug | None = Field(
        None,
        description="the plan tier it belongs to (e.g. `institution`, `small-college`; default `paid`), "
        "grouping hubs in `hubfleet economics`",
    )


Plan = Annotated[PilotPlan | PaidPlan, Field(discriminator="type")]


class Profile(SpecModel):
    """A resource profile users choose from when they start a server."""

    name: Slug
    display_name: str | None = Field(None, description="the name users see (default: `name`)")
    description: str = Field("", description="a line shown under the name in the choice form")
    cpu: float = Field(1.0, gt=0, le=256, description="CPU cores (a hard cgroup quota)")
    memory: ByteSize = Field(2 * 1024**3, description="memory limit; the server is killed beyond it")
    groups: list[Slug] = Field(default_factory=list, description="groups allowed this profile (empty: everyone)")
    default: bool = Field(False, description="preselected, and used when a user makes no choice")
    partition: str | None = Field(None, description="Slurm partition the server's job runs in (Slurm hubs)")
    time_limit: Seconds | None = Field(None, description="Slurm time limit of the server's job (Slurm hubs)")
    environment: EnvironmentName | list[EnvironmentName] | None = Field(
        None,
        description="the environment servers of this profile run in (a hub's or the fleet's `environments:`); a "
        "list lets users choose, the first preselected (default: `paths.user_env`)",
    )

    @field_validator("memory")
    @classmethod
    def _enough_memory(cls, value: int) -> int:
        if value < 64 * 1024**2:
            raise ValueError("a server needs at least 64M of memory")
        return value

    @field_validator("environment")
    @classmethod
    def _choices(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list):
            if not value:
                raise ValueError("list at least one environment, or leave `environment` out")
            refuse_doubles(value, "environments listed twice")
        return value

    @property
    def environments(self) -> list[str]:
        """The environments users of this profile choose from, the preselected one first ([]: `paths.user_env`)."""
        if self.environment is None:
            return []
        return [self.environment] if isinstance(self.environment, str) else list(self.environment)


class SharedFolder(SpecModel):
    """A folder shared by groups of a hub, mounted into users' servers."""

    name: Slug
    access: dict[str, Literal["read", "write"]] = Field(
        description="group name (or 'everyone') → read or write", min_length=1
    )


class Scratch(SpecModel):
    """A per-user scratch folder for large, short-lived files (kept apart from homes)."""

    size: ByteSize = Field(
        50 * 1024**3, description="per user; beyond it the user's oldest files are removed first (0: no limit)"
    )
    max_age: Seconds = Field(7 * 86400, description="files not modified for this long are removed (0: never)")


HOME_QUOTA_MIN = 256 * 1024**2
"""The smallest home quota (each home is a small XFS file system; see hubfleet.system.homes)."""


class Storage(SpecModel):
    """Home directories, shared folders and scratch."""

    home_quota: ByteSize | None = Field(
        None,
        description="hard size limit of each user's home, enforced by the kernel (at least 256M; needs root): a "
        "write beyond it fails with 'No space left on device', and `df -h ~` shows it. Raising it grows homes at "
        "once; lowering it below a home's use is refused",
    )
    shared: list[SharedFolder] = Field(default_factory=list, description="folders shared by groups of the hub")
    scratch: Scratch | None = Field(
        None, description="a per-user scratch folder, linked as ~/scratch and named by $SCRATCH_DIR, swept regularly"
    )

    @field_validator("home_quota")
    @classmethod
    def _quota_large_enough(cls, value: int | None) -> int | None:
        if value is not None and value < HOME_QUOTA_MIN:
            raise ValueError("a home quota must be at least 256M (each home is a small file system of its own)")
        return value


class DaskLimits(SpecModel):
    """What one user may hold in Dask clusters at once."""

    max_cores: float = Field(4, gt=0, description="cores across all of the user's workers and schedulers")
    max_memory: ByteSize = Field(8 * 1024**3, description="memory across all of the user's workers and schedulers")
    max_clusters: int = Field(2, ge=1, description="clusters a user may run at once")


class Dask(SpecModel):
    """Dask Gateway for the hub's users: `Gateway().new_cluster()` works in every server."""

    enabled: bool = Field(True, description="run a Dask Gateway for this hub")
    worker_cores: int = Field(1, ge=1, description="default cores per worker")
    max_worker_cores: int = Field(2, ge=1, description="largest worker_cores a user may ask for")
    worker_memory: ByteSize = Field(1024**3, description="default memory per worker")
    max_worker_memory: ByteSize = Field(4 * 1024**3, description="largest worker_memory a user may ask for")
    limits: DaskLimits = Field(default_factory=DaskLimits, description="per-user limits")
    group_limits: dict[Slug, DaskLimits] = Field(
        default_factory=dict, description="group → limits for its members (the most generous applies)"
    )
    idle_timeout: Seconds = Field(1800, description="shut a cluster down after this long without activity (0: never)")

    @model_validator(mode="after")
    def _consistent(self) -> Dask:
        if self.worker_cores > self.max_worker_cores:
            raise ValueError("worker_cores is larger than max_worker_cores")
        if self.worker_memory > self.max_worker_memory:
            raise ValueError("worker_memory is larger than max_worker_memory")
        return self


class Culling(SpecModel):
    """Stop idle servers (jupyterhub-idle-culler)."""

    enabled: bool = Field(True, description="run the idle culler for this hub")
    timeout: Seconds = Field(3600, description="stop a server idle this long")
    max_age: Seconds = Field(0, description="stop a server this old whatever its activity (0: never)")
    every: Seconds = Field(300, description="how often to check")

    @field_validator("timeout", "every")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value <= 0:
            raise ValueError("must be greater than zero")
        return value


class Sleep(SpecModel):
    """Scale to zero: a hub nobody uses stops its processes (its state stays on disk, it costs no memory) and the
    first request for it — a page, an API call, an LTI launch, an OAuth callback — wakes it in seconds."""

    after: OrNever = Field(
        1800,
        description="put the hub to sleep after this long with no request and no running server (`never`: always "
        "up); a hub that may sleep also starts asleep",
    )

    @field_validator("after")
    @classmethod
    def _long_enough(cls, value: int | None) -> int | None:
        if value is not None and value < 10:
            raise ValueError("must be at least 10s (or never)")
        return value

    @property
    def enabled(self) -> bool:
        """Whether the hub may sleep."""
        return self.after is not None


DEFAULT_PROFILE = Profile(name="default", display_name="Default", cpu=1.0, memory=2 * 1024**3, default=True)


class Hub(SpecModel):
    """One JupyterHub of the fleet."""

    name: HubName
    display_name: str | None = Field(None, description="the name people see (default: the hub's name)")
    community: Community | None = None
    template: Template = Field(
        Template.generic,
        description="the community template merged under the hub's settings and `defaults:` (see docs/templates.md)",
    )
    backend: Literal["local", "slurm"] = Field(
        "local", description="where users' servers run: this machine, or jobs of a Slurm cluster"
    )
    plan: Plan | None = Field(None, description="the hub's plan: a pilot or a paid hub (chosen by `type:`)")
    auth: Auth = Field(description="how users log in (chosen by `type:`); may come from defaults")
    groups: dict[Slug, list[Username]] = Field(default_factory=dict, description="group name → members")
    profiles: list[Profile] = Field(
        default_factory=lambda: [DEFAULT_PROFILE], description="resource profiles users choose from"
    )
    storage: Storage = Field(default_factory=Storage)
    culling: Culling = Field(default_factory=Culling)
    sleep: Sleep = Field(default_factory=Sleep, description="scale to zero while nobody uses the hub")
    dask: Dask | None = Field(None, description="Dask Gateway for the hub's users")
    courses: list[Course] = Field(default_factory=list, description="courses taught on this hub")
    lti: LTI | None = Field(None, description="LTI 1.3: launches from learning management systems")
    environments: dict[EnvironmentName, Environment] = Field(
        default_factory=dict,
        description="the hub's own environments (a template may bring some); one named like a fleet-level "
        "environment replaces it on this hub",
    )

    @field_validator("courses")
    @classmethod
    def _unique_courses(cls, courses: list[Course]) -> list[Course]:
        refuse_doubles((c.name for c in courses), "course names must be unique")
        return courses

    @property
    def title(self) -> str:
        """The name people see."""
        return self.display_name or self.name

    @property
    def users(self) -> set[str]:
        """Every user the fleet file names for this hub."""
        names = set(self.auth.admins) | set(self.auth.allowed_users)
        for members in self.groups.values():
            names.update(members)
        for course in self.courses:
            names.update(course.members)
        return names

    def default_profile(self) -> Profile:
        """The profile used when a user makes no choice."""
        return next((p for p in self.profiles if p.default), self.profiles[0])


class HubDefaults(SpecModel):
    """Settings every hub inherits unless it sets its own (merged key by key)."""

    template: Template | None = Field(None, description="default for each hub's `template`")
    plan: Plan | None = Field(None, description="default for each hub's `plan`")
    auth: dict | None = Field(None, description="auth settings merged under each hub's auth")
    groups: dict[Slug, list[Username]] | None = Field(None, description="default for each hub's `groups`")
    profiles: list[Profile] | None = Field(None, description="default for each hub's `profiles`")
    storage: Storage | None = Field(None, description="default for each hub's `storage` (merged key by key)")
    culling: Culling | None = Field(None, description="default for each hub's `culling` (merged key by key)")
    sleep: Sleep | None = Field(None, description="default for each hub's `sleep` (e.g. `after: 20m` for every hub)")
    dask: Dask | None = Field(None, description="default for each hub's `dask` (merged key by key)")
    lti: LTI | None = Field(None, description="default for each hub's `lti` (e.g. one campus LMS for every hub)")


class EnvironmentRef(SpecModel):
    """An environment as a hub's profiles see it: its key in the fleet (`name`, or `hub/name` for a hub's own)."""

    key: str
    spec: Environment


class Fleet(SpecModel):
    """A fleet of hubs on one front door."""

    name: Slug = Field(description="the fleet's name")
    front_door: FrontDoor = Field(default_factory=FrontDoor)
    state_dir: Path | None = Field(
        None, description="where hubfleet keeps state (default: .hubfleet in the current directory)"
    )
    paths: Paths = Field(default_factory=Paths)
    internal_ports: PortRange = Field(default_factory=PortRange)
    logs: Logs = Field(default_factory=Logs, description="log rotation: size and copies kept")
    defaults: HubDefaults = Field(default_factory=HubDefaults)
    usage: Usage = Field(default_factory=Usage, description="metering, cost model and budget alerts")
    console: Console = Field(default_factory=Console, description="the web console at the front door's `/`")
    environments: dict[EnvironmentName, Environment] = Field(
        default_factory=dict, description="environments every hub's profiles may name (built once, shared)"
    )
    builds: Builds = Field(default_factory=Builds, description="how environments are built")
    organisation: Organisation = Field(
        default_factory=Organisation,
        description="the organisation running the fleet: upstream contribution ledger and staff cost",
    )
    hubs: dict[str, Hub] = Field(description="hub name → hub", min_length=1)

    def environments_of(self, hub: Hub) -> dict[str, EnvironmentRef]:
        """Name → environment for the profiles of `hub`: the fleet's, with the hub's own over them."""
        refs = {name: EnvironmentRef(key=name, spec=env) for name, env in self.environments.items()}
        refs.update(
            {name: EnvironmentRef(key=f"{hub.name}/{name}", spec=env) for name, env in hub.environments.items()}
        )
        return refs

    def all_environments(self) -> dict[str, Environment]:
        """Key → environment for every environment of the fleet: `name` (fleet-level) or `hub/name` (a hub's)."""
        found = {name: env for name, env in self.environments.items()}
        for hub in self.hubs.values():
            found.update({f"{hub.name}/{name}": env for name, env in hub.environments.items()})
        return found

    def used_environments(self) -> dict[str, Environment]:
        """Key → environment for every environment some profile names (the ones hubfleet builds on its own)."""
        used: dict[str, Environment] = {}
        for hub in self.hubs.values():
            refs = self.environments_of(hub)
            for profile in hub.profiles:
                used.update({refs[name].key: refs[name].spec for name in profile.environments if name in refs})
        return used

    def hub(self, name: str) -> Hub:
        """The hub called `name` (KeyError with the known names otherwise)."""
        try:
            return self.hubs[name]
        except KeyError:
            raise KeyError(f"no hub {name!r} in fleet {self.name!r} (hubs: {', '.join(self.hubs)})") from None
