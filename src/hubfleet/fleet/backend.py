"""The backend port: the one small interface the fleet asks of every place hubs run (this machine, a Slurm cluster,
Kubernetes). The fleet owns it and never imports a backend: backends name themselves as entry points of the group
`hubfleet.backends` (pyproject.toml), so adding one touches no fleet code.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import ClassVar

from hubfleet.common.settings import HubSettings
from hubfleet.common.state import FleetState, HubState
from hubfleet.common.status import HubStatus
from hubfleet.fleet.plan import HubChange
from hubfleet.fleet.standby import StandbyPool
from hubfleet.spec.models import Fleet, Hub

BACKENDS_GROUP = "hubfleet.backends"
"""The entry-point group of backends: name (as the fleet file's `backend:` says it) → `module:Class`."""


@dataclass(frozen=True)
class RunningHub:
    """A hub a backend runs, as the rest of the fleet reaches it (front door, metering)."""

    name: str
    backend: str
    settings: HubSettings
    """The settings the hub process was given: its addresses, state directory and the fleet's service token."""
    route_target: str
    """Where the front door sends the hub's prefix."""
    servers_here: bool
    """Whether users' servers run on this machine (their cgroups can be read here)."""


class Backend(ABC):
    """Runs hubs somewhere from their `Hub` spec."""

    name: ClassVar[str]

    def __init__(self, fleet: Fleet, state: FleetState, standby: StandbyPool):
        self.fleet = fleet
        self.state = state
        self.standby = standby
        """A warm interpreter the fleet keeps ready to replace a hub process that died (for backends that run hub
        processes on this machine)."""

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
    async def up(self, hub: Hub) -> None:
        """Start `hub` and return once it answers."""

    @abstractmethod
    async def apply(self, hub: Hub, change: HubChange) -> None:
        """Bring the running `hub` to its new spec, changing only what `change` lists."""

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
