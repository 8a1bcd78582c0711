"""Run a synthetic user through a hub's public URL: log in, start a server, run code, clean up."""

import asyncio
import html
import json
import re
import time
import uuid
from collections.abc import Awaitable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TypeVar
from urllib.parse import quote

import httpx
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

_POLL_SECONDS = 0.25
_MAX_CLEANUP_RESERVE = 30.0
_BODY_CHARS = 200
_TOKEN_GRACE_SECONDS = 60  # a minted token outlives the check's timeout by this much, then expires

_T = TypeVar("_T")


@dataclass
class PasswordLogin:
    """Log in through the hub's login form, then mint a short-lived API token for the session user."""

    username: str
    password: str


@dataclass
class TokenLogin:
    """Use an API token already minted for the synthetic user."""

    username: str
    token: str


@dataclass
class CheckStep:
    """Outcome and duration of one step of a check."""

    name: str
    ok: bool
    seconds: float
    detail: str = ""


@dataclass
class CheckReport:
    """Outcome of a synthetic check of one hub."""

    hub: str
    url: str
    ok: bool
    steps: list[CheckStep]
    total_seconds: float

    def to_dict(self) -> dict:
        """JSON-ready form of the report."""
        return asdict(self)


class _StepFailed(Exception):
    """A step failed; the message is the report detail."""


def _user_api(name: str) -> str:
    """Hub API path of a user, relative to the hub URL (escaped the way JupyterHub does)."""
    return f"hub/api/users/{quote(name, safe='@~')}"


@dataclass
class _Session:
    """Where the hub is and who we are on it."""

    base: httpx.URL
    name: str
    token: str

    def url(self, path: str) -> httpx.URL:
        """Absolute URL of `path` below the hub's public URL."""
        return self.base.join(path)

    @property
    def user_api(self) -> str:
        """Hub API path of the synthetic user."""
        return _user_api(self.name)

    @property
    def server_path(self) -> str:
        """Path of the synthetic user's default server."""
        return f"user/{quote(self.name, safe='@~')}/"


def _short_body(response: httpx.Response) -> str:
    """The hub's error message, or the start of the body as plain text."""
    try:
        message = response.json().get("message")
    except (ValueError, AttributeError):
        message = None
    if not message:
        text = re.sub(r"<(script|style)\b.*?</\1>", " ", response.text, flags=re.S | re.I)
        message = html.unescape(re.sub(r"<[^>]+>", " ", text))
    message = " ".join(str(message).split())
    return message[:_BODY_CHARS] + ("…" if len(message) > _BODY_CHARS else "")


def _status_line(response: httpx.Response, base: httpx.URL) -> str:
    """The request (its path relative to the hub URL) and the response status."""
    path = response.request.url.path.removeprefix(base.path)
    return f"{response.request.method} {path}: HTTP {response.status_code}"


def _http_failure(response: httpx.Response, base: httpx.URL) -> _StepFailed:
    """Failure naming the request, the status and a short body."""
    body = _short_body(response)
    return _StepFailed(f"{_status_line(response, base)}: {body}" if body else _status_line(response, base))


def _expect(response: httpx.Response, base: httpx.URL, *statuses: int) -> httpx.Response:
    """Return `response` if its status is one of `statuses`, else raise a step failure."""
    if response.status_code not in statuses:
        raise _http_failure(response, base)
    return response


def _xsrf_cookie(client: httpx.AsyncClient) -> str | None:
    """Value of the most specific `_xsrf` cookie the hub has set."""
    cookies = sorted((c for c in client.cookies.jar if c.name == "_xsrf"), key=lambda c: len(c.path or ""))
    return cookies[-1].value if cookies else None


async def _password_login(
    client: httpx.AsyncClient, base: httpx.URL, login: PasswordLogin, token_seconds: int
) -> _Session:
    """Submit the login form, then mint an API token with the session cookie."""
    page = _expect(await client.get(base.join("hub/login"), follow_redirects=True), base, 200)
    form = re.search(r"<form\b[^>]*\baction=\"([^\"]*)\"", page.text)
    if form is None or 'name="password"' not in page.text:
        raise _StepFailed(f"no password form on {page.url.path}")
    xsrf = _xsrf_cookie(client)
    if xsrf is None:
        raise _StepFailed("the hub set no _xsrf cookie on its login page")
    response = await client.post(
        page.url.join(html.unescape(form.group(1))),
        data={"_xsrf": xsrf, "username": login.username, "password": login.password},
    )
    if not response.is_redirect:
        error = re.search(r"class=\"login_error\"[^>]*>([^<]*)<", response.text)
        reason = html.unescape(error.group(1)).strip() if error else "login rejected"
        raise _StepFailed(f"{_status_line(response, base)}: {reason}")
    # cookie-authenticated API calls, made the way the hub's own pages make them
    api_headers = {
        "X-XSRFToken": _xsrf_cookie(client) or "",
        "Sec-Fetch-Mode": "cors",
        "Sec-Fetch-Site": "same-origin",
    }
    whoami = await client.get(base.join("hub/api/user"), headers=api_headers)
    name = _expect(whoami, base, 200).json()["name"]
    minted = await client.post(
        base.join(f"{_user_api(name)}/tokens"),
        json={"note": "hubfleet check", "expires_in": token_seconds},
        headers=api_headers,
    )
    return _Session(base, name, _expect(minted, base, 201).json()["token"])


async def _token_login(client: httpx.AsyncClient, base: httpx.URL, login: TokenLogin) -> _Session:
    """Check that the token is valid and belongs to the synthetic user."""
    response = await client.get(base.join("hub/api/user"), headers={"Authorization": f"token {login.token}"})
    owner = _expect(response, base, 200).json()
    if owner.get("kind") != "user" or owner.get("name") != login.username:
        raise _StepFailed(
            f"token belongs to {owner.get('kind')} {owner.get('name')!r}, not user {login.username!r}"
        )
    return _Session(base, login.username, login.token)


async def _login(
    client: httpx.AsyncClient, hub_url: str, login: PasswordLogin | TokenLogin, token_seconds: int
) -> _Session:
    """Log in and set the API token on the client."""
    base = httpx.URL(hub_url)
    if isinstance(login, PasswordLogin):
        session = await _password_login(client, base, login, token_seconds)
    else:
        session = await _token_login(client, base, login)
    client.headers["Authorization"] = f"token {session.token}"
    return session


async def _default_server(client: httpx.AsyncClient, session: _Session) -> dict | None:
    """Model of the user's default server, or None when it is not running or pending."""
    response = _expect(await client.get(session.url(session.user_api)), session.base, 200)
    return (response.json().get("servers") or {}).get("")


async def _spawn_failure(client: httpx.AsyncClient, session: _Session) -> str:
    """The hub's explanation of a failed spawn, from the progress API if it has one."""
    response = await client.get(session.url(f"{session.user_api}/server/progress"))
    events = [json.loads(line[5:]) for line in response.text.splitlines() if line.startswith("data:")]
    messages = [event["message"] for event in events if event.get("failed") and event.get("message")]
    return (
        messages[-1] if response.status_code == 200 and messages else "the server stopped before it was ready"
    )


async def _start_server(client: httpx.AsyncClient, session: _Session) -> bool:
    """Request the default server and wait until the hub reports it ready."""
    response = await client.post(session.url(f"{session.user_api}/server"))
    if _expect(response, session.base, 201, 202).status_code == 201:
        return True
    while True:
        await asyncio.sleep(_POLL_SECONDS)
        server = await _default_server(client, session)
        if server is None or server.get("pending") == "stop":
            raise _StepFailed(await _spawn_failure(client, session))
        if server.get("ready"):
            return True


async def _start_kernel(client: httpx.AsyncClient, session: _Session) -> str:
    """Start a kernel on the user's server; return its id."""
    response = await client.post(session.url(f"{session.server_path}api/kernels"))
    return _expect(response, session.base, 201).json()["id"]


def _execute_request(username: str, session_id: str, code: str) -> dict:
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


async def _run_code(
    session: _Session, kernel_id: str, code: str, expected: str, connect_timeout: float
) -> bool:
    """Execute `code` over the kernel websocket and compare its output with `expected`."""
    session_id = uuid.uuid4().hex
    url = session.url(f"{session.server_path}api/kernels/{kernel_id}/channels")
    url = url.copy_with(scheme="wss" if url.scheme == "https" else "ws", params={"session_id": session_id})
    request = HTTPRequest(
        str(url),
        headers={"Authorization": f"token {session.token}"},
        connect_timeout=connect_timeout,
        request_timeout=connect_timeout,
    )
    socket = await websocket_connect(request)
    try:
        message = _execute_request(session.name, session_id, code)
        await socket.write_message(json.dumps(message))
        output = []
        while True:
            raw = await socket.read_message()
            if raw is None:
                raise _StepFailed("the kernel websocket closed before the kernel went idle")
            reply = json.loads(raw)
            if (
                reply.get("channel") != "iopub"
                or reply["parent_header"].get("msg_id") != message["header"]["msg_id"]
            ):
                continue
            kind, content = reply["header"]["msg_type"], reply["content"]
            if kind == "stream" and content.get("name") == "stdout":
                output.append(content["text"])
            elif kind == "execute_result":
                output.append(content["data"].get("text/plain", ""))
            elif kind == "error":
                raise _StepFailed(f"{content.get('ename')}: {content.get('evalue')}")
            elif kind == "status" and content.get("execution_state") == "idle":
                break
    finally:
        socket.close()
    got = "".join(output).strip()
    if got != expected.strip():
        raise _StepFailed(f"expected {expected.strip()!r}, got {got[:_BODY_CHARS]!r}")
    return True


async def _stop_kernel(client: httpx.AsyncClient, session: _Session, kernel_id: str) -> bool:
    """Shut the kernel down."""
    response = await client.delete(session.url(f"{session.server_path}api/kernels/{kernel_id}"))
    _expect(response, session.base, 204)
    return True


async def _stop_server(client: httpx.AsyncClient, session: _Session) -> bool:
    """Stop the default server and wait until the hub no longer lists it."""
    _expect(await client.delete(session.url(f"{session.user_api}/server")), session.base, 202, 204)
    while await _default_server(client, session) is not None:
        await asyncio.sleep(_POLL_SECONDS)
    return True


class _Steps:
    """Runs steps under deadlines and records them, never raising."""

    def __init__(self, timeout: float, secret: str) -> None:
        self.steps: list[CheckStep] = []
        self.secrets = [secret]
        self._timeout = timeout

    def _redact(self, text: str) -> str:
        for secret in filter(None, self.secrets):
            text = text.replace(secret, "***")
        return text

    async def run(self, name: str, deadline: float, action: Awaitable[_T]) -> _T | None:
        """Await `action` until the loop-time `deadline`; record the step, return its result or None."""
        started = time.perf_counter()
        result, detail = None, ""
        try:
            async with asyncio.timeout_at(deadline):
                result = await action
        except TimeoutError:
            detail = (
                f"timed out after {time.perf_counter() - started:.1f}s (check timeout {self._timeout:g}s)"
            )
        except _StepFailed as error:
            detail = str(error)
        except Exception as error:
            detail = type(error).__name__ + (f": {error}" if str(error) else "")
        self.steps.append(
            CheckStep(name, result is not None, time.perf_counter() - started, self._redact(detail))
        )
        return result


async def run_check(
    hub: str,
    hub_url: str,
    login: PasswordLogin | TokenLogin,
    *,
    timeout: float = 90.0,
    code: str = "print(6 * 7)",
    expected: str = "42",
) -> CheckReport:
    """Run a synthetic user through the hub at its public `hub_url` and report each timed step.

    `timeout` bounds the whole check; up to a quarter of it (at most 30 s) is kept back so that the
    kernel and server are stopped even when an earlier step runs out of time. Never raises.
    """
    hub_url = hub_url.rstrip("/") + "/"
    started = time.perf_counter()
    deadline = asyncio.get_running_loop().time() + timeout
    work_deadline = deadline - min(_MAX_CLEANUP_RESERVE, timeout / 4)
    steps = _Steps(timeout, login.password if isinstance(login, PasswordLogin) else login.token)
    async with httpx.AsyncClient(timeout=timeout) as client:
        session = await steps.run(
            "login", work_deadline, _login(client, hub_url, login, int(timeout) + _TOKEN_GRACE_SECONDS)
        )
        if session is not None:
            steps.secrets.append(session.token)
            if await steps.run("start-server", work_deadline, _start_server(client, session)):
                kernel_id = await steps.run("start-kernel", work_deadline, _start_kernel(client, session))
                if kernel_id is not None:
                    await steps.run(
                        "run-code", work_deadline, _run_code(session, kernel_id, code, expected, timeout)
                    )
                    await steps.run("stop-kernel", deadline, _stop_kernel(client, session, kernel_id))
            await steps.run("stop-server", deadline, _stop_server(client, session))
    return CheckReport(
        hub=hub,
        url=hub_url,
        ok=all(step.ok for step in steps.steps),
        steps=steps.steps,
        total_seconds=time.perf_counter() - started,
    )
