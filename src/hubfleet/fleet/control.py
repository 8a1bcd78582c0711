"""The supervisor's control socket, both ends: the server the supervisor runs, and the client other `hubfleet`
commands (status, apply, down, check) use. HTTP over a Unix socket in the state directory, readable by its owner
only; no browser can reach it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

import httpx
from tornado import web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_unix_socket

from hubfleet.common.state import FleetState
from hubfleet.common.status import FleetStatus
from hubfleet.fleet.plan import FleetPlan
from hubfleet.spec import SpecError
from hubfleet.system import pidfiles


class NotRunning(RuntimeError):
    """No supervisor answers for this state directory."""


class Refused(Exception):
    """The hub stays as it is, for the reason given."""


class Controlled(Protocol):
    """What the control socket asks of the supervisor."""

    failed: dict[str, str]

    async def status_document(self) -> FleetStatus: ...

    async def apply(self, source: Path, text: str) -> FleetPlan: ...

    async def wake(self, hub: str) -> None: ...

    async def sleep_hub(self, hub: str) -> str | None: ...

    async def restart_hub(self, name: str) -> bool: ...

    async def renew_forkserver(self) -> bool: ...

    def hub_names(self) -> list[str]: ...

    def stop(self, why: str = ...) -> None: ...


class _ControlHandler(web.RequestHandler):
    def initialize(self, supervisor: Controlled) -> None:
        self.supervisor = supervisor

    def check_xsrf_cookie(self) -> None:  # a private Unix socket: no browser can reach it
        return

    def reply(self, status: int, document: dict[str, Any]) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(document, default=str))


class StatusHandler(_ControlHandler):
    async def get(self) -> None:
        self.reply(200, (await self.supervisor.status_document()).model_dump(mode="json"))


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


class _HubActionHandler(_ControlHandler):
    """POST /VERB/HUB: 200 with what `act` answers, 404 for a hub the fleet does not run, 409 when the hub stays as
    it is (`Refused`), 503 when the action failed."""

    verb = ""

    async def act(self, hub: str) -> dict[str, Any]:
        raise NotImplementedError

    async def post(self, hub: str) -> None:
        try:
            document = await self.act(hub)
        except KeyError:
            self.reply(404, {"error": f"no hub {hub!r} runs in this fleet"})
        except Refused as exc:
            self.reply(409, {"error": f"hub {hub} {exc}"})
        except Exception as exc:
            self.reply(503, {"error": f"hub {hub} could not {self.verb}: {exc}"})
        else:
            self.reply(200, {"hub": hub, **document})


class WakeHandler(_HubActionHandler):
    verb = "wake"

    async def act(self, hub: str) -> dict[str, Any]:
        if hub not in self.supervisor.hub_names():
            raise KeyError(hub)
        await self.supervisor.wake(hub)
        return {"awake": True}


class SleepHandler(_HubActionHandler):
    verb = "sleep"

    async def act(self, hub: str) -> dict[str, Any]:
        kept_awake = await self.supervisor.sleep_hub(hub)
        if kept_awake is not None:
            raise Refused(f"stays awake: {kept_awake}")
        return {"asleep": True}


class RestartHandler(_HubActionHandler):
    verb = "restart"

    async def act(self, hub: str) -> dict[str, Any]:
        return {"restarted": await self.supervisor.restart_hub(hub)}


class ForkServerHandler(_ControlHandler):
    async def post(self) -> None:
        self.reply(200, {"ready": await self.supervisor.renew_forkserver()})


class DownHandler(_ControlHandler):
    def post(self) -> None:
        self.supervisor.stop("`hubfleet down`")
        self.reply(202, {"stopping": True})


def serve(supervisor: Controlled, state: FleetState) -> HTTPServer:
    """Answer control requests for `supervisor` on the state directory's socket (mode 0600)."""
    app = web.Application(
        [
            (r"/status", StatusHandler, {"supervisor": supervisor}),
            (r"/apply", ApplyHandler, {"supervisor": supervisor}),
            (r"/down", DownHandler, {"supervisor": supervisor}),
            (r"/wake/([^/]+)", WakeHandler, {"supervisor": supervisor}),
            (r"/sleep/([^/]+)", SleepHandler, {"supervisor": supervisor}),
            (r"/restart/([^/]+)", RestartHandler, {"supervisor": supervisor}),
            (r"/forkserver/renew", ForkServerHandler, {"supervisor": supervisor}),
        ]
    )
    path = state.control_socket
    path.unlink(missing_ok=True)
    server = HTTPServer(app)
    server.add_socket(bind_unix_socket(str(path), mode=0o600))
    return server


class ControlClient:
    """HTTP over the supervisor's Unix socket."""

    def __init__(self, state: FleetState, timeout: float = 300.0):
        self.state = state
        self.timeout = timeout

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        socket = self.state.control_socket
        if not socket.exists():
            raise NotRunning(f"no fleet is running from {self.state.root}")
        transport = httpx.HTTPTransport(uds=str(socket))
        try:
            with httpx.Client(transport=transport, timeout=self.timeout) as client:
                return client.request(method, f"http://supervisor{path}", **kwargs)
        except httpx.ConnectError as exc:
            raise NotRunning(f"the fleet supervisor of {self.state.root} does not answer ({exc})") from None

    def status(self) -> FleetStatus:
        response = self._call("GET", "/status")
        response.raise_for_status()
        return FleetStatus.model_validate_json(response.content)

    def apply(self, source: Path, text: str) -> httpx.Response:
        return self._call("POST", "/apply", json={"path": str(source), "text": text})

    def down(self) -> None:
        self._call("POST", "/down").raise_for_status()

    def restart(self, hub: str) -> bool:
        """Restart hub `hub` from the installed code, its users' servers kept; False when it sleeps. RuntimeError
        with the reason when it cannot."""
        return bool(self._hub_call("restart", hub)["restarted"])

    def renew_forkserver(self) -> bool:
        """A new fork server for hubs (re)started from now on; whether it is ready."""
        response = self._call("POST", "/forkserver/renew")
        response.raise_for_status()
        return bool(response.json()["ready"])

    def wake(self, hub: str) -> None:
        """Wake hub `hub` (at once if it is awake); RuntimeError with the reason when it cannot."""
        self._hub_call("wake", hub)

    def sleep(self, hub: str) -> None:
        """Put hub `hub` to sleep now (at once if it sleeps); RuntimeError with the reason when it stays awake."""
        self._hub_call("sleep", hub)

    def _hub_call(self, action: str, hub: str) -> dict[str, Any]:
        """POST /ACTION/HUB: the answer's document, or RuntimeError with the error it gives."""
        response = self._call("POST", f"/{action}/{hub}")
        if response.status_code != 200:
            raise RuntimeError(response.json().get("error", response.text))
        return response.json()


def supervisor_process(state: FleetState) -> pidfiles.ProcessRecord | None:
    """The running supervisor, if there is one (the very process its pid file records: a pid that now belongs to
    another process is not the supervisor)."""
    return pidfiles.running(state.supervisor_pid_file)


def supervisor_pid(state: FleetState) -> int | None:
    """The running supervisor's pid, if there is one (see `supervisor_process`)."""
    process = supervisor_process(state)
    return None if process is None else process.pid
