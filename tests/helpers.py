"""Test helpers: real fleets of real JupyterHubs on loopback, started through the real CLI."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import itertools
import json
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx

from hubfleet.backends.local.render import hub_address
from hubfleet.common.settings import HubAddress, HubPorts, HubSettings, ProxyLink
from hubfleet.health.client import HubUser, PasswordLogin
from hubfleet.spec.models import Hub
from hubfleet.system import accounts, homes
from tests.requirements import need

USER_ENV = Path(os.environ.get("HUBFLEET_TEST_USER_ENV", "/opt/hubfleet/user-env"))
HOME_ROOT = Path("/home")
"""Where test fleets' homes are (the fleet file's default `paths.home_root`)."""


def hub_cgroup(state_dir: Path, hub: str) -> str:
    """The cgroup of hub `hub` of the fleet whose state directory is `state_dir` (`hubfleet/<fleet>-<hash>/<hub>`)."""
    return HubSettings.read(state_dir / "hubs" / hub / "settings.json").cgroup


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def hubfleet(
    *args: str,
    check: bool = True,
    timeout: float = 300,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    columns: int = 200,
) -> subprocess.CompletedProcess:
    """Run the real `hubfleet` command with this interpreter (`env`: its whole environment, default this process's;
    `columns`: the terminal width rich assumes)."""
    result = subprocess.run(
        [sys.executable, "-m", "hubfleet", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**(os.environ if env is None else env), "COLUMNS": str(columns)},
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"hubfleet {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result


@dataclass
class RunningFleet:
    """A fleet started with `hubfleet up --detach` for a test."""

    root: Path
    file: Path
    state_dir: Path
    port: int
    shared_root: Path
    hubs: list[str]
    password: str
    extra: dict[str, Any] = field(default_factory=dict)
    scheme: str = "http"
    tokens: dict[tuple[str, str], str] = field(default_factory=dict)
    """API tokens minted by `token`, by (hub, user)."""

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def hub_url(self, hub: str) -> str:
        return f"{self.url}/hubs/{hub}/"

    def cli(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        return hubfleet(*args, "--state-dir", str(self.state_dir), check=check, timeout=timeout)

    def status(self) -> dict[str, Any]:
        return json.loads(self.cli("status", "--json", check=False).stdout)

    def cgroup(self, hub: str) -> str:
        """Hub `hub`'s cgroup (relative to each hierarchy's root), as its settings name it."""
        return hub_cgroup(self.state_dir, hub)

    def service_token(self, hub: str) -> str:
        return (self.state_dir / "hubs" / hub / "secrets" / "service_token").read_text().strip()

    def hub_api(self, hub: str, method: str, path: str, *, timeout: float = 60, **kwargs: Any) -> httpx.Response:
        """A request to `hub`'s REST API (`path` below `hub/api/`) with the fleet's service token."""
        headers = {"Authorization": f"token {self.service_token(hub)}"}
        return httpx.request(method, f"{self.hub_url(hub)}hub/api/{path}", headers=headers, timeout=timeout, **kwargs)

    def user_token(self, hub: str, user: str, note: str, expires_in: int = 3600, **body: Any) -> str:
        """A new API token of `user` on `hub`, minted through the hub's REST API with the fleet's service token
        (`body`: more of the request, e.g. `scopes`)."""
        minted = self.hub_api(
            hub, "POST", f"users/{user}/tokens", json={"note": note, "expires_in": expires_in, **body}
        )
        return minted.raise_for_status().json()["token"]

    def token(self, hub: str, user: str) -> str:
        """An API token of `user` on `hub`, minted once for this fleet (`user_token`) and kept."""
        if (hub, user) not in self.tokens:
            self.tokens[hub, user] = self.user_token(hub, user, "test")
        return self.tokens[hub, user]

    def service_url(self, hub: str, service: str) -> str:
        """The URL of `hub`'s service `service`, through the front door."""
        return f"{self.hub_url(hub)}services/{service}/"

    def wait_for_server(self, hub: str, user: str, timeout: float) -> None:
        """Wait until `user`'s default server on `hub` is ready."""

        def ready() -> bool:
            response = self.hub_api(hub, "GET", f"users/{user}")
            model = {} if response.status_code == 404 else response.raise_for_status().json()
            return bool(((model.get("servers") or {}).get("") or {}).get("ready"))

        wait_until(ready, timeout, f"the server of {user} to be ready", every=0.25)

    def follow_to_server(
        self, hub: str, browser: httpx.Client, response: httpx.Response, timeout: float
    ) -> tuple[str, str]:
        """`hub`'s answer sending the browser to its spawn page (after a login, a launch), followed as a browser
        would until the user's server is ready: (user name, the page it was to go on to)."""
        assert response.status_code == 302, response.text[:500]
        spawn_url = httpx.URL(self.url).join(response.headers["location"])
        user = spawn_url.path.rstrip("/").rsplit("/", 1)[-1]
        browser.get(spawn_url, follow_redirects=True)
        self.wait_for_server(hub, user, timeout)
        return user, parse_qs(spawn_url.query.decode())["next"][0]

    def run_code(self, hub: str, login: PasswordLogin, code: str, timeout: float = 180) -> str:
        """Log in through the front door, start the user's server if needed, and run `code` in a fresh kernel."""

        async def scenario() -> str:
            async with httpx.AsyncClient(timeout=timeout) as client:
                user = await HubUser.login(client, self.hub_url(hub), login)
                if not (await user.server() or {}).get("ready"):
                    await user.start_server()
                kernel = await user.start_kernel()
                try:
                    return (await user.execute(kernel, code, timeout)).strip()
                finally:
                    await user.stop_kernel(kernel)

        return asyncio.run(scenario())

    def write(self, text: str) -> Path:
        self.file.write_text(text)
        return self.file


def fleet_yaml(
    name: str,
    port: int,
    ports: tuple[int, int],
    shared_root: Path,
    hubs: str,
    defaults: str = "",
    top: str = "",
    environments: Path | None = None,
    front_door: str = "",
) -> str:
    """A fleet file for tests: free ports, a private shared root (and environment store), then the given fleet-level
    sections (`top`, e.g. `usage:`), `defaults:` and hubs (each YAML, unindented). Hubs never sleep unless the test
    says `sleep:`. `front_door` adds keys to the front door's (a YAML flow mapping's items, e.g. `tls: {…}`)."""
    door = f"host: 127.0.0.1, port: {port}" + (f", {front_door}" if front_door else "")
    text = textwrap.dedent(
        f"""\
            name: {name}
            front_door: {{{door}}}
            internal_ports: {{start: {ports[0]}, end: {ports[1]}}}
            paths:
              user_env: {USER_ENV}
              shared_root: {shared_root}
            """
    )
    if environments is not None:
        text += f"  environments: {environments}\n"
    if top:
        text += textwrap.dedent(top).rstrip("\n") + "\n"
    defaults = textwrap.dedent(defaults)
    if "sleep:" not in defaults and "sleep:" not in hubs:
        # Test fleets stay awake unless the test is about sleep: their tests look at running processes.
        defaults = "sleep: {after: never}\n" + defaults
    if defaults.strip():
        text += "defaults:\n" + textwrap.indent(defaults, "  ").rstrip("\n") + "\n"
    return text + "hubs:\n" + textwrap.indent(textwrap.dedent(hubs), "  ")


PORT_BLOCKS = 60
"""How many blocks of 200 internal ports test fleets choose from (20000 to 31999)."""
_next_block = itertools.count(secrets.randbelow(PORT_BLOCKS))


def port_block() -> tuple[int, int]:
    """Internal ports for a test fleet: 199 ports below the kernel's ephemeral range (32768+), where the OS hands out
    ports to outgoing connections and `bind(0)`. A run starts at a random block (so that fleets of parallel runs
    rarely meet) and takes the next one for each fleet; each pytest-xdist worker of a run takes its own share of the
    blocks, so that fleets of one run never meet."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    start = 20000 + ((next(_next_block) * workers + worker) % PORT_BLOCKS) * 200
    return start, start + 198


def processes_of_hub_users(hub: str) -> list[str]:
    """Running processes owned by a Unix account of `hub` (zombies, already dead and awaiting their reaper, aside)."""
    uids = {entry.pw_uid for entry in pwd.getpwall() if entry.pw_name.startswith(f"{hub}_")}
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            with contextlib.suppress(OSError):
                if os.stat(f"/proc/{pid}").st_uid in uids and not _is_zombie(pid):
                    found.append(pid)
    return found


def _is_zombie(pid: str) -> bool:
    # /proc/PID/stat: "pid (comm) state ...", and comm may itself hold spaces or parentheses.
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2 :].startswith("Z")


def processes_mentioning(text: str) -> list[str]:
    """Command lines of running processes that contain `text`."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            if text in cmdline or text.encode() in environ:
                found.append(f"{pid}: {cmdline}")
    return found


@contextlib.contextmanager
def running_fleet(
    tmp: Path,
    hubs_yaml: str,
    hub_names: list[str],
    password: str,
    defaults: str = "",
    top: str = "",
    environments: Path | None = None,
    front_door: str = "",
) -> Iterator[RunningFleet]:
    """Start a fleet with the real CLI; on exit stop it, check nothing is left, remove its Unix accounts. With
    `front_door` naming `tls:`, the fleet's URL is https."""
    need("root", "cgroups", "acl", "user_env", "proxy")
    tmp.mkdir(parents=True, exist_ok=True)
    shared_root = Path(f"/srv/hubfleet-test-{secrets.token_hex(3)}")
    block = port_block()
    port = block[1] + 1  # the front door: just outside the hubs' internal range
    fleet = RunningFleet(
        root=tmp,
        file=tmp / "fleet.yaml",
        state_dir=tmp / "state",
        port=port,
        shared_root=shared_root,
        hubs=hub_names,
        password=password,
        scheme="https" if "tls:" in front_door else "http",
    )
    fleet.write(fleet_yaml("testfleet", port, block, shared_root, hubs_yaml, defaults, top, environments, front_door))
    try:
        fleet.cli("up", str(fleet.file), "--detach")
        yield fleet
    finally:
        fleet.cli("down", check=False)
        leftovers = processes_mentioning(str(fleet.state_dir))
        for name in hub_names:
            leftovers += processes_of_hub_users(name)
        for name in hub_names:
            homes.release_homes(HOME_ROOT, f"{name}_")  # quota'd homes are mounts: gone before their accounts
            accounts.remove_hub_accounts(name)
        shutil.rmtree(shared_root, ignore_errors=True)
        assert not leftovers, f"processes left behind after down: {leftovers}"


def wipe_hub(fleet: RunningFleet, hub: str) -> None:
    """What a dead machine leaves of a hub: nothing (no homes, accounts or shared folders); its state directory
    is left to the test."""
    homes.release_homes(HOME_ROOT, f"{hub}_")
    accounts.remove_hub_accounts(hub)
    shutil.rmtree(fleet.shared_root / hub, ignore_errors=True)


_RUN = os.environ.get("PYTEST_XDIST_TESTRUNUID") or secrets.token_hex(8)
"""This run's identity: pytest-xdist's workers of one run share it, so that they collect the same test names."""
_asked: collections.Counter[str] = collections.Counter()


def unique_hub(prefix: str) -> str:
    """A hub name unlikely to exist on this machine (hub names scope Unix accounts): the prefix and four hex digits
    drawn from this run's identity, the same in every worker of the run."""
    _asked[prefix] += 1
    return prefix + hashlib.sha256(f"{_RUN} {prefix} {_asked[prefix]}".encode()).hexdigest()[:4]


def wait_until(condition: Callable[[], Any], timeout: float, what: str | Callable[[], str], every: float = 0.05) -> Any:
    """Poll `condition` every `every` seconds until it returns something true (returned), at most `timeout`
    seconds; then fail saying `what` was expected (a callable `what` is called for the message)."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"waited {timeout:g} s for {what() if callable(what) else what}")
        time.sleep(every)


async def await_until(condition: Callable[[], Awaitable[Any]], timeout: float, what: str, every: float = 0.05) -> Any:
    """`wait_until` for asyncio code: `condition` is a coroutine function."""
    deadline = time.monotonic() + timeout
    while True:
        result = await condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"waited {timeout:g} s for {what}")
        await asyncio.sleep(every)


TEST_PROXY = ProxyLink(url="http://127.0.0.1:8000", api_url="http://127.0.0.1:2")
"""The fleet proxy's address in settings rendered without a running fleet."""


def address_of(hub: Hub, ports: HubPorts | None = None) -> HubAddress:
    """Where `hub`'s processes would be reached (`ports` default: the hub on port 1), for rendering settings."""
    return hub_address(hub, ports or HubPorts(hub=1), TEST_PROXY)
