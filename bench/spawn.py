"""Spawn time-to-ready: a hubfleet hub (through its front door) against a bare JupyterHub 6.1.1, in one run.

Usage (as root, from the repository root):

    .venv/bin/python bench/spawn.py [--users N] [--out bench/results/spawn.json]

For each setup the script starts the hub, warms up (one spawn and stop per user: on hubfleet this is the spawn that
creates the user's Unix account, reported on its own), then measures one round of N sequential spawns and one
round of N concurrent spawns, stopping every server between rounds. Time-to-ready is the time from the POST
`users/<u>/server` until `servers[""]["ready"]` is true in GET `users/<u>` (polled every 0.1 s); each ready server
is then asked for its `/api/status` once, through the same door, to prove it answers. Everything the script starts
or creates (fleet, hub, proxies, servers, Unix users and groups) is removed at the end, also on failure or Ctrl-C.
See bench/README.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import re
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
from common import (
    REPO,
    USER_ENV,
    BenchError,
    CpuMeter,
    CpuUse,
    bare_hub,
    check_spawn_prerequisites,
    cmdline_with_cwd,
    command_output,
    log,
    log_table_header,
    machine_info,
    parse_args,
    prepare,
    run_in_workdir,
    running_fleet,
    server_cpu,
    summary,
    uids_of,
    warm_file_cache,
    write_results,
)

from hubfleet.fleet.processes import find_proxy_command
from hubfleet.system import accounts

DEFAULT_OUT = REPO / "bench" / "results" / "spawn.json"

POLL_SECONDS = 0.1
SPAWN_TIMEOUT = 180.0
STOP_TIMEOUT = 120.0
SETTLE_SECONDS = 1.0
"""Pause after every stop, so that a round does not start while the previous servers are still exiting."""

USER_ENV_VERSIONS = ("jupyterhub_version", "jupyterlab_version", "jupyter_server_version", "python_version")

RATIO_MEANING = "1.00 = same speed; > 1 = hubfleet slower"

METHOD = [
    "hubfleet: a one-hub fleet (shared-password auth, one profile of 1 CPU / 1G) started with `hubfleet up --detach`;"
    " every request goes through the front door (/hubs/<hub>/...) with the fleet's service token; servers run as"
    " Unix users <hub>_bench-<i> in their own cgroup, spawned by hubfleet's IsolatedSpawner",
    "baseline: a bare JupyterHub started with `python -m jupyterhub -f cfg.py` (base_url /, its own"
    " configurable-http-proxy), JupyterHub's own LocalProcessSpawner, the same jupyterhub-singleuser and"
    " default_url /lab, servers run as Unix users made beforehand with `useradd -m`; requests go to its proxy",
    "first spawn: one spawn and stop per user on an otherwise idle hub, before the measured rounds; on hubfleet it"
    " creates the user's Unix account (useradd), so it is reported apart and kept out of the rounds",
    "sequential: N spawns one after the other, servers left running until the end of the round;"
    " concurrent: N spawns started at once; every server is stopped (DELETE, wait until gone) after each round",
    "the setups are interleaved step by step (hubfleet then baseline for each of first spawn, sequential,"
    " concurrent); each round first waits up to --quiet-timeout s for the CPUs to be < 20% busy",
    "time-to-ready: POST hub/api/users/<u>/server until servers[''].ready in GET hub/api/users/<u>, polled every"
    " 0.1 s; then one GET user/<u>/api/status (with a token minted for the user) must answer 200 (not timed)",
    "cpu_busy_percent: the machine's CPUs busy while the round spawned; other_cpu_percent: the part used by"
    " processes that are not the benchmark's (other work on the machine: noise); cpu_seconds: CPU used by the"
    " benchmark's processes during the round, by setup and kind (servers, hub, proxies, other = supervisor,"
    " culler, standby; client = this script); server_cpu_seconds: CPU a server used until ready;"
    " throttled_seconds: time the server's cgroup CPU quota held it back until ready",
    "listening_seconds / noticed_seconds, from the hub's log: spawn start ('Creating oauth client') until the"
    " server logs its URL, then until JupyterHub logs 'took … seconds to start' (the bare hub's check of the URL"
    " backs off exponentially with random jitter, up to 5 s between tries; hubfleet's spawner first probes the"
    " port every 0.1 s); *_listening_median ratios compare the first part",
    "p90: linear interpolation between order statistics (statistics.quantiles, inclusive)",
]


# --------------------------------------------------------------------------------------------- measuring


class SetupsCpuMeter(CpuMeter):
    """CPU use of the machine while a round spawns, split into the benchmark's own processes and everyone else's.

    The benchmark's own processes are this script (`client`), and for each setup every process of one of its bench
    users (its `servers`) and everything running in its directory or naming it on its command line: the `hub`, the
    `proxies` and, for hubfleet, the supervisor, idle culler and warm standby (`other`). CPU time includes reaped
    children, so servers stopped during a round still count (to their hub, which reaps them).
    """

    def __init__(self, workdir: Path, targets: list[Target]):
        self.workdir = str(workdir)
        self.targets = targets

    def categorizer(self) -> Callable[[psutil.Process], str | None]:
        uids = {uid: target.label for target in self.targets for uid in uids_of(target.unix_users)}
        return lambda process: self._category(process, uids)

    def _category(self, process: psutil.Process, uids: dict[int, str]) -> str | None:
        uid = process.uids().real
        if uid in uids:
            return f"{uids[uid]}:servers"
        cmdline = cmdline_with_cwd(process)
        for target in self.targets:
            if any(str(target.root) in arg for arg in cmdline):
                if any("configurable-http-proxy" in arg for arg in cmdline):
                    return f"{target.label}:proxies"
                if cmdline[2:4] == ["-m", "jupyterhub"]:
                    return f"{target.label}:hub"
                return f"{target.label}:other"
        if any(self.workdir in arg for arg in cmdline):
            return "other"
        return None


@dataclass
class Spawn:
    """One measured spawn."""

    user: str
    seconds: float
    post_status: int
    api_status: int
    server_cpu_seconds: float | None = None
    """CPU the server used until it was ready (its process and reaped children)."""
    throttled_seconds: float | None = None
    """How long the server's cgroup CPU quota held it back until it was ready (None: no quota cgroup)."""
    listening_seconds: float | None = None
    """From the hub's log: from the start of the spawn until the server said it was running."""
    noticed_seconds: float | None = None
    """From the hub's log: how long after that the hub logged the server as started."""


@dataclass
class Round:
    """The spawns of one round, and how long the round and the stop after it took."""

    mode: str
    spawns: list[Spawn] = field(default_factory=list)
    wall_seconds: float = 0.0
    stop_seconds: float = 0.0
    load_at_start: float = field(default_factory=lambda: os.getloadavg()[0])
    """1-minute load average when the round started."""
    cpu: CpuUse = field(default_factory=lambda: CpuUse(0.0, 0.0, {}))
    """The machine's CPU use while the round spawned."""
    quiet_wait_seconds: float = 0.0
    """How long the round waited for the machine to be quiet before it started."""

    @property
    def seconds(self) -> list[float]:
        return [spawn.seconds for spawn in self.spawns]


@dataclass
class Target:
    """A hub to benchmark: its REST API and the URL prefix its users' servers live under, as seen by users."""

    label: str
    api_url: str
    """Ends with /hub/api."""
    server_prefix: str
    """`{server_prefix}/user/<u>/` is a user's server."""
    token: str
    users: list[str]
    unix_users: list[str]
    """The Unix accounts the users' servers run as (same order as `users`)."""
    root: Path
    """The setup's directory (logs, configuration, state)."""
    hub_log: Path
    """The hub's log, which also holds its servers' output."""
    info: dict[str, Any] = field(default_factory=dict)


class Bench:
    """Spawns and stops servers on one target through its REST API."""

    def __init__(self, target: Target, client: httpx.AsyncClient, meter: SetupsCpuMeter):
        self.target = target
        self.client = client
        self.meter = meter
        self.user_tokens: dict[str, str] = {}

    def _user_url(self, user: str) -> str:
        return f"{self.target.api_url}/users/{user}"

    async def _server(self, user: str) -> dict[str, Any] | None:
        response = await self.client.get(self._user_url(user))
        response.raise_for_status()
        return (response.json().get("servers") or {}).get("")

    async def prepare(self) -> None:
        """Check that every bench user exists on the hub and mint each an API token (for its server's status)."""
        for user in self.target.users:
            response = await self.client.get(self._user_url(user))
            if response.status_code == 404:
                raise BenchError(f"{self.target.label}: user {user} is not on the hub")
            response.raise_for_status()
            if response.json().get("servers"):
                raise BenchError(f"{self.target.label}: {user} already has a server")
            minted = await self.client.post(
                f"{self._user_url(user)}/tokens", json={"note": "spawn benchmark", "expires_in": 3 * 3600}
            )
            minted.raise_for_status()
            self.user_tokens[user] = minted.json()["token"]

    async def spawn(self, user: str) -> Spawn:
        """Start `user`'s server; return once the hub reports it ready (and it answered /api/status)."""
        start = time.perf_counter()
        response = await self.client.post(f"{self._user_url(user)}/server")
        if response.status_code not in (201, 202):
            raise BenchError(f"{self.target.label}: POST server of {user}: HTTP {response.status_code} {response.text}")
        answered = time.perf_counter()
        polls = 0
        while True:
            server = await self._server(user)
            if server is not None and server.get("ready"):
                break
            elapsed = time.perf_counter() - start
            if server is None:
                raise BenchError(f"{self.target.label}: the server of {user} failed to start (gone after POST)")
            if elapsed > SPAWN_TIMEOUT:
                raise BenchError(f"{self.target.label}: the server of {user} not ready after {elapsed:.0f} s")
            # Poll on a fixed 0.1 s cadence after the POST returned, whatever each GET takes.
            polls += 1
            await asyncio.sleep(max(0.0, polls * POLL_SECONDS - (time.perf_counter() - answered)))
        seconds = time.perf_counter() - start
        unix_user = self.target.unix_users[self.target.users.index(user)]
        server_cpu_seconds, throttled = server_cpu(unix_user)
        status = await self.client.get(
            f"{self.target.server_prefix}/user/{user}/api/status",
            headers={"Authorization": f"token {self.user_tokens[user]}"},
        )
        if status.status_code != 200:
            raise BenchError(
                f"{self.target.label}: the ready server of {user} answered /api/status with HTTP {status.status_code}"
            )
        return Spawn(
            user=user,
            seconds=seconds,
            post_status=response.status_code,
            api_status=status.status_code,
            server_cpu_seconds=server_cpu_seconds,
            throttled_seconds=throttled,
        )

    async def stop_all(self) -> float:
        """Stop every bench user's server and wait until the hub has none left; returns the seconds it took."""
        start = time.perf_counter()

        async def stop(user: str) -> None:
            response = await self.client.delete(f"{self._user_url(user)}/server")
            if response.status_code not in (202, 204, 400, 404):
                response.raise_for_status()
            while await self._server(user) is not None:
                if time.perf_counter() - start > STOP_TIMEOUT:
                    raise BenchError(f"{self.target.label}: the server of {user} did not stop in {STOP_TIMEOUT:.0f} s")
                await asyncio.sleep(POLL_SECONDS)

        await asyncio.gather(*(stop(user) for user in self.target.users))
        seconds = time.perf_counter() - start
        await asyncio.sleep(SETTLE_SECONDS)
        return seconds

    async def warm_up(self) -> Round:
        """One spawn and stop per user, each on an otherwise idle hub (on hubfleet: creates the Unix accounts)."""
        result = Round("first spawn")
        cpu = self.meter.sample()
        for user in self.target.users:
            spawn = await self.spawn(user)
            log(f"  {self.target.label:<9} first spawn  {user:<22} {spawn.seconds:6.2f} s")
            result.spawns.append(spawn)
            result.stop_seconds += await self.stop_all()
        result.wall_seconds = sum(result.seconds)
        result.cpu = self.meter.usage(cpu, self.meter.sample())
        return result

    async def sequential(self) -> Round:
        """N spawns one after the other (servers stay up until the end of the round)."""
        result = Round("sequential")
        cpu = self.meter.sample()
        start = time.perf_counter()
        for user in self.target.users:
            spawn = await self.spawn(user)
            log(f"  {self.target.label:<9} sequential   {user:<22} {spawn.seconds:6.2f} s")
            result.spawns.append(spawn)
        result.wall_seconds = time.perf_counter() - start
        result.cpu = self.meter.usage(cpu, self.meter.sample())
        result.stop_seconds = await self.stop_all()
        return result

    async def concurrent(self) -> Round:
        """N spawns started at once."""
        result = Round("concurrent")
        cpu = self.meter.sample()
        start = time.perf_counter()
        result.spawns = list(await asyncio.gather(*(self.spawn(user) for user in self.target.users)))
        result.wall_seconds = time.perf_counter() - start
        result.cpu = self.meter.usage(cpu, self.meter.sample())
        for spawn in result.spawns:
            log(f"  {self.target.label:<9} concurrent   {spawn.user:<22} {spawn.seconds:6.2f} s")
        result.stop_seconds = await self.stop_all()
        return result


LOG_TIME = re.compile(r"^\[\w (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) ")
LOG_SPAWN = re.compile(r"Creating oauth client jupyterhub-user-(?P<user>\S+)")
LOG_LISTENING = re.compile(r"http://127\.0\.0\.1:\d+/\S*?user/(?P<user>[^/\s]+)/lab\?token")
LOG_NOTICED = re.compile(r"User (?P<user>\S+) took [\d.]+ seconds to start")


def spawn_phases(hub_log: Path) -> dict[str, list[tuple[float, float]]]:
    """Per user, for each of its spawns in order: (seconds until its server said it was running, seconds until
    the hub noticed), read from the hub's log. JupyterHub logs "Creating oauth client" when a spawn starts, the
    server logs its URL when it listens, and JupyterHub logs "User … took … seconds to start" when its check of
    that URL succeeds."""
    phases: dict[str, list[tuple[float, float]]] = {}
    started: dict[str, dt.datetime] = {}
    listening: dict[str, dt.datetime] = {}
    with contextlib.suppress(OSError), open(hub_log, errors="replace") as lines:
        for line in lines:
            stamp = LOG_TIME.match(line)
            if stamp is None:
                continue
            when = dt.datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S.%f")
            if match := LOG_SPAWN.search(line):
                started[match["user"]] = when
                listening.pop(match["user"], None)
            elif match := LOG_LISTENING.search(line):
                listening.setdefault(match["user"], when)
            elif (match := LOG_NOTICED.search(line)) and match["user"] in started and match["user"] in listening:
                user = match["user"]
                up = (listening[user] - started.pop(user)).total_seconds()
                phases.setdefault(user, []).append(
                    (round(up, 3), round((when - listening.pop(user)).total_seconds(), 3))
                )
    return phases


def attach_phases(rounds: list[Round], target: Target) -> None:
    """Add to each spawn its phases from the hub's log (the k-th spawn of a user is its k-th in the log)."""
    phases = spawn_phases(target.hub_log)
    seen: dict[str, int] = {}
    for spawn in (spawn for result in rounds for spawn in result.spawns):
        index = seen.get(spawn.user, 0)
        seen[spawn.user] = index + 1
        found = phases.get(spawn.user, [])
        if index < len(found):
            spawn.listening_seconds, spawn.noticed_seconds = found[index]


async def measure(targets: list[Target], meter: SetupsCpuMeter, quiet_timeout: float) -> dict[str, list[Round]]:
    """Warm-up, then the sequential round, then the concurrent round; each step on every target in turn.

    Interleaving the setups step by step (rather than measuring one setup, then the other) spreads whatever else
    the machine does during the run over both setups alike. Each round first waits (at most `quiet_timeout` s)
    for the machine to be quiet.
    """
    async with contextlib.AsyncExitStack() as stack:
        benches = []
        for target in targets:
            headers = {"Authorization": f"token {target.token}"}
            limits = httpx.Limits(max_connections=4 * len(target.users) + 8)
            client = await stack.enter_async_context(httpx.AsyncClient(headers=headers, timeout=60.0, limits=limits))
            bench = Bench(target, client, meter)
            await bench.prepare()
            benches.append(bench)
        rounds: dict[str, list[Round]] = {bench.target.label: [] for bench in benches}
        try:
            for step in ("warm_up", "sequential", "concurrent"):
                for bench in benches:
                    waited = await meter.wait_quiet(quiet_timeout)
                    result = await getattr(bench, step)()
                    result.quiet_wait_seconds = waited
                    rounds[bench.target.label].append(result)
        finally:
            for bench in benches:
                with contextlib.suppress(Exception):
                    await bench.stop_all()
    return rounds


# --------------------------------------------------------------------------------------------- hubfleet


def hub_spec(users: list[str]) -> dict[str, Any]:
    """The benchmark hub: shared-password auth for `users`, one profile of 1 CPU / 1G."""
    return {
        "display_name": "Spawn benchmark",
        "auth": {"type": "shared-password", "password": secrets.token_urlsafe(12), "allowed_users": users},
        "profiles": [{"name": "bench", "display_name": "Bench (1 CPU, 1G)", "cpu": 1, "memory": "1G", "default": True}],
    }


@contextlib.contextmanager
def hubfleet_setup(n: int, workdir: Path) -> Iterator[Target]:
    """A one-hub fleet started with the real CLI; every spawn goes through the front door."""
    hub = f"bench{secrets.token_hex(2)}"
    users = [f"bench-{i}" for i in range(1, n + 1)]
    unix_users = [accounts.unix_username(hub, user) for user in users]
    root = workdir / "hubfleet"
    root.mkdir()
    state_dir = root / "state"
    with running_fleet(
        "spawnbench", hub, hub_spec(users), root / "fleet.yaml", state_dir, root / "shared", lambda: uids_of(unix_users)
    ) as fleet:
        token = (state_dir / "hubs" / hub / "secrets" / "service_token").read_text().strip()
        yield Target(
            label="hubfleet",
            api_url=f"{fleet.door}/hub/api",
            server_prefix=fleet.door,
            token=token,
            users=users,
            unix_users=unix_users,
            root=root,
            hub_log=state_dir / "hubs" / hub / "hub.log",
            info={
                "hub": hub,
                "front_door_port": fleet.front_door_port,
                "internal_ports": list(fleet.internal_ports),
                "up_seconds": fleet.up_seconds,
            },
        )


# --------------------------------------------------------------------------------------------- bare JupyterHub


@contextlib.contextmanager
def bare_setup(n: int, workdir: Path) -> Iterator[Target]:
    """A bare JupyterHub 6.1.1 spawning the same kind of real Unix users with LocalProcessSpawner."""
    users = [f"bhf{secrets.token_hex(2)}u{i}" for i in range(1, n + 1)]
    root = workdir / "baseline"
    root.mkdir()
    with bare_hub("baseline", root, users) as hub:
        yield Target(
            label="baseline",
            api_url=f"{hub.url}/hub/api",
            server_prefix=hub.url,
            token=hub.token,
            users=users,
            unix_users=users,
            root=root,
            hub_log=hub.log_file,
            info={"public_port": hub.port, "up_seconds": hub.up_seconds},
        )


# --------------------------------------------------------------------------------------------- report


def spawn_machine_info() -> dict[str, Any]:
    """machine_info(), with the proxy's version and the user environment's versions."""
    user_env = command_output(
        str(USER_ENV / "bin" / "python"),
        "-c",
        "import jupyterhub, jupyterlab, jupyter_server, platform; "
        "print(jupyterhub.__version__, jupyterlab.__version__, jupyter_server.__version__, platform.python_version())",
    ).split()
    return machine_info(
        before_cgroups={
            "configurable_http_proxy_version": command_output(find_proxy_command(), "--version"),
            "user_env": dict(zip(USER_ENV_VERSIONS, user_env, strict=False)),
        }
    )


def report(rounds: dict[str, list[Round]]) -> dict[str, Any]:
    setups: dict[str, Any] = {}
    for label, setup_rounds in rounds.items():
        setups[label] = {
            r.mode: {
                "summary": summary(r.seconds),
                "listening_summary": summary_of([s.listening_seconds for s in r.spawns]),
                "noticed_summary": summary_of([s.noticed_seconds for s in r.spawns]),
                "wall_seconds": round(r.wall_seconds, 3),
                "stop_seconds": round(r.stop_seconds, 3),
                "load_at_start": round(r.load_at_start, 2),
                "quiet_wait_seconds": r.quiet_wait_seconds,
                "cpu_busy_percent": r.cpu.busy_percent,
                "other_cpu_percent": r.cpu.others_percent,
                "cpu_seconds": r.cpu.seconds,
                "server_cpu_seconds_median": median_of([s.server_cpu_seconds for s in r.spawns]),
                "throttled_seconds_total": total_of([s.throttled_seconds for s in r.spawns]),
                "spawns": [asdict(s) | {"seconds": round(s.seconds, 3)} for s in r.spawns],
            }
            for r in setup_rounds
        }
    ratios: dict[str, Any] = {"meaning": RATIO_MEANING}
    if "hubfleet" in setups and "baseline" in setups:
        for mode in ("first spawn", "sequential", "concurrent"):
            key = mode.replace(" ", "_")
            fleet, bare = setups["hubfleet"][mode], setups["baseline"][mode]
            ratios[f"{key}_median"] = round(fleet["summary"]["median"] / bare["summary"]["median"], 2)
            if fleet["listening_summary"] and bare["listening_summary"]:
                listening = fleet["listening_summary"]["median"] / bare["listening_summary"]["median"]
                ratios[f"{key}_listening_median"] = round(listening, 2)
    return {"setups": setups, "ratios": ratios}


def summary_of(values: list[float | None]) -> dict[str, float] | None:
    known = [v for v in values if v is not None]
    return summary(known) if len(known) == len(values) and known else None


def median_of(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(statistics.median(known), 2) if known else None


def total_of(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(sum(known), 2) if known else None


def setup_rows(results: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(setup, mode, data) for each round of each setup in the report, in order."""
    for label, modes in results["setups"].items():
        for mode, data in modes.items():
            yield label, mode, data


def print_phases_table(results: dict[str, Any]) -> None:
    """Time-to-ready split into the server's own start-up and the hub noticing it (from the hub logs)."""
    log_table_header(
        "Phases of time-to-ready, median seconds (from the hub logs)",
        f"{'setup':<10} {'mode':<12} {'server listening':>17} {'+ hub noticed':>14} {'time-to-ready':>14}",
    )
    for label, mode, data in setup_rows(results):
        listening, noticed = data["listening_summary"], data["noticed_summary"]
        if listening is None or noticed is None:
            log(f"{label:<10} {mode:<12} {'(not found in the log)':>17}")
            continue
        log(
            f"{label:<10} {mode:<12} {listening['median']:>17.2f} {noticed['median']:>14.2f} "
            f"{data['summary']['median']:>14.2f}"
        )
    log(
        "(server listening: spawn start until the server logs its URL; hub noticed: until the hub logs it started.\n"
        " The bare hub's check backs off exponentially with random jitter; hubfleet's spawner first probes the port"
        " every 0.1 s)"
    )


def print_cpu_table(results: dict[str, Any]) -> None:
    """Where the CPU went while each round spawned."""
    log_table_header(
        "CPU seconds used while each round spawned, by the servers and by each setup's own processes",
        f"{'setup':<10} {'mode':<12} {'server/spawn':>13} {'throttled':>10} {'servers':>8} {'hub':>6} "
        f"{'proxies':>8} {'other':>6} {'client':>7}",
    )
    for label, mode, data in setup_rows(results):
        if mode == "first spawn":
            continue  # its servers were stopped within the round: their CPU is in their hub's
        cpu = data["cpu_seconds"]
        per_spawn, throttled = data["server_cpu_seconds_median"], data["throttled_seconds_total"]
        log(
            f"{label:<10} {mode:<12} {'-' if per_spawn is None else f'{per_spawn:.2f}':>13} "
            f"{'-' if throttled is None else f'{throttled:.2f}':>10} "
            f"{cpu.get(f'{label}:servers', 0.0):>8.2f} {cpu.get(f'{label}:hub', 0.0):>6.2f} "
            f"{cpu.get(f'{label}:proxies', 0.0):>8.2f} {cpu.get(f'{label}:other', 0.0):>6.2f} "
            f"{cpu.get('client', 0.0):>7.2f}"
        )
    log("(server/spawn: median CPU a server used until ready; throttled: time its cgroup CPU quota held it back)")


def print_table(results: dict[str, Any], n: int) -> None:
    labels = {
        ("hubfleet", "first spawn"): "first spawn (creates the Unix account)",
        ("baseline", "first spawn"): "first spawn (account made by useradd -m)",
    }
    log_table_header(
        f"Time-to-ready of N={n} spawns, seconds (POST …/server until the hub reports the server ready)",
        f"{'setup':<10} {'mode':<42} {'median':>7} {'p90':>7} {'max':>7} {'round wall':>11} {'CPU busy':>9} "
        f"{'others':>7}",
    )
    for label, mode, data in setup_rows(results):
        s = data["summary"]
        wall = f"{data['wall_seconds']:.2f}" if mode != "first spawn" else ""
        name = labels.get((label, mode), mode)
        busy, others = f"{data['cpu_busy_percent']:.0f}%", f"{data['other_cpu_percent']:.0f}%"
        log(
            f"{label:<10} {name:<42} {s['median']:>7.2f} {s['p90']:>7.2f} {s['max']:>7.2f} {wall:>11} "
            f"{busy:>9} {others:>7}"
        )
    ratios = results["ratios"]
    if "sequential_median" in ratios:
        log("")
        log(f"hubfleet / baseline, ratio of medians ({RATIO_MEANING}):")
        log(f"  sequential  {ratios['sequential_median']:.2f}")
        log(f"  concurrent  {ratios['concurrent_median']:.2f}")
        log(f"  (first spawn {ratios['first_spawn_median']:.2f}: hubfleet creates the account, the baseline's exists)")
        if "sequential_listening_median" in ratios and "concurrent_listening_median" in ratios:
            log(
                "  server start-up alone (until listening, without the hub's check): "
                f"sequential {ratios['sequential_listening_median']:.2f}, "
                f"concurrent {ratios['concurrent_listening_median']:.2f}"
            )


# --------------------------------------------------------------------------------------------- main


def idle_check(meter: SetupsCpuMeter, seconds: float = 3.0) -> float:
    """How busy the CPUs are before the benchmark starts; warns when something else is using them."""
    before = meter.sample()
    time.sleep(seconds)
    busy = meter.usage(before, meter.sample()).busy_percent
    if busy > 20:
        log(f"WARNING: the CPUs were {busy:.0f}% busy before the benchmark started: other work will add noise")
    return busy


def main(argv: list[str] | None = None) -> int:
    users = ("--users", "-n", 6, "N: spawns per round (default 6)")
    args = parse_args(argv, __doc__, users, DEFAULT_OUT, each="round", kept="hub logs, configs, fleet state")
    started = prepare(check_spawn_prerequisites)
    if started is None:
        return 2
    info = spawn_machine_info()
    log(
        f"Spawn benchmark: N={args.users}, {info['nproc']} CPU(s), Python {info['python_version']}, "
        f"JupyterHub {info['jupyterhub_version']}"
    )
    warm_file_cache()

    def run(workdir: Path) -> tuple[dict[str, Any], dict[str, list[Round]]]:
        info["cpu_busy_percent_before"] = idle_check(SetupsCpuMeter(workdir, []))
        with contextlib.ExitStack() as stack:
            running = [stack.enter_context(setup(args.users, workdir)) for setup in (hubfleet_setup, bare_setup)]
            targets = {target.label: target.info for target in running}
            meter = SetupsCpuMeter(workdir, running)
            rounds = asyncio.run(measure(running, meter, args.quiet_timeout))
            for target in running:
                attach_phases(rounds[target.label], target)
        return targets, rounds

    errors = (BenchError, httpx.HTTPError, subprocess.SubprocessError, OSError)
    kept = "logs, configs and fleet state"
    status, outcome = run_in_workdir("hubfleet-spawn-bench-", run, errors, args.keep_workdir, kept)
    if outcome is None:
        return status
    targets, rounds = outcome
    results = report(rounds)
    print_table(results, args.users)
    print_phases_table(results)
    print_cpu_table(results)
    write_results(
        args.out,
        "spawn time-to-ready",
        started,
        settings={"n_users": args.users, "poll_seconds": POLL_SECONDS},
        definition=(
            "seconds from POST hub/api/users/<u>/server until servers[''].ready is true in GET hub/api/users/<u>;"
            " hubfleet through its front door, the baseline through its own proxy"
        ),
        method=METHOD,
        machine=info,
        results={"targets": targets, **results},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
