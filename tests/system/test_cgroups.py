"""hubfleet.system.cgroups against the real cgroups of this machine (root only, no mocks)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hubfleet.system.cgroups import (
    Cgroup,
    CgroupDriver,
    CgroupV1,
    Limits,
    _parse_mounts,
    _v1_mountpoints,
    detect,
    prepare_preexec,
)
from tests.helpers import wait_until
from tests.requirements import need

MiB = 1024 * 1024
TOP = "hubfleet-test"

pytestmark = pytest.mark.needs("root", "cgroups")


def _driver_or_skip() -> CgroupDriver:
    need("root", "cgroups")
    driver = detect()
    assert driver is not None
    return driver


@pytest.fixture
def driver() -> CgroupDriver:
    return _driver_or_skip()


@pytest.fixture
def relpath(driver: CgroupDriver) -> Iterator[str]:
    """A unique cgroup path; whatever was created under it is killed and removed afterwards."""
    path = f"{TOP}/{uuid.uuid4().hex[:12]}"
    yield path
    group = driver.open(path)
    if group is not None:
        group.remove()
    top = driver.open(TOP)
    if top is not None:
        for directory in top.paths:  # only if empty: other test runs may be using it
            with contextlib.suppress(OSError):
                os.rmdir(directory)


def _spawn(group: Cgroup, code: str, **kwargs: object) -> subprocess.Popen[str]:
    return subprocess.Popen(  # type: ignore[call-overload]
        [sys.executable, "-c", code],
        preexec_fn=prepare_preexec(group),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def _limit_files(group: Cgroup) -> dict[str, str]:
    """The limit files as the kernel reports them, keyed by a version-independent name."""
    if group.version == 1:
        names = {
            "memory": ("memory.limit_in_bytes",),
            "cpu": ("cpu.cfs_quota_us", "cpu.cfs_period_us"),
            "pids": ("pids.max",),
            "swap": ("memory.memsw.limit_in_bytes",),  # memory + swap
        }
    else:
        names = {"memory": ("memory.max",), "cpu": ("cpu.max",), "pids": ("pids.max",), "swap": ("memory.swap.max",)}
    result = {}
    for key, files in names.items():
        values = []
        for name in files:
            for directory in group.paths:
                if os.path.exists(os.path.join(directory, name)):
                    values.append(Path(directory, name).read_text().strip())
        result[key] = " ".join(values)
    return result


def _gone(pid: int) -> bool:
    """No such process, or only a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def test_parse_mounts_resolves_joined_v1_controllers_and_escapes() -> None:
    text = (
        "cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,nosuid,nodev,noexec,relatime,cpu,cpuacct 0 0\n"
        "cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0\n"
        "cgroup /sys/fs/cgroup/systemd cgroup rw,relatime,xattr,name=systemd 0 0\n"
        "cgroup /mnt/with\\040space cgroup rw,pids 0 0\n"
        "cgroup2 /sys/fs/cgroup/unified cgroup2 rw,nsdelegate 0 0\n"
        "proc /proc proc rw 0 0\n"
    )
    mounts = _parse_mounts(text)
    assert [m.fstype for m in mounts] == ["cgroup"] * 4 + ["cgroup2"]
    assert _v1_mountpoints(mounts) == {
        "cpu": "/sys/fs/cgroup/cpu,cpuacct",
        "cpuacct": "/sys/fs/cgroup/cpu,cpuacct",
        "memory": "/sys/fs/cgroup/memory",
        "pids": "/mnt/with space",
    }


def test_limits_validate() -> None:
    assert Limits(cpu=0.5).cpu_quota_us == 50_000
    assert Limits(cpu=2).cpu_quota_us == 200_000
    assert Limits(cpu=0.001).cpu_quota_us == 1_000
    assert Limits().cpu_quota_us is None
    for bad in ({"memory_bytes": 0}, {"cpu": 0}, {"pids_max": -1}, {"cpu": True}, {"memory_bytes": 1.5}):
        with pytest.raises(ValueError):
            Limits(**bad)  # type: ignore[arg-type]


def test_detect_matches_mounts(driver: CgroupDriver) -> None:
    mounts = _parse_mounts(Path("/proc/self/mounts").read_text())
    v1 = _v1_mountpoints(mounts)
    expected = 1 if {"memory", "cpu"} <= v1.keys() else 2
    assert driver.version == expected
    if isinstance(driver, CgroupV1):  # e.g. the hybrid build machines: controllers on v1, empty unified tree
        assert driver.mountpoints == v1
        assert all(os.path.ismount(path) for path in driver.mountpoints.values())


def test_relpath_is_checked(driver: CgroupDriver) -> None:
    for bad in ("", "/abs", "a/../b", "a//b", "."):
        with pytest.raises(ValueError):
            driver.open(bad)


def test_memory_limit_oom_kills_the_child(driver: CgroupDriver, relpath: str) -> None:
    group = driver.create(relpath, Limits(memory_bytes=64 * MiB))
    code = (
        "import time\n"
        "chunks = []\n"
        "for _ in range(16):\n"
        "    chunks.append(b'x' * (16 << 20))\n"  # 256 MiB, every page written
        "time.sleep(5)\n"
        "print('survived')\n"
    )
    proc = _spawn(group, code)
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL, out
    assert group.oom_kills() >= 1
    peak = group.memory_peak_bytes()
    assert peak is None or 32 * MiB <= peak <= 64 * MiB
    assert 0 <= group.memory_bytes() <= 64 * MiB


def test_cpu_limit_throttles_a_busy_loop(driver: CgroupDriver, relpath: str) -> None:
    group = driver.create(relpath, Limits(cpu=0.2))
    deadline = time.time() + 1.5
    proc = _spawn(group, f"import time\nwhile time.time() < {deadline!r}:\n    pass\n")
    proc.communicate(timeout=10)
    assert proc.returncode == 0
    used = group.cpu_seconds()
    assert 0.1 <= used <= 0.35, used


def test_pids_limit_stops_a_fork_loop(driver: CgroupDriver, relpath: str) -> None:
    group = driver.create(relpath, Limits(pids_max=20))
    code = (
        "import os, signal, time\n"
        "children = []\n"
        "error = None\n"
        "for _ in range(100):\n"
        "    try:\n"
        "        pid = os.fork()\n"
        "    except OSError as exc:\n"
        "        error = type(exc).__name__\n"
        "        break\n"
        "    if pid == 0:\n"
        "        time.sleep(30)\n"
        "        os._exit(0)\n"
        "    children.append(pid)\n"
        "for pid in children:\n"
        "    os.kill(pid, signal.SIGKILL)\n"
        "    os.waitpid(pid, 0)\n"
        "print(len(children), error)\n"
    )
    proc = _spawn(group, code)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    forked, error = out.split()
    assert error == "BlockingIOError"
    assert 15 <= int(forked) <= 19  # the child itself is the 20th task


def test_kill_all_and_remove_leave_nothing(driver: CgroupDriver, relpath: str) -> None:
    group = driver.create(f"{relpath}/server", Limits(memory_bytes=256 * MiB, cpu=1, pids_max=50))
    # a server that daemonizes grandchildren (they outlive their parent); it says ready once every grandchild
    # runs and every middle child is reaped, so the group then holds exactly the server and three grandchildren ...
    code = (
        "import os, sys, time\n"
        "r, w = os.pipe()\n"
        "for _ in range(3):\n"
        "    child = os.fork()\n"
        "    if child == 0:\n"
        "        if os.fork() == 0:\n"
        "            os.write(w, b'x')\n"
        "            time.sleep(60)\n"
        "        os._exit(0)\n"
        "    os.waitpid(child, 0)\n"
        "got = b''\n"
        "while len(got) < 3:\n"
        "    got += os.read(r, 3 - len(got))\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = _spawn(group, code)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    # ... and a process that was started elsewhere and moved in by pid
    other = subprocess.Popen(["sleep", "60"])
    group.add_process(other.pid)
    pids = group.pids()
    assert proc.pid in pids and other.pid in pids and len(pids) == 5, pids
    parent = driver.open(relpath)
    assert parent is not None and set(parent.pids()) == set(pids)  # descendants are included

    parent.remove()  # removing the parent kills and removes the child group too
    assert proc.wait(timeout=5) == -signal.SIGKILL
    assert other.wait(timeout=5) == -signal.SIGKILL
    proc.communicate()
    wait_until(lambda: all(_gone(pid) for pid in pids), 2, "every process of the group gone", every=0.02)
    assert group.pids() == []
    for directory in (*group.paths, *parent.paths):
        assert not os.path.exists(directory)
    assert driver.open(relpath) is None
    parent.remove()  # already gone: no error
    group.kill_all()


def test_create_is_idempotent_and_updates_limits(driver: CgroupDriver, relpath: str) -> None:
    first = driver.create(relpath, Limits(memory_bytes=64 * MiB, cpu=0.5, pids_max=50))
    limits = _limit_files(first)
    assert {k: limits[k] for k in ("memory", "cpu", "pids")} == {
        "memory": str(64 * MiB),
        "cpu": "50000 100000",
        "pids": "50",
    }
    assert limits["swap"] in ("", str(64 * MiB) if first.version == 1 else "0")  # "": no swap accounting
    sleeper = subprocess.Popen(["sleep", "60"], preexec_fn=prepare_preexec(first))
    try:
        second = driver.create(relpath, Limits(memory_bytes=128 * MiB, cpu=1.0))
        assert second.paths == first.paths
        assert second.pids() == [sleeper.pid]  # the running server keeps its place
        limits = _limit_files(second)
        assert limits["memory"] == str(128 * MiB)
        assert limits["swap"] in ("", str(128 * MiB) if second.version == 1 else "0")
        assert limits["cpu"] == "100000 100000"
        assert limits["pids"] == "max"

        driver.create(relpath, Limits(memory_bytes=32 * MiB, pids_max=10))  # lowering works too
        limits = _limit_files(second)
        assert limits["memory"] == str(32 * MiB)
        assert limits["swap"] in ("", str(32 * MiB) if second.version == 1 else "0")
        assert limits["pids"] == "10"
        assert limits["cpu"] == ("-1 100000" if second.version == 1 else "max 100000")

        unlimited = driver.create(relpath, Limits())
        if unlimited.version == 1:
            assert int(_limit_files(unlimited)["memory"]) > 2**62
        else:
            assert _limit_files(unlimited)["memory"] == "max"
    finally:
        sleeper.kill()
        sleeper.wait()
