"""Old versions go when nothing uses them: not active, not among the newest kept for rollback, no process in them."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

from hubfleet.common.environments import BUILD_ID, EnvStore
from hubfleet.envs._history import save_history


@dataclass(frozen=True)
class Collected:
    """What a garbage collection removed."""

    versions: list[str]
    """`key vN` of each version removed."""
    builds: list[str]
    """Build folders removed (a build may have served several versions or environments)."""


def processes_in(prefixes: Iterable[Path]) -> set[Path]:
    """The prefixes some running process uses: its command line or environment (PATH) names a file in it.

    Servers, kernels and Dask workers started from an environment all do (the spawner puts its bin first on PATH).
    Processes on other machines (Slurm nodes) are not seen.
    """
    wanted = {prefix: (str(prefix) + "/").encode() for prefix in prefixes}
    used: set[Path] = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or len(used) == len(wanted):
            continue
        for part in ("cmdline", "environ"):
            with contextlib.suppress(OSError):
                data = Path(f"/proc/{pid}/{part}").read_bytes()
                used.update(prefix for prefix, needle in wanted.items() if needle in data)
    return used


def collect(store: EnvStore, keep: int, environments: Collection[str]) -> Collected:
    """Remove unused versions of every environment of the store (`environments`: the keys the fleet still has; a
    key it dropped keeps no version but those in use), then build folders no version refers to."""
    histories = {key: store.history(key) for key in store.environment_keys()}
    builds_here = sorted(_ids(store))
    in_use = processes_in(store.prefix(build) for build in builds_here)
    removed: list[str] = []
    for key, history in histories.items():
        kept_numbers: set[int] = set()
        if key in environments:
            if history.active is not None:
                kept_numbers.add(history.active)
            older = [v.number for v in reversed(history.live) if v.number != history.active]
            kept_numbers.update(older[:keep])
        versions = []
        for version in history.versions:
            gone = (
                not version.removed and version.number not in kept_numbers and store.prefix(version.build) not in in_use
            )
            if gone:
                removed.append(f"{key} v{version.number}")
                version = version.model_copy(update={"removed": True})
            versions.append(version)
        history = history.model_copy(update={"versions": versions})
        if history.active is not None and history.active_version and history.active_version.removed:
            history = history.model_copy(update={"active": None, "requested": None})
        histories[key] = history
        if any(not v.removed for v in versions) or key in environments:
            save_history(store, history)
        else:
            store.history_file(key).unlink(missing_ok=True)
    referenced = {v.build for h in histories.values() for v in h.live}
    builds = []
    for build in builds_here:
        if build in referenced or store.prefix(build) in in_use:
            continue
        # The mark first: a half-removed build is never taken for a complete one.
        (store.builds / f"{build}.ok").unlink(missing_ok=True)
        folder = store.prefix(build)
        if folder.is_dir() and not folder.is_symlink():
            shutil.rmtree(folder)
        builds.append(build)
    return Collected(removed, builds)


def _ids(store: EnvStore) -> set[str]:
    """The builds in the store's folder (complete or not)."""
    names = os.listdir(store.builds) if store.builds.is_dir() else []
    return {name.removesuffix(".ok") for name in names if BUILD_ID.fullmatch(name.removesuffix(".ok"))}


def disk_use(paths: Iterable[Path]) -> int:
    """Bytes the files under `paths` take on disk, each file counted once however many links it has."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for root in paths:
        for folder, dirs, files in os.walk(root):
            for name in dirs + files:
                with contextlib.suppress(OSError):
                    info = os.lstat(os.path.join(folder, name))
                    if (info.st_dev, info.st_ino) not in seen:
                        seen.add((info.st_dev, info.st_ino))
                        total += info.st_blocks * 512
    return total
