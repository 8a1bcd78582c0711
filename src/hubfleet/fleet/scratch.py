"""Scratch cleanup: the fleet side sweeps every hub's per-user scratch folders, age first, then size.

Each user of a hub with `storage.scratch` has `<paths.shared_root>/<hub>/scratch/<unix name>` (made by the
spawner). Every `SWEEP_EVERY` seconds the supervisor runs `sweep_fleet` in a thread: in each user's folder, files
not modified for longer than `max_age` are removed; then, while the folder holds more than `size`, the user's
oldest files go first. Directories emptied on the way are removed (never a user's folder itself), and so are
empty directories nobody touched for longer than `max_age`.

The sweep runs as root in folders that users write, so it never follows a symlink: it walks and removes through
directory descriptors opened with O_NOFOLLOW, a symlink is removed as the link it is (its target is never
touched), and a file that changed since it was looked at is left for the next sweep.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from hubfleet.common.periodic import every
from hubfleet.spec.checks import SCRATCH_FOLDER
from hubfleet.spec.models import Fleet

log = logging.getLogger("hubfleet.scratch")

SWEEP_EVERY = 600.0
"""Seconds between two sweeps of the fleet's scratch folders."""

SWEEP_EVERY_ENV = "HUBFLEET_SCRATCH_SWEEP_EVERY"
"""Environment variable of the supervisor that overrides `SWEEP_EVERY` (seconds; for tests)."""

MAX_DEPTH = 128
"""Directories deeper than this below a user's scratch folder are not swept (and logged)."""

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

Parts = tuple[str, ...]
"""A path below a user's scratch folder, one name per level."""


@dataclass(frozen=True)
class _File:
    """Anything but a directory (files, symlinks, fifos, sockets), as seen by the scan."""

    parts: Parts
    mtime: float
    size: int
    identity: tuple[int, int, int]
    """(st_dev, st_ino, st_mtime_ns): a file changed or replaced since the scan is not removed."""


@dataclass
class _Sweep:
    """One user's folder being swept."""

    root: Path
    cutoff: float | None
    """Files modified before this are removed (None: no age limit)."""
    stop: threading.Event | None
    removed: list[Path] = field(default_factory=list)
    kept: list[_File] = field(default_factory=list)
    touched: set[Parts] = field(default_factory=set)
    """Directories something was removed from."""

    def stopping(self) -> bool:
        return self.stop is not None and self.stop.is_set()


def sweep_scratch(
    root: Path, size: int, max_age: int, now: float, *, stop: threading.Event | None = None
) -> list[Path]:
    """Clean up every user's scratch folder under `root` (a hub's `scratch` folder); return what was removed.

    In each folder directly under `root` (one per user; anything else there is ignored): files not modified for
    more than `max_age` seconds before `now` are removed, then, while the folder holds more than `size` bytes
    (disk usage, as `du`), its oldest files. Directories left empty by the removals go too, and so do empty
    directories not modified for more than `max_age`; the user's folder itself stays. `max_age` 0 means no age
    limit, `size` 0 no size limit. Symlinks are never followed. Setting `stop` ends the sweep early.
    """
    removed: list[Path] = []
    try:
        root_fd = os.open(root, _DIR_FLAGS)
    except FileNotFoundError:
        return removed
    try:
        for name in sorted(os.listdir(root_fd)):
            if stop is not None and stop.is_set():
                break
            try:
                user_fd = os.open(name, _DIR_FLAGS, dir_fd=root_fd)
            except OSError:
                continue  # not a directory, or a symlink: not a user's folder
            try:
                removed += _sweep_user(user_fd, root / name, size, max_age, now, stop)
            except OSError as exc:
                log.warning("sweeping %s: %s", root / name, exc)
            finally:
                os.close(user_fd)
    finally:
        os.close(root_fd)
    return removed


def _sweep_user(
    user_fd: int, user_root: Path, size: int, max_age: int, now: float, stop: threading.Event | None
) -> list[Path]:
    sweep = _Sweep(root=user_root, cutoff=now - max_age if max_age > 0 else None, stop=stop)
    _scan(sweep, user_fd, (), 0)
    if size > 0:
        total = sum(f.size for f in sweep.kept)
        for victim in sorted(sweep.kept, key=lambda f: (f.mtime, f.parts)):
            if total <= size or sweep.stopping():
                break
            if _remove_file(sweep, user_fd, victim):
                total -= victim.size
    _remove_empty_dirs(sweep, user_fd, (), 0)
    return sweep.removed


def _entries(dir_fd: int) -> Iterator[tuple[str, os.stat_result]]:
    """(name, lstat) of each entry of the directory, skipping entries that vanish meanwhile."""
    for name in sorted(os.listdir(dir_fd)):
        with contextlib.suppress(FileNotFoundError):
            yield name, os.stat(name, dir_fd=dir_fd, follow_symlinks=False)


@contextlib.contextmanager
def _subdir(dir_fd: int, name: str, seen: os.stat_result) -> Iterator[int | None]:
    """The directory `name` in `dir_fd` opened without following a link, if it is still the one `seen`."""
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError:
        yield None  # gone, or swapped for a symlink or a file
        return
    try:
        now = os.fstat(fd)
        yield fd if (now.st_dev, now.st_ino) == (seen.st_dev, seen.st_ino) else None
    finally:
        os.close(fd)


def _scan(sweep: _Sweep, dir_fd: int, parts: Parts, depth: int) -> None:
    """Remove the too old files below `dir_fd`, and note the others (with their size) for the size pass."""
    if sweep.stopping():
        return
    for name, info in _entries(dir_fd):
        if stat.S_ISDIR(info.st_mode):
            if depth >= MAX_DEPTH:
                log.warning("%s: deeper than %d directories, not swept", sweep.root.joinpath(*parts, name), MAX_DEPTH)
                continue
            with _subdir(dir_fd, name, info) as sub_fd:
                if sub_fd is not None:
                    _scan(sweep, sub_fd, (*parts, name), depth + 1)
            continue
        entry = _File(
            parts=(*parts, name),
            mtime=info.st_mtime,
            size=info.st_blocks * 512,
            identity=(info.st_dev, info.st_ino, info.st_mtime_ns),
        )
        too_old = sweep.cutoff is not None and info.st_mtime < sweep.cutoff
        if not (too_old and _unlink(sweep, dir_fd, entry)):
            sweep.kept.append(entry)


def _unlink(sweep: _Sweep, dir_fd: int, entry: _File) -> bool:
    """Remove `entry` from its directory `dir_fd` if it is unchanged since the scan."""
    name = entry.parts[-1]
    try:
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if (info.st_dev, info.st_ino, info.st_mtime_ns) != entry.identity or stat.S_ISDIR(info.st_mode):
            return False
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return False
    sweep.removed.append(sweep.root.joinpath(*entry.parts))
    sweep.touched.add(entry.parts[:-1])
    return True


def _remove_file(sweep: _Sweep, user_fd: int, entry: _File) -> bool:
    """Remove `entry` (found by the scan), reopening its directory level by level without following links."""
    fds: list[int] = []
    try:
        dir_fd = user_fd
        for name in entry.parts[:-1]:
            dir_fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
            fds.append(dir_fd)
        return _unlink(sweep, dir_fd, entry)
    except OSError:
        return False  # a directory on the way is gone or was swapped for something else
    finally:
        for fd in fds:
            os.close(fd)


def _remove_empty_dirs(sweep: _Sweep, dir_fd: int, parts: Parts, depth: int) -> None:
    """Remove, bottom up, the empty directories below `dir_fd` that the sweep emptied or nobody touched for long."""
    if depth >= MAX_DEPTH:
        return
    for name, info in _entries(dir_fd):
        if not stat.S_ISDIR(info.st_mode):
            continue
        here = (*parts, name)
        with _subdir(dir_fd, name, info) as sub_fd:
            if sub_fd is None:
                continue
            _remove_empty_dirs(sweep, sub_fd, here, depth + 1)
            if os.listdir(sub_fd):
                continue
            old = sweep.cutoff is not None and os.fstat(sub_fd).st_mtime < sweep.cutoff
        if here in sweep.touched or old:
            try:
                os.rmdir(name, dir_fd=dir_fd)
            except OSError as exc:
                if exc.errno not in (errno.ENOENT, errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                    raise
                continue
            sweep.removed.append(sweep.root.joinpath(*here))
            sweep.touched.add(parts)


def scratch_roots(fleet: Fleet) -> dict[str, Path]:
    """Hub name → the parent of its users' scratch folders, for every hub with `storage.scratch`."""
    return {
        name: fleet.paths.shared_root / name / SCRATCH_FOLDER
        for name, hub in fleet.hubs.items()
        if hub.storage.scratch is not None
    }


def sweep_fleet(fleet: Fleet, now: float | None = None, *, stop: threading.Event | None = None) -> dict[str, int]:
    """Sweep the scratch folders of every hub of `fleet` that has scratch; log and count what was removed."""
    counts: dict[str, int] = {}
    for name, root in scratch_roots(fleet).items():
        if stop is not None and stop.is_set():
            break
        scratch = fleet.hubs[name].storage.scratch
        assert scratch is not None
        try:
            removed = sweep_scratch(root, scratch.size, scratch.max_age, now or time.time(), stop=stop)
        except OSError as exc:
            log.warning("cannot sweep the scratch folders of hub %s in %s: %s", name, root, exc)
            continue
        for path in removed:
            log.info("scratch of hub %s: removed %s", name, path)
        if removed:
            log.info("scratch of hub %s: removed %d file(s) and folder(s)", name, len(removed))
        counts[name] = len(removed)
    return counts


class ScratchSweeper:
    """Sweeps the fleet's scratch folders now and then, in a thread, until stopped."""

    def __init__(self, fleet: Callable[[], Fleet], every: float | None = None):
        self.fleet = fleet
        self.every = every if every is not None else float(os.environ.get(SWEEP_EVERY_ENV) or SWEEP_EVERY)
        self._stop = threading.Event()
        self._stopped = asyncio.Event()

    async def run(self) -> None:
        """Sweep at once, then every `every` seconds; exceptions are logged, never raised."""
        await every(self.every, self._sweep, log=log, what="sweeping scratch folders", stop=self._stopped)

    async def _sweep(self) -> None:
        await asyncio.to_thread(sweep_fleet, self.fleet(), stop=self._stop)

    def stop(self) -> None:
        """Make a sweep under way end early, and stop sweeping."""
        self._stop.set()
        self._stopped.set()
