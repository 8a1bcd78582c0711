"""Home quotas on a real fleet: real hubs, Unix users, XFS images and loop mounts, users' servers and kernels."""

from __future__ import annotations

import asyncio
import json
import re
import textwrap
from pathlib import Path

import httpx
import pytest

from hubfleet.health.client import HubUser, PasswordLogin
from hubfleet.system import accounts
from tests.helpers import HOME_ROOT, running_fleet, unique_hub

pytestmark = pytest.mark.needs("root", "xfs")

MIB = 1024**2
PASSWORD = "quota-test-pw"

HOME_SIZE = """
import os, subprocess
home = os.path.expanduser("~")
print(subprocess.run(["df", "-B1", "--output=size", home], capture_output=True, text=True).stdout.split()[-1])
"""

FILL = """
import errno, os
try:
    with open(os.path.expanduser("~/big"), "wb") as out:
        while True:
            out.write(b"x" * (1 << 20))
except OSError as exc:
    print(errno.errorcode[exc.errno])
"""


def hubs_yaml(hub: str, quota: str) -> str:
    return textwrap.dedent(
        f"""\
        {hub}:
          auth: {{type: shared-password, password: {PASSWORD}, allowed_users: [alice, bob]}}
          culling: {{enabled: false}}
          storage: {{home_quota: {quota}}}
        """
    )


async def save_too_large(fleet_url: str, hub: str) -> httpx.Response:
    """Save a notebook-sized file through the contents API (what JupyterLab does) into a full home."""
    async with httpx.AsyncClient(timeout=60) as client:
        user = await HubUser.login(client, f"{fleet_url}/hubs/{hub}/", PasswordLogin("alice", PASSWORD))
        return await client.put(
            user.url(f"{user.server_path}api/contents/notes.txt"),
            json={"type": "file", "format": "text", "content": "y" * (4 * MIB)},
        )


async def console_page(fleet_url: str, hub: str, path: str) -> httpx.Response:
    """`path` of the console, as Alice (an operator) sees it after logging in with the hub."""
    async with httpx.AsyncClient(timeout=60) as client:
        await HubUser.login(client, f"{fleet_url}/hubs/{hub}/", PasswordLogin("alice", PASSWORD))
        await client.get(f"{fleet_url}/console/login/{hub}", params={"next": path}, follow_redirects=True)
        return await client.get(f"{fleet_url}{path}")


def server_started(fleet_url: str, hub: str, token: str) -> str:
    response = httpx.get(
        f"{fleet_url}/hubs/{hub}/hub/api/users/alice", headers={"Authorization": f"token {token}"}, timeout=30
    )
    return response.json()["servers"][""]["started"]


def test_home_quota_is_enforced_shown_grown_by_apply_and_never_lowered_below_use(tmp_path: Path) -> None:
    hub = unique_hub("nlq")
    # Alice has a home from before the quota: it moves into its image at her first start.
    alice = accounts.ensure_user(accounts.unix_username(hub, "alice"), HOME_ROOT / accounts.unix_username(hub, "alice"))
    (alice.home / "thesis.txt").write_text("chapter one")
    operators = f'console: {{operators: ["{hub}:alice"]}}'
    with running_fleet(tmp_path, hubs_yaml(hub, "300M"), [hub], PASSWORD, top=operators) as fleet:
        alice_login, bob_login = PasswordLogin("alice", PASSWORD), PasswordLogin("bob", PASSWORD)
        size = int(fleet.run_code(hub, alice_login, HOME_SIZE))
        assert abs(size - 300 * MIB) <= 2 * MIB, size
        assert fleet.run_code(hub, alice_login, "print(open('thesis.txt').read())") == "chapter one"
        # A write past the quota fails inside the kernel; Bob's home is not touched.
        assert fleet.run_code(hub, alice_login, FILL) == "ENOSPC"
        assert fleet.run_code(hub, bob_login, "open('data', 'wb').write(b'z' * (50 << 20)); print('ok')") == "ok"
        # JupyterLab's save says the home is full.
        response = asyncio.run(save_too_large(fleet.url, hub))
        assert response.status_code == 507, response.text
        assert "Your home folder is full" in response.json()["message"]

        usage = json.loads(fleet.cli("usage", "--storage", "--json").stdout)
        by_user = {row["user"]: row for row in usage}
        assert by_user["alice"]["used"] > 290 * MIB and by_user["alice"]["quota"] == 300 * MIB
        assert by_user["bob"]["mounted"] and 50 * MIB < by_user["bob"]["used"] < 100 * MIB
        # The console's hub page shows the same, fullest first.
        page = asyncio.run(console_page(fleet.url, hub, f"/console/hubs/{hub}"))
        assert page.status_code == 200, page.text
        shown = re.findall(r'<tr data-user="(\w+)" data-used="(\d+)" data-size="(\d+)"', page.text)
        assert [user for user, _, _ in shown] == ["alice", "bob"]
        assert int(shown[0][1]) > 290 * MIB and abs(int(shown[0][2]) - 300 * MIB) <= 2 * MIB

        # Lowering below Alice's use is refused, and nothing changes.
        fleet.write(fleet.file.read_text().replace("home_quota: 300M", "home_quota: 256M"))
        refused = fleet.cli("apply", str(fleet.file), check=False)
        assert refused.returncode == 1
        assert "the home of alice holds" in refused.stderr and "nothing was changed" in refused.stderr

        # Raising grows Alice's home while her server keeps running; her files stay.
        token = fleet.service_token(hub)
        started = server_started(fleet.url, hub, token)
        fleet.write(fleet.file.read_text().replace("home_quota: 256M", "home_quota: 600M"))
        fleet.cli("apply", str(fleet.file))
        assert server_started(fleet.url, hub, token) == started
        size = int(fleet.run_code(hub, alice_login, HOME_SIZE))
        assert abs(size - 600 * MIB) <= 4 * MIB, size
        assert fleet.run_code(hub, alice_login, "print(open('thesis.txt').read())") == "chapter one"
        assert fleet.run_code(hub, alice_login, "open('more', 'wb').write(b'm' * (100 << 20)); print('ok')") == "ok"
