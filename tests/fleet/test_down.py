"""`up` and `down` from one directory, without repeating arguments; `down` leaves nothing running."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import httpx

from hubfleet.fleet.ports import port_is_free
from hubfleet.health.client import HubUser, PasswordLogin
from hubfleet.system import accounts, cgroups, pidfiles
from tests.helpers import (
    fleet_yaml,
    hub_cgroup,
    hubfleet,
    port_block,
    processes_mentioning,
    processes_of_hub_users,
    unique_hub,
)
from tests.requirements import need


def test_down_from_the_same_directory_leaves_nothing_running(tmp_path: Path) -> None:
    need("root", "cgroups", "user_env", "proxy")
    hub = unique_hub("td")
    block = port_block()
    port = block[1] + 1
    shared = tmp_path / "shared"
    hubs = f"{hub}:\n  auth: {{type: shared-password, password: down-test-pw, allowed_users: [erin]}}\n"
    (tmp_path / "fleet.yaml").write_text(fleet_yaml("downtest", port, block, shared, hubs))
    state = tmp_path / ".hubfleet"
    state.mkdir()  # as root the state would be /var/lib/hubfleet: an existing ./.hubfleet keeps it here
    try:
        hubfleet("up", "fleet.yaml", "--detach", cwd=tmp_path)
        assert (state / "supervisor.sock").exists()
        status = json.loads(hubfleet("status", "--json", cwd=tmp_path).stdout)
        assert status["running"] and status["hubs"][0]["healthy"]

        async def start_server() -> None:
            async with httpx.AsyncClient(timeout=120) as client:
                user = await HubUser.login(
                    client, f"http://127.0.0.1:{port}/hubs/{hub}/", PasswordLogin("erin", "down-test-pw")
                )
                await user.start_server()

        asyncio.run(start_server())
        assert processes_of_hub_users(hub), "erin's server should be running"
        supervisor = pidfiles.running(state / "supervisor.pid")
        assert supervisor is not None

        result = hubfleet("down", cwd=tmp_path)
        assert "Fleet stopped" in result.stdout
        assert not supervisor.alive()  # exited (its parent may take a moment to reap it)
        assert processes_mentioning(str(state)) == []
        assert processes_of_hub_users(hub) == []
        driver = cgroups.detect()
        group = hub_cgroup(state, hub)
        assert driver is None or driver.open(group) is None
        assert driver is None or driver.open(group.rsplit("/", 1)[0]) is None  # the fleet's own, too
        assert port_is_free(port)
        assert hubfleet("status", cwd=tmp_path, check=False).returncode == 3
        assert "No fleet is running" in hubfleet("down", cwd=tmp_path).stdout
    finally:
        hubfleet("down", cwd=tmp_path, check=False)
        accounts.remove_hub_accounts(hub)
        shutil.rmtree(shared, ignore_errors=True)
