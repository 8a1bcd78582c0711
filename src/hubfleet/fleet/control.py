"""Talking to a running supervisor through its control socket."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import httpx

from hubfleet.fleet.state import FleetState


class NotRunning(RuntimeError):
    """No supervisor answers for this state directory."""


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

    def status(self) -> dict[str, Any]:
        response = self._call("GET", "/status")
        response.raise_for_status()
        return response.json()

    def apply(self, source: Path, text: str) -> httpx.Response:
        return self._call("POST", "/apply", json={"path": str(source), "text": text})

    def down(self) -> None:
        self._call("POST", "/down").raise_for_status()


def supervisor_pid(state: FleetState) -> int | None:
    """The running supervisor's pid, if there is one."""
    try:
        pid = int(state.supervisor_pid_file.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def wait_gone(pid: int, timeout: float) -> bool:
    """Wait until process `pid` has exited; False on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False
