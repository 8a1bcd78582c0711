"""The supervisor: the long-running `hubfleet up` process that owns the front door and every hub's backend.

Other `hubfleet` commands (status, apply, down) talk to it over a Unix socket in the state directory, readable
by its owner only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from tornado import web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_unix_socket

from hubfleet.backends.base import Backend, HubStatus
from hubfleet.backends.local import LocalBackend
from hubfleet.backends.slurm import SlurmBackend
from hubfleet.fleet.frontdoor import FrontDoor
from hubfleet.fleet.plan import FleetPlan, plan
from hubfleet.fleet.scratch import ScratchSweeper
from hubfleet.fleet.state import FleetState, database_url
from hubfleet.spec import Fleet, SpecError, parse
from hubfleet.spec.models import Hub, PaidPlan, PilotPlan
from hubfleet.usage.collector import Collector, HubTarget

log = logging.getLogger("hubfleet.supervisor")


class Supervisor:
    """Runs a fleet until asked to stop: brings hubs up, keeps them alive, applies changes, reports status."""

    def __init__(self, fleet: Fleet, source: Path, text: str, state: FleetState):
        self.fleet = fleet
        self.source = source
        self.text = text
        self.state = state.create()
        local = LocalBackend(fleet, self.state)
        # Each hub runs on the backend its spec names; both run hub processes here and share one warm standby.
        self.backends: dict[str, Backend] = {
            "local": local,
            "slurm": SlurmBackend(fleet, self.state, standby=local.standby),
        }
        self.front_door = FrontDoor(fleet, self.state, self.landing_hubs)
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
            self._start_control()
            await self.front_door.start()
            await asyncio.gather(*(self._up(hub) for hub in self.fleet.hubs.values()))
            await self._sync_routes()
            self.state.record_applied(self.source, self.text)
            self.ready = True
            await self.refresh_status()
            self._refresh = asyncio.create_task(self._refresh_loop())
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
        """Every running hub, as the usage collector reaches it (servers of Slurm hubs run elsewhere: not read)."""
        return [
            HubTarget(
                name=name,
                api_url=hub.api_url,
                token=hub.settings.secret("service_token"),
                state_dir=hub.state.root,
                home_root=hub.settings.home_root,
                local_servers=backend.name == "local",
            )
            for backend in self.backends.values()
            for name, hub in getattr(backend, "hubs", {}).items()
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
        routes: dict[str, str] = {}
        for backend in self.backends.values():
            routes.update(backend.routes())
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

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(5)
            with contextlib.suppress(Exception):
                await self.refresh_status()

    def landing_hubs(self) -> list[dict[str, Any]]:
        """What the front door shows of each hub (its front page, health and console), from the last status."""
        hubs = []
        for name, hub in self.fleet.hubs.items():
            status = self._statuses.get(name)
            community = hub.community.name if hub.community else ""
            hubs.append(
                {
                    "name": name,
                    "title": hub.title,
                    "community": community,
                    "plan": describe_plan(hub.plan),
                    "url": f"/hubs/{name}/",
                    "healthy": bool(status and status.healthy),
                    "state": status.state if status else "starting",
                    "users": status.users if status else None,
                    "running_servers": status.running_servers if status else None,
                }
            )
        return hubs

    async def status_document(self) -> dict[str, Any]:
        # Read before asking the hubs: `ready` must not turn true while the statuses are gathered from hubs
        # that were still starting (`up --detach` would then report them unhealthy).
        ready = self.ready
        statuses = await self.refresh_status()
        return {
            "fleet": self.fleet.name,
            "front_door": self.front_door.url,
            "pid": os.getpid(),
            "ready": ready,
            "source": str(self.source),
            "hubs": [s.model_dump() for s in statuses.values()],
        }

    def _start_control(self) -> None:
        app = web.Application(
            [
                (r"/status", StatusHandler, {"supervisor": self}),
                (r"/apply", ApplyHandler, {"supervisor": self}),
                (r"/down", DownHandler, {"supervisor": self}),
            ]
        )
        path = self.state.control_socket
        path.unlink(missing_ok=True)
        sock = bind_unix_socket(str(path), mode=0o600)
        self._control = HTTPServer(app)
        self._control.add_socket(sock)


def describe_plan(plan_spec: PilotPlan | PaidPlan | None) -> str:
    """One line about a hub's plan."""
    if isinstance(plan_spec, PilotPlan):
        return f"Pilot {plan_spec.start:%d %b %Y} to {plan_spec.end:%d %b %Y}"
    if isinstance(plan_spec, PaidPlan):
        return "Paid plan"
    return ""


class _ControlHandler(web.RequestHandler):
    def initialize(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor

    def check_xsrf_cookie(self) -> None:  # a private Unix socket: no browser can reach it
        return

    def reply(self, status: int, document: dict[str, Any]) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(document, default=str))


class StatusHandler(_ControlHandler):
    async def get(self) -> None:
        self.reply(200, await self.supervisor.status_document())


class ApplyHandler(_ControlHandler):
    async def post(self) -> None:
        try:
            body = json.loads(self.request.body)
            source, text = Path(body["path"]), str(body["text"])
        except (ValueError, KeyError, TypeError):
            self.reply(400, {"error": "expected JSON with 'path' and 'text'"})
            return
        try:
            changes = await self.supervisor.apply(source, text)
        except SpecError as exc:
            self.reply(422, {"error": str(exc)})
            return
        except ValueError as exc:
            self.reply(409, {"error": str(exc)})
            return
        self.reply(200, {"plan": changes.to_dict(), "failed": self.supervisor.failed})


class DownHandler(_ControlHandler):
    def post(self) -> None:
        self.supervisor.stop()
        self.reply(202, {"stopping": True})
