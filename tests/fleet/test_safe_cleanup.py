"""Safe cleanup: a pid file is trusted only if it names the very process that was started (pid, start time, boot),
and fleets are apart on one machine — two state directories with hubs of the same name share no cgroup, and one's
`down` leaves the other's processes alone."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from hubfleet.common.state import fleet_cgroup
from hubfleet.fleet.processes import Cleanup, kill_pid_file
from hubfleet.health.client import HubUser, PasswordLogin
from hubfleet.system import cgroups, pidfiles
from tests.helpers import (
    RunningFleet,
    hubfleet,
    processes_mentioning,
    processes_of_hub_users,
    running_fleet,
    unique_hub,
    wait_until,
)


@pytest.fixture
def bystander() -> Iterator[subprocess.Popen]:
    """A live process hubfleet did not start (in a session of its own, as the fleet's processes are)."""
    process = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        yield process
    finally:
        process.kill()
        process.wait()


def _alive(process: subprocess.Popen) -> bool:
    return process.poll() is None


def test_a_record_names_one_process(bystander: subprocess.Popen, tmp_path: Path) -> None:
    pid_file = tmp_path / "x.pid"
    assert pidfiles.write(pid_file, bystander.pid)
    record = pidfiles.running(pid_file)
    assert record is not None and record.pid == bystander.pid and record.boot == pidfiles.boot_id()
    assert pid_file.read_text().split()[1] == str(pidfiles.start_ticks(bystander.pid))
    # The same pid with another start time, or from another boot, is somebody else.
    assert not pidfiles.ProcessRecord(bystander.pid, record.start + 1, record.boot).alive()
    assert not pidfiles.ProcessRecord(bystander.pid, record.start, "another-boot").alive()
    pid_file.write_text(f"{bystander.pid}\n")  # a bare pid proves nothing
    assert pidfiles.read(pid_file) is None and pidfiles.stale(pid_file)


@pytest.mark.parametrize(
    "content",
    [
        "{pid}\n",  # the old format: a bare pid
        "{pid} {wrong_start} {boot}\n",  # the pid was reused: another start time
        "{pid} {start} 00000000-0000-0000-0000-000000000000\n",  # written before a reboot
    ],
    ids=["bare-pid", "reused-pid", "other-boot"],
)
def test_a_stale_pid_file_never_signals_its_pid(bystander: subprocess.Popen, tmp_path: Path, content: str) -> None:
    start = pidfiles.start_ticks(bystander.pid)
    assert start is not None
    pid_file = tmp_path / "hub.pid"
    pid_file.write_text(content.format(pid=bystander.pid, start=start, wrong_start=start - 7, boot=pidfiles.boot_id()))
    assert kill_pid_file(pid_file, timeout=1) is Cleanup.STALE
    assert _alive(bystander) and not pid_file.exists()


def test_a_recorded_process_is_stopped(bystander: subprocess.Popen, tmp_path: Path) -> None:
    pid_file = tmp_path / "hub.pid"
    pidfiles.write(pid_file, bystander.pid)
    assert kill_pid_file(pid_file, timeout=5) is Cleanup.STOPPED
    assert bystander.wait(5) == -signal.SIGTERM and not pid_file.exists()
    assert kill_pid_file(pid_file) is Cleanup.ABSENT


def test_down_with_stale_pid_files_signals_nothing(bystander: subprocess.Popen, tmp_path: Path) -> None:
    """What a dead supervisor and a reboot leave: pid files whose numbers now belong to another process."""
    state = tmp_path / "state"
    hub = state / "hubs" / unique_hub("sv")
    (state / "frontdoor").mkdir(parents=True)
    hub.mkdir(parents=True)
    start = pidfiles.start_ticks(bystander.pid)
    (state / "supervisor.pid").write_text(f"{bystander.pid} {start} 00000000-0000-0000-0000-000000000000\n")
    (hub / "hub.pid").write_text(f"{bystander.pid} {start - 1} {pidfiles.boot_id()}\n")
    (state / "frontdoor" / "proxy.pid").write_text(f"{bystander.pid}\n")

    result = hubfleet("down", "--state-dir", str(state))
    assert _alive(bystander)
    assert result.stdout.count("Removed the stale pid file") == 3, result.stdout
    assert f"pid {bystander.pid} is no longer the process it recorded" in result.stdout
    assert "No fleet is running" in result.stdout
    assert not any(path.exists() for path in (state / "supervisor.pid", hub / "hub.pid"))
    assert not (state / "frontdoor" / "proxy.pid").exists()
    assert hubfleet("status", "--state-dir", str(state), check=False).returncode == 3


# --------------------------------------------------------------------------------------------- two fleets

SHARED = unique_hub("sv")
"""The hub name both fleets use."""
PASSWORD = "two-fleets-pw"


def _hubs(user: str) -> str:
    return f"{SHARED}:\n  auth: {{type: shared-password, password: {PASSWORD}, allowed_users: [{user}]}}\n"


def _start_server(fleet: RunningFleet, user: str) -> None:
    async def scenario() -> None:
        async with httpx.AsyncClient(timeout=120) as client:
            login = await HubUser.login(client, fleet.hub_url(SHARED), PasswordLogin(user, PASSWORD))
            await login.start_server()

    asyncio.run(scenario())


def _stop_server(fleet: RunningFleet, user: str) -> None:
    token = {"Authorization": f"token {fleet.service_token(SHARED)}"}
    api = f"{fleet.hub_url(SHARED)}hub/api"
    httpx.delete(f"{api}/users/{user}/server", headers=token, timeout=60)
    wait_until(
        lambda: not httpx.get(f"{api}/users/{user}", headers=token, timeout=10).json()["servers"],
        60,
        f"{user}'s server stopped",
    )


def test_two_fleets_with_a_hub_of_the_same_name_stay_apart(tmp_path: Path) -> None:
    with (
        running_fleet(tmp_path / "a", _hubs("alice"), [SHARED], PASSWORD) as first,
        running_fleet(tmp_path / "b", _hubs("bob"), [SHARED], PASSWORD) as second,
    ):
        driver = cgroups.detect()
        assert driver is not None
        assert first.cgroup(SHARED) != second.cgroup(SHARED)
        assert first.cgroup(SHARED) == f"{fleet_cgroup('testfleet', first.state_dir)}/{SHARED}"
        _start_server(first, "alice")
        _start_server(second, "bob")
        alice = driver.open(f"{first.cgroup(SHARED)}/{SHARED}_alice")
        bob = driver.open(f"{second.cgroup(SHARED)}/{SHARED}_bob")
        assert alice is not None and alice.pids() and bob is not None and bob.pids()
        assert set(alice.pids()).isdisjoint(bob.pids())
        assert driver.open(f"{first.cgroup(SHARED)}/{SHARED}_bob") is None

        # The second fleet's supervisor dies without cleaning up; its `down` stops what it left — only that.
        first_pids = {pid: pidfiles.running(path) for pid, path in _pid_files(first).items()}
        assert all(first_pids.values())
        supervisor = pidfiles.running(second.state_dir / "supervisor.pid")
        assert supervisor is not None
        os.kill(supervisor.pid, signal.SIGKILL)
        wait_until(lambda: not supervisor.alive(), 30, "the second supervisor gone")
        result = second.cli("down")
        assert "orphaned process" in result.stdout, result.stdout
        wait_until(lambda: not processes_mentioning(str(second.state_dir)), 30, "the second fleet's processes gone")
        assert driver.open(second.cgroup(SHARED)) is None
        assert driver.open(second.cgroup(SHARED).rsplit("/", 1)[0]) is None

        # The first fleet: its hub, proxies and alice's server run on, in its own cgroup.
        assert all(record.alive() for record in first_pids.values() if record is not None)
        assert alice.pids()
        assert first.status()["hubs"][0]["healthy"]
        assert processes_of_hub_users(SHARED), "alice's server should still run"
        _stop_server(first, "alice")  # so that the second fleet's exit finds no process of the hub's users


def _pid_files(fleet: RunningFleet) -> dict[str, Path]:
    return {
        "supervisor": fleet.state_dir / "supervisor.pid",
        "proxy": fleet.state_dir / "frontdoor" / "proxy.pid",
        "hub": fleet.state_dir / "hubs" / SHARED / "hub.pid",
    }
