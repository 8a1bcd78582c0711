"""A real two-hub fleet on this machine, driven through the CLI and the front door like an operator and users would.

Everything here is real: JupyterHub processes, configurable-http-proxies, Unix users, cgroups, kernels.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import os
import pwd
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import pytest

from hubfleet.health.client import CodeError, HubError, HubUser, KernelDied, PasswordLogin, TokenLogin
from hubfleet.system import cgroups
from tests.helpers import RunningFleet, running_fleet, unique_hub

T = TypeVar("T")
A, B, C, N = unique_hub("ta"), unique_hub("tb"), unique_hub("tc"), unique_hub("tn")
PASSWORD = "fleet-test-password"

HUBS = f"""\
{A}:
  display_name: Alpha Hub
  auth: {{type: shared-password, password: {PASSWORD}, admins: [ada]}}
  groups:
    staff: [alice]
    students: [bob]
  profiles:
    - {{name: small, cpu: 0.5, memory: 300M, default: true}}
  storage:
    shared:
      - {{name: handouts, access: {{staff: write, students: read}}}}
{B}:
  display_name: Beta Hub
  auth: {{type: shared-password, password: {PASSWORD}-b, allowed_users: [carol]}}
  culling: {{timeout: 10m}}
{N}:
  display_name: Sign-up Hub
  auth: {{type: native, open_signup: true, admins: [nina]}}
  culling: {{enabled: false}}
"""


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningFleet]:
    with running_fleet(tmp_path_factory.mktemp("fleet"), HUBS, [A, B, C, N], PASSWORD) as running:
        yield running


def run(
    fleet: RunningFleet, hub: str, login: PasswordLogin | TokenLogin, action: Callable[[HubUser], Awaitable[T]]
) -> T:
    """Log in as a user of `hub` through the front door and run `action` with them."""

    async def scenario() -> T:
        async with httpx.AsyncClient(timeout=120) as client:
            user = await HubUser.login(client, fleet.hub_url(hub), login)
            return await action(user)

    return asyncio.run(scenario())


def password(user: str, hub: str = A) -> PasswordLogin:
    return PasswordLogin(user, PASSWORD if hub == A else f"{PASSWORD}-b")


async def start_and_run(user: HubUser, code: str) -> str:
    """Start the user's server if needed, then run `code` in a fresh kernel."""
    if not (await user.server() or {}).get("ready"):
        await user.start_server()
    kernel = await user.start_kernel()
    try:
        return (await user.execute(kernel, code)).strip()
    finally:
        with contextlib.suppress(HubError):  # a kernel that died cannot be shut down cleanly
            await user.stop_kernel(kernel)


@pytest.fixture(scope="module")
def alice(fleet: RunningFleet) -> TokenLogin:
    """alice of hub A, with a running server; the token lets later tests act as her."""

    async def login_and_start(user: HubUser) -> str:
        await user.start_server()
        return user.token

    return TokenLogin("alice", run(fleet, A, password("alice"), login_and_start))


def test_fleet_is_up_behind_one_front_door(fleet: RunningFleet) -> None:
    status = fleet.status()
    assert status["running"] is True
    assert {h["name"]: h["healthy"] for h in status["hubs"]} == {A: True, B: True, N: True}
    landing = httpx.get(fleet.url + "/")
    assert landing.status_code == 200
    assert "Alpha Hub" in landing.text and "Beta Hub" in landing.text
    assert f'href="/hubs/{A}/"' in landing.text
    assert httpx.get(fleet.url + "/_hubfleet/health").json()["healthy"] is True
    for hub in (A, B):
        assert httpx.get(fleet.hub_url(hub) + "hub/api/").status_code == 200


def test_native_hub_sign_up_then_log_in_and_run_code(fleet: RunningFleet) -> None:
    async def sign_up() -> int:
        async with httpx.AsyncClient(timeout=60) as client:
            await client.get(fleet.hub_url(N) + "hub/signup")
            form = {
                "username": "sam",
                "signup_password": "a-long-passphrase-42",
                "signup_password_confirmation": "a-long-passphrase-42",
                "_xsrf": client.cookies.get("_xsrf", path=f"/hubs/{N}/hub/") or "",
            }
            return (await client.post(fleet.hub_url(N) + "hub/signup", data=form)).status_code

    assert asyncio.run(sign_up()) == 200
    login = PasswordLogin("sam", "a-long-passphrase-42")
    assert run(fleet, N, login, lambda user: start_and_run(user, "import os; print(os.environ['USER'])")) == f"{N}_sam"
    with pytest.raises(HubError, match=r"403|rejected|Invalid"):
        run(fleet, N, PasswordLogin("sam", "wrong-password-123"), lambda user: asyncio.sleep(0))


def test_server_runs_as_the_users_own_account_in_its_cgroup(fleet: RunningFleet, alice: TokenLogin) -> None:
    code = (
        "import os, pwd, pathlib\n"
        "home = pathlib.Path.home()\n"
        "print(pwd.getpwuid(os.getuid()).pw_name, oct(home.stat().st_mode & 0o777), home)\n"
        "print(open('/proc/self/cgroup').read())"
    )
    output = run(fleet, A, alice, lambda user: start_and_run(user, code))
    first, cgroup_lines = output.split("\n", 1)
    assert first == f"{A}_alice 0o700 /home/{A}_alice"
    assert f"/{fleet.cgroup(A)}/{A}_alice" in cgroup_lines
    group = cgroups.detect().open(f"{fleet.cgroup(A)}/{A}_alice")
    assert group is not None and group.pids()


def test_kernels_talk_to_their_server_over_unix_sockets_in_the_users_runtime_folder(
    fleet: RunningFleet, alice: TokenLogin
) -> None:
    """No TCP ports for kernels to race for when a class starts at once (hubfleet.hub.spawner.KERNEL_TRANSPORT_ARG)."""
    code = (
        "import json, os, pathlib\n"
        "from ipykernel.connect import get_connection_info\n"
        "info = json.loads(get_connection_info())\n"
        "folder = pathlib.Path(info['ip']).parent\n"
        "print(info['transport'], folder, oct(folder.stat().st_mode & 0o777), folder.stat().st_uid == os.getuid())"
    )
    transport, folder, mode, own = run(fleet, A, alice, lambda user: start_and_run(user, code)).split()
    uid = pwd.getpwnam(f"{A}_alice").pw_uid
    assert (transport, folder, mode, own) == ("ipc", f"/run/hubfleet/runtime/{uid}", "0o700", "True")


def test_a_user_cannot_read_another_users_home(fleet: RunningFleet, alice: TokenLogin) -> None:
    bob_home = f"/home/{A}_bob"
    written = run(fleet, A, password("bob"), lambda u: start_and_run(u, "open('secret.txt','w').write('bob only')"))
    assert written == "8"
    attempt = (
        f"import pathlib\ntry:\n    print(pathlib.Path('{bob_home}/secret.txt').read_text())\n"
        "except PermissionError:\n    print('denied')"
    )
    assert run(fleet, A, alice, lambda user: start_and_run(user, attempt)) == "denied"


def test_shared_folder_is_writable_by_staff_and_read_only_for_students(fleet: RunningFleet, alice: TokenLogin) -> None:
    write = "import pathlib\np = pathlib.Path.home() / 'shared/handouts/week1.txt'\np.write_text('hello')\nprint('ok')"
    assert run(fleet, A, alice, lambda user: start_and_run(user, write)) == "ok"
    read = (
        "import pathlib\np = pathlib.Path.home() / 'shared/handouts/week1.txt'\nprint(p.read_text())\n"
        "try:\n    p.write_text('changed')\nexcept PermissionError:\n    print('read-only')"
    )
    assert run(fleet, A, password("bob"), lambda user: start_and_run(user, read)) == "hello\nread-only"
    folder = fleet.shared_root / A / "handouts"
    snoop = f"import os\ntry:\n    os.listdir('{folder}')\nexcept PermissionError:\n    print('denied')"
    assert run(fleet, B, password("carol", B), lambda user: start_and_run(user, snoop)) == "denied"


def test_hub_a_credentials_get_nothing_from_hub_b(fleet: RunningFleet, alice: TokenLogin) -> None:
    token_on_b = httpx.get(fleet.hub_url(B) + "hub/api/user", headers={"Authorization": f"token {alice.token}"})
    assert token_on_b.status_code == 403

    async def cookies_on_b(user: HubUser) -> tuple[int, int]:
        # Present hub A's login cookies to hub B as if their paths matched.
        stolen = httpx.Cookies()
        for cookie in user.client.cookies.jar:
            stolen.set(cookie.name, cookie.value, domain="127.0.0.1", path=f"/hubs/{B}/")
        async with httpx.AsyncClient(cookies=stolen) as other:
            api = await other.get(fleet.hub_url(B) + "hub/api/user")
            page = await other.get(fleet.hub_url(B) + "hub/home")
        return api.status_code, page.status_code

    login_cookies = run(fleet, A, password("alice"), cookies_on_b)
    assert login_cookies[0] == 403
    assert login_cookies[1] == 302  # to hub B's login page


def test_a_server_over_its_memory_limit_is_killed_by_the_kernel(fleet: RunningFleet, alice: TokenLogin) -> None:
    group = cgroups.detect().open(f"{fleet.cgroup(A)}/{A}_alice")
    before = group.oom_kills()
    hog = "blocks = []\nfor _ in range(64):\n    blocks.append(bytearray(16 * 1024 * 1024))\nprint('survived')"
    with pytest.raises(KernelDied):
        run(fleet, A, alice, lambda user: start_and_run(user, hog))
    assert group.oom_kills() > before
    assert run(fleet, A, alice, lambda user: start_and_run(user, "print(1 + 1)")) == "2"


def test_a_server_gets_no_more_cpu_than_its_profile(fleet: RunningFleet, alice: TokenLogin) -> None:
    burn = (
        "import time\nwall = time.monotonic(); cpu = time.process_time()\n"
        "while time.monotonic() - wall < 2: pass\n"
        "print(round((time.process_time() - cpu) / (time.monotonic() - wall), 2))"
    )
    share = float(run(fleet, A, alice, lambda user: start_and_run(user, burn)))
    assert share <= 0.6, f"a 0.5-CPU profile used {share} CPU"


def test_code_errors_are_reported(fleet: RunningFleet, alice: TokenLogin) -> None:
    with pytest.raises(CodeError, match="ZeroDivisionError"):
        run(fleet, A, alice, lambda user: start_and_run(user, "1 / 0"))


def _hub_entry(fleet: RunningFleet, name: str) -> dict[str, Any]:
    return next(h for h in fleet.status()["hubs"] if h["name"] == name)


def test_a_killed_hub_is_back_within_5_seconds_and_servers_survive(fleet: RunningFleet, alice: TokenLogin) -> None:
    hub_pid = _hub_entry(fleet, A)["pids"]["hub"]
    server_url = fleet.hub_url(A) + "user/alice/api/status"
    headers = {"Authorization": f"token {alice.token}"}
    assert httpx.get(server_url, headers=headers).status_code == 200
    os.kill(hub_pid, signal.SIGKILL)
    killed = time.monotonic()
    while True:
        elapsed = time.monotonic() - killed
        assert elapsed < 5, "the hub did not answer within 5 s of kill -9"
        try:
            if httpx.get(fleet.hub_url(A) + "hub/api/", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    entry = _hub_entry(fleet, A)
    assert entry["pids"]["hub"] != hub_pid and entry["restarts"]["hub"] >= 1
    assert httpx.get(server_url, headers=headers).status_code == 200
    user = httpx.get(fleet.hub_url(A) + "hub/api/users/alice", headers=headers).json()
    assert user["servers"][""]["ready"] is True


def test_an_invalid_file_applies_nothing(fleet: RunningFleet) -> None:
    pids = {h["name"]: h["pids"] for h in fleet.status()["hubs"]}
    original = fleet.file.read_text()
    bad = fleet.root / "bad.yaml"
    bad.write_text(original.replace("memory: 300M", "memory: lots").replace("display_name: Beta Hub", "dispaly: x"))
    result = fleet.cli("apply", str(bad), check=False)
    assert result.returncode == 1
    assert "memory" in result.stderr and "did you mean 'display_name'" in result.stderr
    assert f"{bad}:" in result.stderr
    assert {h["name"]: h["pids"] for h in fleet.status()["hubs"]} == pids


def test_plan_and_apply_add_a_hub_and_a_user_without_restarting_others(fleet: RunningFleet) -> None:
    before = {h["name"]: h["pids"] for h in fleet.status()["hubs"]}
    original = fleet.file.read_text()
    changed = original.replace("admins: [ada]}", "admins: [ada], allowed_users: [dave]}") + (
        f"  {C}:\n    auth: {{type: shared-password, password: {PASSWORD}-c}}\n    culling: {{enabled: false}}\n"
    )
    fleet.write(changed)
    planned = fleet.cli("plan", str(fleet.file)).stdout
    assert f"+ hub {C}: added" in planned
    assert f"~ hub {A}: changed" in planned and "users added: dave" in planned
    assert B not in planned
    fleet.cli("apply", str(fleet.file))
    after = {h["name"]: h for h in fleet.status()["hubs"]}
    assert after[C]["healthy"] is True
    assert after[B]["pids"] == before[B], "an unaffected hub was restarted"
    assert after[A]["pids"] == before[A], "adding a user must not restart the hub"
    assert run(fleet, A, password("dave"), lambda user: asyncio.sleep(0, user.name)) == "dave"
    assert "No changes" in fleet.cli("plan", str(fleet.file)).stdout

    fleet.write(original)
    fleet.cli("apply", str(fleet.file))
    assert [h["name"] for h in fleet.status()["hubs"]] == [A, B, N]
    assert httpx.get(fleet.hub_url(C) + "hub/api/").status_code == 404


def test_unknown_paths_get_a_clear_404(fleet: RunningFleet) -> None:
    assert httpx.get(fleet.url + "/hubs/no-such-hub/hub/login").status_code == 404
    assert httpx.get(fleet.url + "/nothing-here").status_code == 404


def test_a_path_that_is_not_valid_percent_encoding_gets_400_not_500(fleet: RunningFleet) -> None:
    address = urlsplit(fleet.url)
    for path in ("/hubs/%ff/", "/hubs/%E0%A4%A/hub/login", "/%", f"/hubs/{A}/hub/%c0"):
        connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
        try:
            connection.request("GET", path)  # sent as written (httpx would escape the stray %)
            answer = connection.getresponse()
            assert answer.status == 400, (path, answer.status, answer.read()[:200])
        finally:
            connection.close()
    assert httpx.get(fleet.hub_url(A) + "hub/api/").status_code == 200  # and the front door serves on


def test_secrets_never_reach_the_logs(fleet: RunningFleet) -> None:
    secrets = {PASSWORD, f"{PASSWORD}-b"}
    for hub in (A, B):
        secrets |= {p.read_text().strip() for p in (fleet.state_dir / "hubs" / hub / "secrets").iterdir()}
    secrets.add((fleet.state_dir / "frontdoor" / "proxy_token").read_text().strip())
    logs = [p for p in fleet.state_dir.rglob("*") if p.is_file() and p.suffix in (".log", ".out", ".jsonl")]
    assert len(logs) >= 7
    for log in logs:
        text = log.read_text(errors="replace")
        leaked = [s[:4] + "…" for s in secrets if s in text]
        assert not leaked, f"{log} contains secrets {leaked}"
