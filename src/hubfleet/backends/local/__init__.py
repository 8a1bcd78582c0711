"""The one-machine backend: each hub is a real JupyterHub process with its own proxy, idle culler and (for
research hubs) Dask Gateway."""

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
from hubfleet.common.settings import LOOPBACK, SETTINGS_ENV, HubAddress, HubPorts, HubSettings
from hubfleet.common.state import FleetState, HubState
from hubfleet.common.status import HubStatus
from hubfleet.edu.exchange.settings import SETTINGS_ENV as EXCHANGE_SETTINGS_ENV
from hubfleet.edu.exchange.settings import SETTINGS_FILE as EXCHANGE_SETTINGS_FILE
from hubfleet.fleet.backend import Backend, RunningHub
from hubfleet.fleet.plan import HubChange
from hubfleet.fleet.ports import allocate_ports, hub_ports
from hubfleet.fleet.processes import ManagedProcess, find_proxy_command, http_ok
from hubfleet.fleet.standby import StandbyPool
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
    """One hub on this machine: its proxy, its JupyterHub and its companions (idle culler, Dask Gateway)."""

    backend = "local"
    """The backend's name, as `hubfleet status` shows it."""

    servers_here = True
    """Whether users' servers run on this machine."""

    def __init__(self, fleet: Fleet, hub: Hub, state: HubState, fleet_state: FleetState, standby: StandbyPool):
        self.fleet = fleet
        self.fleet_state = fleet_state
        self.standby = standby
        self.spec = hub
        self.state = state.create()
        self.ports = hub_ports(fleet_state, self.state, fleet.internal_ports, gateway=_wants_gateway(hub))
        self.ports = _with_exchange_port(fleet_state, self.state, fleet, hub, self.ports)
        self.settings = self._write_settings()
        self.proxy = self._proxy_process()
        self.hub = self._hub_process()
        self.companions: list[ManagedProcess] = []
        self.started = False

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def address(self) -> HubAddress:
        """Where the hub's processes are reached on this machine."""
        return hub_address(self.spec, self.ports)

    def running(self) -> RunningHub:
        """The hub as the rest of the fleet reaches it."""
        return RunningHub(self.name, self.backend, self.settings, self.address.proxy_url, self.servers_here)

    @property
    def api_url(self) -> str:
        """The hub's REST API, reached directly on loopback."""
        return self.address.hub_api_url

    def api(self) -> HubAPI:
        return HubAPI(self.api_url, self.settings.secret("service_token"))

    def render_settings(self) -> HubSettings:
        """The hub process's settings for the current spec (backends built on this one change them)."""
        return render_settings(self.fleet, self.spec, self.state, self.ports)

    def _write_settings(self) -> HubSettings:
        settings = self.render_settings()
        settings.write(self.state.settings_file)
        return settings

    def _proxy_process(self) -> ManagedProcess:
        token = self.settings.secret("proxy_token")
        address = self.address
        api = f"{address.proxy_api_url}/api/routes"
        error_target = f"{address.hub_url}{address.base_url}hub/error"
        argv = [
            find_proxy_command(),
            f"--ip={LOOPBACK}",
            f"--port={self.ports.proxy}",
            f"--api-ip={LOOPBACK}",
            f"--api-port={self.ports.proxy_api}",
            f"--error-target={error_target}",
            "--log-level=warn",
        ]
        process = ManagedProcess(
            f"{self.name}/proxy",
            argv,
            cwd=self.state.root,
            log_path=self.state.log("proxy"),
            env={"CONFIGPROXY_AUTH_TOKEN": token},
            ready=lambda: http_ok(api, {"Authorization": f"token {token}"}),
            pid_file=self.state.root / "proxy.pid",
        )
        process.on_restart = self._proxy_restarted
        return process

    async def _proxy_restarted(self, _: ManagedProcess) -> None:
        # A new proxy has no routes: a hub restart makes JupyterHub add them all again.
        await self.hub.stop()
        await self.hub.start()

    def _hub_process(self) -> ManagedProcess:
        argv = [sys.executable, "-m", "jupyterhub", "-f", str(HUB_CONFIG_FILE)]
        ready_url = self.address.through_proxy("hub/api/")
        return ManagedProcess(
            f"{self.name}/hub",
            argv,
            cwd=self.state.root,
            log_path=self.state.log("hub"),
            env={SETTINGS_ENV: str(self.state.settings_file)},
            ready=lambda: http_ok(ready_url),
            pid_file=self.state.root / "hub.pid",
            standby=self.standby,
        )

    def _culler_process(self) -> ManagedProcess | None:
        culling = self.spec.culling
        if not culling.enabled:
            return None
        argv = [
            sys.executable,
            "-m",
            "jupyterhub_idle_culler",
            f"--timeout={culling.timeout}",
            f"--cull-every={culling.every}",
            f"--max-age={culling.max_age}",
        ]
        return ManagedProcess(
            f"{self.name}/idle-culler",
            argv,
            cwd=self.state.root,
            log_path=self.state.log("idle-culler"),
            env={"JUPYTERHUB_API_URL": self.api_url, "JUPYTERHUB_API_TOKEN": self.settings.secret("culler_token")},
            pid_file=self.state.root / "idle-culler.pid",
        )

    def _gateway_process(self) -> ManagedProcess | None:
        if not _wants_gateway(self.spec):
            return None
        settings = render_gateway_settings(self.fleet, self.spec, self.state, self.ports)
        settings_file = settings.state_dir / "settings.json"
        settings.write(settings_file)
        health = f"http://{settings.proxy_address}{settings.prefix}/api/health"
        return ManagedProcess(
            f"{self.name}/dask-gateway",
            [sys.executable, "-m", "dask_gateway_server", "-f", str(GATEWAY_CONFIG_FILE)],
            cwd=settings.state_dir,
            log_path=self.state.log("dask-gateway"),
            env={GATEWAY_SETTINGS_ENV: str(settings_file)},
            ready=lambda: http_ok(health),
            pid_file=self.state.root / "dask-gateway.pid",
        )

    def _exchange_process(self) -> ManagedProcess | None:
        if not wants_exchange(self.spec):
            return None
        settings = render_exchange_settings(self.fleet, self.spec, self.state, self.ports)
        settings_file = self.state.root / EXCHANGE_SETTINGS_FILE
        settings.write(settings_file)
        health = f"http://{settings.address}{settings.prefix}api/health"
        return ManagedProcess(
            f"{self.name}/exchange",
            [sys.executable, "-m", "hubfleet.edu.exchange.service"],
            cwd=self.state.root,
            log_path=self.state.log("exchange"),
            env={EXCHANGE_SETTINGS_ENV: str(settings_file)},
            ready=lambda: http_ok(health),
            pid_file=self.state.root / "exchange.pid",
        )

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, prepare_machine, self.fleet, self.spec)
        await self.proxy.start()
        await self.hub.start(timeout=90)
        await self._start_companions()
        self.started = True

    async def _start_companions(self) -> None:
        wanted = (self._culler_process(), self._gateway_process(), self._exchange_process())
        self.companions = [p for p in wanted if p is not None]
        await asyncio.gather(*(process.start() for process in self.companions))

    async def _stop_companions(self) -> None:
        await asyncio.gather(*(process.stop() for process in self.companions))

    async def reconfigure(self, fleet: Fleet, hub: Hub, change: HubChange) -> None:
        """Apply a new spec: restart the hub process if its settings changed, then user/group changes live."""
        self.fleet, self.spec = fleet, hub
        if change.needs_restart:
            self.ports = hub_ports(self.fleet_state, self.state, fleet.internal_ports, gateway=_wants_gateway(hub))
            self.ports = _with_exchange_port(self.fleet_state, self.state, fleet, hub, self.ports)
        self.settings = self._write_settings()
        if change.needs_restart:
            await asyncio.get_running_loop().run_in_executor(None, prepare_machine, fleet, hub)
            await self._stop_companions()
            await self.hub.stop()
            await self.hub.start(timeout=90)
            await self._start_companions()
        if change.live:
            await self._apply_live(change)

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
        """Stop user servers (optionally), then the culler, the hub and the proxy; remove leftover cgroups."""
        if stop_servers and self.hub.running:
            try:
                async with self.api() as api:
                    await api.stop_all_servers()
            except httpx.HTTPError as exc:
                log.warning("could not stop the servers of %s through its API: %s", self.name, exc)
        await self._stop_companions()
        for process in (self.hub, self.proxy):
            await process.stop()
        if stop_servers:
            await asyncio.get_running_loop().run_in_executor(None, self._remove_cgroups)

    def _remove_cgroups(self) -> None:
        driver = cgroups.detect()
        group = driver.open(f"hubfleet/{self.name}") if driver else None
        if group is not None:
            group.remove()

    async def status(self) -> HubStatus:
        processes = [self.proxy, self.hub, *self.companions]
        healthy = all(p.running for p in processes)
        users = running = None
        detail = ""
        if self.hub.running:
            try:
                async with self.api() as api:
                    users = await api.count_users()
                    running = await api.count_users(state="ready")
            except httpx.HTTPError as exc:
                healthy, detail = False, f"hub API: {exc}"
        else:
            healthy, detail = False, "hub process not running"
        if not self.started:
            healthy, detail = False, "starting"
        return HubStatus(
            name=self.name,
            title=self.spec.title,
            url=self.settings.public_url,
            backend=self.backend,
            state="running" if healthy else ("starting" if not self.started else "degraded"),
            healthy=healthy,
            pids={p.name.split("/")[-1]: p.pid for p in processes},
            restarts={p.name.split("/")[-1]: p.restarts for p in processes},
            users=users,
            running_servers=running,
            detail=detail,
        )


class LocalBackend(Backend):
    """Hubs as processes on this machine."""

    name = "local"

    hub_class: type[LocalHub] = LocalHub

    def __init__(self, fleet: Fleet, state: FleetState, standby: StandbyPool):
        super().__init__(fleet, state, standby)
        self.hubs: dict[str, LocalHub] = {}

    def running_hubs(self) -> list[RunningHub]:
        return [hub.running() for hub in self.hubs.values()]

    async def up(self, hub: Hub) -> None:
        local = self.hub_class(self.fleet, hub, self.state.hub(hub.name), self.state, self.standby)
        self.hubs[hub.name] = local
        try:
            await local.start()
        except Exception:
            with contextlib.suppress(Exception):
                await local.stop()
            raise
        self.standby.fill()

    async def apply(self, hub: Hub, change: HubChange) -> None:
        await self.hubs[hub.name].reconfigure(self.fleet, hub, change)

    async def down(self, name: str, *, stop_servers: bool = True) -> None:
        local = self.hubs.pop(name, None)
        if local is not None:
            await local.stop(stop_servers=stop_servers)

    async def status(self, name: str) -> HubStatus:
        return await self.hubs[name].status()
