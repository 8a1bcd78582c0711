"""A user downloads their home as a zip from the hub: real hubs, real Unix users, a quota image, real servers.

What must hold: the zip holds the user's own files, byte for byte, and nothing of anyone else's (not through a
link, not through another hub); it is streamed (no Content-Length: sent as it is written); a home too large for one
download gets a clear 413 before anything is sent; tokens of another hub, and tokens that may not use the user's
server, get nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import stat
import textwrap
import zipfile
from pathlib import Path

import httpx
import pytest

from hubfleet.health.client import HubUser, PasswordLogin
from hubfleet.hub.home_export import EXPORT_PATH
from hubfleet.system import accounts, homes
from tests.helpers import HOME_ROOT, RunningFleet, running_fleet, unique_hub, wait_until

pytestmark = pytest.mark.needs("root", "xfs")

PASSWORD = "export-test-pw"
HUB_A, HUB_B = unique_hub("nle"), unique_hub("nlf")

WRITE_A = """
import os, pathlib
home = pathlib.Path.home()
(home / "thesis.txt").write_text("chapter one")
(home / "data").mkdir(exist_ok=True)
(home / "data" / "run.bin").write_bytes(bytes(range(256)) * 4096)
(home / "empty").mkdir(exist_ok=True)
for name, target in [("to-bob", "{bob_home}"), ("shadow", "/etc/shadow")]:
    if not os.path.islink(home / name):
        os.symlink(target, home / name)
print("ok")
"""


def hubs_yaml() -> str:
    return textwrap.dedent(
        f"""\
        {HUB_A}:
          auth: {{type: shared-password, password: {PASSWORD}, allowed_users: [alice, bob]}}
          culling: {{enabled: false}}
          storage: {{home_quota: 300M}}
        {HUB_B}:
          auth: {{type: shared-password, password: {PASSWORD}, allowed_users: [alice]}}
          culling: {{enabled: false}}
        """
    )


async def download(fleet: RunningFleet, hub: str, user: str) -> httpx.Response:
    """`user` logs in to `hub` in a browser-like client and downloads their home."""
    async with httpx.AsyncClient(timeout=120) as client:
        await HubUser.login(client, fleet.hub_url(hub), PasswordLogin(user, PASSWORD))
        home_page = await client.get(f"{fleet.hub_url(hub)}hub/home")
        assert f'href="/hubs/{hub}/hub{EXPORT_PATH}"' in home_page.text  # the hub's home page links it
        return await client.get(f"{fleet.hub_url(hub)}hub{EXPORT_PATH}")


def get(fleet: RunningFleet, hub: str, user: str) -> httpx.Response:
    return asyncio.run(download(fleet, hub, user))


def token(fleet: RunningFleet, hub: str, user: str, scopes: list[str] | None = None) -> str:
    return fleet.user_token(hub, user, "export test", expires_in=600, **({"scopes": scopes} if scopes else {}))


def with_token(fleet: RunningFleet, hub: str, secret: str) -> httpx.Response:
    return httpx.get(f"{fleet.hub_url(hub)}hub{EXPORT_PATH}", headers={"Authorization": f"token {secret}"}, timeout=120)


def members(response: httpx.Response) -> dict[str, zipfile.ZipInfo]:
    assert response.status_code == 200, response.text[:500]
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    assert archive.testzip() is None
    return {info.filename: info for info in archive.infolist()}


def content(response: httpx.Response, name: str) -> bytes:
    return zipfile.ZipFile(io.BytesIO(response.content)).read(name)


def test_home_export(tmp_path: Path) -> None:
    with running_fleet(tmp_path, hubs_yaml(), [HUB_A, HUB_B], PASSWORD) as fleet:
        bob_home = HOME_ROOT / accounts.unix_username(HUB_A, "bob")
        alice_home = HOME_ROOT / accounts.unix_username(HUB_A, "alice")
        alice, bob = PasswordLogin("alice", PASSWORD), PasswordLogin("bob", PASSWORD)
        assert fleet.run_code(HUB_A, bob, "open('bob-secret.txt', 'w').write('mine'); print('ok')") == "ok"
        assert fleet.run_code(HUB_A, alice, WRITE_A.format(bob_home=bob_home)) == "ok"
        assert fleet.run_code(HUB_B, alice, "open('hub-b-only.txt', 'w').write('b'); print('ok')") == "ok"

        response = get(fleet, HUB_A, "alice")
        found = members(response)
        assert "content-length" not in response.headers  # streamed as it is written
        assert response.headers["content-type"] == "application/zip"
        assert "attachment" in response.headers["content-disposition"]
        assert content(response, "alice/thesis.txt") == b"chapter one"
        run = (alice_home / "data" / "run.bin").read_bytes()
        assert hashlib.sha256(content(response, "alice/data/run.bin")).digest() == hashlib.sha256(run).digest()
        assert "alice/empty/" in found
        # Links are kept as links: what they point to is not read, inside the home or out of it.
        for link, target in [("alice/to-bob", str(bob_home)), ("alice/shadow", "/etc/shadow")]:
            assert stat.S_ISLNK(found[link].external_attr >> 16)
            assert content(response, link) == target.encode()
        names = "\n".join(found)
        assert "bob-secret" not in names and "hub-b-only" not in names

        # Bob gets his own home; alice on hub B gets hub B's home only.
        bob_files = members(get(fleet, HUB_A, "bob"))
        assert "bob/bob-secret.txt" in bob_files and not any("thesis" in name for name in bob_files)
        on_b = get(fleet, HUB_B, "alice")
        assert "alice/hub-b-only.txt" in members(on_b) and "alice/thesis.txt" not in members(on_b)

        # Hub B's token is nothing on hub A; a token that may not use Alice's server may not read her files.
        refused = with_token(fleet, HUB_A, token(fleet, HUB_B, "alice"))
        assert refused.status_code in (302, 403) and refused.headers.get("content-type") != "application/zip"
        narrow = with_token(fleet, HUB_A, token(fleet, HUB_A, "alice", ["read:users:name!user=alice"]))
        assert narrow.status_code == 403
        assert members(with_token(fleet, HUB_A, token(fleet, HUB_A, "alice")))["alice/thesis.txt"]

        # Too much for one download: a clear 413 before anything is sent (a sparse file costs no quota).
        sparse = alice_home / "sparse.img"
        with open(sparse, "wb") as out:
            out.truncate(11 * 1024**3)
        try:
            too_large = get(fleet, HUB_A, "alice")
            assert too_large.status_code == 413, too_large.text[:300]
            assert "one download may hold at most" in too_large.text
        finally:
            sparse.unlink()

        # A home whose image is not mounted (its server stopped, the machine rebooted) is mounted to be read.
        api = f"{fleet.hub_url(HUB_A)}hub/api/users/alice"
        headers = {"Authorization": f"token {fleet.service_token(HUB_A)}"}
        httpx.delete(f"{api}/server", headers=headers, timeout=60).raise_for_status()
        wait_until(lambda: not httpx.get(api, headers=headers, timeout=30).json()["servers"], 60, "alice's server gone")
        assert homes.unmount_home(alice_home)
        assert content(get(fleet, HUB_A, "alice"), "alice/thesis.txt") == b"chapter one"
