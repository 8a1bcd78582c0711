"""The front door: the fleet's one configurable-http-proxy on its public port, routing every hub's paths (each hub
adds its own, through the route API of `hubfleet.fleet.routes`), and the fleet's own app behind it for everything
else: the console (`/`, `/console/`), `/_hubfleet/health`, `/_hubfleet/metrics`, and requests for hubs that sleep
(`hubfleet.fleet.wake`)."""

from __future__ import annotations

import hmac
import json
import secrets
from collections.abc import Callable

from tornado import web
from tornado.httpserver import HTTPServer

from hubfleet.common.files import write_private
from hubfleet.common.settings import LOOPBACK, FrontDoorPorts, ProxyLink, loopback_url
from hubfleet.common.state import FleetState
from hubfleet.common.status import HubStatus
from hubfleet.console.app import Console
from hubfleet.fleet.ports import allocate_ports
from hubfleet.fleet.processes import ManagedProcess, find_proxy_command, http_ok
from hubfleet.fleet.routes import RouteTable, route_api
from hubfleet.fleet.wake import Door, wake_handlers
from hubfleet.spec.models import Fleet
from hubfleet.usage.metrics import CollectorRegistry, MetricsHandler

Statuses = Callable[[], dict[str, HubStatus]]
"""The supervisor's last status of each hub, by name."""

HUB_ROUTE_TOKEN = "proxy_token"
"""The secret a hub's JupyterHub presents to the route API (in the hub's secrets folder)."""


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

    def __init__(self, fleet: Fleet, state: FleetState, statuses: Statuses, door: Door):
        self.fleet = fleet
        self.state = state
        self.statuses = statuses
        self.door = door
        ports = state.frontdoor_ports()
        if ports is None:
            landing, proxy_api, routes = allocate_ports(3, fleet.internal_ports, state.all_ports())
            ports = FrontDoorPorts(landing=landing, proxy_api=proxy_api, routes=routes)
            state.keep_frontdoor_ports(ports)
        self.ports = ports
        self.token_file = state.frontdoor_dir / "proxy_token"
        self.routes = RouteTable(loopback_url(ports.proxy_api), self._token)
        self._hub_tokens: dict[str, str] = {}
        self._servers: list[HTTPServer] = []
        self.metrics: CollectorRegistry | None = None  # the usage collector's gauges, set by the supervisor
        self.proxy = self._proxy_process()

    def _token(self) -> str:
        if not self.token_file.exists():
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
            f"--api-port={self.ports.proxy_api}",
            f"--default-target={loopback_url(self.ports.landing)}",
            "--log-level=warn",
        ]
        api = loopback_url(self.ports.proxy_api, "/api/routes")
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
            await self.routes.replay()  # a new proxy starts with no routes: every hub's come back at once

        process.on_restart = restarted
        return process

    @property
    def url(self) -> str:
        return self.fleet.front_door.url

    @property
    def proxy_link(self) -> ProxyLink:
        """The fleet's proxy as hubs reach it: its public side on this machine, and the route API."""
        return ProxyLink(url=self.fleet.front_door.local_url, api_url=loopback_url(self.ports.routes))

    def hub_of_token(self, token: str) -> str | None:
        """The hub whose route token `token` is (None: no hub's)."""
        for _ in range(2):
            for hub, known in self._hub_tokens.items():
                if hmac.compare_digest(known, token):
                    return hub
            if set(self._hub_tokens) >= set(self.fleet.hubs):
                return None
            self._load_hub_tokens()
        return None

    def _load_hub_tokens(self) -> None:
        tokens = {}
        for name in self.fleet.hubs:
            path = self.state.hub(name).secrets_dir / HUB_ROUTE_TOKEN
            if path.is_file():
                tokens[name] = path.read_text(encoding="utf-8").strip()
        self._hub_tokens = tokens

    async def start(self) -> None:
        console = Console(lambda: self.fleet, self.state, self.statuses)
        app = web.Application(
            [
                *console.handlers(),
                *wake_handlers(self.door),
                (r"/_hubfleet/health", HealthHandler, {"fleet": lambda: self.fleet, "statuses": self.statuses}),
                (r"/_hubfleet/metrics", MetricsHandler, {"registry": lambda: self.metrics, "state": self.state}),
                (r".*", NotFoundHandler),
            ],
            **console.settings(),
        )
        self._servers = [
            app.listen(self.ports.landing, address=LOOPBACK, xheaders=True),
            route_api(self.routes, self.hub_of_token).listen(self.ports.routes, address=LOOPBACK),
        ]
        await self.proxy.start()

    async def stop(self) -> None:
        await self.proxy.stop()
        for server in self._servers:
            server.stop()
        self._servers = []
