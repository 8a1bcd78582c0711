"""Backups and hub archives of a real fleet: real hubs, Unix users, quota images, the fleet database."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import textwrap
from pathlib import Path

import httpx
import pytest

from hubfleet.health.client import HubUser, PasswordLogin
from hubfleet.system import accounts
from tests.helpers import HOME_ROOT, RunningFleet, hubfleet, running_fleet, unique_hub, wipe_hub

pytestmark = pytest.mark.needs("root", "xfs")

PASSWORD = "backup-test-pw"
WRITE = """
import os
open(os.path.expanduser("~/thesis.txt"), "w").write("chapter " * 1000)
open(os.path.expanduser("~/shared/data/results.csv"), "w").write("a,b\\n1,2\\n")
print("ok")
"""


def hubs_yaml(hub: str) -> str:
    return textwrap.dedent(
        f"""\
        {hub}:
          auth: {{type: shared-password, password: {PASSWORD}, allowed_users: [alice, bob]}}
          culling: {{enabled: false}}
          storage:
            home_quota: 300M
            shared: [{{name: data, access: {{everyone: write}}}}]
        """
    )


def sums(root: Path) -> dict[str, str]:
    """Checksums of the files below `root` (kernels' own IPython history aside: SQLite, copied as a database)."""
    found = {}
    for folder, _, files in os.walk(root):
        if ".ipython" in folder:
            continue
        for name in files:
            path = Path(folder, name)
            found[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


async def login_cookies(fleet: RunningFleet, hub: str) -> httpx.Cookies:
    async with httpx.AsyncClient(timeout=60) as client:
        await HubUser.login(client, fleet.hub_url(hub), PasswordLogin("alice", PASSWORD))
        return client.cookies


def logged_in_as(fleet: RunningFleet, hub: str, cookies: httpx.Cookies) -> str | None:
    response = httpx.get(f"{fleet.hub_url(hub)}hub/api/user", cookies=cookies, timeout=30)
    return response.json().get("name") if response.status_code == 200 else None


def test_backup_during_activity_then_restore_on_a_fresh_state_directory(tmp_path: Path) -> None:
    hub = unique_hub("nlb")
    with running_fleet(tmp_path, hubs_yaml(hub), [hub], PASSWORD) as fleet:
        alice = PasswordLogin("alice", PASSWORD)
        assert fleet.run_code(hub, alice, WRITE) == "ok"
        cookies = asyncio.run(login_cookies(fleet, hub))
        backups = tmp_path / "backups"
        first = fleet.cli("backup", "--to", str(backups))
        assert "snapshot" in first.stdout
        # Alice keeps working while the second backup runs: it is incremental, and both stay complete.
        second = fleet.cli("backup", "--to", str(backups))
        assert "unchanged, linked" in second.stdout and " 0 unchanged" not in second.stdout
        snapshots = sorted((backups / "snapshots").iterdir())
        assert len(snapshots) == 2 and (backups / "latest").resolve() == snapshots[-1]
        home = HOME_ROOT / accounts.unix_username(hub, "alice")
        before_home, before_shared = sums(home), sums(fleet.shared_root / hub / "data")
        usage_before = fleet.cli("usage", "--json").stdout
        fleet.cli("down")
        wipe_hub(fleet, hub)

        restored = tmp_path / "restored-state"
        hubfleet("restore", str(backups), "--state-dir", str(restored))
        assert json.loads(hubfleet("usage", "--json", "--state-dir", str(restored)).stdout) == json.loads(usage_before)
        assert sums(home) == before_home and os.path.ismount(home)
        assert sums(fleet.shared_root / hub / "data") == before_shared
        try:
            hubfleet("up", str(fleet.file), "--state-dir", str(restored), "--detach")
            # The same session cookie still logs Alice in (cookie secret and sessions came back).
            assert logged_in_as(fleet, hub, cookies) == "alice"
            assert fleet.run_code(hub, alice, "print(open('thesis.txt').read()[:8])") == "chapter"
        finally:
            hubfleet("down", "--state-dir", str(restored), check=False)


def test_a_damaged_snapshot_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    hub = unique_hub("nlb")
    with running_fleet(tmp_path, hubs_yaml(hub), [hub], PASSWORD) as fleet:
        assert fleet.run_code(hub, PasswordLogin("alice", PASSWORD), WRITE) == "ok"
        backups = tmp_path / "backups"
        fleet.cli("backup", "--to", str(backups))
        snapshot = (backups / "latest").resolve()
        victim = next(p for p in (snapshot / "homes").rglob("thesis.txt"))
        victim.write_text("tampered")
        result = hubfleet("restore", str(backups), "--state-dir", str(tmp_path / "new"), check=False)
        assert result.returncode == 1 and "does not match its checksum" in result.stderr
        assert not (tmp_path / "new").exists()


def test_archive_decommission_restore_gives_the_same_hub_back(tmp_path: Path) -> None:
    hub, other = unique_hub("nla"), unique_hub("nlo")
    hubs = hubs_yaml(hub) + hubs_yaml(other)
    with running_fleet(tmp_path, hubs, [hub, other], PASSWORD) as fleet:
        assert fleet.run_code(hub, PasswordLogin("alice", PASSWORD), WRITE) == "ok"
        home = HOME_ROOT / accounts.unix_username(hub, "alice")
        before = sums(home)
        archives = tmp_path / "archives"
        refused = fleet.cli("hub", "decommission", hub, check=False)
        assert refused.returncode == 1 and "is running" in refused.stderr
        fleet.cli("hub", "archive", hub, "--to", str(archives))
        (archive,) = archives.glob("*.tar.gz")
        assert hub not in [h["name"] for h in fleet.status()["hubs"]]  # stopped; the other hub runs on
        assert other in [h["name"] for h in fleet.status()["hubs"]]
        fleet.cli("hub", "decommission", hub)
        assert not home.exists() and not (fleet.state_dir / "hubs" / hub).exists()
        assert not any(p.name.startswith(f"{hub}_") for p in HOME_ROOT.iterdir())
        fleet.cli("hub", "restore", str(archive))
        assert sums(home) == before
        assert os.path.ismount(home)  # back in its quota image, although the running fleet no longer has the hub
        assert (fleet.state_dir / "hubs" / hub / "jupyterhub.sqlite").exists()
        # A second archive of the restored hub holds the same files, checksum for checksum.
        again = tmp_path / "again"
        fleet.cli("hub", "archive", hub, "--to", str(again))
        (second,) = again.glob("*.tar.gz")
        assert archive_sums(archive) == archive_sums(second)


def archive_sums(archive: Path) -> dict[str, str]:
    """path → sha256 of every file of a hub archive's manifest (homes, shared folders, state)."""
    import tarfile

    with tarfile.open(archive) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("/MANIFEST.json"))
        manifest = json.load(tar.extractfile(member))
    return {
        e["path"]: e["sha256"]
        for e in manifest["entries"]
        if e["kind"] == "f" and e["path"].startswith(("homes/", "shared/", "state/jupyterhub"))
    }
