"""The front door: the fleet's one configurable-http-proxy on its public port, routing every hub's paths (each hub
adds its own, through the route API of `hubfleet.fleet.routes`), and the fleet's own app behind it for everything
else: the console (`/`, `/console/`), `/_hubfleet/health`, `/_hubfleet/metrics`, and requests for hubs that sleep
(`hubfleet.fleet.wake`).

With `front_door.tls` the proxy serves HTTPS (`hubfleet.fleet.https`): its public side over TLS with HSTS, a
plain-HTTP side on loopback for the fleet's own traffic (hubs and users' servers reach it as `ProxyLink.url`), and
the front door's plain-HTTP port only redirects to HTTPS and answers ACME challenges."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import secrets
import signal
from collections.abc import Callable

from tornado import web
from tornado.httpserver import HTTPServer

from hubfleet.common.files import write_private
from hubfleet.common.periodic import every
from hubfleet.common.settings import LOOPBACK, FrontDoorPorts, ProxyLink, loopback_url
from hubfleet.common.state import FleetState
from hubfleet.common.status import HubStatus
from hubfleet.console.app import Console
from hubfleet.fleet import door_proxy, https
from hubfleet.fleet.ports import allocate_ports
from hubfleet.fleet.processes import ManagedProcess, find_proxy_command, http_ok
from hubfleet.fleet.routes import RouteTable, route_api
from hubfleet.fleet.wake import Door, wake_handlers
from hubfleet.spec.models import Fleet
from hubfleet.usage.metrics import CollectorRegistry, MetricsHandler

log = logging.getLogger("hubfleet.frontdoor")

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
        if fleet.front_door.tls is not None and ports.internal is None:
            (internal,) = allocate_ports(1, fleet.internal_ports, state.all_ports())
            ports = ports.model_copy(update={"internal": internal})
            state.keep_frontdoor_ports(ports)
        self.ports = ports
        self.certificates: https.CertificateKeeper | None = None
        if fleet.front_door.tls is not None:
            self.certificates = https.CertificateKeeper(
                lambda: self.fleet.front_door, state.frontdoor_dir / "tls", self._reload_certificate
            )
        self._keeping: asyncio.Task | None = None
        self._stop = asyncio.Event()
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
        chp = find_proxy_command()
        # With HTTPS (hubfleet.fleet.https), a plain-HTTP side on loopback as well: the internal port.
        settings = door_proxy.settings(
            chp, door, self.ports.proxy_api, loopback_url(self.ports.landing), self.certificates, self.ports.internal
        )
        env = {"CONFIGPROXY_AUTH_TOKEN": token, door_proxy.SETTINGS_ENV: settings}
        api = loopback_url(self.ports.proxy_api, "/api/routes")
        process = ManagedProcess(
            "front-door",
            door_proxy.argv(),
            cwd=self.state.frontdoor_dir,
            log_path=self.state.frontdoor_dir / "proxy.log",
            env=env,
            ready=lambda: http_ok(api, {"Authorization": f"token {token}"}),
            pid_file=self.state.frontdoor_dir / "proxy.pid",
        )

        async def restarted(_: ManagedProcess) -> None:
            await self.routes.replay()  # a new proxy starts with no routes: every hub's come back at once

        process.on_restart = restarted
        return process

    def _reload_certificate(self) -> None:
        self.proxy.send_signal(signal.SIGHUP)  # the proxy reads its certificate again; no connection is dropped

    @property
    def url(self) -> str:
        return self.fleet.front_door.url

    @property
    def internal_url(self) -> str:
        """The proxy as this machine's own clients reach it: its plain-HTTP loopback side with HTTPS on, else its
        one side."""
        if self.ports.internal is not None and self.fleet.front_door.tls is not None:
            return loopback_url(self.ports.internal)
        return self.fleet.front_door.local_url

    @property
    def proxy_link(self) -> ProxyLink:
        """The fleet's proxy as hubs reach it: its side on this machine, and the route API."""
        return ProxyLink(url=self.internal_url, api_url=loopback_url(self.ports.routes))

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
        tls = self.fleet.front_door.tls
        if self.certificates is not None and tls is not None:
            self.certificates.prepare()
            if tls.http_port:
                plain = https.http_side(lambda: self.fleet.front_door, self.certificates.challenges)
                try:
                    server = plain.listen(tls.http_port, address=self.fleet.front_door.host, xheaders=True)
                except OSError as exc:
                    raise RuntimeError(
                        f"the front door cannot listen on its HTTP port {tls.http_port} ({exc.strerror}): stop the "
                        "program using it, or change front_door.tls.http_port"
                    ) from exc
                self._servers.append(server)
        await self.proxy.start()
        if self.certificates is not None:
            self._stop.clear()
            keeper = self.certificates
            self._keeping = asyncio.create_task(
                every(keeper.period, keeper.check, log=log, what="keeping the certificate current", stop=self._stop)
            )

    async def stop(self) -> None:
        self._stop.set()
        if self._keeping is not None:
            self._keeping.cancel()
            self._keeping = None
        await self.proxy.stop()
        for server in self._servers:
            server.stop()
        self._servers = []
