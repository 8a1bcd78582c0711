"""The backend port: the one small interface the fleet asks of every place hubs run (this machine, a Slurm cluster,
Kubernetes). The fleet owns it and never imports a backend: backends name themselves as entry points of the group
`hubfleet.backends` (pyproject.toml), so adding one touches no fleet code.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import ClassVar

from hubfleet.common.settings import HubSettings, ProxyLink
from hubfleet.common.state import FleetState, HubState
from hubfleet.common.status import HubStatus
from hubfleet.fleet.plan import HubChange
from hubfleet.fleet.routes import RouteTable
from hubfleet.spec.models import Fleet, Hub
from hubfleet.system.forkserver import ForkServer

BACKENDS_GROUP = "hubfleet.backends"
"""The entry-point group of backends: name (as the fleet file's `backend:` says it) → `module:Class`."""


@dataclass(frozen=True)
class RunningHub:
    """A hub a backend runs, as the rest of the fleet reaches it (metering, the console)."""

    name: str
    backend: str
    settings: HubSettings
    """The settings the hub process was given: its addresses, state directory and the fleet's service token."""
    servers_here: bool
    """Whether users' servers run on this machine (their cgroups can be read here)."""
    awake: bool
    """Whether its processes run (False: it sleeps, and answers nothing until woken)."""


@dataclass(frozen=True)
class HubHost:
    """What the fleet gives backends that run hub processes on this machine."""

    forkserver: ForkServer
    """Hub processes are forked from it (a start skips JupyterHub's imports, hubs share those pages)."""
    routes: RouteTable
    """The fleet's one proxy: a hub is up once its own route is there; a sleeping hub's routes are dropped."""
    proxy: ProxyLink
    """The fleet's proxy as hubs reach it (its public side on this machine, the route API)."""


class Backend(ABC):
    """Runs hubs somewhere from their `Hub` spec."""

    name: ClassVar[str]

    def __init__(self, fleet: Fleet, state: FleetState, host: HubHost):
        self.fleet = fleet
        self.state = state
        self.host = host

    def use_fleet(self, fleet: Fleet) -> None:
        """The fleet spec that hubs brought up or changed from now on belong to."""
        self.fleet = fleet

    @abstractmethod
    def running_hubs(self) -> list[RunningHub]:
        """The hubs this backend runs."""

    def hub_names(self) -> list[str]:
        """The names of the hubs this backend runs."""
        return [hub.name for hub in self.running_hubs()]

    @abstractmethod
    async def up(self, hub: Hub, *, awake: bool = True) -> None:
        """Bring `hub` up: started and answering (`awake`), or ready to be woken (its processes not started)."""

    @abstractmethod
    def is_awake(self, name: str) -> bool:
        """Whether hub `name`'s processes run."""

    @abstractmethod
    async def wake(self, name: str) -> None:
        """Start the sleeping hub `name`'s processes and return once it answers."""

    @abstractmethod
    async def sleep(self, name: str) -> None:
        """Stop hub `name`'s processes, keeping its state (it has no running server)."""

    @abstractmethod
    async def busy(self, name: str) -> str | None:
        """Why hub `name` must not sleep now (servers, its users' processes, grading), or None."""

    @abstractmethod
    async def apply(self, hub: Hub, change: HubChange) -> None:
        """Bring the running `hub` to its new spec, changing only what `change` lists."""

    @abstractmethod
    async def restart(self, name: str) -> bool:
        """Restart hub `name`'s processes from the code installed now (`hubfleet upgrade`), keeping users' servers
        running; False when there was nothing to restart (a sleeping hub starts from that code when it wakes)."""

    @abstractmethod
    async def down(self, name: str, *, stop_servers: bool = True) -> None:
        """Stop hub `name` and everything it runs."""

    @abstractmethod
    async def status(self, name: str) -> HubStatus:
        """The hub's current state."""

    async def close(self) -> None:  # noqa: B027 - optional: most backends hold nothing beyond their hubs
        """Release what the backend holds besides its hubs (called once every hub is down)."""

    @classmethod
    def clean_up_after(cls, hub: HubState) -> int:
        """Stop what a supervisor that died left of `hub` beyond its pid files and cgroups (`hubfleet down`); how
        many things were stopped. Raises RuntimeError with a reason when that cannot be done."""
        return 0


def registered() -> dict[str, type[Backend]]:
    """Every installed backend by name."""
    return {entry.name: entry.load() for entry in entry_points(group=BACKENDS_GROUP)}
