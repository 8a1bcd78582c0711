"""What the benchmarks share: CPU accounting, machine information, ports, processes, the hubfleet CLI, clean-up,
summaries and the results file.

Imported by the benchmarks as `common` (the scripts' folder is on sys.path when they run as
`.venv/bin/python bench/<name>.py`). See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import pwd
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import httpx
import jupyterhub
import psutil

import hubfleet
from hubfleet.fleet.ports import port_is_free
from hubfleet.fleet.processes import find_proxy_command
from hubfleet.system import accounts, cgroups

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the test suite's helpers, for the benchmarks too

from tests import helpers as test_helpers

REPO = Path(__file__).resolve().parent.parent
USER_ENV = Path("/opt/hubfleet/user-env")
SINGLEUSER = USER_ENV / "bin" / "jupyterhub-singleuser"

HUB_START_TIMEOUT = 120.0

MARKER_ENV = "HUBFLEET_BENCH_MARKER"
"""Environment variable carried by a bare hub, its proxy and its servers, to find them at clean-up."""

T = TypeVar("T")


class BenchError(RuntimeError):
    """The benchmark could not run (a hub or the fleet did not start, a spawn or a run failed, ...)."""


def log(message: str) -> None:
    print(message, flush=True)


# --------------------------------------------------------------------------------------------- CPU use


@dataclass(frozen=True)
class CpuSample:
    """CPU seconds used so far: by the whole machine, and by each of the benchmark's own processes."""

    busy: float
    total: float
    ours: dict[tuple[int, float], tuple[str, float]]
    """(pid, start time) → (category, CPU seconds including reaped children)."""
    cgroups: dict[str, float] = field(default_factory=dict)
    """CPU seconds used so far in the cgroups the meter watches, by name (none unless it watches some)."""


@dataclass(frozen=True)
class CpuUse:
    """CPU use between two samples."""

    busy_percent: float
    """Share of the machine's CPU time that was busy (every process)."""
    others_percent: float
    """Share of the machine's CPU time used by processes that are not the benchmark's."""
    seconds: dict[str, float]
    """CPU seconds of the benchmark's processes, by category (the meter's categories, and `client`: this script)."""
    cgroup_seconds: dict[str, float] = field(default_factory=dict)
    """CPU seconds used in each cgroup the meter watches."""


class CpuMeter:
    """The machine's CPU use, split into the benchmark's own processes (by category) and everyone else's.

    A benchmark says which processes are its own with `categorizer` (this script is always `client`), and which
    cgroups to read with `cgroup_seconds`. CPU time includes reaped children, so processes that ended between two
    samples still count (to whoever reaped them).
    """

    def categorizer(self) -> Callable[[psutil.Process], str | None]:
        """For one sample: the category of a process that is the benchmark's, None for any other process."""
        raise NotImplementedError

    def cgroup_seconds(self) -> dict[str, float]:
        """CPU seconds used so far in the cgroups this meter watches."""
        return {}

    def sample(self) -> CpuSample:
        times = psutil.cpu_times()
        busy = times.user + times.nice + times.system + times.irq + times.softirq
        total = busy + times.idle + times.iowait + times.steal
        category_of = self.categorizer()
        ours: dict[tuple[int, float], tuple[str, float]] = {}
        for process in psutil.process_iter():
            with contextlib.suppress(psutil.Error):
                category = "client" if process.pid == os.getpid() else category_of(process)
                if category is not None:
                    cpu = process.cpu_times()
                    key = (process.pid, process.create_time())
                    ours[key] = (category, cpu.user + cpu.system + cpu.children_user + cpu.children_system)
        return CpuSample(busy, total, ours, self.cgroup_seconds())

    @staticmethod
    def usage(before: CpuSample, after: CpuSample) -> CpuUse:
        """CPU use between two samples."""
        total = after.total - before.total
        seconds: dict[str, float] = {}
        for key, (category, used) in after.ours.items():
            earlier = before.ours.get(key, (category, 0.0))[1]
            seconds[category] = seconds.get(category, 0.0) + max(used - earlier, 0.0)
        in_cgroups = {
            name: round(used - before.cgroups.get(name, 0.0), 2)
            for name, used in sorted(after.cgroups.items())
            if used >= before.cgroups.get(name, 0.0)
        }
        if total <= 0:
            return CpuUse(0.0, 0.0, {}, {})
        busy = after.busy - before.busy
        others = min(max(busy - sum(seconds.values()), 0.0), busy)
        return CpuUse(
            busy_percent=round(100.0 * busy / total, 1),
            others_percent=round(100.0 * others / total, 1),
            seconds={category: round(value, 2) for category, value in sorted(seconds.items())},
            cgroup_seconds=in_cgroups,
        )

    async def wait_quiet(self, timeout: float, threshold: float = 20.0) -> float:
        """Wait (at most `timeout` s) until the CPUs are less than `threshold` % busy over one second."""
        start = time.perf_counter()
        while time.perf_counter() - start < timeout:
            before = self.sample()
            await asyncio.sleep(1.0)
            if self.usage(before, self.sample()).busy_percent < threshold:
                break
        return round(time.perf_counter() - start, 1)


def cmdline_with_cwd(process: psutil.Process) -> list[str]:
    """The process's command line, preceded by its working directory when that can be read."""
    cmdline = process.cmdline()
    with contextlib.suppress(psutil.Error):
        cmdline = [process.cwd(), *cmdline]
    return cmdline


# --------------------------------------------------------------------------------------------- processes and ports


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_port_block(size: int) -> tuple[int, int]:
    """`size` consecutive free loopback ports below the ephemeral range (for the fleet's internal_ports)."""
    for _ in range(200):
        start = 20000 + secrets.randbelow(240) * 50
        if all(port_is_free(port) for port in range(start, start + size)):
            return start, start + size - 1
    raise BenchError(f"no block of {size} free ports found in 20000-32000")


def processes_where(predicate: Callable[[psutil.Process], bool]) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter():
        if process.pid == os.getpid():
            continue
        with contextlib.suppress(psutil.Error):
            if predicate(process):
                found.append(process)
    return found


def kill_processes(processes: list[psutil.Process], timeout: float = 10.0) -> int:
    """SIGTERM, then SIGKILL what is left after `timeout`. Returns how many there were."""
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.terminate()
    _, alive = psutil.wait_procs(processes, timeout=timeout)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(alive, timeout=5)
    return len(processes)


def owned_by(uids: set[int]) -> Callable[[psutil.Process], bool]:
    return lambda process: process.uids().real in uids or process.uids().effective in uids


def cmdline_mentions(text: str) -> Callable[[psutil.Process], bool]:
    return lambda process: any(text in arg for arg in process.cmdline())


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no {path})"


@contextlib.contextmanager
def no_interrupts() -> Iterator[None]:
    """Clean-up runs to the end even if Ctrl-C is pressed again."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def attempt(what: str, action: Callable[[], object]) -> None:
    """Run one clean-up step; report its failure and go on with the next."""
    try:
        action()
    except Exception as exc:
        log(f"  clean-up: {what} failed: {exc}")


# --------------------------------------------------------------------------------------------- hubfleet


def fleet_file(name: str, port: int, ports: tuple[int, int], shared_root: Path, hubs: dict[str, Any]) -> str:
    """A fleet file (JSON is YAML) of `hubs` (name → spec) with front door and internal ports on loopback."""
    fleet = {
        "name": name,
        "front_door": {"host": "127.0.0.1", "port": port},
        "internal_ports": {"start": ports[0], "end": ports[1]},
        "paths": {"user_env": str(USER_ENV), "shared_root": str(shared_root)},
        "hubs": hubs,
    }
    return json.dumps(fleet, indent=2) + "\n"


def run_hubfleet(*args: str, timeout: float = 400) -> subprocess.CompletedProcess[str]:
    """The real hubfleet CLI, run with this interpreter (as the tests run it); its failures are the caller's."""
    return test_helpers.hubfleet(*args, check=False, timeout=timeout)


@dataclass(frozen=True)
class RunningFleet:
    """A fleet started by `running_fleet`."""

    hub: str
    front_door_port: int
    internal_ports: tuple[int, int]
    state_dir: Path
    up_seconds: float
    """How long `hubfleet up --detach` took."""

    @property
    def door(self) -> str:
        """The hub's URL through the front door (no trailing slash)."""
        return self.door_of(self.hub)

    def door_of(self, hub: str) -> str:
        """The URL of one of the fleet's hubs through the front door (no trailing slash)."""
        return f"http://127.0.0.1:{self.front_door_port}/hubs/{hub}"


@contextlib.contextmanager
def running_fleet(
    name: str,
    hub: str,
    hub_spec: dict[str, Any],
    source: Path,
    state_dir: Path,
    shared_root: Path | None = None,
    leftover_uids: Callable[[], set[int]] = set,
    cleanup: Sequence[tuple[str, Callable[[], object]]] = (),
    more_hubs: dict[str, dict[str, Any]] | None = None,
) -> Iterator[RunningFleet]:
    """A fleet of hub `hub` (and `more_hubs`, name → spec) written to `source` and started with the real CLI
    (`hubfleet up --detach`). Its shared root is `shared_root`, else a new one in /srv (not below a private temporary
    folder: users' processes reach it).

    At the end (also on failure or Ctrl-C): `hubfleet down`, then any process still naming the state directory or
    owned by `leftover_uids()` is killed, the `cleanup` steps run, a new shared root is removed, and the hubs' Unix
    users and groups are removed.
    """
    hubs = {hub: hub_spec, **(more_hubs or {})}
    throwaway = shared_root is None
    if shared_root is None:
        shared_root = Path(f"/srv/hubfleet-bench-{secrets.token_hex(3)}")
    front = free_port()
    ports = free_port_block(20 + 20 * len(hubs))
    source.write_text(fleet_file(name, front, ports, shared_root, hubs))
    names = ", ".join(hubs)
    log(f"hubfleet: starting hub(s) {names} (front door 127.0.0.1:{front}, internal ports {ports[0]}-{ports[1]})")
    try:
        started = time.perf_counter()
        result = run_hubfleet("up", str(source), "--detach", "--state-dir", str(state_dir))
        if result.returncode != 0:
            raise BenchError(
                f"hubfleet up failed ({result.returncode}):\n{result.stdout}\n{result.stderr}\n"
                + tail(state_dir / "supervisor.out")
            )
        up_seconds = time.perf_counter() - started
        log(f"hubfleet: fleet up in {up_seconds:.1f} s")
        yield RunningFleet(hub, front, ports, state_dir, up_seconds)
    finally:
        with no_interrupts():
            log("hubfleet: stopping the fleet and removing its Unix accounts")
            down = run_hubfleet("down", "--state-dir", str(state_dir), timeout=300)
            if down.returncode != 0:
                log(f"  clean-up: hubfleet down exited with {down.returncode}: {down.stdout} {down.stderr}")
            leftovers = processes_where(cmdline_mentions(str(state_dir)))
            leftovers += processes_where(owned_by(leftover_uids()))
            if leftovers:
                log(f"  clean-up: {len(leftovers)} process(es) left after hubfleet down: killing them")
                kill_processes(leftovers)
            for what, action in cleanup:
                attempt(what, action)
            if throwaway:
                attempt(f"removing {shared_root}", lambda: shutil.rmtree(shared_root, ignore_errors=True))
            for name in hubs:
                attempt(f"removing hub {name}'s Unix users and groups", lambda n=name: accounts.remove_hub_accounts(n))


# --------------------------------------------------------------------------------------------- servers and bare hubs


def server_cpu(unix_user: str) -> tuple[float | None, float | None]:
    """CPU seconds used so far by a user's running server (with its reaped children), and its cgroup's throttling.

    The second value is how long the kernel held the server back for its CPU quota (None without a quota cgroup).
    """
    try:
        uid = pwd.getpwnam(unix_user).pw_uid
    except KeyError:
        return None, None
    used = 0.0
    throttled: float | None = None
    for process in processes_where(owned_by({uid})):
        with contextlib.suppress(psutil.Error):
            cpu = process.cpu_times()
            used += cpu.user + cpu.system + cpu.children_user + cpu.children_system
            if throttled is None:
                throttled = cgroup_throttled_seconds(process.pid)
    return round(used, 2), throttled


def cgroup_throttled_seconds(pid: int) -> float | None:
    """Seconds the CPU controller of `pid`'s cgroup throttled it (None when not in a cgroup with a CPU quota)."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if path in ("/", ""):
            continue
        names = controllers.split(",") if controllers else []
        for mount in mounts:
            fields = mount.split()
            if len(fields) < 4:
                continue
            options = fields[3].split(",")
            if ("cpu" in names and fields[2] == "cgroup" and "cpu" in options) or (
                not names and fields[2] == "cgroup2"
            ):
                stat = Path(fields[1] + path) / "cpu.stat"
                with contextlib.suppress(OSError):
                    values = dict(item.split() for item in stat.read_text().splitlines() if len(item.split()) == 2)
                    if "throttled_time" in values:
                        return round(int(values["throttled_time"]) / 1e9, 2)
                    if "throttled_usec" in values:
                        return round(int(values["throttled_usec"]) / 1e6, 2)
    return None


def environ_has(marker: str) -> Callable[[psutil.Process], bool]:
    def check(process: psutil.Process) -> bool:
        return process.environ().get(MARKER_ENV) == marker

    return check


def uids_of(names: list[str]) -> set[int]:
    uids = set()
    for name in names:
        with contextlib.suppress(KeyError):
            uids.add(pwd.getpwnam(name).pw_uid)
    return uids


def wait_http_ok(url: str, process: subprocess.Popen[bytes] | None, log_file: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise BenchError(f"exited with {process.returncode} during start-up:\n{tail(log_file)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        time.sleep(0.2)
    raise BenchError(f"{url} did not answer within {timeout:.0f} s:\n{tail(log_file)}")


def check_spawn_prerequisites() -> None:
    """What benchmarks that spawn servers as real Unix users need (BenchError saying what is missing)."""
    if os.geteuid() != 0:
        raise BenchError("run as root: both setups spawn servers as real Unix users")
    if not os.access(SINGLEUSER, os.X_OK):
        raise BenchError(f"no {SINGLEUSER}: run `make setup`")
    for tool in ("useradd", "userdel"):
        if shutil.which(tool) is None:
            raise BenchError(f"{tool} not found")
    find_proxy_command()


def warm_file_cache() -> None:
    """Read the user environment once, so that neither setup's first spawn pays for a cold page cache."""
    subprocess.run(
        [str(USER_ENV / "bin" / "python"), "-c", "import jupyterhub.singleuser, jupyterlab, jupyter_server.serverapp"],
        capture_output=True,
        check=False,
        timeout=120,
    )


def bare_config(
    root: Path,
    public: int,
    proxy_api: int,
    hub_port: int,
    token: str,
    password: str,
    marker: str,
    users: list[str],
    http_timeout: int = 60,
) -> str:
    scopes = ["admin:users", "admin:servers", "tokens", "list:users", "read:users", "read:servers"]
    return textwrap.dedent(
        f"""\
        # A bare JupyterHub with its own configurable-http-proxy and JupyterHub's own LocalProcessSpawner.
        c = get_config()  # noqa: F821
        c.JupyterHub.bind_url = "http://127.0.0.1:{public}/"
        c.JupyterHub.base_url = "/"
        c.JupyterHub.hub_bind_url = "http://127.0.0.1:{hub_port}"
        c.JupyterHub.db_url = {f"sqlite:///{root / 'jupyterhub.sqlite'}"!r}
        c.JupyterHub.cookie_secret_file = {str(root / "jupyterhub_cookie_secret")!r}
        c.JupyterHub.pid_file = {str(root / "jupyterhub.pid")!r}
        c.ConfigurableHTTPProxy.command = [{find_proxy_command()!r}]
        c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api}"
        c.ConfigurableHTTPProxy.auth_token = {secrets.token_hex(32)!r}
        c.JupyterHub.authenticator_class = "shared-password"
        c.SharedPasswordAuthenticator.user_password = {password!r}
        c.Authenticator.allowed_users = {set(users)!r}
        c.JupyterHub.spawner_class = "jupyterhub.spawner.LocalProcessSpawner"
        c.Spawner.cmd = [{str(SINGLEUSER)!r}]
        c.Spawner.default_url = "/lab"
        c.Spawner.ip = "127.0.0.1"
        c.Spawner.http_timeout = {http_timeout}
        c.Spawner.start_timeout = 120
        c.Spawner.environment = {{{MARKER_ENV!r}: {marker!r}}}
        c.JupyterHub.services = [{{"name": "bench-admin", "api_token": {token!r}}}]
        c.JupyterHub.load_roles = [{{"name": "bench-admin", "scopes": {scopes!r}, "services": ["bench-admin"]}}]
        """
    )


def stop_bare_hub(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)  # the hub stops its servers (cleanup_servers) and its proxy
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def userdel(name: str) -> None:
    with contextlib.suppress(KeyError):
        pwd.getpwnam(name)
        result = subprocess.run(["userdel", "-r", name], capture_output=True, text=True, check=False)
        # 12: the home or mail spool could not be removed (e.g. there was no mail spool): the user is gone.
        if result.returncode not in (0, 12):
            raise BenchError(f"userdel -r {name}: {result.returncode} {result.stderr.strip()}")


@dataclass(frozen=True)
class BareHub:
    """A bare JupyterHub started by `bare_hub`."""

    url: str
    """Its public URL (its own proxy), without a trailing slash."""
    port: int
    token: str
    """An admin service's API token (users, servers, tokens)."""
    password: str
    """Every user's password (shared-password authentication)."""
    log_file: Path
    """The hub's log, which also holds its servers' output."""
    up_seconds: float


@contextlib.contextmanager
def bare_hub(label: str, root: Path, users: list[str], http_timeout: int = 60) -> Iterator[BareHub]:
    """A bare JupyterHub 6.1.1 in `root` with its own configurable-http-proxy and JupyterHub's own
    LocalProcessSpawner, its `users` real Unix users made here with `useradd -m` (none may exist yet). Servers get
    `start_timeout` 120 s and `http_timeout` `http_timeout` s (LocalProcessSpawner's start returns at once: the
    server's whole start-up falls under `http_timeout`).

    At the end (also on failure or Ctrl-C) the hub is stopped, whatever it left running is killed and the users are
    removed with their homes. `label` prefixes the progress lines.
    """
    marker = secrets.token_hex(8)
    token = secrets.token_hex(32)
    password = secrets.token_urlsafe(12)
    public, proxy_api, hub_port = free_port(), free_port(), free_port()
    created: list[str] = []
    process: subprocess.Popen[bytes] | None = None
    log_file = root / "jupyterhub.log"
    try:
        existing = {entry.pw_name for entry in pwd.getpwall()}
        for user in users:
            if user in existing:
                raise BenchError(f"user {user} already exists")
            subprocess.run(["useradd", "-m", "-s", "/bin/bash", user], check=True, capture_output=True, text=True)
            created.append(user)
        config = root / "jupyterhub_config.py"
        config.write_text(bare_config(root, public, proxy_api, hub_port, token, password, marker, users, http_timeout))
        log(f"{label}: starting a bare JupyterHub {jupyterhub.__version__} on 127.0.0.1:{public} ({len(users)} users)")
        started = time.perf_counter()
        with open(log_file, "ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "jupyterhub", "-f", str(config)],
                cwd=root,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, MARKER_ENV: marker},
            )
        try:
            wait_http_ok(f"http://127.0.0.1:{public}/hub/api/", process, log_file, HUB_START_TIMEOUT)
        except BenchError as exc:
            raise BenchError(f"the bare JupyterHub {exc}") from None
        up_seconds = time.perf_counter() - started
        log(f"{label}: hub up in {up_seconds:.1f} s")
        yield BareHub(f"http://127.0.0.1:{public}", public, token, password, log_file, up_seconds)
    finally:
        with no_interrupts():
            log(f"{label}: stopping the hub and removing its Unix users")
            if process is not None:
                attempt("stopping the bare hub", lambda: stop_bare_hub(process))
            leftovers = processes_where(environ_has(marker)) + processes_where(owned_by(uids_of(created)))
            if leftovers:
                log(f"  clean-up: {len(leftovers)} process(es) of the bare hub left: killing them")
                kill_processes(leftovers)
            for user in created:
                attempt(f"userdel -r {user}", lambda user=user: userdel(user))  # type: ignore[misc]


# --------------------------------------------------------------------------------------------- report


def summary(values: list[float]) -> dict[str, float]:
    """Median, p90 and p95 (statistics.quantiles, inclusive), max, min and mean, rounded to the millisecond."""
    ordered = sorted(values)
    p90 = statistics.quantiles(ordered, n=10, method="inclusive")[8] if len(ordered) > 1 else ordered[0]
    p95 = statistics.quantiles(ordered, n=20, method="inclusive")[18] if len(ordered) > 1 else ordered[0]
    return {
        "median": round(statistics.median(ordered), 3),
        "p90": round(p90, 3),
        "p95": round(p95, 3),
        "max": round(ordered[-1], 3),
        "min": round(ordered[0], 3),
        "mean": round(statistics.fmean(ordered), 3),
    }


def log_table_header(title: str, header: str) -> None:
    """A table's title, after an empty line, and its header line, underlined."""
    log("")
    log(title)
    log(header)
    log("-" * len(header))


def command_output(*argv: str) -> str:
    try:
        result = subprocess.run(list(argv), capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({exc})"
    return result.stdout.strip() or result.stderr.strip()


def machine_info(
    after_jupyterhub: dict[str, Any] | None = None, before_cgroups: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The machine, the versions and the hubfleet commit, with a benchmark's own entries at the places given."""
    cpu_model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    driver = cgroups.detect()
    commit = command_output("git", "-C", str(REPO), "rev-parse", "HEAD")
    changed = command_output("git", "--no-optional-locks", "-C", str(REPO), "diff", "--name-only", "HEAD", "--", "src")
    return {
        "nproc": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model,
        "memory_bytes": psutil.virtual_memory().total,
        "platform": platform.platform(),
        "python_version": platform.python_version(),
        "jupyterhub_version": jupyterhub.__version__,
        **(after_jupyterhub or {}),
        "hubfleet_version": hubfleet.__version__,
        "hubfleet_commit": commit,
        "hubfleet_src_changed_since_commit": changed.split(),
        **(before_cgroups or {}),
        "cgroups": type(driver).__name__ if driver is not None else None,
    }


# --------------------------------------------------------------------------------------------- main


def parse_args(
    argv: list[str] | None,
    doc: str | None,
    count: tuple[str, str, int, str],
    default_out: Path,
    each: str,
    kept: str,
    more: Callable[[argparse.ArgumentParser], None] | None = None,
) -> argparse.Namespace:
    """The command line: the benchmark's `count` option (name, short name, default, help; at least 1), the options
    `more` adds, then --out, --quiet-timeout (waited before each `each`) and --keep-workdir (which keeps `kept`)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0] if doc else None)
    name, short, default, text = count
    parser.add_argument(name, short, type=int, default=default, help=text)
    if more is not None:
        more(parser)
    parser.add_argument("--out", type=Path, default=default_out, help=f"JSON results (default {default_out})")
    parser.add_argument(
        "--quiet-timeout",
        type=float,
        default=60.0,
        help=f"before each {each}, wait up to this many seconds for the CPUs to be < 20%% busy (default 60)",
    )
    parser.add_argument("--keep-workdir", action="store_true", help=f"keep the temporary directory ({kept})")
    args = parser.parse_args(argv)
    if getattr(args, name.removeprefix("--").replace("-", "_")) < 1:
        parser.error(f"{name} must be at least 1")
    return args


def on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run_async(work: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(work)`, where Ctrl-C or SIGTERM cancel `work` at once (its `finally` and `async with` blocks run:
    clients close, servers are stopped) and then raise KeyboardInterrupt. A KeyboardInterrupt raised by a signal
    handler could otherwise land inside a library's callback and be swallowed."""

    async def cancellable() -> T:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, task.cancel)
        try:
            return await work
        except asyncio.CancelledError:
            raise KeyboardInterrupt from None
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)

    previous = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        return asyncio.run(cancellable())
    finally:
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])


def prepare(check_prerequisites: Callable[[], None]) -> dt.datetime | None:
    """Turn SIGTERM into Ctrl-C (so that clean-up runs) and check the prerequisites; returns the start time, or None
    (reported) if they are not met."""
    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        check_prerequisites()
    except BenchError as exc:
        log(f"error: {exc}")
        return None
    return dt.datetime.now(dt.UTC)


def run_in_workdir(
    prefix: str,
    body: Callable[[Path], T],
    errors: tuple[type[Exception], ...],
    keep_workdir: bool,
    kept: str,
    describe: Callable[[Exception], str] = str,
) -> tuple[int, T | None]:
    """Run `body` in a new temporary directory: (0, its result), or (exit status, None) after Ctrl-C or an error.

    The directory is removed afterwards, unless `keep_workdir` (it then holds `kept`) or after an error (its logs).
    """
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        result = body(workdir)
    except KeyboardInterrupt:
        log("interrupted: everything the benchmark started has been stopped and removed")
        shutil.rmtree(workdir, ignore_errors=True)
        return 130, None
    except errors as exc:
        log(f"error: {describe(exc)}")
        log(f"(logs kept in {workdir})")
        return 1, None
    if keep_workdir:
        log(f"({kept} kept in {workdir})")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0, result


def write_results(
    out: Path,
    benchmark: str,
    started: dt.datetime,
    settings: dict[str, Any],
    definition: str,
    method: list[str],
    machine: dict[str, Any],
    results: dict[str, Any],
) -> None:
    """The results document: the benchmark's name, when it started and finished, its `settings`, what it measures
    (`definition`, `method`), the `machine`, then its `results`."""
    document = {
        "benchmark": benchmark,
        "date": started.isoformat(timespec="seconds"),
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        **settings,
        "definition": definition,
        "method": method,
        "machine": machine,
        **results,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=2) + "\n")
    log(f"\nResults written to {out}")
