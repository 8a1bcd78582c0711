"""Dask time-to-first-result: a cluster from a hubfleet hub's Dask Gateway against distributed.LocalCluster.

Usage (as root, from the repository root):

    .venv/bin/python bench/dask.py [--repeats R] [--out bench/results/dask.json]

The script starts a one-hub fleet with the real CLI (`hubfleet up --detach`); the hub has `dask:` with limits that
allow 2 workers of 1 core. A user logs in through the front door, starts their server and a kernel, and in that one
kernel runs, R times each and interleaved, (1) `Gateway().new_cluster()`, `cluster.scale(2)`,
`client.wait_for_workers(2)`, a small dask.array sum, shutdown; (2) the baseline, the same steps with
`distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True)` inside the user's server (no gateway,
no Dask cgroup: the kernel's own child processes). Every phase is timed in the kernel with
time.perf_counter, from t0 just before the cluster is asked for. A first run of each (cold caches, the user's Dask
cgroup created) is reported apart. Everything the script starts or creates (fleet, hub, server, clusters, Unix
accounts, folders) is removed at the end, also on failure or Ctrl-C. See bench/README.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import json
import os
import pwd
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
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
    cmdline_with_cwd,
    log,
    log_table_header,
    machine_info,
    parse_args,
    prepare,
    run_in_workdir,
    running_fleet,
    summary,
    write_results,
)

from hubfleet.health.client import HubError, HubUser, PasswordLogin
from hubfleet.system import accounts, cgroups

DEFAULT_OUT = REPO / "bench" / "results" / "dask.json"

USER = "bench"
"""The hub user whose server runs both setups (Unix account `<hub>_bench`)."""
WORKERS = 2
RUN_TIMEOUT = 600.0
"""Seconds one timed run (one kernel cell) may take."""
KERNEL_WAIT_TIMEOUT = 300
"""`client.wait_for_workers(2, timeout=…)` in the kernel."""

SETUPS = ("gateway", "localcluster")
LABELS = {"gateway": "hubfleet Dask Gateway", "localcluster": "LocalCluster (baseline)"}
PHASES = ("created", "workers_ready", "first_result", "shutdown")
PHASE_LABELS = {
    "created": "cluster created",
    "workers_ready": "2 workers ready",
    "first_result": "first result",
    "shutdown": "shutdown",
}

RATIO_MEANING = "1.00 = same speed; > 1 = the hubfleet gateway is slower"

DASK_SPEC = {
    "worker_cores": 1,
    "max_worker_cores": 1,
    "worker_memory": "1G",
    "max_worker_memory": "1G",
    "limits": {"max_cores": 3, "max_memory": "3G", "max_clusters": 2},
}
"""The hub's `dask:`: the scheduler takes 1 core and 512M of the limits, so they leave room for 2 workers."""

PROFILE = {"name": "bench", "display_name": "Bench (2 CPU, 4G)", "cpu": 2, "memory": "4G", "default": True}
"""The user's server: 2 cores (the machine's), so that the baseline's 2 workers are not held to less than the
gateway's (whose Dask cgroup allows 3 cores)."""

METHOD = [
    "fleet: one hub started with `hubfleet up FILE --detach`, `dask:` worker_cores 1, worker_memory 1G, limits"
    " max_cores 3 / max_memory 3G / max_clusters 2 (the scheduler takes 1 core and 512M: room for 2 workers); the"
    " user's server has one profile of 2 CPU / 4G; the user logs in through the front door (login form), starts the"
    " server and one kernel, and both setups run in that kernel, one cell per run",
    "gateway: t0; Gateway(); gateway.new_cluster() (no arguments: the server's DASK_GATEWAY__* environment) ->"
    " created; cluster.scale(2); cluster.get_client(); client.wait_for_workers(2) -> workers_ready; sum of"
    " da.ones((1000, 1000), chunks=(250, 250)) computed on the cluster (must be 1000000) -> first_result; then"
    " client.close(), cluster.shutdown() and wait until the gateway reports the cluster STOPPED (polled every 0.05 s)"
    " -> shutdown; scheduler and workers run as the user's Unix account in the user's Dask cgroup",
    "localcluster (baseline): t0; LocalCluster(n_workers=2, threads_per_worker=1, processes=True) -> created (its"
    " constructor already starts both workers); Client(cluster); client.wait_for_workers(2) -> workers_ready; the"
    " same sum -> first_result; client.close(), cluster.close() -> shutdown; scheduler and workers are processes of"
    " the kernel, in the user's server cgroup",
    "times are seconds since t0 (cumulative: created <= workers_ready <= first_result), measured in the kernel with"
    " time.perf_counter and printed as JSON; shutdown is measured from its own start",
    "imports (dask, distributed, dask_gateway, dask.array) happen once in the kernel before any run; the first run of"
    " each setup (cold caches; on the gateway it also creates the user's Dask cgroup and cluster folder) is reported"
    " apart and kept out of the medians",
    "runs are interleaved (gateway then baseline, then baseline then gateway, ...); each run first waits up to"
    " --quiet-timeout s for the CPUs to be < 20% busy",
    "cpu_busy_percent: the machine's CPUs busy during the run (the kernel cell); other_cpu_percent: the part used by"
    " processes that are not the benchmark's (noise); cpu_seconds: CPU used during the run by the user's processes"
    " (server, kernel, and the baseline's Dask processes they reap), by the fleet's (hub, proxies, supervisor, gateway"
    " server, and the gateway's Dask processes it reaps) and by this script (client); cgroup_cpu_seconds: CPU used"
    " during the run in the user's server cgroup (server, kernel, baseline) and in the user's Dask cgroup (the"
    " gateway's scheduler and workers), read from the cgroups' CPU accounting",
    "p90: linear interpolation between order statistics (statistics.quantiles, inclusive)",
]

SLURM = {
    "status": "pending",
    "reason": "not measured by this script yet: Dask on Slurm hubs (dask-gateway's Slurm backend) is tested end to end"
    " in tests/research/test_dask_slurm.py, but the script has no --backend slurm option",
}

KERNEL_SETUP = '''\
import json, os, platform, pwd, time
import dask, distributed, dask_gateway
import dask.array as da
from dask_gateway import Gateway
from dask_gateway.client import ClusterStatus
from distributed import Client, LocalCluster

_HF_WAIT = __WAIT__


def _hf_where():
    """This process's Unix account and cgroup (memory controller; the unified path on cgroup v2)."""
    import os, pwd
    where = ""
    with open("/proc/self/cgroup") as lines:
        for line in lines:
            _, controllers, path = line.strip().split(":", 2)
            if "memory" in controllers.split(","):
                where = path
                break
            if controllers == "":
                where = path
    return [pwd.getpwuid(os.getuid()).pw_name, where]


def _hf_sum(client):
    return int(client.compute(da.ones((1000, 1000), chunks=(250, 250)).sum()).result())


def _hf_probe(client):
    return {
        "scheduler": client.run_on_scheduler(_hf_where),
        "workers": sorted(client.run(_hf_where).values()),
        "nthreads": sorted(client.nthreads().values()),
    }


def _hf_gateway(probe):
    t0 = time.perf_counter()
    gateway = Gateway()
    cluster = gateway.new_cluster()
    created = time.perf_counter()
    cluster.scale(__WORKERS__)
    client = cluster.get_client()
    client.wait_for_workers(__WORKERS__, timeout=_HF_WAIT)
    ready = time.perf_counter()
    total = _hf_sum(client)
    result = time.perf_counter()
    info = {}
    if probe:
        report = gateway.get_cluster(cluster.name)
        info = _hf_probe(client) | {"dashboard_link": cluster.dashboard_link, "options": dict(report.options)}
    name = cluster.name
    s0 = time.perf_counter()
    client.close()
    cluster.shutdown()
    called = time.perf_counter()
    deadline = called + _HF_WAIT
    status = None
    while time.perf_counter() < deadline:
        try:
            status = gateway.get_cluster(name).status
        except ValueError:
            break
        if status in (ClusterStatus.STOPPED, ClusterStatus.FAILED):
            break
        time.sleep(0.05)
    stopped = time.perf_counter()
    gateway.close()
    return {
        "created": created - t0,
        "workers_ready": ready - t0,
        "first_result": result - t0,
        "shutdown": stopped - s0,
        "shutdown_call": called - s0,
        "final_status": str(status.name if status is not None else "gone"),
        "total": total,
        **info,
    }


def _hf_localcluster(probe):
    t0 = time.perf_counter()
    cluster = LocalCluster(n_workers=__WORKERS__, threads_per_worker=1, processes=True)
    created = time.perf_counter()
    client = Client(cluster)
    client.wait_for_workers(__WORKERS__, timeout=_HF_WAIT)
    ready = time.perf_counter()
    total = _hf_sum(client)
    result = time.perf_counter()
    info = _hf_probe(client) if probe else {}
    s0 = time.perf_counter()
    client.close()
    cluster.close()
    stopped = time.perf_counter()
    return {
        "created": created - t0,
        "workers_ready": ready - t0,
        "first_result": result - t0,
        "shutdown": stopped - s0,
        "total": total,
        **info,
    }


print(json.dumps({
    "python": platform.python_version(),
    "dask": dask.__version__,
    "distributed": distributed.__version__,
    "dask_gateway": dask_gateway.__version__,
    "kernel": _hf_where(),
    "dask_gateway_env": sorted(k for k in os.environ if k.startswith("DASK_GATEWAY__")),
}))
'''


# --------------------------------------------------------------------------------------------- CPU use


class UserCpuMeter(CpuMeter):
    """The machine's CPU use during a run, split into the benchmark's processes and everyone else's.

    Categories: `user` (the user's processes, with the children they reaped: the baseline's Dask processes), `fleet`
    (hub, proxies, supervisor, gateway server, with the children it reaped: the gateway's Dask processes once
    stopped), `client` (this script). Cgroups: the user's server cgroup (`server`: server, kernel, the baseline's Dask
    processes) and the user's Dask cgroup (`dask`: the gateway's scheduler and workers).
    """

    def __init__(self, state_dir: Path, hub: str, unix_user: str):
        self.state_dir = str(state_dir)
        self.unix_user = unix_user
        self.cgroup_paths = {"server": f"hubfleet/{hub}/{unix_user}", "dask": f"hubfleet/{hub}/{unix_user}-dask"}
        self.driver = cgroups.detect()

    def cgroup_seconds(self) -> dict[str, float]:
        used = {}
        for name, relpath in self.cgroup_paths.items():
            group = self.driver.open(relpath) if self.driver is not None else None
            if group is not None:
                with contextlib.suppress(OSError, cgroups.CgroupError, KeyError, ValueError):
                    used[name] = group.cpu_seconds()
        return used

    def categorizer(self) -> Callable[[psutil.Process], str | None]:
        try:
            uid: int | None = pwd.getpwnam(self.unix_user).pw_uid
        except KeyError:
            uid = None
        return lambda process: self._category(process, uid)

    def _category(self, process: psutil.Process, uid: int | None) -> str | None:
        if uid is not None and uid in (process.uids().real, process.uids().effective):
            return "user"
        if any(self.state_dir in arg for arg in cmdline_with_cwd(process)):
            return "fleet"
        return None


# --------------------------------------------------------------------------------------------- measuring


@dataclass
class Run:
    """One timed run of one setup in the kernel."""

    setup: str
    index: int
    """0 for the first run (reported apart), then 1…R."""
    timings: dict[str, Any]
    """What the kernel printed: seconds per phase, the sum, and (first run) where the processes ran."""
    load_at_start: float = 0.0
    quiet_wait_seconds: float = 0.0
    cpu: CpuUse = field(default_factory=lambda: CpuUse(0.0, 0.0, {}, {}))

    def to_dict(self) -> dict[str, Any]:
        rounded = {k: round(v, 3) if isinstance(v, float) else v for k, v in self.timings.items()}
        return {
            "run": self.index,
            **rounded,
            "load_at_start": round(self.load_at_start, 2),
            "quiet_wait_seconds": self.quiet_wait_seconds,
            "cpu_busy_percent": self.cpu.busy_percent,
            "other_cpu_percent": self.cpu.others_percent,
            "cpu_seconds": self.cpu.seconds,
            "cgroup_cpu_seconds": self.cpu.cgroup_seconds,
        }


def last_json_line(output: str) -> dict[str, Any]:
    for line in reversed(output.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise BenchError(f"the kernel printed no JSON: {output[-500:]!r}")


async def measure(
    hub_url: str, password: str, repeats: int, meter: UserCpuMeter, quiet_timeout: float
) -> tuple[dict[str, Any], list[Run]]:
    """Log in through the front door, start the server and a kernel, then run both setups in that kernel."""
    runs: list[Run] = []
    async with httpx.AsyncClient(timeout=RUN_TIMEOUT) as client:
        user = await HubUser.login(client, hub_url, PasswordLogin(USER, password), token_seconds=6 * 3600)
        kernel: str | None = None
        try:
            started = time.perf_counter()
            await user.start_server()
            log(f"  server of {USER} ready in {time.perf_counter() - started:.1f} s")
            kernel = await user.start_kernel()
            setup_code = KERNEL_SETUP.replace("__WAIT__", str(KERNEL_WAIT_TIMEOUT)).replace("__WORKERS__", str(WORKERS))
            kernel_info = last_json_line(await user.execute(kernel, setup_code, RUN_TIMEOUT))
            log(
                f"  kernel: dask {kernel_info['dask']}, distributed {kernel_info['distributed']}, "
                f"dask-gateway {kernel_info['dask_gateway']}, as {kernel_info['kernel'][0]}"
            )
            plan = [(setup, 0) for setup in SETUPS]
            for index in range(1, repeats + 1):
                order = SETUPS if index % 2 else tuple(reversed(SETUPS))
                plan += [(setup, index) for setup in order]
            for setup, index in plan:
                waited = await meter.wait_quiet(quiet_timeout)
                load = os.getloadavg()[0]
                before = meter.sample()
                code = f"print(json.dumps(_hf_{setup}(probe={index == 0})))"
                timings = last_json_line(await user.execute(kernel, code, RUN_TIMEOUT))
                cpu = meter.usage(before, meter.sample())
                if timings.get("total") != 1_000_000:
                    raise BenchError(f"{setup}: the sum was {timings.get('total')!r}, not 1000000")
                run = Run(setup, index, timings, load, waited, cpu)
                runs.append(run)
                name = "first" if index == 0 else f"run {index}"
                log(
                    f"  {LABELS[setup]:<24} {name:<6} created {timings['created']:6.2f}  "
                    f"workers {timings['workers_ready']:6.2f}  result {timings['first_result']:6.2f}  "
                    f"shutdown {timings['shutdown']:5.2f} s  (CPU {cpu.busy_percent:.0f}% busy, "
                    f"{cpu.others_percent:.0f}% others; cgroups {cpu.cgroup_seconds})"
                )
        finally:
            if kernel is not None:
                with contextlib.suppress(HubError, httpx.HTTPError, OSError):
                    await user.stop_kernel(kernel)
            with contextlib.suppress(HubError, httpx.HTTPError, OSError):
                await user.stop_server()
    return kernel_info, runs


# --------------------------------------------------------------------------------------------- the fleet


def hub_uids(hub: str) -> set[int]:
    return {entry.pw_uid for entry in pwd.getpwall() if entry.pw_name.startswith(f"{hub}_")}


def remove_cgroup(relpath: str) -> None:
    driver = cgroups.detect()
    group = driver.open(relpath) if driver is not None else None
    if group is not None:
        group.remove()


@dataclass
class Fleet:
    hub: str
    hub_url: str
    password: str
    state_dir: Path
    info: dict[str, Any]


@contextlib.contextmanager
def dask_fleet(workdir: Path) -> Iterator[Fleet]:
    """A one-hub fleet with `dask:`, started with the real CLI; stopped and removed (accounts too) at the end."""
    hub = f"dask{secrets.token_hex(2)}"
    state_dir = workdir / "state"
    password = secrets.token_urlsafe(12)
    spec = {
        "display_name": "Dask benchmark",
        "auth": {"type": "shared-password", "password": password, "allowed_users": [USER]},
        "profiles": [PROFILE],
        "dask": DASK_SPEC,
    }
    with running_fleet(
        "daskbench",
        hub,
        spec,
        workdir / "fleet.yaml",
        state_dir,
        leftover_uids=lambda: hub_uids(hub),
        cleanup=[("removing the hub's cgroups", lambda: remove_cgroup(f"hubfleet/{hub}"))],
    ) as fleet:
        yield Fleet(
            hub=hub,
            hub_url=f"{fleet.door}/",
            password=password,
            state_dir=state_dir,
            info={
                "hub": hub,
                "front_door_port": fleet.front_door_port,
                "internal_ports": list(fleet.internal_ports),
                "up_seconds": round(fleet.up_seconds, 2),
                "dask": DASK_SPEC,
                "profile": PROFILE,
            },
        )


# --------------------------------------------------------------------------------------------- report


def report(runs: list[Run]) -> dict[str, Any]:
    setups: dict[str, Any] = {}
    for setup in SETUPS:
        mine = [run for run in runs if run.setup == setup]
        measured = [run for run in mine if run.index > 0]
        phases = [*PHASES, "shutdown_call"] if setup == "gateway" else list(PHASES)
        setups[setup] = {
            "label": LABELS[setup],
            "summary": {phase: summary([run.timings[phase] for run in measured]) for phase in phases},
            "cgroup_cpu_seconds_median": {
                name: round(statistics.median(run.cpu.cgroup_seconds.get(name, 0.0) for run in measured), 2)
                for name in ("server", "dask")
            },
            "first_run": next(run.to_dict() for run in mine if run.index == 0),
            "runs": [run.to_dict() for run in measured],
        }
    gateway, baseline = setups["gateway"]["summary"], setups["localcluster"]["summary"]
    ratios: dict[str, Any] = {"meaning": RATIO_MEANING}
    for phase in ("first_result", "workers_ready", "shutdown"):
        ratios[f"{phase}_median"] = round(gateway[phase]["median"] / baseline[phase]["median"], 2)
    compute = {
        setup: round(statistics.median(r.timings["first_result"] - r.timings["workers_ready"] for r in runs_of), 3)
        for setup in SETUPS
        if (runs_of := [r for r in runs if r.setup == setup and r.index > 0])
    }
    return {"setups": setups, "ratios": ratios, "compute_median_seconds": compute}


def print_table(results: dict[str, Any], repeats: int) -> None:
    title = (
        f"Time from t0 (in the kernel, just before the cluster is asked for), seconds, median (p90) of R={repeats};"
        " shutdown from its own start"
    )
    log_table_header(title, f"{'setup':<26}" + "".join(f"{PHASE_LABELS[phase]:>18}" for phase in PHASES))
    for data in results["setups"].values():
        cells = "".join(
            f"{data['summary'][phase]['median']:>9.2f} ({data['summary'][phase]['p90']:>5.2f})" for phase in PHASES
        )
        log(f"{data['label']:<26}{cells}")
    log("")
    log("First run of each, kept out of the medians (cold caches; the gateway's also creates the user's Dask cgroup):")
    for data in results["setups"].values():
        first = data["first_run"]
        cells = "".join(f"{first[phase]:>18.2f}" for phase in PHASES)
        log(f"{data['label']:<26}{cells}")
    ratios = results["ratios"]
    log("")
    log(f"hubfleet gateway / LocalCluster, ratio of medians ({RATIO_MEANING}):")
    log(f"  first result     {ratios['first_result_median']:.2f}")
    log(f"  2 workers ready  {ratios['workers_ready_median']:.2f}")
    log(f"  shutdown         {ratios['shutdown_median']:.2f}")
    compute = results["compute_median_seconds"]
    log(
        f"  (the sum itself, from workers ready to result: gateway {compute['gateway']:.3f} s, "
        f"LocalCluster {compute['localcluster']:.3f} s)"
    )
    log("")
    log("CPU seconds per run, median, in the user's server cgroup (server, kernel, LocalCluster) and Dask cgroup:")
    for data in results["setups"].values():
        used = data["cgroup_cpu_seconds_median"]
        log(f"  {data['label']:<26} server {used['server']:5.2f}   dask {used['dask']:5.2f}")
    log("")
    log("Slurm: not measured by this script yet (see bench/README.md)")


# --------------------------------------------------------------------------------------------- main


def dask_machine_info() -> dict[str, Any]:
    """machine_info(), with the hub environment's Dask versions and the load average."""
    versions = {}
    for package in ("dask-gateway-server", "dask", "distributed"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    info = machine_info(after_jupyterhub={"hub_env": versions})
    info["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    return info


def check_prerequisites() -> None:
    if os.geteuid() != 0:
        raise BenchError("run as root: the hub's users and their Dask clusters are real Unix accounts")
    if not os.access(USER_ENV / "bin" / "jupyterhub-singleuser", os.X_OK):
        raise BenchError(f"no {USER_ENV}/bin/jupyterhub-singleuser: run `make setup`")
    probe = subprocess.run(
        [str(USER_ENV / "bin" / "python"), "-c", "import dask_gateway, distributed, dask.array"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,  # also reads the user environment's Dask once, so no run pays for a cold page cache alone
    )
    if probe.returncode != 0:
        raise BenchError(f"the user environment lacks Dask: {probe.stderr.strip()[-300:]} (run `make setup`)")
    if cgroups.detect() is None:
        log("WARNING: no writable cgroup hierarchy: the Dask limits are not enforced, the gateway runs without them")


def main(argv: list[str] | None = None) -> int:
    repeats = ("--repeats", "-r", 5, "R: timed runs of each setup (default 5)")
    args = parse_args(argv, __doc__, repeats, DEFAULT_OUT, each="run", kept="fleet file, state and logs")
    started = prepare(check_prerequisites)
    if started is None:
        return 2
    info = dask_machine_info()
    log(
        f"Dask benchmark: R={args.repeats}, {info['nproc']} CPU(s), JupyterHub {info['jupyterhub_version']}, "
        f"dask-gateway-server {info['hub_env']['dask-gateway-server']}"
    )

    def run(workdir: Path) -> tuple[dict[str, Any], dict[str, Any], list[Run]]:
        with dask_fleet(workdir) as fleet:
            meter = UserCpuMeter(fleet.state_dir, fleet.hub, accounts.unix_username(fleet.hub, USER))
            kernel_info, runs = asyncio.run(
                measure(fleet.hub_url, fleet.password, args.repeats, meter, args.quiet_timeout)
            )
            return fleet.info, kernel_info, runs

    errors = (BenchError, HubError, httpx.HTTPError, subprocess.SubprocessError, OSError, TimeoutError)
    kept = "fleet file, state and logs"
    status, outcome = run_in_workdir(
        "hubfleet-dask-bench-",
        run,
        errors,
        args.keep_workdir,
        kept,
        describe=lambda exc: f"{type(exc).__name__}: {exc}",
    )
    if outcome is None:
        return status
    fleet_info, kernel_info, runs = outcome
    results = report(runs)
    print_table(results, args.repeats)
    write_results(
        args.out,
        "dask time to first result with 2 workers",
        started,
        settings={"repeats": args.repeats},
        definition=(
            "seconds, measured in a kernel of a user's server on a hubfleet hub, from t0 (just before the cluster is"
            " asked for) until the cluster exists, until 2 workers are connected, and until the sum of a small"
            " dask.array is back; then the time to shut the cluster down"
        ),
        method=METHOD,
        machine=info,
        results={"fleet": fleet_info, "kernel": kernel_info, **results, "slurm": SLURM},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
