"""Usage metering at scale: cost reports over 10 million synthetic samples, and the collector's own CPU per sweep.

Usage (as root, from the repository root):

    .venv/bin/python bench/usage.py [--samples 10000000] [--servers 100] [--out bench/results/usage.json]

Part 1 (the ledger): SAMPLES synthetic raw samples (one a minute per running server: 4 hubs of users whose servers
ran all November, random CPU and memory, requests of 1 core / 2 GiB) are written into a fresh SQLite fleet
database (bulk insert, timed but not the goal). Then, timed separately: the rollup of all of them (hourly and daily,
what the collector does a little of every sweep), one sweep's incremental rollup at that size, and the reports the
CLI and console run: `cost_report` for the month (goal: at most 2 s), `usage_report` by user, group and day,
`monthly_active_users`.

Part 2 (the collector): SERVERS synthetic user servers, each a real cgroup (`hubfleet/<hub>/<unix user>`, with a
profile's limits) holding a real `sleep` process; the collector's record step (read every cgroup, write samples,
roll up, budgets, quota files, gauges) runs against them in repeated sweeps, and its CPU time (process time of
this single-purpose process) and wall time per sweep are reported. The hub API part of a sweep is measured against
a real one-hub fleet holding SERVERS users (listing them through the REST API, as every sweep does); their servers
are not started (SERVERS real servers do not fit 2 cores in a benchmark's time): the cgroup side above stands in.
"""

from __future__ import annotations

import argparse
import asyncio
import calendar
import datetime as dt
import json
import os
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from common import REPO, BenchError, log, machine_info, prepare, running_fleet, summary, write_results

from hubfleet import db
from hubfleet.spec import parse
from hubfleet.system import accounts, cgroups
from hubfleet.usage import ledger
from hubfleet.usage.collector import Collector, HubTarget, _HubView, _Server
from hubfleet.usage.reports import cost_report, monthly_active_users, usage_report
from hubfleet.usage.tables import SERVER

DEFAULT_OUT = REPO / "bench" / "results" / "usage.json"
MONTH = dt.date(2026, 11, 1)
HUBS = 4
GIB = 2**30
BATCH = 200_000


def timed(action: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = action()
    return round(time.perf_counter() - started, 3), result


def fleet_spec(hubs: list[str], users: dict[str, list[str]]) -> Any:
    lines = ["name: bench", "hubs:"]
    for hub in hubs:
        groups = {f"g{i}": users[hub][i::3] for i in range(3)}
        lines += [
            f"  {hub}:",
            "    auth: {type: shared-password, password: bench-password}",
            "    plan: {type: paid, monthly_budget: 500}",
            f"    groups: {groups}",
        ]
    return parse("\n".join(lines) + "\n")


def ledger_part(count: int, workdir: Path) -> dict[str, Any]:
    """Part 1: ingest and report over `count` synthetic samples."""
    minutes = calendar.monthrange(MONTH.year, MONTH.month)[1] * 24 * 60
    servers = -(-count // minutes)  # enough servers for every sample to fall in the month
    hubs = [f"hub{i}" for i in range(HUBS)]
    users = {hub: [f"user{j}" for j in range(i, servers, HUBS)] for i, hub in enumerate(hubs)}
    fleet = fleet_spec(hubs, users)
    url = db.default_url(workdir)
    sessions = db.open_database(url)
    first = calendar.timegm(MONTH.timetuple())
    log(f"ledger: {count:,} samples = {servers} servers x {minutes:,} minutes (the last server's minutes cut short)")

    def insert() -> int:
        rng = random.Random(7)
        engine = sessions.kw["bind"]
        raw = engine.raw_connection()
        written = 0
        try:
            cursor = raw.cursor()
            columns = "hub, user, kind, start, seconds, cpu_seconds, cpu_request, memory_bytes, memory_request"
            statement = f"INSERT INTO usage_samples ({columns}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            owners = [(hub, user) for hub in hubs for user in users[hub]]
            while written < count:
                minute, rest = divmod(written, len(owners))
                batch = []
                for hub, user in owners[rest:]:
                    if written + len(batch) >= count or len(batch) >= BATCH:
                        break
                    cpu = rng.random() * 90  # 0 to 1.5 cores over the minute
                    batch.append(
                        (
                            hub,
                            user,
                            SERVER,
                            first + 60 * minute,
                            60.0,
                            cpu,
                            1.0,
                            rng.randrange(GIB // 4, 3 * GIB),
                            2 * GIB,
                        )
                    )
                cursor.executemany(statement, batch)
                written += len(batch)
            raw.commit()
        finally:
            raw.close()
        return written

    insert_seconds, written = timed(insert)
    log(f"ledger: bulk insert of {written:,} samples: {insert_seconds} s")
    with sessions.begin() as session:
        for hub in hubs:
            ledger.set_group_members(session, hub, {f"g{i}": users[hub][i::3] for i in range(3)})
            for index, user in enumerate(users[hub]):
                ledger.record_activity(session, hub, user, dt.datetime(2026, 11, 1 + index % 28, tzinfo=dt.UTC))
        for minute in range(0, minutes, 60):
            ledger.record_coverage(session, first + 60 * minute, 3600, 64, 256 * GIB)

    def rollup_all() -> None:
        with sessions.begin() as session:
            ledger.rollup(session, first)

    rollup_seconds, _ = timed(rollup_all)
    log(f"ledger: rollup of every sample (hourly and daily): {rollup_seconds} s")
    last_hour = first + (minutes - 60) * 60

    def rollup_hour() -> None:
        with sessions.begin() as session:
            ledger.rollup(session, last_hour)

    sweep_rollup = [timed(rollup_hour)[0] for _ in range(5)]
    reports: dict[str, list[float]] = {"cost_report": [], "usage_by_user": [], "usage_by_group": [], "usage_by_day": []}
    reports["monthly_active_users"] = []
    total = None
    for _ in range(5):
        with sessions() as session:
            seconds, report = timed(lambda session=session: cost_report(session, fleet, month=MONTH))
            reports["cost_report"].append(seconds)
            total = report.total
            for by in ("user", "group", "day"):
                reports[f"usage_by_{by}"].append(
                    timed(
                        lambda session=session, by=by: usage_report(
                            session, fleet, by=by, since=MONTH, until=dt.date(2026, 11, 30)
                        )
                    )[0]
                )
            reports["monthly_active_users"].append(
                timed(lambda session=session: monthly_active_users(session, fleet, month=MONTH))[0]
            )
    size = (workdir / db.DATABASE_FILE).stat().st_size
    return {
        "samples": written,
        "servers": servers,
        "hubs": HUBS,
        "database_bytes": size,
        "bytes_per_sample": round(size / written, 1),
        "insert_seconds": insert_seconds,
        "rollup_all_seconds": rollup_seconds,
        "rollup_one_hour_seconds": summary(sweep_rollup),
        "report_seconds": {name: summary(values) for name, values in reports.items()},
        "cost_report_goal_seconds": 2.0,
        "cost_report_total": round(total or 0.0, 2),
    }


def synthetic_servers(hub: str, count: int) -> tuple[list[str], list[subprocess.Popen], list[cgroups.Cgroup]]:
    driver = cgroups.detect()
    if driver is None:
        raise BenchError("no writable cgroup hierarchy: run as root on a machine with cgroups")
    users, processes, groups = [], [], []
    for index in range(count):
        user = f"u{index}"
        relpath = f"hubfleet/{hub}/{accounts.unix_username(hub, user)}"
        group = driver.create(relpath, cgroups.Limits(memory_bytes=GIB, cpu=1.0, pids_max=64))
        groups.append(group)
        processes.append(subprocess.Popen(["sleep", "3600"], preexec_fn=cgroups.prepare_preexec(group)))
        users.append(user)
    return users, processes, groups


def collector_part(count: int, sweeps: int, workdir: Path) -> dict[str, Any]:
    """Part 2: the collector's record step over `count` synthetic servers (real cgroups, real processes)."""
    hub = f"bu{secrets.token_hex(2)}"
    users, processes, groups = synthetic_servers(hub, count)
    try:
        fleet = parse(
            f"name: bench\nhubs:\n  {hub}:\n    auth: {{type: shared-password, password: bench-password}}\n"
            "    plan: {type: paid, monthly_budget: 500, hard_quota: true}\n"
            f"    groups: {{lab: {users[: count // 2]}}}\n"
        )
        state_dir = workdir / "hub-state"
        state_dir.mkdir()
        target = HubTarget(hub, "http://127.0.0.1:9/unused", "unused", state_dir, workdir / "homes")
        collector = Collector(lambda: fleet, lambda: [target], db.default_url(workdir / "collector"))
        (workdir / "collector").mkdir()
        collector.sessions()
        view = _HubView(target)
        view.users = users
        view.groups = {"lab": users[: count // 2]}
        for user in users:
            unix = accounts.unix_username(hub, user)
            view.servers.append(_Server(hub, user, SERVER, f"hubfleet/{hub}/{unix}", None))
            view.servers.append(_Server(hub, user, "dask", f"hubfleet/{hub}/{unix}-dask", None))
        cpu, wall, samples = [], [], []
        for _ in range(sweeps + 1):
            started_cpu, started_wall = time.process_time(), time.perf_counter()
            result = collector._record(fleet, [view], time.time())
            cpu.append(time.process_time() - started_cpu)
            wall.append(time.perf_counter() - started_wall)
            samples.append(result.samples)
            time.sleep(0.2)
        # The first sweep only takes the baseline readings (and migrates nothing: the database is ready).
        return {
            "servers": count,
            "what": "synthetic: one real cgroup with one real sleeping process per server; no hub API in this part",
            "sweeps": sweeps,
            "samples_per_sweep": samples[1:],
            "cpu_seconds_per_sweep": summary(cpu[1:]),
            "wall_seconds_per_sweep": summary(wall[1:]),
        }
    finally:
        for process in processes:
            process.kill()
            process.wait()
        for group in groups:
            group.remove()
        driver = cgroups.detect()
        parent = driver.open(f"hubfleet/{hub}") if driver is not None else None
        if parent is not None:
            parent.remove()


def api_part(count: int, sweeps: int, workdir: Path) -> dict[str, Any]:
    """The hub API side of a sweep: listing `count` users of a real hub (servers not started)."""
    hub = f"ba{secrets.token_hex(2)}"
    spec = {
        "auth": {"type": "shared-password", "password": "bench-password"},
        "culling": {"enabled": False},
        "sleep": {"after": "never"},  # listed through its own port: the hub must run
    }
    state_dir = workdir / "api-state"
    with running_fleet(
        "usagebench",
        hub,
        spec,
        workdir / "fleet.yaml",
        state_dir,
    ) as running:
        token = (state_dir / "hubs" / hub / "secrets" / "service_token").read_text().strip()
        ports = (state_dir / "hubs" / hub / "ports.json").read_text()
        hub_port = json.loads(ports)["hub"]
        api_url = f"http://127.0.0.1:{hub_port}/hubs/{hub}/hub/api"
        names = [f"user{i}" for i in range(count)]
        httpx.post(
            f"{api_url}/users", json={"usernames": names}, headers={"Authorization": f"token {token}"}, timeout=60
        ).raise_for_status()
        fleet = parse((workdir / "fleet.yaml").read_text())
        target = HubTarget(hub, api_url, token, state_dir / "hubs" / hub, Path("/home"))
        collector = Collector(lambda: fleet, lambda: [target], db.default_url(workdir))
        cpu, wall = [], []

        async def view() -> int:
            return len((await collector._view(fleet, target)).users)

        for _ in range(sweeps):
            started_cpu, started_wall = time.process_time(), time.perf_counter()
            listed = asyncio.run(view())
            cpu.append(time.process_time() - started_cpu)
            wall.append(time.perf_counter() - started_wall)
        if listed != count:
            raise BenchError(f"the hub listed {listed} users, not {count}")
        return {
            "users": count,
            "what": "a real one-hub fleet; its users listed through the REST API as each sweep does (no servers)",
            "cpu_seconds_per_sweep": summary(cpu),
            "wall_seconds_per_sweep": summary(wall),
            "fleet_up_seconds": round(running.up_seconds, 1),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=10_000_000, help="synthetic samples (default 10,000,000)")
    parser.add_argument("--servers", type=int, default=100, help="synthetic running servers (default 100)")
    parser.add_argument("--sweeps", type=int, default=20, help="collector sweeps measured (default 20)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON results (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)

    def check() -> None:
        if os.geteuid() != 0:
            raise BenchError("run as root: the collector part makes cgroups")

    started = prepare(check)
    if started is None:
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="hubfleet-usage-bench-"))
    try:
        (workdir / "ledger").mkdir()
        ledger_results = ledger_part(args.samples, workdir / "ledger")
        log(f"ledger: {ledger_results}")
        collector_results = collector_part(args.servers, args.sweeps, workdir)
        log(f"collector: {collector_results}")
        api_results = api_part(args.servers, args.sweeps, workdir)
        log(f"hub API: {api_results}")
    except (BenchError, OSError, httpx.HTTPError, cgroups.CgroupError) as exc:
        log(f"error: {type(exc).__name__}: {exc} (work directory kept: {workdir})")
        return 1
    except KeyboardInterrupt:
        return 130
    shutil.rmtree(workdir, ignore_errors=True)
    write_results(
        args.out,
        "usage metering: reports over synthetic samples, collector CPU per sweep",
        started,
        settings={"samples": args.samples, "servers": args.servers, "sweeps": args.sweeps},
        definition=(
            "seconds of wall time for the ledger's rollup and reports over SAMPLES raw samples in SQLite; CPU seconds"
            " (process time) and wall seconds of one collector sweep over SERVERS running servers"
        ),
        method=[line.strip() for line in __doc__.split("\n\n")[2:4]],
        machine=machine_info(),
        results={"ledger": ledger_results, "collector": collector_results, "hub_api": api_results},
    )
    cost = ledger_results["report_seconds"]["cost_report"]["median"]
    log(f"cost report over {ledger_results['samples']:,} samples: {cost} s (goal <= 2 s)")
    log(f"collector sweep over {args.servers} servers: {collector_results['cpu_seconds_per_sweep']['median']} s CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
