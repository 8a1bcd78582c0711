"""The one-machine backend: each hub is a real JupyterHub process (forked from the fleet's warm fork server) and, for
hubs that need them, its Dask Gateway and assignment exchange. Every hub routes through the front door's one proxy;
the fleet culls idle servers itself. A hub that sleeps runs nothing at all: its state stays on disk."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from pathlib import Path

import httpx

import hubfleet.hub as hub_package
import hubfleet.research as research_package
from hubfleet.backends.local.render import (
    hub_address,
    prepare_machine,
    render_exchange_settings,
    render_gateway_settings,
    render_settings,
    wants_exchange,
)
from hubfleet.common.hubapi import HubAPI
from hubfleet.common.settings import SETTINGS_ENV, HubAddress, HubPorts, HubSettings
from hubfleet.common.state import FleetState, HubState
from hubfleet.common.status import HubStatus
from hubfleet.edu.exchange.settings import SETTINGS_ENV as EXCHANGE_SETTINGS_ENV
from hubfleet.edu.exchange.settings import SETTINGS_FILE as EXCHANGE_SETTINGS_FILE
from hubfleet.fleet.backend import Backend, HubHost, RunningHub
from hubfleet.fleet.plan import HubChange
from hubfleet.fleet.ports import allocate_ports, hub_ports
from hubfleet.fleet.processes import ManagedProcess, Probe, http_ok
from hubfleet.research.settings import SETTINGS_ENV as GATEWAY_SETTINGS_ENV
from hubfleet.spec.models import Fleet, Hub
from hubfleet.system import cgroups

log = logging.getLogger("hubfleet.local")

HUB_CONFIG_FILE = Path(hub_package.__file__).parent / "jupyterhub_config.py"
"""The configuration file every hub process loads (it reads the hub's settings)."""

GATEWAY_CONFIG_FILE = Path(research_package.__file__).parent / "dask_gateway_config.py"
"""The configuration file every hub's Dask Gateway loads (it reads the gateway's settings)."""


def _wants_gateway(hub: Hub) -> bool:
    return hub.dask is not None and hub.dask.enabled


def _with_exchange_port(fleet_state: FleetState, state: HubState, fleet: Fleet, hub: Hub, ports: HubPorts) -> HubPorts:
    """The hub's ports plus one for its assignment exchange, when it needs one (kept like the others)."""
    if not wants_exchange(hub) or ports.exchange is not None:
        return ports
    (port,) = allocate_ports(1, fleet.internal_ports, fleet_state.all_ports())
    ports = ports.model_copy(update={"exchange": port})
    state.keep_ports(ports)
    return ports


class LocalHub:
    """One hub on this machine: its JupyterHub and its companions (Dask Gateway, assignment exchange)."""

    backend = "local"
    """The backend's name, as `hubfleet status` shows it."""

    servers_here = True
    """Whether users' servers run on this machine."""

    def __init__(self, fleet: Fleet, hub: Hub, state: HubState, fleet_state: FleetState, host: HubHost):
        self.fleet = fleet
        self.fleet_state = fleet_state
        self.host = host
        self.spec = hub
        self.state = state.create()
        self.ports = self._ports()
        self.settings = self._write_settings()
        self.hub = self._hub_process()
        self.companions: list[ManagedProcess] = []
        self.awake = False
        self.prepared = False

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def address(self) -> HubAddress:
        """Where the hub's processes are reached on this machine."""
        return hub_address(self.spec, self.ports, self.host.proxy)

    def running(self) -> RunningHub:
        """The hub as the rest of the fleet reaches it."""
        return RunningHub(self.name, self.backend, self.settings, self.servers_here, self.awake)

    @property
    def api_url(self) -> str:
        """The hub's REST API, reached directly on loopback."""
        return self.address.hub_api_url

    def api(self) -> HubAPI:
        return HubAPI(self.api_url, self.settings.secret("service_token"))

    def _ports(self) -> HubPorts:
        ports = hub_ports(self.fleet_state, self.state, self.fleet.internal_ports, gateway=_wants_gateway(self.spec))
        return _with_exchange_port(self.fleet_state, self.state, self.fleet, self.spec, ports)

    def render_settings(self) -> HubSettings:
        """The hub process's settings for the current spec (backends built on this one change them)."""
        return render_settings(self.fleet, self.spec, self.state, self.address)

    def _write_settings(self) -> HubSettings:
        settings = self.render_settings()
        settings.write(self.state.settings_file)
        return settings

    async def _ready(self) -> bool:
        """Up: its API answers and its own route is on the fleet's proxy (it adds it itself at start)."""
        return self.host.routes.has_route(self.name) and await http_ok(f"{self.api_url}/")

    def _process(self, part: str, argv: list[str], cwd: Path, env: dict[str, str], ready: Probe) -> ManagedProcess:
        """One of the hub's processes (`part`: hub, dask-gateway, exchange), its log and pid file in the hub's state
        directory, forked from the fleet's forkserver."""
        return ManagedProcess(
            f"{self.name}/{part}",
            argv,
            cwd=cwd,
            log_path=self.state.log(part),
            env=env,
            ready=ready,
            pid_file=self.state.root / f"{part}.pid",
            forkserver=self.host.forkserver,
        )

    def _hub_process(self) -> ManagedProcess:
        argv = [sys.executable, "-m", "jupyterhub", "-f", str(HUB_CONFIG_FILE)]
        return self._process("hub", argv, self.state.root, {SETTINGS_ENV: str(self.state.settings_file)}, self._ready)

    def _gateway_process(self) -> ManagedProcess | None:
        if not _wants_gateway(self.spec):
            return None
        settings = render_gateway_settings(self.fleet, self.spec, self.state, self.address)
        settings_file = settings.state_dir / "settings.json"
        settings.write(settings_file)
        health = f"http://{settings.proxy_address}{settings.prefix}/api/health"
        argv = [sys.executable, "-m", "dask_gateway_server", "-f", str(GATEWAY_CONFIG_FILE)]
        env = {GATEWAY_SETTINGS_ENV: str(settings_file)}
        return self._process("dask-gateway", argv, settings.state_dir, env, lambda: http_ok(health))

    def _exchange_process(self) -> ManagedProcess | None:
        if not wants_exchange(self.spec):
            return None
        settings = render_exchange_settings(self.fleet, self.spec, self.state, self.address)
        settings_file = self.state.root / EXCHANGE_SETTINGS_FILE
        settings.write(settings_file)
        health = f"http://{settings.address}{settings.prefix}api/health"
        argv = [sys.executable, "-m", "hubfleet.edu.exchange.service"]
        env = {EXCHANGE_SETTINGS_ENV: str(settings_file)}
        return self._process("exchange", argv, self.state.root, env, lambda: http_ok(health))

    async def prepare(self) -> None:
        """Groups, folders and their access on this machine (once per spec: again after a change)."""
        if not self.prepared:
            await asyncio.get_running_loop().run_in_executor(None, prepare_machine, self.fleet, self.spec)
            self.prepared = True

    async def start(self) -> None:
        """Start the hub's processes, all at once, and return once they answer (the hub wakes)."""
        await self.prepare()
        try:
            await asyncio.gather(self.hub.start(timeout=90), self._start_companions())
        except BaseException:
            await self._stop_processes()  # nothing half-started is left: the next request tries again
            raise
        self.awake = True

    async def _start_companions(self) -> None:
        wanted = (self._gateway_process(), self._exchange_process())
        self.companions = [p for p in wanted if p is not None]
        await asyncio.gather(*(process.start(timeout=90) for process in self.companions))

    async def _stop_processes(self) -> None:
        await asyncio.gather(*(process.stop() for process in self.companions))
        await self.hub.stop()
        await self.host.routes.drop_hub(self.name)
        self.awake = False

    async def sleep(self) -> None:
        """Stop the hub's processes; its state stays (it has no running server, so nothing is lost)."""
        await self._stop_processes()

    async def busy(self) -> str | None:
        """Why the hub must not sleep now: servers running or starting, or processes of its users (Dask)."""
        try:
            async with self.api() as api:
                active = await api.count_users(state="active")
        except httpx.HTTPError as exc:
            return f"its API does not answer ({type(exc).__name__})"
        if active:
            return f"{active} user(s) with a server running or starting"
        driver = cgroups.detect()
        group = driver.open(self.settings.cgroup) if driver else None
        if group is not None and group.pids():
            return "processes of its users run (e.g. a Dask cluster)"
        return await self._exchange_busy()

    async def _exchange_busy(self) -> str | None:
        """What the hub's assignment exchange is doing (grading, sending scores), if it has one and is busy."""
        if not wants_exchange(self.spec) or self.ports.exchange is None:
            return None
        settings = render_exchange_settings(self.fleet, self.spec, self.state, self.address)
        try:
            async with httpx.AsyncClient(timeout=5.0) as client:
                health = (await client.get(f"http://{settings.address}{settings.prefix}api/health")).json()
        except (httpx.HTTPError, ValueError) as exc:
            return f"its exchange does not answer ({type(exc).__name__})"
        return health.get("busy") or None

    async def reconfigure(self, fleet: Fleet, hub: Hub, change: HubChange) -> None:
        """Apply a new spec: restart the hub process if its settings changed, then user/group changes live.

        A sleeping hub only gets its new settings (it starts with them when it wakes); live changes wake it."""
        self.fleet, self.spec = fleet, hub
        if change.needs_restart:
            self.ports = self._ports()
            self.prepared = False
        self.settings = self._write_settings()
        if change.needs_restart and self.awake:
            await self._restart_processes()
        if change.live:
            if not self.awake:
                await self.start()
            await self._apply_live(change)

    async def _restart_processes(self) -> None:
        """Stop the hub's processes and start them again; users' servers keep running (hubs never stop them on
        their own stop, `cleanup_servers=False`) and the started hub finds them again."""
        await self.prepare()
        await asyncio.gather(*(process.stop() for process in self.companions))
        await self.hub.stop()
        await asyncio.gather(self.hub.start(timeout=90), self._start_companions())

    async def restart(self) -> bool:
        """Restart the hub's processes from the code installed now (an upgrade), keeping users' servers; False
        for a sleeping hub (it starts from that code when it wakes)."""
        if not self.awake:
            return False
        self.prepared = False
        self.settings = self._write_settings()
        await self._restart_processes()
        return True

    async def _apply_live(self, change: HubChange) -> None:
        async with self.api() as api:
            await api.create_users([u for u in change.users_added if u not in change.admins_added])
            await api.create_users(change.admins_added, admin=True)
            for name in change.admins_added:
                await api.set_admin(name, True)
            for name in change.admins_removed:
                if name not in change.users_removed:
                    await api.set_admin(name, False)
            for group in change.groups_added:
                await api.ensure_group(group)
            for group, members in change.members_added.items():
                await api.add_members(group, members)
            for group, members in change.members_removed.items():
                await api.remove_members(group, members)
            for group in change.groups_removed:
                await api.delete_group(group)
            for name in change.users_removed:
                await api.delete_user(name)

    async def stop(self, stop_servers: bool = True) -> None:
        """Stop user servers (optionally), then the companions and the hub; remove leftover cgroups."""
        if stop_servers and self.hub.running:
            try:
                async with self.api() as api:
                    await api.stop_all_servers()
            except httpx.HTTPError as exc:
                log.warning("could not stop the servers of %s through its API: %s", self.name, exc)
        await self._stop_processes()
        if stop_servers:
            await asyncio.get_running_loop().run_in_executor(None, self._remove_cgroups)

    def _remove_cgroups(self) -> None:
        driver = cgroups.detect()
        group = driver.open(self.settings.cgroup) if driver else None
        if group is not None:
            group.remove()

    async def status(self) -> HubStatus:
        processes = [self.hub, *self.companions]
        users = running = None
        if not self.awake:
            state, healthy, detail = "asleep", True, ""
        elif not all(p.running for p in processes):
            state, healthy, detail = "degraded", False, "hub process not running"
        else:
            state, healthy, detail = "running", True, ""
            try:
                async with self.api() as api:
                    users = await api.count_users()
                    running = await api.count_users(state="ready")
            except httpx.HTTPError as exc:
                state, healthy, detail = "degraded", False, f"hub API: {exc}"
        return HubStatus(
            name=self.name,
            title=self.spec.title,
            url=self.settings.public_url,
            backend=self.backend,
            state=state,
            healthy=healthy,
            pids={p.name.split("/")[-1]: p.pid for p in processes if p.pid},
            restarts={p.name.split("/")[-1]: p.restarts for p in processes},
            users=users,
            running_servers=running,
            detail=detail,
        )


class LocalBackend(Backend):
    """Hubs as processes on this machine."""

    name = "local"

    hub_class: type[LocalHub] = LocalHub

    def __init__(self, fleet: Fleet, state: FleetState, host: HubHost):
        super().__init__(fleet, state, host)
        self.hubs: dict[str, LocalHub] = {}

    def running_hubs(self) -> list[RunningHub]:
        return [hub.running() for hub in self.hubs.values()]

    async def up(self, hub: Hub, *, awake: bool = True) -> None:
        local = self.hub_class(self.fleet, hub, self.state.hub(hub.name), self.state, self.host)
        self.hubs[hub.name] = local
        try:
            await local.prepare()
            if awake:
                await local.start()
        except Exception:
            with contextlib.suppress(Exception):
                await local.stop()
            raise

    def is_awake(self, name: str) -> bool:
        local = self.hubs.get(name)
        return local is not None and local.awake

    async def wake(self, name: str) -> None:
        await self.hubs[name].start()

    async def sleep(self, name: str) -> None:
        await self.hubs[name].sleep()

    async def busy(self, name: str) -> str | None:
        return await self.hubs[name].busy()

    async def apply(self, hub: Hub, change: HubChange) -> None:
        await self.hubs[hub.name].reconfigure(self.fleet, hub, change)

    async def restart(self, name: str) -> bool:
        return await self.hubs[name].restart()

    async def down(self, name: str, *, stop_servers: bool = True) -> None:
        local = self.hubs.pop(name, None)
        if local is not None:
            await local.stop(stop_servers=stop_servers)

    async def status(self, name: str) -> HubStatus:
        return await self.hubs[name].status()
