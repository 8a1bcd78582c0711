"""Home quotas (hubfleet.system.homes) with real Unix users, real XFS images and real loop mounts."""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hubfleet.system import accounts, homes
from tests.helpers import wait_until

pytestmark = pytest.mark.needs("root", "xfs")

MIB = 1024**2


@pytest.fixture
def home_root() -> Iterator[Path]:
    """A homes' parent users can reach (pytest's own temporary folders are root's only)."""
    root = Path(tempfile.mkdtemp(prefix="nlhomes-"))
    os.chmod(root, 0o755)
    yield root
    for home in root.iterdir():
        if home.name != homes.IMAGES_DIR:
            homes.release_home(home)
            accounts.remove_user(home.name)
    assert str(root) not in Path("/proc/self/mounts").read_text(), "a mount was left behind"
    images = root / homes.IMAGES_DIR
    left = [p.name for p in images.iterdir() if p.name != ".staging"] if images.exists() else []
    left += [p.name for p in (images / ".staging").iterdir()] if (images / ".staging").exists() else []
    assert not left, f"left behind by released homes: {left}"
    shutil.rmtree(root)


def make_user(home_root: Path) -> accounts.Account:
    name = f"nl{secrets.token_hex(3)}_u"
    return accounts.ensure_user(name, home_root / name)


def as_user(account: accounts.Account, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        list(args), user=account.uid, group=account.gid, extra_groups=[], capture_output=True, text=True, check=False
    )


def tree_sums(root: Path) -> dict[str, str]:
    sums = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = Path(folder, name)
            sums[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return sums


def df_size(path: Path, account: accounts.Account) -> int:
    out = as_user(account, "df", "--output=size", "-B1", str(path)).stdout.split()
    return int(out[-1])


def test_a_write_past_the_quota_fails_in_the_kernel_and_others_are_unaffected(home_root: Path) -> None:
    alice, bob = make_user(home_root), make_user(home_root)
    homes.ensure_home(alice, 300 * MIB)
    homes.ensure_home(bob, 300 * MIB)
    # `df ~` as the user shows the quota as the home's size.
    assert abs(df_size(alice.home, alice) - 300 * MIB) <= 2 * MIB
    full = as_user(alice, "dd", "if=/dev/zero", f"of={alice.home}/big", "bs=1M", "count=400")
    assert full.returncode != 0 and "No space left on device" in full.stderr
    assert (alice.home / "big").stat().st_size < 300 * MIB
    # Bob's home and the machine's disk are untouched by Alice's full home.
    fine = as_user(bob, "dd", "if=/dev/zero", f"of={bob.home}/data", "bs=1M", "count=50")
    assert fine.returncode == 0, fine.stderr
    assert homes.home_use(alice.home).fraction > 0.99
    assert homes.home_use(bob.home).used >= 50 * MIB


def test_an_existing_home_moves_in_with_owners_modes_and_links(home_root: Path) -> None:
    user = make_user(home_root)
    (user.home / "notes").mkdir()
    (user.home / "notes" / "thesis.tex").write_text("chapter 1")
    os.chmod(user.home / "notes" / "thesis.tex", 0o640)
    (user.home / "link").symlink_to("/etc/hostname")
    for path in (user.home / "notes", user.home / "notes" / "thesis.tex"):
        os.chown(path, user.uid, user.gid)
    before = tree_sums(user.home)
    use = homes.ensure_home(user, 512 * MIB)
    assert use.mounted and os.path.ismount(user.home)
    assert tree_sums(user.home) == before
    # The loop device reads and writes the image with direct I/O (one copy of the data in memory, not two).
    device = subprocess.run(["findmnt", "-n", "-o", "SOURCE", str(user.home)], capture_output=True, text=True)
    assert Path(f"/sys/block/{Path(device.stdout.strip()).name}/loop/dio").read_text().strip() == "1"
    info = os.stat(user.home / "notes" / "thesis.tex")
    assert (info.st_uid, info.st_mode & 0o777) == (user.uid, 0o640)
    assert os.readlink(user.home / "link") == "/etc/hostname"
    assert (os.stat(user.home).st_uid, os.stat(user.home).st_mode & 0o777) == (user.uid, 0o700)
    assert not (user.home / "lost+found").exists()
    # Idempotent, and again after an unmount (a reboot): the same files come back.
    homes.ensure_home(user, 512 * MIB)
    assert homes.unmount_home(user.home)
    assert not os.path.ismount(user.home)
    homes.ensure_home(user, 512 * MIB)
    assert tree_sums(user.home) == before


def test_raising_a_quota_grows_a_home_in_use_online(home_root: Path) -> None:
    user = make_user(home_root)
    homes.ensure_home(user, 300 * MIB)
    (user.home / "kept").write_bytes(os.urandom(MIB))
    before = tree_sums(user.home)
    # A process of the user keeps a file open in the home, as a running server would.
    holder = subprocess.Popen(
        ["sleep", "60"], cwd=user.home, user=user.uid, group=user.gid, extra_groups=[], stdout=subprocess.DEVNULL
    )
    try:
        use = homes.set_quota(user.home, 1024 * MIB)
        assert use is not None and abs(use.size - 1024 * MIB) <= 6 * MIB
        assert abs(df_size(user.home, user) - 1024 * MIB) <= 6 * MIB
        wrote = as_user(user, "dd", "if=/dev/zero", f"of={user.home}/more", "bs=1M", "count=500")
        assert wrote.returncode == 0, wrote.stderr
        assert holder.poll() is None
    finally:
        holder.kill()
        holder.wait()
    (user.home / "more").unlink()
    assert tree_sums(user.home) == before


def test_lowering_a_quota_below_use_is_refused_and_above_use_applies_at_the_next_start(home_root: Path) -> None:
    user = make_user(home_root)
    homes.ensure_home(user, 600 * MIB)
    (user.home / "data").write_bytes(os.urandom(350 * MIB))
    with pytest.raises(homes.QuotaError, match=r"holds 3\d\d\.\d MiB, more than the quota of 300\.0 MiB"):
        homes.set_quota(user.home, 300 * MIB)
    # A start with the lower quota keeps the home at its size (its user must be able to get in and make room).
    assert homes.ensure_home(user, 300 * MIB).size >= 590 * MIB
    (user.home / "data").unlink()
    (user.home / "small").write_bytes(os.urandom(10 * MIB))
    before = tree_sums(user.home)
    assert homes.set_quota(user.home, 300 * MIB) is not None  # accepted; XFS shrinks by a copy at the next start
    use = homes.ensure_home(user, 300 * MIB)
    assert abs(use.size - 300 * MIB) <= 2 * MIB
    assert tree_sums(user.home) == before


MIGRATE = """
import sys
import tempfile
from pathlib import Path
from hubfleet.system import accounts, homes
home = Path(sys.argv[1])
homes.ensure_home(accounts.ensure_user(home.name, home), 512 * 1024**2)
"""


def test_moving_a_home_in_survives_kill_9_at_any_point(home_root: Path) -> None:
    user = make_user(home_root)
    for index in range(40):
        folder = user.home / f"d{index % 4}"
        folder.mkdir(exist_ok=True)
        (folder / f"f{index}").write_bytes(os.urandom(2 * MIB))
    subprocess.run(["chown", "-R", f"{user.uid}:{user.gid}", str(user.home)], check=True)
    before = tree_sums(user.home)
    images = home_root / homes.IMAGES_DIR
    # Kill the move at growing delays: during mkfs, the copy, the swap, or after the commit.
    interrupted = set()
    for delay in (0.0, 0.05, 0.1, 0.2, 0.3, 0.45, 0.6, 0.8, 1.0, 1.5):
        mover = subprocess.Popen([sys.executable, "-c", MIGRATE, str(user.home)])
        wait_until(lambda mover=mover: images.exists() or mover.poll() is not None, 30, "the move to start")
        time.sleep(delay)  # not a wait for a condition: where in the move the kill lands
        mover.kill()
        mover.wait()
        if os.path.ismount(user.home):
            break
        interrupted.update(p.name.removeprefix(user.name) for p in images.iterdir() if p.name.startswith(user.name))
        # Whatever happened, nothing is lost: the files are in the home, in the old home, or in the new image.
        assert user.home.exists() or (images / f"{user.name}.img").exists() or (images / f"{user.name}.old").exists()
    assert ".img.new" in interrupted, f"no kill landed during the copy: {interrupted}"
    finish = subprocess.run([sys.executable, "-c", MIGRATE, str(user.home)], capture_output=True, text=True)
    assert finish.returncode == 0, finish.stderr
    assert os.path.ismount(user.home)
    assert tree_sums(user.home) == before
    assert sorted(p.name for p in images.iterdir() if p.name.startswith(user.name)) == [
        f"{user.name}.img",
        f"{user.name}.lock",
    ]
    staging = images / ".staging"
    assert not any(str(p) in Path("/proc/self/mounts").read_text() for p in staging.iterdir())


def test_someone_elses_mount_on_a_home_is_left_alone(home_root: Path) -> None:
    user = make_user(home_root)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(user.home)], check=True)
    try:
        with pytest.raises(homes.QuotaError, match="not of a hubfleet home image"):
            homes.ensure_home(user, 300 * MIB)
    finally:
        subprocess.run(["umount", str(user.home)], check=True)


def test_a_quota_below_the_minimum_is_refused(home_root: Path) -> None:
    with pytest.raises(homes.QuotaError, match=r"at least 256\.0 MiB"):
        homes.ensure_home(make_user(home_root), 100 * MIB)
