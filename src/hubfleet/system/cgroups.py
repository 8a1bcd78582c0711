"""Control groups that enforce a profile's memory, CPU and process limits on one user server.

Each spawned single-user server gets its own cgroup (e.g. ``hubfleet/research/research_alice``). Two hierarchies
are supported:

* cgroup v1, with the ``memory``, ``cpu`` (and ``cpuacct``, ``pids``) controllers mounted as separate hierarchies,
  possibly comma-joined (``/sys/fs/cgroup/cpu,cpuacct``); the cgroup is one directory per hierarchy;
* cgroup v2, one unified hierarchy whose ``cgroup.controllers`` offers ``memory`` and ``cpu``; the cgroup is one
  directory, and the controllers are enabled in ``cgroup.subtree_control`` of every ancestor.

:func:`detect` reads ``/proc/self/mounts`` and prefers v1 when its controllers are mounted (hybrid machines mount
the controllers on v1 and leave the unified tree empty), else v2; it returns ``None`` when neither is usable, so
the caller can run without limits and warn.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import ClassVar

__all__ = [
    "Cgroup",
    "CgroupDriver",
    "CgroupError",
    "CgroupV1",
    "CgroupV2",
    "Limits",
    "detect",
    "prepare_preexec",
]

MOUNTS_FILE = "/proc/self/mounts"
CPU_PERIOD_US = 100_000
_MIN_CPU_QUOTA_US = 1_000  # the kernel refuses quotas below 1 ms
_V1_REQUIRED = ("memory", "cpu")
_V1_OPTIONAL = ("cpuacct", "pids")
_V2_REQUIRED = ("memory", "cpu")
_V2_OPTIONAL = ("pids",)
_KILL_POLL_S = 0.01
_V1_UNLIMITED_MEMORY = 1 << 62  # v1 reports "no limit" as a huge page-aligned number


class CgroupError(RuntimeError):
    """A cgroup could not be created, configured, read or removed."""


@dataclass(frozen=True)
class Limits:
    """Hard limits for one cgroup; ``None`` means unlimited."""

    memory_bytes: int | None = None
    cpu: float | None = None
    pids_max: int | None = None

    def __post_init__(self) -> None:
        for name in ("memory_bytes", "pids_max"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
                raise ValueError(f"{name} must be a positive integer or None, not {value!r}")
        if self.cpu is not None and (
            isinstance(self.cpu, bool) or not isinstance(self.cpu, int | float) or not self.cpu > 0
        ):
            raise ValueError(f"cpu must be a positive number of cores or None, not {self.cpu!r}")

    @property
    def cpu_quota_us(self) -> int | None:
        """CFS quota in microseconds per :data:`CPU_PERIOD_US`, or ``None`` for no CPU limit."""
        if self.cpu is None:
            return None
        return max(_MIN_CPU_QUOTA_US, round(self.cpu * CPU_PERIOD_US))


# --------------------------------------------------------------------------------------------- file helpers


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _write(path: str, value: str) -> None:
    """Write one value with a single write(2), so the kernel's verdict is reported for this path."""
    try:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
    except OSError as exc:
        raise CgroupError(f"cannot write {value!r} to {path}: {exc.strerror or exc}") from exc


def _keyed(text: str) -> dict[str, int]:
    """Parse ``key value`` lines (memory.events, cpu.stat, memory.oom_control)."""
    result: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            result[parts[0]] = int(parts[1])
    return result


def _rmdir(path: str, deadline: float) -> None:
    """rmdir a cgroup directory; a group that just lost its last process may stay busy for a moment."""
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno == errno.EBUSY and time.monotonic() < deadline:
                time.sleep(_KILL_POLL_S)
                continue
            raise CgroupError(f"cannot remove {path}: {exc.strerror or exc}") from exc


def _check_relpath(relpath: str) -> str:
    parts = relpath.strip("/").split("/")
    if relpath.startswith("/") or not relpath.strip("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"{relpath!r} is not a relative cgroup path such as 'hubfleet/research/alice'")
    if "\0" in relpath:
        raise ValueError("a cgroup path cannot contain NUL")
    return "/".join(parts)


# --------------------------------------------------------------------------------------------- cgroups


class Cgroup(ABC):
    """One control group: one directory (v2) or one directory per mounted controller hierarchy (v1)."""

    version: ClassVar[int]

    def __init__(self, relpath: str, paths: Iterable[str]) -> None:
        self.relpath = relpath
        #: the group's directories, one per distinct hierarchy (comma-joined v1 mounts share one)
        self.paths: tuple[str, ...] = tuple(dict.fromkeys(paths))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} v{self.version} {self.relpath!r}>"

    def exists(self) -> bool:
        """Whether the group's directory exists in at least one hierarchy."""
        return any(os.path.isdir(p) for p in self.paths)

    def procs_files(self) -> tuple[str, ...]:
        """The ``cgroup.procs`` files a process must be written to in order to join the group."""
        return tuple(os.path.join(p, "cgroup.procs") for p in self.paths)

    def add_process(self, pid: int = 0) -> None:
        """Move process ``pid`` (0: the calling process) into the group in every hierarchy.

        Only os.open/os.write/os.close, so it can run in a ``preexec_fn`` between fork and exec.
        """
        data = b"%d" % pid
        for path in self.procs_files():
            fd = os.open(path, os.O_WRONLY)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)

    @abstractmethod
    def set_limits(self, limits: Limits) -> None:
        """Apply ``limits``; a ``None`` field removes that limit."""

    def pids(self) -> list[int]:
        """Processes (thread-group ids) in the group and its descendant groups, sorted."""
        found: set[int] = set()
        for top in self.paths:
            for dirpath, _dirs, _files in os.walk(top):
                try:
                    found.update(int(x) for x in _read(os.path.join(dirpath, "cgroup.procs")).split())
                except FileNotFoundError:
                    continue
        return sorted(found)

    @abstractmethod
    def memory_bytes(self) -> int:
        """Current memory usage (including page cache) of the group and its descendants."""

    @abstractmethod
    def memory_peak_bytes(self) -> int | None:
        """Highest memory usage seen, or ``None`` when the kernel does not record it."""

    @abstractmethod
    def cpu_seconds(self) -> float:
        """CPU time consumed by the group's processes since they joined it."""

    def memory_working_set_bytes(self) -> int:
        """Memory in use less inactive file cache (what Kubernetes and OpenCost call the working set)."""
        return max(0, self.memory_bytes() - self._inactive_file_bytes())

    @abstractmethod
    def _inactive_file_bytes(self) -> int:
        """Inactive file cache charged to the group (reclaimable)."""

    @abstractmethod
    def limits(self) -> Limits:
        """The memory and CPU limits set on the group (``None`` where unlimited; pids are not read)."""

    @abstractmethod
    def oom_kills(self) -> int:
        """How many processes the kernel's OOM killer has killed in the group."""

    def _kill_switch(self) -> None:  # noqa: B027 - an optional hook, not an abstract method
        """Kill everything at once where the kernel offers it (v2 ``cgroup.kill``)."""

    def kill_all(self, timeout: float = 5.0) -> None:
        """SIGKILL every process in the group (and its descendants) until none is left.

        The calling process is never signalled, even if it is in the group. Raises :class:`CgroupError` if
        processes remain after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        self._kill_switch()
        me = os.getpid()
        while True:
            pids = [pid for pid in self.pids() if pid != me]
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if time.monotonic() >= deadline:
                raise CgroupError(f"processes {pids} in cgroup {self.relpath!r} survived SIGKILL for {timeout}s")
            time.sleep(_KILL_POLL_S)

    def remove(self, timeout: float = 5.0) -> None:
        """Kill every process, then remove the group's directories (descendant groups first).

        Does nothing if the group is already gone.
        """
        if not self.exists():
            return
        self.kill_all(timeout)
        deadline = time.monotonic() + timeout
        for top in self.paths:
            for dirpath, _dirs, _files in os.walk(top, topdown=False):
                _rmdir(dirpath, deadline)


class _V1Group(Cgroup):
    version = 1

    def __init__(self, relpath: str, dirs: Mapping[str, str]) -> None:
        super().__init__(relpath, dirs.values())
        self._dirs = dict(dirs)

    def _file(self, controller: str, name: str) -> str:
        directory = self._dirs.get(controller)
        if directory is None:
            raise CgroupError(f"the cgroup v1 {controller!r} controller is not mounted")
        return os.path.join(directory, name)

    def set_limits(self, limits: Limits) -> None:
        # memory: memory.limit_in_bytes <= memory.memsw.limit_in_bytes must hold after every single write.
        memory = str(limits.memory_bytes) if limits.memory_bytes is not None else "-1"
        mem_file = self._file("memory", "memory.limit_in_bytes")
        memsw_file = self._file("memory", "memory.memsw.limit_in_bytes")
        if os.path.exists(memsw_file):
            current = int(_read(mem_file))
            raising = limits.memory_bytes is None or limits.memory_bytes >= current
            for path in (memsw_file, mem_file) if raising else (mem_file, memsw_file):
                _write(path, memory)
        else:
            _write(mem_file, memory)
        # cpu (a kernel without CONFIG_CFS_BANDWIDTH has no quota files: fine as long as no limit is asked)
        quota = limits.cpu_quota_us
        quota_file = self._file("cpu", "cpu.cfs_quota_us")
        if quota is not None or os.path.exists(quota_file):
            _write(self._file("cpu", "cpu.cfs_period_us"), str(CPU_PERIOD_US))
            _write(quota_file, str(quota) if quota is not None else "-1")
        # pids
        if "pids" in self._dirs:
            _write(self._file("pids", "pids.max"), str(limits.pids_max) if limits.pids_max else "max")
        elif limits.pids_max is not None:
            raise CgroupError("pids_max needs the cgroup v1 'pids' controller, which is not mounted")

    def memory_bytes(self) -> int:
        return int(_read(self._file("memory", "memory.usage_in_bytes")))

    def memory_peak_bytes(self) -> int | None:
        try:
            return int(_read(self._file("memory", "memory.max_usage_in_bytes")))
        except FileNotFoundError:
            return None

    def cpu_seconds(self) -> float:
        return int(_read(self._file("cpuacct", "cpuacct.usage"))) / 1e9

    def _inactive_file_bytes(self) -> int:
        return _keyed(_read(self._file("memory", "memory.stat"))).get("total_inactive_file", 0)

    def limits(self) -> Limits:
        memory = int(_read(self._file("memory", "memory.limit_in_bytes")))
        quota = int(_read(self._file("cpu", "cpu.cfs_quota_us")))
        period = int(_read(self._file("cpu", "cpu.cfs_period_us")))
        return Limits(
            memory_bytes=memory if memory < _V1_UNLIMITED_MEMORY else None,
            cpu=quota / period if quota > 0 else None,
        )

    def oom_kills(self) -> int:
        control = _keyed(_read(self._file("memory", "memory.oom_control")))
        if "oom_kill" in control:
            return control["oom_kill"]
        # kernels before 4.13 do not count OOM kills: report "at least one" once the limit has been hit
        return 1 if int(_read(self._file("memory", "memory.failcnt"))) > 0 else 0


class _V2Group(Cgroup):
    version = 2

    def __init__(self, relpath: str, path: str) -> None:
        super().__init__(relpath, [path])
        self.path = path

    def _file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def set_limits(self, limits: Limits) -> None:
        _write(self._file("memory.max"), str(limits.memory_bytes) if limits.memory_bytes else "max")
        if os.path.exists(self._file("memory.swap.max")):
            _write(self._file("memory.swap.max"), "0" if limits.memory_bytes else "max")
        quota = limits.cpu_quota_us
        if quota is not None or os.path.exists(self._file("cpu.max")):
            _write(self._file("cpu.max"), f"{quota if quota is not None else 'max'} {CPU_PERIOD_US}")
        if os.path.exists(self._file("pids.max")):
            _write(self._file("pids.max"), str(limits.pids_max) if limits.pids_max else "max")
        elif limits.pids_max is not None:
            raise CgroupError(f"pids_max needs the 'pids' controller, which is not enabled for {self.path}")

    def memory_bytes(self) -> int:
        return int(_read(self._file("memory.current")))

    def memory_peak_bytes(self) -> int | None:
        try:
            return int(_read(self._file("memory.peak")))  # Linux >= 5.19
        except FileNotFoundError:
            return None

    def cpu_seconds(self) -> float:
        return _keyed(_read(self._file("cpu.stat")))["usage_usec"] / 1e6

    def _inactive_file_bytes(self) -> int:
        return _keyed(_read(self._file("memory.stat"))).get("inactive_file", 0)

    def limits(self) -> Limits:
        memory = _read(self._file("memory.max")).strip()
        quota, period = _read(self._file("cpu.max")).split()
        return Limits(
            memory_bytes=int(memory) if memory != "max" else None,
            cpu=int(quota) / int(period) if quota != "max" else None,
        )

    def oom_kills(self) -> int:
        return _keyed(_read(self._file("memory.events"))).get("oom_kill", 0)

    def _kill_switch(self) -> None:
        if os.path.exists(self._file("cgroup.kill")):  # Linux >= 5.14
            _write(self._file("cgroup.kill"), "1")


# --------------------------------------------------------------------------------------------- drivers


class CgroupDriver(ABC):
    """Creates and opens cgroups in one hierarchy (v1 or v2)."""

    version: ClassVar[int]

    @abstractmethod
    def create(self, relpath: str, limits: Limits) -> Cgroup:
        """Create the group (and missing ancestors) with ``limits``; if it exists, update its limits."""

    @abstractmethod
    def open(self, relpath: str) -> Cgroup | None:
        """The existing group at ``relpath``, or ``None``."""

    def _create(self, group: Cgroup, make: Callable[[], None], limits: Limits) -> Cgroup:
        existed = group.exists()
        make()
        try:
            group.set_limits(limits)
        except BaseException:
            if not existed:
                with contextlib.suppress(OSError, CgroupError):
                    group.remove()
            raise
        return group


class CgroupV1(CgroupDriver):
    """cgroup v1: one hierarchy per controller (or comma-joined group of controllers)."""

    version = 1

    def __init__(self, mountpoints: Mapping[str, str]) -> None:
        """``mountpoints`` maps controller names (memory, cpu, cpuacct, pids) to their hierarchy's mount point."""
        missing = [c for c in _V1_REQUIRED if c not in mountpoints]
        if missing:
            raise CgroupError(f"cgroup v1 controllers not mounted: {', '.join(missing)}")
        wanted = _V1_REQUIRED + _V1_OPTIONAL
        self.mountpoints = {c: mountpoints[c] for c in wanted if c in mountpoints}

    def __repr__(self) -> str:
        return f"CgroupV1({self.mountpoints!r})"

    def _group(self, relpath: str) -> _V1Group:
        relpath = _check_relpath(relpath)
        return _V1Group(relpath, {c: os.path.join(m, relpath) for c, m in self.mountpoints.items()})

    def create(self, relpath: str, limits: Limits) -> Cgroup:
        group = self._group(relpath)

        def make() -> None:
            for path in group.paths:
                try:
                    os.makedirs(path, exist_ok=True)
                except OSError as exc:
                    raise CgroupError(f"cannot create cgroup {path}: {exc.strerror or exc}") from exc

        return self._create(group, make, limits)

    def open(self, relpath: str) -> Cgroup | None:
        group = self._group(relpath)
        return group if group.exists() else None


class CgroupV2(CgroupDriver):
    """cgroup v2: the unified hierarchy, controllers delegated down through ``cgroup.subtree_control``."""

    version = 2

    def __init__(self, mountpoint: str = "/sys/fs/cgroup") -> None:
        self.mountpoint = mountpoint

    def __repr__(self) -> str:
        return f"CgroupV2({self.mountpoint!r})"

    def _group(self, relpath: str) -> _V2Group:
        relpath = _check_relpath(relpath)
        return _V2Group(relpath, os.path.join(self.mountpoint, relpath))

    def _enable_controllers(self, directory: str) -> None:
        available = _read(os.path.join(directory, "cgroup.controllers")).split()
        enabled = _read(os.path.join(directory, "cgroup.subtree_control")).split()
        for controller in _V2_REQUIRED + _V2_OPTIONAL:
            if controller in enabled:
                continue
            if controller not in available:
                if controller in _V2_REQUIRED:
                    raise CgroupError(f"the {controller!r} controller is not available in {directory}")
                continue
            _write(os.path.join(directory, "cgroup.subtree_control"), f"+{controller}")

    def create(self, relpath: str, limits: Limits) -> Cgroup:
        group = self._group(relpath)

        def make() -> None:
            directory = self.mountpoint
            for part in group.relpath.split("/"):
                self._enable_controllers(directory)
                directory = os.path.join(directory, part)
                try:
                    os.mkdir(directory)
                except FileExistsError:
                    pass
                except OSError as exc:
                    raise CgroupError(f"cannot create cgroup {directory}: {exc.strerror or exc}") from exc

        return self._create(group, make, limits)

    def open(self, relpath: str) -> Cgroup | None:
        group = self._group(relpath)
        return group if group.exists() else None


# --------------------------------------------------------------------------------------------- detection


@dataclass(frozen=True)
class _Mount:
    path: str
    fstype: str
    options: frozenset[str]


_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def _parse_mounts(text: str) -> list[_Mount]:
    """The cgroup and cgroup2 entries of a /proc/self/mounts text, in order."""
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 4 or fields[2] not in ("cgroup", "cgroup2"):
            continue
        path = _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), fields[1])
        mounts.append(_Mount(path, fields[2], frozenset(fields[3].split(","))))
    return mounts


def _v1_mountpoints(mounts: Iterable[_Mount]) -> dict[str, str]:
    """Controller name -> mount point of its v1 hierarchy (the first mount of each wins)."""
    result: dict[str, str] = {}
    for mount in mounts:
        if mount.fstype != "cgroup":
            continue
        for controller in _V1_REQUIRED + _V1_OPTIONAL:
            if controller in mount.options:
                result.setdefault(controller, mount.path)
    return result


def _writable(mount: _Mount) -> bool:
    return "ro" not in mount.options and os.access(mount.path, os.W_OK)


def detect(mounts_file: str = MOUNTS_FILE) -> CgroupDriver | None:
    """The usable cgroup hierarchy of this machine, or ``None`` (not mounted, read-only, or not root)."""
    try:
        mounts = _parse_mounts(_read(mounts_file))
    except OSError:
        return None
    v1 = _v1_mountpoints(mounts)
    if all(c in v1 for c in _V1_REQUIRED):
        by_path = {m.path: m for m in mounts}
        if all(_writable(by_path[v1[c]]) for c in _V1_REQUIRED):
            usable = {c: p for c, p in v1.items() if c in _V1_REQUIRED or _writable(by_path[p])}
            return CgroupV1(usable)
    for mount in mounts:
        if mount.fstype != "cgroup2":
            continue
        try:
            controllers = _read(os.path.join(mount.path, "cgroup.controllers")).split()
        except OSError:
            continue
        if all(c in controllers for c in _V2_REQUIRED) and _writable(mount):
            return CgroupV2(mount.path)
    return None


def prepare_preexec(cgroup: Cgroup) -> Callable[[], None]:
    """A ``preexec_fn`` that moves the forked child into ``cgroup`` (run before dropping root with setuid).

    The ``cgroup.procs`` paths are computed here, in the parent; the returned function only calls
    os.open/os.write/os.close. Writing ``0`` to ``cgroup.procs`` moves the writing process (v1 and v2).
    """
    files = cgroup.procs_files()

    def join_cgroup() -> None:
        for path in files:
            fd = os.open(path, os.O_WRONLY)
            try:
                os.write(fd, b"0")
            finally:
                os.close(fd)

    return join_cgroup
