"""The supervisor: the long-running `hubfleet up` process that owns the front door and every hub's backend.

Other `hubfleet` commands (status, apply, down) talk to it over a Unix socket in the state directory, readable
by its owner only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

from tornado.httpserver import HTTPServer

from hubfleet.common.periodic import every
from hubfleet.common.state import FleetState, database_url
from hubfleet.common.status import FleetStatus, HubStatus
from hubfleet.fleet import backend as backend_port
from hubfleet.fleet import control
from hubfleet.fleet.backend import Backend
from hubfleet.fleet.frontdoor import FrontDoor
from hubfleet.fleet.plan import FleetPlan, plan
from hubfleet.fleet.scratch import ScratchSweeper
from hubfleet.fleet.standby import StandbyPool
from hubfleet.spec import Fleet, parse
from hubfleet.spec.models import Hub
from hubfleet.usage.collector import Collector, HubTarget

log = logging.getLogger("hubfleet.supervisor")


class Supervisor:
    """Runs a fleet until asked to stop: brings hubs up, keeps them alive, applies changes, reports status."""

    def __init__(self, fleet: Fleet, source: Path, text: str, state: FleetState):
        self.fleet = fleet
        self.source = source
        self.text = text
        self.state = state.create()
        # A warm interpreter that replaces any hub process that dies, so that a hub is back within seconds.
        self.standby = StandbyPool(self.state.root, self.state.root / "standby.log")
        # Each hub runs on the backend its spec names (every installed backend, found by name).
        self.backends: dict[str, Backend] = {
            name: backend_class(fleet, self.state, self.standby)
            for name, backend_class in backend_port.registered().items()
        }
        self.front_door = FrontDoor(fleet, self.state, lambda: self._statuses)
        self.failed: dict[str, str] = {}
        self._statuses: dict[str, HubStatus] = {}
        self._stop = asyncio.Event()
        self._lock = asyncio.Lock()
        self._control: HTTPServer | None = None
        self._refresh: asyncio.Task | None = None
        # Cleans up the per-user scratch folders of hubs with `storage.scratch`, in a thread, every few minutes.
        self.scratch = ScratchSweeper(lambda: self.fleet)
        self._sweeping: asyncio.Task | None = None
        # Meters every hub's usage into the fleet database every `usage.metering.interval`; /_hubfleet/metrics.
        self.collector = Collector(lambda: self.fleet, self.usage_targets, database_url(fleet, self.state.root))
        self.front_door.metrics = self.collector.registry
        self._metering: asyncio.Task | None = None
        self.ready = False

    async def run(self, on_ready: Callable[[Supervisor], Awaitable[None]] | None = None) -> None:
        """Start everything, call `on_ready`, and run until `stop()` or SIGTERM/SIGINT; then shut down."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        self.state.supervisor_pid_file.write_text(f"{os.getpid()}\n")
        try:
            self._control = control.serve(self, self.state)
            await self.front_door.start()
            await asyncio.gather(*(self._up(hub) for hub in self.fleet.hubs.values()))
            await self._sync_routes()
            self.state.record_applied(self.source, self.text)
            self.ready = True
            self._refresh = asyncio.create_task(
                every(5, self.refresh_status, log=log, what="refreshing the hubs' status", stop=self._stop)
            )
            self._sweeping = asyncio.create_task(self.scratch.run())
            self._metering = asyncio.create_task(self.collector.run())
            if on_ready is not None:
                await on_ready(self)
            await self._stop.wait()
        finally:
            await self.shutdown()

    def stop(self) -> None:
        """Ask the supervisor to shut the fleet down."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """Whether a shutdown was asked for."""
        return self._stop.is_set()

    def backend_for(self, hub: Hub) -> Backend:
        """The backend `hub`'s spec asks for."""
        return self.backends[hub.backend]

    def usage_targets(self) -> list[HubTarget]:
        """Every running hub, as the usage collector reaches it (servers that run elsewhere are not read)."""
        return [
            HubTarget(
                name=hub.name,
                api_url=hub.settings.address.hub_api_url,
                token=hub.settings.secret("service_token"),
                state_dir=hub.settings.state_dir,
                home_root=hub.settings.home_root,
                local_servers=hub.servers_here,
            )
            for backend in self.backends.values()
            for hub in backend.running_hubs()
        ]

    def running_on(self, name: str) -> Backend | None:
        """The backend hub `name` was brought up on, if any."""
        return next((b for b in self.backends.values() if name in b.hub_names()), None)

    async def _up(self, hub: Hub) -> None:
        try:
            await self.backend_for(hub).up(hub)
            self.failed.pop(hub.name, None)
        except Exception as exc:
            log.error("hub %s failed to start: %s", hub.name, exc)
            self.failed[hub.name] = str(exc)

    async def _sync_routes(self) -> None:
        routes = {
            f"/hubs/{hub.name}": hub.route_target
            for backend in self.backends.values()
            for hub in backend.running_hubs()
        }
        await self.front_door.set_routes(routes)

    async def shutdown(self) -> None:
        """Stop every hub (and its servers), the front door and the control socket."""
        if self._refresh is not None:
            self._refresh.cancel()
        self.scratch.stop()
        if self._sweeping is not None:
            self._sweeping.cancel()
        self.collector.stop()
        if self._metering is not None:
            self._metering.cancel()
        running = [(backend, name) for backend in self.backends.values() for name in backend.hub_names()]
        results = await asyncio.gather(*(backend.down(name) for backend, name in running), return_exceptions=True)
        for (_, name), result in zip(running, results, strict=True):
            if isinstance(result, BaseException):
                log.error("stopping hub %s: %s", name, result)
        for backend in self.backends.values():
            await backend.close()
        await self.standby.close()
        await self.front_door.stop()
        if self._control is not None:
            self._control.stop()
        self.state.control_socket.unlink(missing_ok=True)
        self.state.supervisor_pid_file.unlink(missing_ok=True)

    async def apply(self, source: Path, text: str) -> FleetPlan:
        """Bring the running fleet to the fleet file's text, hub by hub; SpecError leaves everything as it was."""
        desired = parse(text, source)
        async with self._lock:
            changes = plan(self.fleet, desired)
            if changes.fleet_changed:
                raise ValueError(
                    f"fleet settings changed ({', '.join(changes.fleet_changed)}): "
                    "these need `hubfleet down` then `hubfleet up`"
                )
            self.fleet, self.source, self.text = desired, source, text
            self.front_door.fleet = desired
            for backend in self.backends.values():
                backend.use_fleet(desired)
            for change in changes.hubs:
                running = self.running_on(change.name)
                if change.kind == "added":
                    await self._up(desired.hubs[change.name])
                elif change.kind == "removed":
                    if running is not None:
                        await running.down(change.name)
                    self.failed.pop(change.name, None)
                elif change.kind == "changed" and running is not self.backend_for(desired.hubs[change.name]):
                    # A new backend (or a hub that never came up): down where it ran, up where it now belongs.
                    if running is not None:
                        await running.down(change.name)
                    await self._up(desired.hubs[change.name])
                elif change.kind == "changed":
                    try:
                        await self.backend_for(desired.hubs[change.name]).apply(desired.hubs[change.name], change)
                    except Exception as exc:
                        log.error("applying changes to hub %s failed: %s", change.name, exc)
                        self.failed[change.name] = f"apply failed: {exc}"
            await self._sync_routes()
            self.state.record_applied(source, text)
        await self.refresh_status()
        return changes

    async def refresh_status(self) -> dict[str, HubStatus]:
        """Ask every hub how it is, and keep the answers for the landing page."""
        statuses: dict[str, HubStatus] = {}
        for name, hub in self.fleet.hubs.items():
            if name in self.failed:
                statuses[name] = HubStatus(
                    name=name,
                    title=hub.title,
                    url=f"{self.front_door.url}/hubs/{name}/",
                    backend=hub.backend,
                    state="failed",
                    healthy=False,
                    detail=self.failed[name],
                )
                continue
            backend = self.running_on(name)
            if backend is None:
                continue
            try:
                statuses[name] = await backend.status(name)
            except KeyError:
                continue
        self._statuses = statuses
        return statuses

    async def status_document(self) -> FleetStatus:
        """The fleet as the control socket reports it."""
        # Read before asking the hubs: `ready` must not turn true while the statuses are gathered from hubs
        # that were still starting (`up --detach` would then report them unhealthy).
        ready = self.ready
        statuses = await self.refresh_status()
        return FleetStatus(
            fleet=self.fleet.name,
            front_door=self.front_door.url,
            pid=os.getpid(),
            ready=ready,
            source=str(self.source),
            hubs=list(statuses.values()),
        )
