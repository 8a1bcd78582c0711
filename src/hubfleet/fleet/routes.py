"""The routes of the fleet's one proxy, and the route API each hub talks to instead of the proxy's own.

Every hub routes through the front door's configurable-http-proxy. A hub's JupyterHub (`hubfleet.hub.proxy.
FleetProxy`) does not get the proxy's API token: it calls this route API, with a token of its own, which shows it
only the routes under its base URL (`/hubs/<name>/`) and refuses any change outside it (403). So hub A can never
see, replace or delete hub B's routes, even when both check their routes at once or one restarts.

Every change passes through here, so the fleet keeps a copy of the routing table: when the proxy dies and the
supervisor restarts it, every hub's routes are put back at once (`RouteTable.replay`). When a hub goes to sleep or
down, its routes are dropped, and requests for it fall through to the front door's own app, which wakes it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

import httpx
from tornado import web

log = logging.getLogger("hubfleet.routes")

HUBS_PREFIX = "/hubs/"
"""Every hub lives under `/hubs/<name>/` behind the front door."""


def hub_path(hub: str) -> str:
    """The proxy path of hub `hub`'s own route (the proxy's API has no trailing slashes)."""
    return f"{HUBS_PREFIX}{hub}"


def owned_by(path: str, hub: str) -> bool:
    """Whether proxy path `path` (as the proxy's API names routes) lies under hub `hub`'s prefix."""
    own = hub_path(hub)
    return path == own or path.startswith(own + "/")


class RouteTable:
    """The proxy's routes as the fleet knows them: every route a hub added, kept to be put back after a restart."""

    def __init__(self, api_url: str, token: Callable[[], str]):
        self.api_url = api_url.rstrip("/")
        self._token = token
        self.routes: dict[str, dict[str, Any]] = {}
        """Proxy path → the body it was added with (target and data)."""
        self._lock = asyncio.Lock()

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(headers={"Authorization": f"token {self._token()}"}, timeout=10.0)

    async def current(self, query: str = "") -> dict[str, dict[str, Any]]:
        """The proxy's routes right now (with `last_activity`), as its API reports them."""
        async with self._client() as client:
            response = await client.get(f"{self.api_url}/api/routes" + (f"?{query}" if query else ""))
            return response.raise_for_status().json()

    async def add(self, path: str, body: dict[str, Any]) -> None:
        async with self._lock:
            async with self._client() as client:
                (await client.post(f"{self.api_url}/api/routes{path}", json=body)).raise_for_status()
            self.routes[path] = body

    async def delete(self, path: str) -> bool:
        """Remove route `path`; False if the proxy did not have it."""
        async with self._lock:
            self.routes.pop(path, None)
            async with self._client() as client:
                response = await client.delete(f"{self.api_url}/api/routes{path}")
            if response.status_code == 404:
                return False
            response.raise_for_status()
            return True

    def has_route(self, hub: str) -> bool:
        """Whether hub `hub`'s own route is in place (its JupyterHub added it)."""
        return hub_path(hub) in self.routes

    async def drop_hub(self, hub: str) -> int:
        """Remove every route of hub `hub` (it sleeps or stops); how many there were."""
        paths = {path for path in self.routes if owned_by(path, hub)}
        try:
            paths |= {path for path in await self.current() if owned_by(path, hub)}
        except httpx.HTTPError as exc:  # the proxy is restarting: the replay will not bring them back
            log.warning("could not list the proxy's routes while dropping hub %s: %s", hub, exc)
        for path in paths:
            try:
                await self.delete(path)
            except httpx.HTTPError as exc:
                log.warning("could not remove route %s of hub %s: %s", path, hub, exc)
        return len(paths)

    async def last_activity(self, hub: str) -> str | None:
        """The latest `last_activity` (ISO time) of any route of hub `hub`, as the proxy counts requests."""
        stamps = [r.get("last_activity") for p, r in (await self.current()).items() if owned_by(p, hub)]
        return max((s for s in stamps if s), default=None)

    async def replay(self) -> None:
        """Put every known route back (after the proxy restarted with an empty table)."""
        async with self._lock:
            routes = dict(self.routes)
            async with self._client() as client:
                for path, body in routes.items():
                    try:
                        (await client.post(f"{self.api_url}/api/routes{path}", json=body)).raise_for_status()
                    except httpx.HTTPError as exc:
                        log.error("could not restore route %s: %s", path, exc)
        log.info("restored %d route(s) on the restarted proxy", len(routes))


class RouteAPIHandler(web.RequestHandler):
    """`/api/routes[/<path>]` for one hub at a time: the hub is known by its token, and only its routes exist."""

    def initialize(self, table: RouteTable, hub_of_token: Callable[[str], str | None]) -> None:
        self.table = table
        self.hub_of_token = hub_of_token
        self.hub = ""

    def check_xsrf_cookie(self) -> None:  # an API for hub processes on loopback, authenticated by token
        return

    def prepare(self) -> None:
        scheme, _, token = (self.request.headers.get("Authorization") or "").partition(" ")
        hub = self.hub_of_token(token) if scheme.lower() in ("token", "bearer") and token else None
        if hub is None:
            raise web.HTTPError(403, "unknown route API token")
        self.hub = hub

    def _own(self, path: str | None) -> str:
        path = "/" + path.strip("/") if path and path.strip("/") else ""
        if not owned_by(path, self.hub):
            raise web.HTTPError(403, f"route {path or '/'} is not hub {self.hub}'s")
        return path

    async def get(self, path: str | None = None) -> None:
        if path and path.strip("/"):
            raise web.HTTPError(404)
        query = self.request.query
        try:
            routes = await self.table.current(query)
        except httpx.HTTPError as exc:
            raise web.HTTPError(503, f"the proxy does not answer: {exc}") from None
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({p: r for p, r in routes.items() if owned_by(p, self.hub)}))

    async def post(self, path: str | None = None) -> None:
        own = self._own(path)
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            raise web.HTTPError(400, "the route's body must be JSON") from None
        if not isinstance(body, dict) or not isinstance(body.get("target"), str):
            raise web.HTTPError(400, "a route needs a target")
        try:
            await self.table.add(own, body)
        except httpx.HTTPError as exc:
            raise web.HTTPError(503, f"the proxy does not answer: {exc}") from None
        self.set_status(201)

    async def delete(self, path: str | None = None) -> None:
        own = self._own(path)
        try:
            found = await self.table.delete(own)
        except httpx.HTTPError as exc:
            raise web.HTTPError(503, f"the proxy does not answer: {exc}") from None
        self.set_status(204 if found else 404)


def route_api(table: RouteTable, hub_of_token: Callable[[str], str | None]) -> web.Application:
    """The route API's tornado application."""
    return web.Application(
        [(r"/api/routes(/.*)?", RouteAPIHandler, {"table": table, "hub_of_token": hub_of_token})],
        log_function=lambda handler: None,
    )
