"""The front door: one configurable-http-proxy on the fleet's public port, routing /hubs/<name>/ to each hub's
own proxy, and everything else to the fleet's own web app: the fleet console (`/`, `/console/`, see
`hubfleet.console`) and `/_hubfleet/health`."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
from tornado import web
from tornado.httpserver import HTTPServer

from hubfleet.common.files import write_private
from hubfleet.common.settings import LOOPBACK, loopback_url
from hubfleet.common.state import FleetState
from hubfleet.common.status import HubStatus
from hubfleet.console.app import Console
from hubfleet.fleet.ports import allocate_ports
from hubfleet.fleet.processes import ManagedProcess, find_proxy_command, http_ok
from hubfleet.spec.models import Fleet
from hubfleet.usage.metrics import CollectorRegistry, MetricsHandler

ROUTE_MARK = "hubfleet"
"""Key set on the route data of routes the fleet owns (others are left alone)."""


Statuses = Callable[[], dict[str, HubStatus]]
"""The supervisor's last status of each hub, by name."""


class HealthHandler(web.RequestHandler):
    """/_hubfleet/health: 200 with the hubs' health when the front door and every hub answer, else 503."""

    def initialize(self, fleet: Callable[[], Fleet], statuses: Statuses) -> None:
        self.fleet = fleet
        self.statuses = statuses

    def get(self) -> None:
        statuses = self.statuses()
        hubs = {name: name in statuses and statuses[name].healthy for name in self.fleet().hubs}
        healthy = all(hubs.values())
        self.set_status(200 if healthy else 503)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"healthy": healthy, "hubs": hubs}))


class NotFoundHandler(web.RequestHandler):
    def prepare(self) -> None:
        raise web.HTTPError(404)


class FrontDoor:
    """The fleet's public entry point."""

    def __init__(self, fleet: Fleet, state: FleetState, statuses: Statuses):
        self.fleet = fleet
        self.state = state
        self.statuses = statuses
        ports_file = state.frontdoor_dir / "ports.json"
        if ports_file.exists():
            self.landing_port, self.api_port = json.loads(ports_file.read_text())
        else:
            self.landing_port, self.api_port = allocate_ports(2, fleet.internal_ports, state.all_ports())
            write_private(ports_file, json.dumps([self.landing_port, self.api_port]))
        self.token_file = state.frontdoor_dir / "proxy_token"
        self._server: HTTPServer | None = None
        self.metrics: CollectorRegistry | None = None  # the usage collector's gauges, set by the supervisor
        self._routes: dict[str, str] = {}
        self.proxy = self._proxy_process()

    def _token(self) -> str:
        if not self.token_file.exists():
            import secrets

            write_private(self.token_file, secrets.token_hex(32))
        return self.token_file.read_text().strip()

    def _proxy_process(self) -> ManagedProcess:
        token = self._token()
        door = self.fleet.front_door
        argv = [
            find_proxy_command(),
            f"--ip={door.host}",
            f"--port={door.port}",
            f"--api-ip={LOOPBACK}",
            f"--api-port={self.api_port}",
            f"--default-target={loopback_url(self.landing_port)}",
            "--log-level=warn",
        ]
        api = self.routes_api
        process = ManagedProcess(
            "front-door",
            argv,
            cwd=self.state.frontdoor_dir,
            log_path=self.state.frontdoor_dir / "proxy.log",
            env={"CONFIGPROXY_AUTH_TOKEN": token},
            ready=lambda: http_ok(api, {"Authorization": f"token {token}"}),
            pid_file=self.state.frontdoor_dir / "proxy.pid",
        )

        async def restarted(_: ManagedProcess) -> None:
            routes, self._routes = self._routes, {}
            await self.set_routes(routes)

        process.on_restart = restarted
        return process

    @property
    def url(self) -> str:
        return self.fleet.front_door.url

    @property
    def routes_api(self) -> str:
        """The REST API of the front door's proxy (its routes)."""
        return loopback_url(self.api_port, "/api/routes")

    async def start(self) -> None:
        console = Console(lambda: self.fleet, self.state, self.statuses)
        app = web.Application(
            [
                *console.handlers(),
                (r"/_hubfleet/health", HealthHandler, {"fleet": lambda: self.fleet, "statuses": self.statuses}),
                (r"/_hubfleet/metrics", MetricsHandler, {"registry": lambda: self.metrics, "state": self.state}),
                (r".*", NotFoundHandler),
            ],
            **console.settings(),
        )
        self._server = app.listen(self.landing_port, address=LOOPBACK, xheaders=True)
        await self.proxy.start()

    async def set_routes(self, routes: dict[str, str]) -> None:
        """Make the proxy route exactly `routes` (prefix → target) among the routes the fleet owns."""
        token = self._token()
        api = self.routes_api
        headers = {"Authorization": f"token {token}"}
        async with httpx.AsyncClient(timeout=5.0, headers=headers) as client:
            current = (await client.get(api)).raise_for_status().json()
            for prefix, target in routes.items():
                if current.get(prefix, {}).get("target") != target:
                    body = {"target": target, ROUTE_MARK: True}
                    (await client.post(f"{api}{prefix}", json=body)).raise_for_status()
            for prefix, data in current.items():
                if data.get(ROUTE_MARK) and prefix not in routes:
                    (await client.delete(f"{api}{prefix}")).raise_for_status()
        self._routes = dict(routes)

    async def stop(self) -> None:
        await self.proxy.stop()
        if self._server is not None:
            self._server.stop()
            self._server = None
