"""What a running fleet says about itself: the supervisor's status document, read by the CLI and the console."""

from __future__ import annotations

from pydantic import BaseModel


class HubStatus(BaseModel):
    """One hub as `hubfleet status` shows it."""

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
    last_wake: float | None = None
    """When the hub last woke from sleep (Unix time; None: never since the fleet started)."""
    wakes: int = 0
    """How often it woke since the fleet started."""


class FleetStatus(BaseModel):
    """The whole fleet: what the supervisor's control socket answers to `GET /status`."""

    fleet: str
    front_door: str
    pid: int
    ready: bool
    """Whether every hub was brought up once (those that failed are listed with state `failed`)."""
    source: str
    """The fleet file last applied."""
    hubs: list[HubStatus]

    @property
    def healthy(self) -> bool:
        """Whether every hub is healthy."""
        return all(hub.healthy for hub in self.hubs)
