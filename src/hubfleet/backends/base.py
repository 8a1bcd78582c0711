"""The one small interface every backend offers: bring a hub up, change it, take it down, report on it."""

from __future__ import annotations

from abc import ABC, abstractmethod

from pydantic import BaseModel

from hubfleet.fleet.plan import HubChange
from hubfleet.fleet.state import FleetState
from hubfleet.spec.models import Fleet, Hub


class HubStatus(BaseModel):
    """What `hubfleet status` shows for one hub."""

    name: str
    title: str
    url: str
    backend: str
    state: str
    healthy: bool
    pids: dict[str, int | None] = {}
    restarts: dict[str, int] = {}
    users: int | None = None
    running_servers: int | None = None
    detail: str = ""


class Backend(ABC):
    """Runs hubs somewhere (this machine, a Slurm cluster, Kubernetes) from their `Hub` spec."""

    name: str

    def __init__(self, fleet: Fleet, state: FleetState):
        self.fleet = fleet
        self.state = state

    def use_fleet(self, fleet: Fleet) -> None:
        """The fleet spec that hubs brought up or changed from now on belong to."""
        self.fleet = fleet

    @abstractmethod
    def hub_names(self) -> list[str]:
        """The hubs this backend runs."""

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

    @abstractmethod
    def routes(self) -> dict[str, str]:
        """Front-door routes: URL prefix → internal target, one per running hub."""
