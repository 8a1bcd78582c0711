"""Home directories with a hard size limit: each home is an XFS file system in a file of its own, loop-mounted on
the home's path.

Why this way: the kernels hubfleet runs on may lack ext4/XFS quota support (the ``usrquota``/``prjquota`` mount
options are refused), while a loop-mounted image works everywhere. The kernel enforces the limit: a write beyond
it fails with ENOSPC, whatever the program, and ``df ~`` shows the limit and the use. XFS rather than ext4: XFS
grows online with CAP_SYS_ADMIN (``xfs_growfs``), while ext4's online resize needs CAP_SYS_RESOURCE, which
containers often drop. Costs: one loop device and one mount per home started since boot; a sparse file of the
quota's size plus XFS's 64 MiB log (the log is written at creation, so each home takes at least 64 MiB of disk,
then what its files use); XFS's smallest file system (300 MB), hence :data:`MIN_QUOTA`; and the loop layer on
every read and write, which uses direct I/O on the image where the kernel allows (see bench/quota.py).

Layout, for a home ``<home_root>/<user>``:

* ``<home_root>/.hubfleet-homes/<user>.img``: the image (root:root 0600 in a root-only 0700 folder);
* ``<user>.img.new``, ``<user>.old``, ``.staging/<user>``: only while an existing home moves into its image.

Moving a home in is atomic and resumable: the files are copied into a new image (``.img.new``, mounted on
``.staging/<user>``), the image is unmounted and synced, the old home is renamed to ``<user>.old``, the image is
renamed to ``<user>.img`` (the commit), mounted on the home's path, and only then is ``<user>.old`` removed. Each
step is a rename or can be redone, so a process killed at any point (``kill -9``) loses nothing: the next call
finds the files either still in the home (the unfinished image is thrown away) or complete in the image.

Raising a quota grows the mounted file system online (``xfs_growfs``); users keep working. XFS cannot shrink, so
a lower quota is applied by copying the home into a new, smaller image the next time the home can be unmounted
(when its server starts), with the same atomic steps (the old image is renamed ``<user>.img.old`` before the
commit) — and never below what the home holds (:class:`QuotaError`). Everything here needs root.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from hubfleet.spec.units import human_size
from hubfleet.system.accounts import Account

__all__ = [
    "IMAGES_DIR",
    "MIN_QUOTA",
    "HomeUse",
    "QuotaError",
    "ensure_home",
    "home_names",
    "home_use",
    "hub_homes",
    "image_path",
    "readable",
    "release_home",
    "release_homes",
    "set_quota",
    "unmount_home",
]

IMAGES_DIR = ".hubfleet-homes"
"""The folder in the homes' parent that holds the images."""

MIN_QUOTA = 256 * 1024**2
"""The smallest quota: XFS's smallest file system is 300 MB (its 64 MiB log included)."""

LOG_BYTES = 64 * 1024**2
"""XFS's internal log in an image: on top of the quota, so that ``df`` shows the quota as the size."""

TOOL_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
MOUNT_OPTIONS = "loop,nosuid,nodev"
_PR_SET_PDEATHSIG = 1


class QuotaError(RuntimeError):
    """A home could not get its quota; the message says why and what to do."""


@dataclass(frozen=True)
class HomeUse:
    """How full one home is."""

    user: str
    """The Unix account."""
    home: Path
    used: int
    """Bytes in use."""
    size: int | None
    """Bytes the user may use in total (what ``df`` shows as the size); None: the home has no quota image."""
    mounted: bool

    @property
    def fraction(self) -> float | None:
        """Use as a fraction of the quota (None without a quota)."""
        return self.used / self.size if self.size else None


# ----------------------------------------------------------------------------------------------- paths


def _images_dir(home: Path) -> Path:
    return home.parent / IMAGES_DIR


def image_path(home: Path) -> Path:
    """The quota image of the home at `home` (it may not exist)."""
    return _images_dir(home) / f"{home.name}.img"


def _new_image(home: Path) -> Path:
    return _images_dir(home) / f"{home.name}.img.new"


def _old_home(home: Path) -> Path:
    return _images_dir(home) / f"{home.name}.old"


def _old_image(home: Path) -> Path:
    return _images_dir(home) / f"{home.name}.img.old"


def _staging(home: Path) -> Path:
    return _images_dir(home) / ".staging" / home.name


def _staging_source(home: Path) -> Path:
    return _images_dir(home) / ".staging" / f"{home.name}.source"


def _reading_point(home: Path) -> Path:
    return _images_dir(home) / ".staging" / f"{home.name}.read"


def _remove_point(point: Path) -> None:
    """Remove a mount point of ours once nothing is mounted on it (an empty folder; anything else stays)."""
    with contextlib.suppress(OSError):
        point.rmdir()


# ----------------------------------------------------------------------------------------------- tools


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    tool = shutil.which(args[0], path=TOOL_PATH)
    if tool is None:
        raise QuotaError(f"{args[0]} not found: install e2fsprogs and mount (util-linux)")
    proc = subprocess.run(
        [tool, *args[1:]], capture_output=True, text=True, env={"PATH": TOOL_PATH, "LC_ALL": "C"}, check=False
    )
    if check and proc.returncode != 0:
        raise QuotaError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def _die_with_parent() -> None:
    """In a child: be killed when the process that started it dies (a killed migration leaves no copier behind)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@contextlib.contextmanager
def _locked(home: Path) -> Iterator[None]:
    """One change to a home's image at a time (hub threads, `apply`, backups may ask at once)."""
    images = _images_dir(home)
    images.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(images / f"{home.name}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _mounts() -> dict[str, str]:
    """Mount point → source device, from this process's mount table."""
    found = {}
    with open("/proc/self/mountinfo", encoding="utf-8") as table:
        for line in table:
            fields = line.split()
            separator = fields.index("-")
            point = fields[4].encode().decode("unicode_escape")
            found[point] = fields[separator + 2]
    return found


def _backing_file(device: str) -> str | None:
    match = re.fullmatch(r"/dev/(loop\d+)", device)
    if match is None:
        return None
    try:
        return Path(f"/sys/block/{match[1]}/loop/backing_file").read_text().strip()
    except OSError:
        return None


def _mounted_image(point: Path) -> str | None:
    """The loop device mounted on `point` if its backing file is one of hubfleet's images, else None."""
    device = _mounts().get(str(point))
    if device is None:
        return None
    backing = _backing_file(device)
    if backing is None or not backing.startswith(str(_images_dir(point))):
        # Something else is mounted there (or the images folder moved): not ours to touch.
        raise QuotaError(f"{point} is a mount point of {device}, not of a hubfleet home image")
    return device


def _mount(image: Path, point: Path) -> None:
    _run("mount", "-t", "xfs", "-o", MOUNT_OPTIONS, str(image), str(point))
    _direct_io(point)


def _direct_io(point: Path) -> None:
    """Let the loop device under `point` read and write its image with direct I/O: one copy of the home's data in
    memory (XFS's) instead of two (XFS's and the image file's), and cold reads at the disk's speed (bench/quota.py).
    Best effort: where the kernel or the disk's file system refuses, the device keeps buffered I/O."""
    device = _mounts().get(str(point))
    if device is not None:
        _run("losetup", "--direct-io=on", device, check=False)


def _unmount(point: Path) -> None:
    _run("umount", str(point))


def _statvfs_use(point: Path) -> tuple[int, int]:
    """(size, used) in bytes of the file system mounted on `point`."""
    info = os.statvfs(point)
    return info.f_blocks * info.f_frsize, (info.f_blocks - info.f_bfree) * info.f_frsize


def _image_use(image: Path) -> tuple[int, int]:
    """(size, used) in bytes of an unmounted image: its data blocks without the log, and those not free."""
    proc = _run("xfs_db", "-r", "-c", "sb 0", "-c", "p dblocks fdblocks blocksize logblocks", str(image))
    fields = dict(line.split(" = ", 1) for line in proc.stdout.splitlines() if " = " in line)
    block = int(fields["blocksize"])
    size = (int(fields["dblocks"]) - int(fields["logblocks"])) * block
    return size, size - int(fields["fdblocks"]) * block


def _sync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------------------------- sizing


def _slack(quota: int) -> int:
    """How far from its quota a file system may be: XFS grows in whole blocks."""
    return max(quota // 200, 1024**2)


def _fit(image: Path, point: Path, quota: int) -> None:
    """Grow the image mounted on `point` online so that its file system offers `quota` bytes."""
    size, _ = _statvfs_use(point)
    if size >= quota - _slack(quota):
        return
    overhead = image.stat().st_size - size
    os.truncate(image, max(quota + overhead, image.stat().st_size))
    _run("losetup", "--set-capacity", _mounts()[str(point)])
    _run("xfs_growfs", str(point))


def _make_image(image: Path, quota: int, account: Account) -> None:
    """A fresh XFS image offering `quota` bytes."""
    image.unlink(missing_ok=True)
    fd = os.open(image, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    os.close(fd)
    os.truncate(image, quota + LOG_BYTES)
    _run("mkfs.xfs", "-q", "-f", "-L", account.name[-12:], str(image))


def _too_full(user: str, used: int, quota: int) -> QuotaError:
    return QuotaError(
        f"the home of {user} holds {human_size(used)}, more than the quota of {human_size(quota)}: "
        "free space in it, or keep its quota at least that large"
    )


# ----------------------------------------------------------------------------------------------- moving in


def _copy_tree(source: Path, target: Path) -> None:
    """Copy everything in `source` into `target`: owners, modes, times, ACLs, xattrs, links, sparse files."""
    proc = subprocess.run(
        [shutil.which("cp", path=TOOL_PATH) or "cp", "-a", "--sparse=auto", f"{source}/.", f"{target}/"],
        capture_output=True,
        text=True,
        preexec_fn=_die_with_parent,
        env={"PATH": TOOL_PATH, "LC_ALL": "C"},
        check=False,
    )
    if proc.returncode != 0:
        stderr = proc.stderr.strip()
        if "No space left" in stderr:
            raise QuotaError(f"{source} does not fit into its quota: {stderr}")
        raise QuotaError(f"copying {source} into its quota image failed: {stderr}")


def _finish_interrupted(home: Path) -> None:
    """Bring back to a known state whatever an interrupted move left (see the module docstring)."""
    new, image, old_image = _new_image(home), image_path(home), _old_image(home)
    mounts = _mounts()
    for point in (_staging(home), _staging_source(home)):
        if str(point) in mounts:
            _run("umount", "--lazy", str(point))
        _remove_point(point)
    if new.exists():
        if _old_home(home).exists() or old_image.exists():
            # Killed between moving the old files away and the commit: the new image is complete (it was synced
            # before they moved), so finish the commit.
            os.replace(new, image)
            _sync(image.parent)
        else:
            new.unlink()  # the copy was not finished; the old files are untouched
    if old_image.exists() and image.exists():
        old_image.unlink()


def _rebuild(home: Path, account: Account, quota: int, source: Path | None) -> None:
    """Copy `source` (the old home folder, or the old image mounted read-only; None: nothing) into a new image,
    then commit it; see the module docstring."""
    staging, new, image = _staging(home), _new_image(home), image_path(home)
    _make_image(new, quota, account)
    staging.mkdir(mode=0o700, parents=True, exist_ok=True)
    _mount(new, staging)
    try:
        if source is not None:
            _copy_tree(source, staging)
        os.chmod(staging, os.stat(source).st_mode & 0o7777 if source is not None else 0o700)
        os.chown(staging, account.uid, account.gid)
    finally:
        _unmount(staging)
        _remove_point(staging)
    _sync(new)
    if image.exists():
        os.rename(image, _old_image(home))  # the old files leave their place: from here on, the new image counts
    elif home.exists():
        os.rename(home, _old_home(home))
    _sync(home.parent)
    os.replace(new, image)  # the commit
    _sync(image.parent)


def _shrink(home: Path, account: Account, quota: int) -> None:
    """Copy the (unmounted) image of `home` into a smaller one (XFS cannot shrink in place); a home that holds more
    than `quota` keeps its size, so that its user can still get in and make room."""
    size, used = _image_use(image_path(home))
    if size <= quota + _slack(quota) or used > quota:
        return
    source = _staging_source(home)
    source.mkdir(mode=0o700, parents=True, exist_ok=True)
    _run("mount", "-t", "xfs", "-o", f"{MOUNT_OPTIONS},ro", str(image_path(home)), str(source))
    try:
        _rebuild(home, account, quota, source)
    finally:
        _run("umount", "--lazy", str(source))
        _remove_point(source)
    _finish_interrupted(home)


def _mount_home(home: Path, account: Account, quota: int) -> None:
    """Mount the committed image on the home's (empty) path, at the quota's size."""
    if home.exists() and not home.is_dir():
        raise QuotaError(f"{home} is not a folder: cannot mount the home image there")
    if home.is_dir() and any(home.iterdir()):
        raise QuotaError(
            f"{home} holds files outside its quota image {image_path(home)}; "
            "move them into the mounted home (or away) first"
        )
    _shrink(home, account, quota)
    home.mkdir(mode=0o700, exist_ok=True)
    _mount(image_path(home), home)
    _fit(image_path(home), home, quota)


def ensure_home(account: Account, quota: int | None) -> HomeUse:
    """Make the account's home a mounted image offering `quota` bytes, moving an existing home into it.

    With `quota` None, a home that has an image is mounted at its last size (a quota removed from the fleet file
    must not hide the files in it) and a plain home is left alone.

    Idempotent and safe to call concurrently; resumes an interrupted move. A mounted home whose quota was raised
    grows online; a lower quota is applied when the home can be unmounted (nothing uses it) and holds less than
    the quota (until then the home keeps its larger size: compare the returned size with the quota).
    """
    if quota is not None and quota < MIN_QUOTA:
        raise QuotaError(f"a home quota must be at least {human_size(MIN_QUOTA)}")
    home = account.home
    with _locked(home):
        if quota is None:
            _finish_interrupted(home)
            if not image_path(home).exists():
                return home_use(home)
            quota = home_use(home).size or MIN_QUOTA
        mounted = _mounted_image(home) is not None
        size, used = _statvfs_use(home) if mounted else (0, 0)
        if mounted and size > quota + _slack(quota) and used <= quota:
            # A lower quota: applied by a copy into a smaller image, which needs the home unmounted (not in use).
            mounted = _run("umount", str(home), check=False).returncode != 0
        if mounted:
            _fit(image_path(home), home, quota)
            _direct_io(home)  # homes mounted before direct I/O was used
        else:
            _finish_interrupted(home)
            if not image_path(home).exists():
                _rebuild(home, account, quota, home if home.is_dir() else None)
            _mount_home(home, account, quota)
        if _old_home(home).exists():
            shutil.rmtree(_old_home(home))
        os.chown(home, account.uid, account.gid)
        return home_use(home)


# ----------------------------------------------------------------------------------------------- operators


def home_use(home: Path) -> HomeUse:
    """How full the home at `home` is: from its image when it has one, else by walking it."""
    image = image_path(home)
    if str(home) in _mounts() and _mounted_image(home) is not None:
        size, used = _statvfs_use(home)
        return HomeUse(home.name, home, used, size, True)
    if image.exists():
        size, used = _image_use(image)
        return HomeUse(home.name, home, used, size, False)
    return HomeUse(home.name, home, _walk_size(home), None, False)


def _walk_size(path: Path) -> int:
    total = 0
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total


def _home_names(home_root: Path, prefix: str) -> list[str]:
    names = set()
    with contextlib.suppress(FileNotFoundError):
        names.update(p.name for p in home_root.iterdir() if p.name.startswith(prefix) and p.is_dir())
    with contextlib.suppress(FileNotFoundError):
        names.update(p.name[: -len(".img")] for p in (home_root / IMAGES_DIR).glob(f"{prefix}*.img"))
    return sorted(names)


def home_names(home_root: Path, prefix: str) -> list[str]:
    """The names of the homes under `home_root` that start with `prefix` (folders, or images not mounted)."""
    return _home_names(home_root, prefix)


@contextlib.contextmanager
def readable(home: Path) -> Iterator[Path]:
    """A path where the home's files can be read now: the home itself (mounted or a plain folder), else its image
    mounted read-only for the time being (a hub that sleeps, a machine just rebooted)."""
    with _locked(home):
        if not image_path(home).exists() or _mounted_image(home) is not None:
            yield home
            return
        point = _reading_point(home)
        point.mkdir(mode=0o700, parents=True, exist_ok=True)
        _run("mount", "-t", "xfs", "-o", f"{MOUNT_OPTIONS},ro", str(image_path(home)), str(point))
        try:
            yield point
        finally:
            _run("umount", "--lazy", str(point))
            _remove_point(point)


def hub_homes(home_root: Path, prefix: str) -> list[HomeUse]:
    """Every home under `home_root` whose folder name starts with `prefix` (a hub's Unix accounts: ``<hub>_``)."""
    return [home_use(home_root / name) for name in _home_names(home_root, prefix)]


def set_quota(home: Path, quota: int) -> HomeUse | None:
    """Apply a new quota to a home that has an image: grow it now if mounted; a lower quota is checked against
    the home's use now (QuotaError) and applied at its next mount. None when the home has no image."""
    if not image_path(home).exists():
        return None
    with _locked(home):
        use = home_use(home)
        if use.used > quota:
            raise _too_full(home.name, use.used, quota)
        if _mounted_image(home) is not None:
            _fit(image_path(home), home, quota)
        return home_use(home)


def unmount_home(home: Path) -> bool:
    """Unmount a home's image (its files stay in the image); False if it was not mounted."""
    with _locked(home):
        if _mounted_image(home) is None:
            return False
        _unmount(home)
        return True


def release_homes(home_root: Path, prefix: str) -> list[str]:
    """:func:`release_home` for every home under `home_root` whose name starts with `prefix` (a hub's ``<hub>_``)
    and that has an image; the accounts whose homes were released. The lock files of plain homes go too."""
    released = []
    for name in _home_names(home_root, prefix):
        home = home_root / name
        if image_path(home).exists() or str(home) in _mounts():
            release_home(home)
            released.append(name)
    with contextlib.suppress(FileNotFoundError):
        for lock in (home_root / IMAGES_DIR).glob(f"{prefix}*.lock"):
            lock.unlink(missing_ok=True)
    return released


def release_home(home: Path) -> None:
    """Unmount a home's image and delete it with everything in it (for accounts that are removed for good)."""
    with _locked(home):
        if _mounted_image(home) is not None:
            _unmount(home)
        _finish_interrupted(home)
        for path in (image_path(home), _new_image(home), _old_image(home)):
            path.unlink(missing_ok=True)
        if _old_home(home).exists():
            shutil.rmtree(_old_home(home))
        _remove_point(_reading_point(home))
    (_images_dir(home) / f"{home.name}.lock").unlink(missing_ok=True)
