"""Single-user servers forked from a warm fork server of their environment, on a real fleet: each runs as its user
exactly as a plain start would (uid, gid, groups, cgroup, no new privileges, environment, home, umask), cannot
reach the fork server or another user's server, survives a hub restart, stops normally, and a fork server killed in
the middle of a storm of starts loses no start."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from hubfleet.health.client import HubUser, PasswordLogin
from tests.helpers import RunningFleet, running_fleet, unique_hub, wait_until

F = unique_hub("fk")
PASSWORD = "forked-test-password"
HUBS = f"""\
{F}:
  auth: {{type: shared-password, password: {PASSWORD}, allowed_users: [ann, bob, cy, dee, eve, fay]}}
  groups:
    readers: [ann]
  profiles:
    - {{name: small, cpu: 0.5, memory: 400M, default: true}}
"""


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningFleet]:
    with running_fleet(tmp_path_factory.mktemp("forked"), HUBS, [F], PASSWORD) as running:
        yield running


def run_code(fleet: RunningFleet, user: str, code: str) -> str:
    return fleet.run_code(F, PasswordLogin(user, PASSWORD), code)


def fork_servers(fleet: RunningFleet) -> list[int]:
    """Pids of the hub's server fork servers (root processes running forkserver.py with a socket of the hub's)."""
    folder = str(fleet.state_dir / "hubs" / F / "servers").encode()
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if os.stat(f"/proc/{pid}").st_uid == 0 and b"forkserver.py" in cmdline and folder in cmdline:
                found.append(int(pid))
        except OSError:
            continue
    return found


def _parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def test_a_forked_server_is_its_user_as_a_plain_start_makes_it(fleet: RunningFleet) -> None:
    code = (
        "import os, json, pathlib\n"
        "status = dict(l.split(':', 1) for l in open('/proc/self/status').read().splitlines() if ':' in l)\n"
        "mask = os.umask(0); os.umask(mask)\n"
        "print(json.dumps({'uid': os.getuid(), 'euid': os.geteuid(), 'gid': os.getgid(),"
        " 'groups': sorted(os.getgroups()), 'nnp': status['NoNewPrivs'].strip(),"
        " 'cgroup': open('/proc/self/cgroup').read(),"
        " 'home': os.environ['HOME'], 'user': os.environ['USER'], 'cwd': os.getcwd(), 'umask': mask,"
        " 'ppid_is_root': os.stat(f'/proc/{os.getppid()}').st_uid == 0}))"
    )
    seen = json.loads(run_code(fleet, "ann", code))
    account = pwd.getpwnam(f"{F}_ann")
    assert (seen["uid"], seen["euid"], seen["gid"]) == (account.pw_uid, account.pw_uid, account.pw_gid)
    assert sorted(seen["groups"]) == sorted(os.getgrouplist(account.pw_name, account.pw_gid))
    assert seen["nnp"] == "1"
    assert f"/{fleet.cgroup(F)}/{F}_ann" in seen["cgroup"]
    assert seen["home"] == account.pw_dir == seen["cwd"] and seen["user"] == account.pw_name
    assert seen["umask"] == 0o022
    log = (fleet.state_dir / "hubs" / F / "hub.log").read_text()
    assert "Forked ann's server" in log


def test_a_server_cannot_reach_the_fork_server_nor_another_users_server(fleet: RunningFleet) -> None:
    run_code(fleet, "bob", "print(1)")
    (server,) = fork_servers(fleet)
    socket_folder = fleet.state_dir / "hubs" / F / "servers"
    bob_server = next(
        int(pid)
        for pid in filter(str.isdigit, os.listdir("/proc"))
        if os.stat(f"/proc/{pid}").st_uid == pwd.getpwnam(f"{F}_bob").pw_uid and _parent(int(pid)) == server
    )
    code = f"""
import os, signal, socket
results = []
for pid in ({server}, {bob_server}):
    try:
        os.kill(pid, signal.SIGTERM); results.append('signalled')
    except PermissionError:
        results.append('denied')
    try:
        open(f'/proc/{{pid}}/mem', 'rb').read(1); results.append('read')
    except OSError:
        results.append('denied')
try:
    os.listdir({str(socket_folder)!r}); results.append('listed')
except PermissionError:
    results.append('denied')
print(' '.join(results))
"""
    assert run_code(fleet, "ann", code) == "denied denied denied denied denied"


def test_a_forked_server_survives_a_hub_restart_and_stops_normally(fleet: RunningFleet) -> None:
    async def start(user: str) -> None:
        async with httpx.AsyncClient(timeout=120) as client:
            hub_user = await HubUser.login(client, fleet.hub_url(F), PasswordLogin(user, PASSWORD))
            await hub_user.start_server()

    hub_pid = int((fleet.state_dir / "hubs" / F / "hub.pid").read_text().split()[0])
    asyncio.run(start("cy"))
    before = {h["name"]: h for h in fleet.status()["hubs"]}[F]
    os.kill(hub_pid, signal.SIGKILL)
    wait_until(
        lambda: {h["name"]: h for h in fleet.status()["hubs"]}[F]["pids"].get("hub") not in (None, hub_pid),
        30,
        "the hub restarted",
    )
    assert before["running_servers"] >= 1
    assert run_code(fleet, "cy", "print('still here')") == "still here"
    service = {"Authorization": f"token {fleet.service_token(F)}"}
    httpx.delete(f"{fleet.hub_url(F)}hub/api/users/cy/server", headers=service, timeout=60)
    uid = pwd.getpwnam(f"{F}_cy").pw_uid

    def gone() -> bool:
        return not any(os.stat(f"/proc/{p}").st_uid == uid for p in filter(str.isdigit, os.listdir("/proc")))

    wait_until(gone, 30, "cy's server gone")


def test_killing_the_fork_server_in_a_storm_loses_no_start(fleet: RunningFleet) -> None:
    run_code(fleet, "ann", "print(1)")  # the fork server is up (ann's server runs)

    async def storm() -> list[str]:
        async def one(user: str) -> str:
            async with httpx.AsyncClient(timeout=180) as client:
                hub_user = await HubUser.login(client, fleet.hub_url(F), PasswordLogin(user, PASSWORD))
                await hub_user.start_server()
                kernel = await hub_user.start_kernel()
                try:
                    return (await hub_user.execute(kernel, "print(6*7)")).strip()
                finally:
                    await hub_user.stop_kernel(kernel)

        async def kill_soon() -> None:
            await asyncio.sleep(0.3)
            for pid in fork_servers(fleet):
                os.kill(pid, signal.SIGKILL)

        results = await asyncio.gather(*(one(u) for u in ("eve", "fay", "dee")), kill_soon())
        return [r for r in results if r is not None]

    assert asyncio.run(storm()) == ["42", "42", "42"]
