"""End-to-end tests of `hubfleet.health.check` against a real, bare JupyterHub 6 on loopback."""

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from hubfleet.health.check import PasswordLogin, TokenLogin, run_check

SINGLEUSER = Path("/opt/hubfleet/user-env/bin/jupyterhub-singleuser")
CHP = Path(sys.prefix) / "node_modules" / ".bin" / "configurable-http-proxy"
BASE_URL = "/hubs/t1/"
PASSWORD = "synthetic-user-password"
STEPS = ["login", "start-server", "start-kernel", "run-code", "stop-kernel", "stop-server"]

pytestmark = pytest.mark.needs("user_env", "proxy")


@dataclass
class Hub:
    """A running test hub."""

    url: str
    admin_token: str

    def api(self) -> httpx.Client:
        """Client for the hub API, authenticated as the admin service."""
        return httpx.Client(
            base_url=f"{self.url}hub/api/", headers={"Authorization": f"token {self.admin_token}"}, timeout=30
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _config(tmp: Path, public: int, proxy_api: int, hub_port: int, admin_token: str, marker: str) -> str:
    return f"""
c = get_config()  # noqa
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {public}
c.JupyterHub.base_url = {BASE_URL!r}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.JupyterHub.db_url = {f"sqlite:///{tmp / 'jupyterhub.sqlite'}"!r}
c.JupyterHub.cookie_secret_file = {str(tmp / "cookie_secret")!r}
c.ConfigurableHTTPProxy.command = [{str(CHP)!r}]
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api}"
c.JupyterHub.authenticator_class = "shared-password"
c.SharedPasswordAuthenticator.user_password = {PASSWORD!r}
c.Authenticator.allow_all = True
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = {str(tmp / "home" / "{username}")!r}
c.Spawner.cmd = [{str(SINGLEUSER)!r}]
c.Spawner.args = ["--allow-root"]
c.Spawner.environment = {{"HUBFLEET_TEST_HUB": {marker!r}}}
c.JupyterHub.services = [{{"name": "checker-admin", "api_token": {admin_token!r}}}]
c.JupyterHub.load_roles = [{{"name": "admin", "services": ["checker-admin"]}}]
"""


def _kill_marked(marker: str) -> None:
    """Kill every process (proxy, servers, kernels) that carries this hub's marker."""
    procs = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if proc.environ().get("HUBFLEET_TEST_HUB") == marker:
                proc.kill()
                procs.append(proc)
    psutil.wait_procs(procs, timeout=10)


@contextlib.contextmanager
def running_hub(tmp: Path) -> Iterator[Hub]:
    """Start a bare JupyterHub in `tmp`, wait for its API, then stop it and everything it started."""
    public, proxy_api, hub_port = _free_port(), _free_port(), _free_port()
    admin_token, marker = uuid.uuid4().hex, uuid.uuid4().hex
    (tmp / "config.py").write_text(_config(tmp, public, proxy_api, hub_port, admin_token, marker))
    hub = Hub(f"http://127.0.0.1:{public}{BASE_URL}", admin_token)
    with (tmp / "hub.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", "config.py"],
            cwd=tmp,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "HUBFLEET_TEST_HUB": marker},
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                log_tail = (tmp / "hub.log").read_text()[-3000:]
                assert proc.poll() is None and time.monotonic() < deadline, f"hub did not come up:\n{log_tail}"
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{hub.url}hub/api/", timeout=2).status_code == 200:
                        break
                time.sleep(0.2)
            yield hub
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            _kill_marked(marker)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    with running_hub(tmp_path_factory.mktemp("hub")) as running:
        yield running


def test_password_login_runs_every_step(hub: Hub) -> None:
    report = asyncio.run(run_check("t1", hub.url, PasswordLogin("check-ok", PASSWORD), timeout=60))
    assert report.ok, report.to_dict()
    assert [step.name for step in report.steps] == STEPS
    assert all(step.ok and step.seconds > 0 and not step.detail for step in report.steps)
    assert report.total_seconds >= sum(step.seconds for step in report.steps)
    as_json = json.dumps(report.to_dict())
    assert PASSWORD not in as_json
    assert json.loads(as_json)["hub"] == "t1"


def test_wrong_password_fails_at_login(hub: Hub) -> None:
    report = asyncio.run(run_check("t1", hub.url, PasswordLogin("check-bad", "not-the-password"), timeout=30))
    assert not report.ok
    [login] = report.steps
    assert login.name == "login" and not login.ok
    assert "HTTP 403" in login.detail and "not-the-password" not in login.detail


def test_unexpected_output_fails_at_run_code_and_still_stops_the_server(hub: Hub) -> None:
    report = asyncio.run(run_check("t1", hub.url, PasswordLogin("check-expect", PASSWORD), timeout=60, expected="43"))
    assert not report.ok
    assert [step.name for step in report.steps] == STEPS
    assert [step.name for step in report.steps if not step.ok] == ["run-code"]
    assert "'43'" in report.steps[3].detail and "'42'" in report.steps[3].detail
    with hub.api() as api:
        user = api.get("users/check-expect").raise_for_status().json()
    assert user["servers"] == {}


def test_token_login_with_a_token_minted_by_an_admin_service(hub: Hub) -> None:
    with hub.api() as api:
        assert api.post("users/check-token").status_code in (201, 409)
        minted = api.post("users/check-token/tokens", json={"note": "test", "expires_in": 600})
        token = minted.raise_for_status().json()["token"]
    report = asyncio.run(run_check("t1", hub.url, TokenLogin("check-token", token), timeout=60))
    assert report.ok, report.to_dict()
    assert [step.name for step in report.steps] == STEPS
    assert token not in json.dumps(report.to_dict())


def test_unreachable_hub_fails_at_login_without_raising() -> None:
    url = f"http://127.0.0.1:{_free_port()}{BASE_URL}"
    report = asyncio.run(run_check("t1", url, PasswordLogin("nobody", PASSWORD), timeout=10))
    assert not report.ok
    assert [(step.name, step.ok) for step in report.steps] == [("login", False)]
    assert "ConnectError" in report.steps[0].detail
