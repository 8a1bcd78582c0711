"""Requests for a hub that sleeps: the front door's proxy has no route for it, so they reach the front door's own
app, which wakes the hub and then answers the very same request as if the hub had been up.

- A browser asking for a page gets a "starting <hub>…" page at once, which reloads itself when the hub is up.
- Everything else — a REST call with a token, an LTI login initiation or launch (a form POST), an OAuth callback, a
  Dask Gateway client, a page that is not a GET — is held until the hub answers, then forwarded to it through the
  proxy, and its answer is passed back unchanged (status, headers, cookies, body). Held at most
  `front_door.wake_timeout`; then 503 with `Retry-After`, never a hang.

Two requests racing during one wake wait on the same start (`Door.wake` starts a hub once).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Protocol

import httpx
from tornado import web

HERE = Path(__file__).parent

FORWARDED_MARK = "X-Hubfleet-Woken"
"""Set on requests the front door forwards after a wake: should one come back (no route yet), it is not woken
again but answered 503 — never a loop."""

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "host",
}
RETRY_AFTER = "5"


class Door(Protocol):
    """What the wake handlers ask of the fleet."""

    def hub_names(self) -> list[str]: ...

    def awake(self, hub: str) -> bool: ...

    async def wake(self, hub: str) -> None: ...

    def wake_timeout(self) -> float: ...

    def proxy_url(self) -> str: ...

    def asleep_answer(self, hub: str, path: str) -> dict | None:
        """A JSON document the fleet answers for a sleeping hub itself (None: the hub must wake to answer)."""


class WakeHandler(web.RequestHandler):
    """`/hubs/<name>/…` when the proxy has no route for `<name>`."""

    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

    def initialize(self, door: Door) -> None:
        self.door = door

    def check_xsrf_cookie(self) -> None:  # forwarded as it is: the hub checks its own XSRF
        return

    def get_template_path(self) -> str:
        return str(HERE / "templates")

    def set_default_headers(self) -> None:
        self.set_header("Cache-Control", "no-store")

    async def _handle(self, hub: str, rest: str | None = None) -> None:
        if hub not in self.door.hub_names():
            self.set_status(404)
            self.render("no_hub.html", hub=hub, hubs=self.door.hub_names())
            return
        if self.request.headers.get(FORWARDED_MARK):
            self._unavailable(hub, "the hub is up but not routed yet")
            return
        answer = self.door.asleep_answer(hub, rest or "") if self.request.method == "GET" else None
        if answer is not None:  # e.g. the LMS checking the tool's keys: no reason to wake the hub
            self.set_header("Content-Type", "application/json")
            self.set_header("Cache-Control", "max-age=300")
            self.finish(json.dumps(answer))
            return
        waking = asyncio.ensure_future(self.door.wake(hub))
        if self._is_page_visit() and not self.door.awake(hub):
            self.render("starting.html", hub=hub, status_url=f"/_hubfleet/wake/{hub}")
            return
        try:
            await asyncio.wait_for(asyncio.shield(waking), self.door.wake_timeout())
        except TimeoutError:
            self._unavailable(hub, f"the hub did not wake within {self.door.wake_timeout():.0f} s")
            return
        except Exception as exc:  # the hub failed to start: a clear 503, the next request tries again
            self._unavailable(hub, f"the hub could not start: {exc}")
            return
        await self._forward(hub)

    def _is_page_visit(self) -> bool:
        """A browser navigating to a page (which may be shown a page that continues by itself)."""
        accept = self.request.headers.get("Accept", "")
        return self.request.method in ("GET", "HEAD") and "text/html" in accept

    def _unavailable(self, hub: str, why: str) -> None:
        self.set_status(503)
        self.set_header("Retry-After", RETRY_AFTER)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"status": 503, "message": f"hub {hub} is waking up: {why}; try again shortly"}))

    async def _forward(self, hub: str) -> None:
        request = self.request
        url = self.door.proxy_url() + request.uri
        headers = [(k, v) for k, v in request.headers.get_all() if k.lower() not in HOP_BY_HOP]
        headers += [("Host", request.host), (FORWARDED_MARK, "1")]
        body = request.body if request.method not in ("GET", "HEAD") or request.body else None
        async with httpx.AsyncClient(timeout=self.door.wake_timeout(), follow_redirects=False) as client:
            try:
                response = await client.request(request.method, url, headers=headers, content=body)
            except httpx.HTTPError as exc:
                self._unavailable(hub, f"the hub did not answer ({type(exc).__name__})")
                return
        self.set_status(response.status_code, response.reason_phrase or None)
        self.clear_header("Cache-Control")
        for name, value in response.headers.multi_items():
            if name.lower() not in HOP_BY_HOP and name.lower() != "content-encoding":
                self.add_header(name, value)
        self.finish(response.content)

    async def _any_method(self, hub: str, rest: str | None = None) -> None:
        await self._handle(hub, rest)

    get = head = post = put = patch = delete = options = _any_method


class WakeStatusHandler(web.RequestHandler):
    """`/_hubfleet/wake/<hub>`: whether the hub is up (the starting page asks, then reloads)."""

    def initialize(self, door: Door) -> None:
        self.door = door

    def get(self, hub: str) -> None:
        if hub not in self.door.hub_names():
            raise web.HTTPError(404)
        self.set_header("Cache-Control", "no-store")
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"hub": hub, "awake": self.door.awake(hub)}))


def wake_handlers(door: Door) -> list[tuple[str, type[web.RequestHandler], dict[str, Any]]]:
    """The front door app's routes for sleeping hubs."""
    return [
        (r"/hubs/([^/]+)(/.*)?", WakeHandler, {"door": door}),
        (r"/_hubfleet/wake/([^/]+)", WakeStatusHandler, {"door": door}),
    ]
