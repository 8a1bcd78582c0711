"""The one-machine backend: each hub is a real JupyterHub process with its own proxy (and idle culler)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from pathlib import Path

import httpx

import hubfleet.hub as hub_package
from hubfleet.backends.base import Backend, HubStatus
from hubfleet.backends.local.render import base_url, prepare_machine, render_settings
from hubfleet.fleet.hubapi import HubAPI
from hubfleet.fleet.plan import HubChange
from hubfleet.fleet.processes import ManagedProcess, find_proxy_command
from hubfleet.fleet.standby import StandbyPool
from hubfleet.fleet.state import FleetState, HubState, hub_ports
from hubfleet.hub.settings import SETTINGS_ENV, HubSettings
from hubfleet.spec.models import Fleet, Hub
from hubfleet.system import cgroups

log = logging.getLogger("hubfleet.local")

HUB_CONFIG_FILE = Path(hub_package.__file__).parent / "jupyterhub_config.py"
"""The configuration file every hub process loads (it reads the hub's settings)."""


async def _http_ok(url: str, headers: dict[str, str] | None = None) -> bool:
    async with httpx.AsyncClient(timeout=2.0) as client:
        response = await client.get(url, headers=headers)
    return response.status_code == 200


class LocalHub:
    """One hub on this machine: its proxy, its JupyterHub and its idle culler, all kept alive."""

    def __init__(self, fleet: Fleet, hub: Hub, state: HubState, fleet_state: FleetState, standby: StandbyPool):
        self.fleet = fleet
        self.standby = standby
        self.spec = hub
        self.state = state.create()
        self.ports = hub_ports(fleet_state, self.state, fleet.internal_ports)
        self.settings = self._write_settings()
        self.proxy = self._proxy_process()
        self.hub = self._hub_process()
        self.culler: ManagedProcess | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def api_url(self) -> str:
        """The hub's REST API, reached directly on loopback."""
        return f"http://127.0.0.1:{self.ports.hub}{base_url(self.spec)}hub/api"

    def api(self) -> HubAPI:
        return HubAPI(self.api_url, self.settings.secret("service_token"))

    def _write_settings(self) -> HubSettings:
        settings = render_settings(self.fleet, self.spec, self.state, self.ports)
        settings.write(self.state.settings_file)
        return settings

    def _proxy_process(self) -> ManagedProcess:
        token = self.settings.secret("proxy_token")
        api = f"http://127.0.0.1:{self.ports.proxy_api}/api/routes"
        error_target = f"http://127.0.0.1:{self.ports.hub}{base_url(self.spec)}hub/error"
        argv = [
            find_proxy_command(),
            "--ip=127.0.0.1",
            f"--port={self.ports.proxy}",
            "--api-ip=127.0.0.1",
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
            ready=lambda: _http_ok(api, {"Authorization": f"token {token}"}),
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
        ready_url = f"http://127.0.0.1:{self.ports.proxy}{base_url(self.spec)}hub/api/"
        return ManagedProcess(
            f"{self.name}/hub",
            argv,
            cwd=self.state.root,
            log_path=self.state.log("hub"),
            env={SETTINGS_ENV: str(self.state.settings_file)},
            ready=lambda: _http_ok(ready_url),
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

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, prepare_machine, self.fleet, self.spec)
        await self.proxy.start()
        await self.hub.start(timeout=90)
        await self._start_culler()

    async def _start_culler(self) -> None:
        self.culler = self._culler_process()
        if self.culler is not None:
            await self.culler.start()

    async def reconfigure(self, fleet: Fleet, hub: Hub, change: HubChange) -> None:
        """Apply a new spec: restart the hub process if its settings changed, then user/group changes live."""
        self.fleet, self.spec = fleet, hub
        self.settings = self._write_settings()
        if change.needs_restart:
            await asyncio.get_running_loop().run_in_executor(None, prepare_machine, fleet, hub)
            if self.culler is not None:
                await self.culler.stop()
            await self.hub.stop()
            await self.hub.start(timeout=90)
            await self._start_culler()
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
        for process in (self.culler, self.hub, self.proxy):
            if process is not None:
                await process.stop()
        if stop_servers:
            await asyncio.get_running_loop().run_in_executor(None, self._remove_cgroups)

    def _remove_cgroups(self) -> None:
        driver = cgroups.detect()
        group = driver.open(f"hubfleet/{self.name}") if driver else None
        if group is not None:
            group.remove()

    async def status(self) -> HubStatus:
        processes = [p for p in (self.proxy, self.hub, self.culler) if p is not None]
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
        return HubStatus(
            name=self.name,
            title=self.spec.title,
            url=self.settings.public_url,
            backend="local",
            state="running" if healthy else "degraded",
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

    def __init__(self, fleet: Fleet, state: FleetState):
        super().__init__(fleet, state)
        self.hubs: dict[str, LocalHub] = {}
        # A warm interpreter that replaces any hub process that dies, so a hub is back within seconds.
        self.standby = StandbyPool(state.root, state.root / "standby.log")

    def hub_names(self) -> list[str]:
        return list(self.hubs)

    async def up(self, hub: Hub) -> None:
        local = LocalHub(self.fleet, hub, self.state.hub(hub.name), self.state, self.standby)
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

    async def close(self) -> None:
        await self.standby.close()

    def routes(self) -> dict[str, str]:
        return {f"/hubs/{name}": f"http://127.0.0.1:{hub.ports.proxy}" for name, hub in self.hubs.items()}
