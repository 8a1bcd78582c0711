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

from hubfleet.common import events
from hubfleet.common.periodic import every
from hubfleet.common.state import FleetState, database_url, fleet_cgroup
from hubfleet.common.status import FleetStatus, HubStatus
from hubfleet.edu.lti.keys import TOOL_KEY_FILE, ToolKey
from hubfleet.fleet import backend as backend_port
from hubfleet.fleet import control, logs
from hubfleet.fleet.backend import Backend, HubHost, RunningHub
from hubfleet.fleet.culler import LOOK_EVERY, Culler
from hubfleet.fleet.frontdoor import FrontDoor
from hubfleet.fleet.logs import ROTATE_EVERY
from hubfleet.fleet.outbox import DELIVER_EVERY, OutboxRelay
from hubfleet.fleet.plan import FleetPlan, HubChange, plan
from hubfleet.fleet.prewarm import LOOK_EVERY as PREWARM_EVERY
from hubfleet.fleet.prewarm import PreWarmer
from hubfleet.fleet.scratch import ScratchSweeper
from hubfleet.fleet.sleep import SWEEP_EVERY, SleepKeeper
from hubfleet.spec import Fleet, parse
from hubfleet.spec.models import Hub
from hubfleet.spec.units import format_size
from hubfleet.system import cgroups, pidfiles
from hubfleet.system.forkserver import ForkServer
from hubfleet.usage.collector import Collector, HubTarget

log = logging.getLogger("hubfleet.supervisor")

JWKS_PATH = "/hub/lti13/jwks"
"""Below a hub's prefix: its LTI tool's public keys (`hubfleet.hub.authenticators.lti`)."""


class Supervisor:
    """Runs a fleet until asked to stop: brings hubs up, keeps them alive, applies changes, reports status."""

    def __init__(self, fleet: Fleet, source: Path, text: str, state: FleetState):
        self.fleet = fleet
        self.source = source
        self.text = text
        self.state = state.create()
        # The one proxy of the fleet, the fleet's own app behind it, and the route API hubs talk to.
        self.front_door = FrontDoor(fleet, self.state, lambda: self._statuses, self)
        # Hubs wake on the first request for them, and sleep when nobody uses them.
        self.keeper = SleepKeeper(
            lambda: self.fleet, self.running_on, self.front_door.routes, on_change=self._hubs_changed
        )
        # A warm interpreter with JupyterHub imported: hub processes are forked from it (fast wakes, shared pages).
        root = self.state.root
        self.forkserver = ForkServer.of_module("hubfleet.hub.zygote", root / "zygote.sock", root / "zygote.log")
        host = HubHost(self.forkserver, self.front_door.routes, self.front_door.proxy_link)
        # Each hub runs on the backend its spec names (every installed backend, found by name).
        self.backends: dict[str, Backend] = {
            name: backend_class(fleet, self.state, host) for name, backend_class in backend_port.registered().items()
        }
        self.culler = Culler(lambda: self.fleet, self.running_hubs)
        # Sleeping hubs' scores still reach the LMS (an awake hub's exchange sends its own).
        self.outbox = OutboxRelay(self.running_hubs)
        self.failed: dict[str, str] = {}
        self._statuses: dict[str, HubStatus] = {}
        self._stop = asyncio.Event()
        self._lock = asyncio.Lock()
        self._control: HTTPServer | None = None
        self._loops: list[asyncio.Task] = []
        # Cleans up the per-user scratch folders of hubs with `storage.scratch`, in a thread, every few minutes.
        self.scratch = ScratchSweeper(lambda: self.fleet)
        self._sweeping: asyncio.Task | None = None
        # Meters every hub's usage into the fleet database every `usage.metering.interval`; /_hubfleet/metrics.
        self.collector = Collector(lambda: self.fleet, self.usage_targets, database_url(fleet, self.state.root))
        self.front_door.metrics = self.collector.registry
        # Before each course meeting: the servers of the students likely to come, started as them.
        self.prewarmer = PreWarmer(lambda: self.fleet, self.running_hubs, self.wake, self.collector.sessions)
        self._metering: asyncio.Task | None = None
        self.ready = False
        self.stop_reason = "asked to stop"
        self._events: logging.Handler | None = None

    async def run(self, on_ready: Callable[[Supervisor], Awaitable[None]] | None = None) -> None:
        """Start everything, call `on_ready`, and run until `stop()` or SIGTERM/SIGINT; then shut down."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop, f"{sig.name} to the supervisor")
        pidfiles.write(self.state.supervisor_pid_file, os.getpid())
        self._events = events.attach(self.state.events_file, self.fleet.logs.max_size, self.fleet.logs.keep)
        events.record("fleet.starting", f"fleet {self.fleet.name} starting (pid {os.getpid()})", pid=os.getpid())
        try:
            self._control = control.serve(self, self.state)
            await self.front_door.start()
            if any(not hub.sleep.enabled for hub in self.fleet.hubs.values()):
                await self.forkserver.wait_ready(60)
            else:
                self.forkserver.start()
            await asyncio.gather(*(self._up(hub) for hub in self.fleet.hubs.values()))
            self.state.record_applied(self.source, self.text)
            self.ready = True
            events.record(
                "fleet.started",
                f"fleet {self.fleet.name} up at {self.front_door.url}/ with {len(self.fleet.hubs)} hub(s)"
                + (f", {len(self.failed)} failed: {', '.join(sorted(self.failed))}" if self.failed else ""),
                hubs=sorted(self.fleet.hubs),
                failed=sorted(self.failed),
            )
            self._loops = [
                asyncio.create_task(every(seconds, work, log=log, what=what, stop=self._stop))
                for seconds, work, what in (
                    (5, self.refresh_status, "refreshing the hubs' status"),
                    (SWEEP_EVERY, self.keeper.sweep, "putting idle hubs to sleep"),
                    (LOOK_EVERY, self.culler.cull_due, "culling idle servers"),
                    (PREWARM_EVERY, self.prewarmer.sweep, "pre-warming course meetings"),
                    (DELIVER_EVERY, self.outbox.deliver, "sending sleeping hubs' scores to the LMS"),
                    (ROTATE_EVERY, self._rotate_logs, "rotating logs"),
                )
            ]
            self._sweeping = asyncio.create_task(self.scratch.run())
            self._metering = asyncio.create_task(self.collector.run())
            if on_ready is not None:
                await on_ready(self)
            await self._stop.wait()
        finally:
            await self.shutdown()

    def stop(self, why: str = "asked to stop") -> None:
        """Ask the supervisor to shut the fleet down (`why`: for the event log)."""
        if not self._stop.is_set():
            self.stop_reason = why
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """Whether a shutdown was asked for."""
        return self._stop.is_set()

    def backend_for(self, hub: Hub) -> Backend:
        """The backend `hub`'s spec asks for."""
        return self.backends[hub.backend]

    def running_hubs(self) -> list[RunningHub]:
        """Every hub some backend runs, awake or asleep."""
        return [hub for backend in self.backends.values() for hub in backend.running_hubs()]

    def usage_targets(self) -> list[HubTarget]:
        """Every awake hub, as the usage collector reaches it (a sleeping hub has no server and is not woken; servers
        that run elsewhere are not read)."""
        return [
            HubTarget(
                name=hub.name,
                api_url=hub.settings.address.hub_api_url,
                token=hub.settings.secret("service_token"),
                state_dir=hub.settings.state_dir,
                home_root=hub.settings.home_root,
                cgroup=hub.settings.cgroup,
                local_servers=hub.servers_here,
            )
            for hub in self.running_hubs()
            if hub.awake
        ]

    def running_on(self, name: str) -> Backend | None:
        """The backend hub `name` was brought up on, if any."""
        return next((b for b in self.backends.values() if name in b.hub_names()), None)

    async def _up(self, hub: Hub) -> None:
        """Bring `hub` up: asleep if it may sleep (the first request wakes it), else started."""
        awake = not hub.sleep.enabled
        try:
            await self.backend_for(hub).up(hub, awake=awake)
            self.keeper.started(hub.name, awake)
            self.failed.pop(hub.name, None)
        except Exception as exc:
            events.record(
                "hub.failed", f"hub {hub.name} failed to start: {exc}", hub=hub.name, level=logging.ERROR, why=str(exc)
            )
            self.failed[hub.name] = str(exc)
            return
        state = "started" if awake else "up, asleep until its first request"
        events.record("hub.started", f"hub {hub.name} {state} ({hub.backend})", hub=hub.name, awake=awake)

    async def _hubs_changed(self) -> None:
        await self.refresh_status()

    # --- what the front door asks (hubfleet.fleet.wake.Door) ---------------------------------------------------------

    def hub_names(self) -> list[str]:
        return list(self.fleet.hubs)

    def awake(self, hub: str) -> bool:
        return self.keeper.awake(hub)

    async def wake(self, hub: str) -> None:
        if hub in self.failed or self.running_on(hub) is None:
            raise RuntimeError(self.failed.get(hub, "it is not running"))
        await self.keeper.wake(hub)

    async def sleep_hub(self, hub: str) -> str | None:
        """Put `hub` to sleep now; why not, when it must stay awake (KeyError: no such hub runs)."""
        if hub in self.failed:
            raise KeyError(hub)
        return await self.keeper.sleep_at_once(hub)

    def wake_timeout(self) -> float:
        return float(self.fleet.front_door.wake_timeout)

    def proxy_url(self) -> str:
        return self.front_door.internal_url

    def asleep_answer(self, hub: str, path: str) -> dict | None:
        """The tool keys of a sleeping LTI hub (an LMS fetches them to check a score's signed request: sending a
        sleeping hub's scores must not wake it)."""
        spec = self.fleet.hubs.get(hub)
        key_file = self.state.hub(hub).root / TOOL_KEY_FILE
        if path.rstrip("/") != JWKS_PATH or spec is None or spec.lti is None or not key_file.exists():
            return None
        return ToolKey.load_or_create(key_file).jwks()

    async def shutdown(self) -> None:
        """Stop every hub (and its servers), the front door and the control socket."""
        events.record("fleet.stopping", f"fleet {self.fleet.name} stopping: {self.stop_reason}", why=self.stop_reason)
        for loop in self._loops:
            loop.cancel()
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
                events.record("hub.stopped", f"stopping hub {name}: {result}", hub=name, level=logging.ERROR)
            else:
                events.record("hub.stopped", f"hub {name} stopped: the fleet stops", hub=name, why="fleet stopping")
        for backend in self.backends.values():
            await backend.close()
        await asyncio.get_running_loop().run_in_executor(None, self._remove_cgroup)
        await self.forkserver.close()
        await self.outbox.close()
        await self.front_door.stop()
        if self._control is not None:
            self._control.stop()
        self.state.control_socket.unlink(missing_ok=True)
        self.state.supervisor_pid_file.unlink(missing_ok=True)
        events.record("fleet.stopped", f"fleet {self.fleet.name} stopped")
        if self._events is not None:
            logging.getLogger(events.LOGGER).removeHandler(self._events)
            self._events.close()

    async def _apply_to(self, hub: Hub, change: HubChange) -> None:
        try:
            await self.backend_for(hub).apply(hub, change)
        except Exception as exc:
            message = f"applying changes to hub {hub.name} failed: {exc}"
            events.record("hub.failed", message, hub=hub.name, level=logging.ERROR, why=f"apply failed: {exc}")
            self.failed[hub.name] = f"apply failed: {exc}"
            return
        if change.needs_restart:
            why = f"settings changed ({', '.join(change.settings_changed)})"
            events.record("hub.restarted", f"hub {hub.name} restarted: {why}", hub=hub.name, why=why)

    async def _rotate_logs(self) -> None:
        limits = self.fleet.logs
        logs.resize([*logging.getLogger().handlers, *([self._events] if self._events else [])], limits)
        for path in await asyncio.get_running_loop().run_in_executor(None, logs.rotate_all, self.state, limits):
            log.info("rotated %s (larger than %s)", path, format_size(limits.max_size))

    def _remove_cgroup(self) -> None:
        """Remove the fleet's cgroup once its hubs are down (if nothing is left in it)."""
        driver = cgroups.detect()
        group = driver.open(fleet_cgroup(self.fleet.name, self.state.root)) if driver is not None else None
        if group is not None and not group.pids():
            try:
                group.remove()
            except cgroups.CgroupError as exc:
                log.warning("cannot remove the fleet's cgroup: %s", exc)

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
            touched = {
                kind: [c.name for c in changes.hubs if c.kind == kind] for kind in ("added", "removed", "changed")
            }
            events.record(
                "fleet.applied",
                f"applying {source}: "
                + ("; ".join(f"{kind} {', '.join(names)}" for kind, names in touched.items() if names) or "no changes"),
                source=str(source),
                **touched,
            )
            for change in changes.hubs:
                running = self.running_on(change.name)
                if change.kind == "added":
                    await self._up(desired.hubs[change.name])
                elif change.kind == "removed":
                    if running is not None:
                        await running.down(change.name)
                        events.record(
                            "hub.stopped", f"hub {change.name} stopped: removed from the fleet file", hub=change.name
                        )
                    self.failed.pop(change.name, None)
                    self.keeper.forget(change.name)
                elif change.kind == "changed" and running is not self.backend_for(desired.hubs[change.name]):
                    # A new backend (or a hub that never came up): down where it ran, up where it now belongs.
                    if running is not None:
                        await running.down(change.name)
                        events.record("hub.stopped", f"hub {change.name} stopped: {change.lines()[0]}", hub=change.name)
                    await self._up(desired.hubs[change.name])
                elif change.kind == "changed":
                    await self._apply_to(desired.hubs[change.name], change)
            self.state.record_applied(source, text)
        await self.refresh_status()
        return changes

    async def restart_hub(self, name: str) -> bool:
        """Restart hub `name`'s processes from the installed code, users' servers kept (`hubfleet upgrade`); False
        for a sleeping hub (it starts from that code when it wakes). KeyError: no such hub runs."""
        async with self._lock:
            backend = self.running_on(name)
            if backend is None:
                raise KeyError(name)
            try:
                restarted = await backend.restart(name)
            except Exception as exc:
                message = f"restarting hub {name} failed: {exc}"
                events.record("hub.failed", message, hub=name, level=logging.ERROR, why=f"restart failed: {exc}")
                self.failed[name] = f"restart failed: {exc}"
                raise
            self.failed.pop(name, None)
        if restarted:
            events.record("hub.restarted", f"hub {name} restarted from the installed code", hub=name, why="upgrade")
        await self.refresh_status()
        return restarted

    async def renew_forkserver(self) -> bool:
        """A new fork server, importing the code installed now: hubs (re)started from now on run that code."""
        return await self.forkserver.renew(60)

    async def refresh_status(self) -> dict[str, HubStatus]:
        """Ask every hub how it is (all at once), and keep the answers for the landing page."""

        async def status_of(name: str, hub: Hub) -> HubStatus | None:
            if name in self.failed:
                return HubStatus(
                    name=name,
                    title=hub.title,
                    url=f"{self.front_door.url}/hubs/{name}/",
                    backend=hub.backend,
                    state="failed",
                    healthy=False,
                    detail=self.failed[name],
                )
            backend = self.running_on(name)
            if backend is None:
                return None
            try:
                status = await backend.status(name)
            except KeyError:
                return None
            record = self.keeper.record(name)
            return status.model_copy(update={"last_wake": record.last_wake, "wakes": record.wakes})

        hubs = list(self.fleet.hubs.items())
        found = await asyncio.gather(*(status_of(name, hub) for name, hub in hubs))
        self._statuses = {name: status for (name, _), status in zip(hubs, found, strict=True) if status is not None}
        return self._statuses

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
