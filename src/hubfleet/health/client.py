"""A hub user driven through the hub's public URL: log in, start a server, run code in kernels, stop.

Used by `hubfleet check` and by the tests; everything goes through the public URL (the front door), the way a
browser and JupyterLab would.
"""

from __future__ import annotations

import asyncio
import html
import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

POLL_SECONDS = 0.25
BODY_CHARS = 200


@dataclass
class PasswordLogin:
    """Log in through the hub's login form, then mint a short-lived API token for the session user."""

    username: str
    password: str


@dataclass
class TokenLogin:
    """Use an API token already minted for the user."""

    username: str
    token: str


class HubError(Exception):
    """The hub or the user's server answered something unexpected; the message says what."""


class CodeError(HubError):
    """Code run in a kernel raised an exception."""

    def __init__(self, ename: str, evalue: str):
        super().__init__(f"{ename}: {evalue}")
        self.ename = ename
        self.evalue = evalue


class KernelDied(HubError):
    """The kernel died while running code."""


def short_body(response: httpx.Response) -> str:
    """The hub's error message, or the start of the body as plain text."""
    try:
        message = response.json().get("message")
    except (ValueError, AttributeError):
        message = None
    if not message:
        text = re.sub(r"<(script|style)\b.*?</\1>", " ", response.text, flags=re.S | re.I)
        message = html.unescape(re.sub(r"<[^>]+>", " ", text))
    message = " ".join(str(message).split())
    return message[:BODY_CHARS] + ("…" if len(message) > BODY_CHARS else "")


def _status_line(response: httpx.Response, base: httpx.URL) -> str:
    path = response.request.url.path.removeprefix(base.path)
    return f"{response.request.method} {path}: HTTP {response.status_code}"


def expect(response: httpx.Response, base: httpx.URL, *statuses: int) -> httpx.Response:
    """`response` if its status is one of `statuses`, else a HubError naming the request, status and body."""
    if response.status_code not in statuses:
        body = short_body(response)
        line = _status_line(response, base)
        raise HubError(f"{line}: {body}" if body else line)
    return response


def xsrf_cookie(client: httpx.AsyncClient, path: str | None = None) -> str | None:
    """The `_xsrf` cookie a browser would send with a request for `path` (the one of the longest cookie path that
    is a prefix of it; without `path`, of the longest path)."""
    cookies = sorted(
        (c for c in client.cookies.jar if c.name == "_xsrf" and (path is None or path.startswith(c.path or "/"))),
        key=lambda c: len(c.path or ""),
    )
    return cookies[-1].value if cookies else None


async def log_in_with_form(client: httpx.AsyncClient, base: httpx.URL, username: str, password: str) -> None:
    """Log in through the hub's login form at `base` (the hub's public URL) as a browser does: the page, its `_xsrf`
    cookie sent back as a form field, the credentials. The session's cookies stay in `client`; the redirect after
    the login is not followed (the hub would start the server)."""
    page = expect(await client.get(base.join("hub/login"), follow_redirects=True), base, 200)
    form = re.search(r"<form\b[^>]*\baction=\"([^\"]*)\"", page.text)
    if form is None or 'name="password"' not in page.text:
        raise HubError(f"no password form on {page.url.path}")
    xsrf = xsrf_cookie(client)
    if xsrf is None:
        raise HubError("the hub set no _xsrf cookie on its login page")
    response = await client.post(
        page.url.join(html.unescape(form.group(1))),
        data={"_xsrf": xsrf, "username": username, "password": password},
    )
    if not response.is_redirect:
        error = re.search(r"class=\"login_error\"[^>]*>([^<]*)<", response.text)
        reason = html.unescape(error.group(1)).strip() if error else "login rejected"
        raise HubError(f"{_status_line(response, base)}: {reason}")


def execute_request(username: str, session_id: str, code: str) -> dict[str, Any]:
    """A Jupyter messaging protocol v5.3 execute_request for the shell channel."""
    header = {
        "msg_id": uuid.uuid4().hex,
        "msg_type": "execute_request",
        "username": username,
        "session": session_id,
        "date": datetime.now(UTC).isoformat(),
        "version": "5.3",
    }
    content = {
        "code": code,
        "silent": False,
        "store_history": False,
        "user_expressions": {},
        "allow_stdin": False,
        "stop_on_error": True,
    }
    return {
        "header": header,
        "parent_header": {},
        "metadata": {},
        "content": content,
        "buffers": [],
        "channel": "shell",
    }


class HubUser:
    """One logged-in user of a hub; `client` carries the user's cookies and token."""

    def __init__(self, client: httpx.AsyncClient, base: httpx.URL, name: str, token: str):
        self.client = client
        self.base = base
        self.name = name
        self.token = token
        client.headers["Authorization"] = f"token {token}"

    @classmethod
    async def login(
        cls, client: httpx.AsyncClient, hub_url: str, login: PasswordLogin | TokenLogin, token_seconds: int = 600
    ) -> HubUser:
        """Log in (form + minted token, or a given token) on the hub at its public `hub_url`."""
        base = httpx.URL(hub_url.rstrip("/") + "/")
        if isinstance(login, TokenLogin):
            response = await client.get(base.join("hub/api/user"), headers={"Authorization": f"token {login.token}"})
            owner = expect(response, base, 200).json()
            if owner.get("kind") != "user" or owner.get("name") != login.username:
                raise HubError(
                    f"token belongs to {owner.get('kind')} {owner.get('name')!r}, not user {login.username!r}"
                )
            return cls(client, base, login.username, login.token)
        await log_in_with_form(client, base, login.username, login.password)
        # Cookie-authenticated API calls, made the way the hub's own pages make them.
        api_headers = {
            "X-XSRFToken": xsrf_cookie(client) or "",
            "Sec-Fetch-Mode": "cors",
            "Sec-Fetch-Site": "same-origin",
        }
        name = expect(await client.get(base.join("hub/api/user"), headers=api_headers), base, 200).json()["name"]
        minted = await client.post(
            base.join(f"hub/api/users/{quote(name, safe='@~')}/tokens"),
            json={"note": "hubfleet check", "expires_in": token_seconds},
            headers=api_headers,
        )
        return cls(client, base, name, expect(minted, base, 201).json()["token"])

    def url(self, path: str) -> httpx.URL:
        """Absolute URL of `path` below the hub's public URL."""
        return self.base.join(path)

    @property
    def user_api(self) -> str:
        return f"hub/api/users/{quote(self.name, safe='@~')}"

    @property
    def server_path(self) -> str:
        """Path of the user's default server, relative to the hub URL."""
        return f"user/{quote(self.name, safe='@~')}/"

    async def server(self) -> dict | None:
        """The hub's model of the default server, or None when there is none."""
        response = expect(await self.client.get(self.url(self.user_api)), self.base, 200)
        return (response.json().get("servers") or {}).get("")

    async def _spawn_failure(self) -> str:
        response = await self.client.get(self.url(f"{self.user_api}/server/progress"))
        events = [json.loads(line[5:]) for line in response.text.splitlines() if line.startswith("data:")]
        messages = [event["message"] for event in events if event.get("failed") and event.get("message")]
        return messages[-1] if response.status_code == 200 and messages else "the server stopped before it was ready"

    async def start_server(self, options: dict[str, Any] | None = None) -> None:
        """Request the default server and wait until the hub reports it ready."""
        response = await self.client.post(self.url(f"{self.user_api}/server"), json=options or {})
        if expect(response, self.base, 201, 202).status_code == 201:
            return
        while True:
            await asyncio.sleep(POLL_SECONDS)
            server = await self.server()
            if server is None or server.get("pending") == "stop":
                raise HubError(await self._spawn_failure())
            if server.get("ready"):
                return

    async def stop_server(self) -> None:
        """Stop the default server and wait until the hub no longer lists it."""
        expect(await self.client.delete(self.url(f"{self.user_api}/server")), self.base, 202, 204)
        while await self.server() is not None:
            await asyncio.sleep(POLL_SECONDS)

    async def start_kernel(self, name: str | None = None) -> str:
        """Start a kernel (the server's default one, or the kernelspec `name`) on the user's server; its id."""
        body = {"name": name} if name else None
        response = await self.client.post(self.url(f"{self.server_path}api/kernels"), json=body)
        return expect(response, self.base, 201).json()["id"]

    async def stop_kernel(self, kernel_id: str) -> None:
        response = await self.client.delete(self.url(f"{self.server_path}api/kernels/{kernel_id}"))
        expect(response, self.base, 204)

    async def execute(self, kernel_id: str, code: str, timeout: float = 60.0) -> str:
        """Run `code` over the kernel's websocket; its stdout and result text. CodeError if it raised."""
        url = self.url(f"{self.server_path}api/kernels/{kernel_id}/channels")
        return await execute_over_websocket(url, {"Authorization": f"token {self.token}"}, self.name, code, timeout)


async def execute_over_websocket(
    channels: httpx.URL, headers: dict[str, str], username: str, code: str, timeout: float = 60.0
) -> str:
    """Run `code` in the kernel whose websocket is at `channels` (its `…/api/kernels/<id>/channels` URL, http or
    https), connecting with `headers`; its stdout and result text. CodeError if it raised, KernelDied if the kernel
    died."""
    session_id = uuid.uuid4().hex
    url = channels.copy_with(scheme="wss" if channels.scheme == "https" else "ws", params={"session_id": session_id})
    request = HTTPRequest(str(url), headers=headers, connect_timeout=timeout, request_timeout=timeout)
    socket = await websocket_connect(request)
    try:
        message = execute_request(username, session_id, code)
        await socket.write_message(json.dumps(message))
        output = []
        while True:
            raw = await asyncio.wait_for(socket.read_message(), timeout)
            if raw is None:
                raise HubError("the kernel websocket closed before the kernel went idle")
            reply = json.loads(raw)
            state = reply.get("content", {}).get("execution_state")
            if reply.get("channel") == "iopub" and state in ("restarting", "dead"):
                raise KernelDied("the kernel died while running the code (killed, or out of memory)")
            if reply.get("channel") != "iopub" or reply["parent_header"].get("msg_id") != message["header"]["msg_id"]:
                continue
            kind, content = reply["header"]["msg_type"], reply["content"]
            if kind == "stream" and content.get("name") == "stdout":
                output.append(content["text"])
            elif kind == "execute_result":
                output.append(content["data"].get("text/plain", ""))
            elif kind == "error":
                raise CodeError(content.get("ename", ""), content.get("evalue", ""))
            elif kind == "status" and content.get("execution_state") == "idle":
                return "".join(output)
    finally:
        socket.close()
