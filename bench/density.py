"""Hubs for All: what a hundred hubs cost on one machine when they sleep, how fast a sleeping hub wakes, and what one
proxy for the fleet costs per request.

One fleet file of N hubs (small shared-password hubs, a few with `lti:`, one with `dask:`), run twice with the real
CLI, one after the other in the same run:

1. **sleep on** (`sleep: {after: 10m}`): every hub starts asleep. Measured: the whole fleet's memory (every process
   hubfleet runs: supervisor, proxy, fork server, hubs and their companions; summed PSS and RSS) per sleeping hub;
   then 10 hubs woken and idle (memory per awake idle hub); then cold wakes, browser-style (first request → the
   login page, through the "starting" page) over `--wakes` different sleeping hubs; then requests held during a
   wake (a REST call with a token, an LTI login initiation), which must all succeed.
2. **sleep off** (`sleep: {after: never}`): every hub awake from the start, idle. Memory per awake idle hub.

Request latency: `--requests` GETs of `/hubs/<hub>/hub/api/` through the front door (one proxy), alternated with
the same GETs through a second configurable-http-proxy in front of it (two proxies, as every request crossed before
hubs shared the front door's proxy).

    .venv/bin/python bench/density.py [--hubs 100] [--wakes 20] [--requests 1000]

Writes bench/results/density.json (top-level numbers: per_sleeping_hub_mb, per_awake_idle_hub_mb, wake_p50_s,
wake_p95_s, held_requests_failed, proxy_p50_ms_one_proxy, proxy_p50_ms_two_proxies, hubs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

from hubfleet.fleet.processes import find_proxy_command
from hubfleet.system import accounts

PASSWORD = "density-bench-password"
LTI_PLATFORM = {
    "label": "moodle",
    "issuer": "https://lms.example",
    "client_id": "density-tool",
    "deployment_ids": ["d1"],
    "auth_login_url": "https://lms.example/auth",
    "token_url": "https://lms.example/token",
    "jwks_url": "https://lms.example/jwks",
}
MiB = 2**20


def hub_names(count: int) -> list[str]:
    return [f"dn{index:03d}" for index in range(count)]


def fleet_document(count: int, front: int, ports: tuple[int, int], shared: Path, sleep: str) -> dict[str, Any]:
    """`count` small hubs: every tenth from the fifth has LTI, the first has Dask."""
    hubs: dict[str, Any] = {}
    for index, name in enumerate(hub_names(count)):
        hub: dict[str, Any] = {
            "auth": {"type": "shared-password", "password": PASSWORD, "allowed_users": ["ann"]},
            "profiles": [{"name": "small", "cpu": 0.5, "memory": "300M", "default": True}],
            "sleep": {"after": sleep},
        }
        if index % 10 == 5:
            hub["lti"] = {"platforms": [LTI_PLATFORM]}
        if index == 0:
            hub["dask"] = {"enabled": True}
        hubs[name] = hub
    return {
        "name": "density",
        "front_door": {"host": "127.0.0.1", "port": front, "wake_timeout": "2m"},
        "internal_ports": {"start": ports[0], "end": ports[1]},
        "paths": {"user_env": str(common.USER_ENV), "shared_root": str(shared)},
        "hubs": hubs,
    }


def fleet_memory(state_dir: Path) -> dict[str, float]:
    """Summed PSS and RSS (MiB) of every process of the fleet: the supervisor and all its descendants."""
    supervisor = psutil.Process(int((state_dir / "supervisor.pid").read_text().split()[0]))
    processes = [supervisor, *supervisor.children(recursive=True)]
    pss = rss = 0
    for process in processes:
        try:
            info = process.memory_full_info()
        except psutil.Error:
            continue
        pss += info.pss
        rss += info.rss
    return {"pss_mib": round(pss / MiB, 1), "rss_mib": round(rss / MiB, 1), "processes": len(processes)}


@contextmanager
def fleet(workdir: Path, count: int, sleep: str, tag: str) -> Iterator[dict[str, Any]]:
    """The benchmark fleet, up with the real CLI; down, with its accounts removed, at the end."""
    front = common.free_port()
    ports = common.free_port_block(count * 2 + 40)
    shared = workdir / f"shared-{tag}"
    state_dir = workdir / f"state-{tag}"
    source = workdir / f"fleet-{tag}.yaml"
    source.write_text(json.dumps(fleet_document(count, front, ports, shared, sleep), indent=2))
    common.log(f"{tag}: hubfleet up ({count} hubs, sleep after {sleep})")
    try:
        started = time.perf_counter()
        result = common.run_hubfleet("up", str(source), "--detach", "--state-dir", str(state_dir), timeout=900)
        if result.returncode != 0 and not all_healthy(state_dir, deadline=time.monotonic() + 600):
            raise common.BenchError(f"up failed: {result.stdout[-2000:]}\n{result.stderr[-2000:]}")
        up_seconds = time.perf_counter() - started
        common.log(f"{tag}: up in {up_seconds:.1f} s")
        yield {"front": front, "state_dir": state_dir, "up_seconds": round(up_seconds, 2)}
    finally:
        with common.no_interrupts():
            common.run_hubfleet("down", "--state-dir", str(state_dir), timeout=600)
            leftovers = common.processes_where(common.cmdline_mentions(str(state_dir)))
            if leftovers:
                common.kill_processes(leftovers)
            for name in hub_names(count):
                common.attempt(f"removing accounts of {name}", lambda name=name: accounts.remove_hub_accounts(name))


def all_healthy(state_dir: Path, deadline: float) -> bool:
    """`up --detach` returns once the fleet is ready, unhealthy hubs and all (a hundred hubs starting at once on two
    cores can outlast its wait): every hub healthy by `deadline`, as `hubfleet status` reports."""
    while time.monotonic() < deadline:
        result = common.run_hubfleet("status", "--json", "--state-dir", str(state_dir), timeout=120)
        if result.returncode == 3:  # the supervisor is gone
            return False
        if result.returncode == 0 and all(hub["healthy"] for hub in json.loads(result.stdout)["hubs"]):
            return True
        time.sleep(5)
    return False


def settle(seconds: float = 3.0) -> None:
    """Let freshly started processes finish their start-up before their memory is read."""
    time.sleep(seconds)


def browser_wake(front: int, hub: str) -> float:
    """First request for a sleeping hub's login page, as a browser does (the starting page, then the page): seconds."""
    base = f"http://127.0.0.1:{front}"
    headers = {"Accept": "text/html"}
    started = time.perf_counter()
    with httpx.Client(timeout=120) as client:
        page = client.get(f"{base}/hubs/{hub}/hub/login", headers=headers)
        while 'name="password"' not in page.text:
            if "Starting" in page.text:
                while not client.get(f"{base}/_hubfleet/wake/{hub}").json()["awake"]:
                    time.sleep(0.05)
            page = client.get(f"{base}/hubs/{hub}/hub/login", headers=headers)
            if time.perf_counter() - started > 120:
                raise common.BenchError(f"hub {hub} did not show its login page within 120 s")
    return time.perf_counter() - started


def held_requests(front: int, state_dir: Path, rest_hub: str, lti_hub: str) -> dict[str, Any]:
    """Requests held while their hub wakes: a REST call with a token, an LTI login initiation (form POST)."""
    base = f"http://127.0.0.1:{front}"
    token = (state_dir / "hubs" / rest_hub / "secrets" / "service_token").read_text().strip()

    async def both() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=120) as client:
            rest = client.get(f"{base}/hubs/{rest_hub}/hub/api/users", headers={"Authorization": f"token {token}"})
            form = {
                "iss": LTI_PLATFORM["issuer"],
                "login_hint": "someone",
                "target_link_uri": f"{base}/hubs/{lti_hub}/hub/lti13/launch",
                "client_id": LTI_PLATFORM["client_id"],
            }
            lti = client.post(f"{base}/hubs/{lti_hub}/hub/lti13/login", data=form)
            return list(await asyncio.gather(rest, lti))

    started = time.perf_counter()
    rest, lti = asyncio.run(both())
    seconds = time.perf_counter() - started
    ok_rest = rest.status_code == 200
    ok_lti = lti.status_code == 302 and lti.headers.get("location", "").startswith(LTI_PLATFORM["auth_login_url"])
    return {
        "rest_status": rest.status_code,
        "lti_status": lti.status_code,
        "seconds": round(seconds, 3),
        "failed": int(not ok_rest) + int(not ok_lti),
    }


@contextmanager
def second_proxy(front: int) -> Iterator[int]:
    """A configurable-http-proxy in front of the front door: requests cross two proxies, as before."""
    port, api = common.free_port(), common.free_port()
    process = subprocess.Popen(
        [
            find_proxy_command(),
            "--ip=127.0.0.1",
            f"--port={port}",
            "--api-ip=127.0.0.1",
            f"--api-port={api}",
            f"--default-target=http://127.0.0.1:{front}",
            "--log-level=error",
        ],
        env={**os.environ, "CONFIGPROXY_AUTH_TOKEN": "density-bench"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{port}/_hubfleet/health", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield port
    finally:
        process.terminate()
        process.wait(10)


def proxy_latency(front: int, hub: str, requests: int) -> dict[str, Any]:
    """p50/p95 (ms) of GET /hubs/<hub>/hub/api/ through one proxy and through two, alternated request by request."""
    one: list[float] = []
    two: list[float] = []
    with second_proxy(front) as outer, httpx.Client(timeout=30) as client:
        urls = [
            (one, f"http://127.0.0.1:{front}/hubs/{hub}/hub/api/"),
            (two, f"http://127.0.0.1:{outer}/hubs/{hub}/hub/api/"),
        ]
        for _, url in urls:  # warm both paths
            for _ in range(20):
                client.get(url).raise_for_status()
        for _ in range(requests):
            for samples, url in urls:
                started = time.perf_counter()
                client.get(url).raise_for_status()
                samples.append((time.perf_counter() - started) * 1000)

    def figures(samples: list[float]) -> dict[str, float]:
        ordered = sorted(samples)
        return {
            "p50_ms": round(statistics.median(ordered), 3),
            "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))], 3),
        }

    return {"one_proxy": figures(one), "two_proxies": figures(two)}


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def run(workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    names = hub_names(args.hubs)
    lti_hubs = [name for index, name in enumerate(names) if index % 10 == 5]
    results: dict[str, Any] = {}
    with fleet(workdir, args.hubs, "10m", "sleep-on") as on:
        front, state_dir = on["front"], on["state_dir"]
        settle()
        asleep = fleet_memory(state_dir)
        common.log(f"sleep on, all {args.hubs} asleep: {asleep}")
        woken = [name for name in names if name not in lti_hubs][1:11]
        for name in woken:
            browser_wake(front, name)
        settle(5)
        ten_awake = fleet_memory(state_dir)
        common.log(f"10 awake: {ten_awake}")
        candidates = [name for name in names if name not in woken and name not in lti_hubs and name != names[0]]
        wakes = [browser_wake(front, name) for name in candidates[: args.wakes]]
        common.log(f"wakes: p50 {statistics.median(wakes):.2f} s, p95 {percentile(wakes, 0.95):.2f} s")
        rest_hub = candidates[args.wakes]
        held = [held_requests(front, state_dir, rest_hub, lti_hubs[0])]
        if len(lti_hubs) > 1:
            held.append(held_requests(front, state_dir, candidates[args.wakes + 1], lti_hubs[1]))
        common.log(f"held requests: {held}")
        latency = proxy_latency(front, woken[0], args.requests)
        common.log(f"latency: {latency}")
        results["sleep_on"] = {
            "up_seconds": on["up_seconds"],
            "all_asleep": asleep,
            "ten_awake": ten_awake,
            "wakes_s": [round(w, 3) for w in wakes],
            "held": held,
            "latency": latency,
        }
    with fleet(workdir, args.hubs, "never", "sleep-off") as off:
        settle(10)
        awake = fleet_memory(off["state_dir"])
        common.log(f"sleep off, all {args.hubs} awake: {awake}")
        results["sleep_off"] = {"up_seconds": off["up_seconds"], "all_awake": awake}
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hubs", type=int, default=100)
    parser.add_argument("--wakes", type=int, default=20)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=common.REPO / "bench" / "results" / "density.json")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        common.log("error: run as root (hubs create Unix groups)")
        return 1
    started_at = common.dt.datetime.now(common.dt.UTC)
    workdir = Path(tempfile.mkdtemp(prefix="hubfleet-density-"))
    try:
        raw = run(workdir, args)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    on, off = raw["sleep_on"], raw["sleep_off"]
    per_sleeping = on["all_asleep"]["pss_mib"] * MiB / 1e6 / args.hubs
    per_awake_10 = (on["ten_awake"]["pss_mib"] - on["all_asleep"]["pss_mib"]) * MiB / 1e6 / 10
    per_awake_all = off["all_awake"]["pss_mib"] * MiB / 1e6 / args.hubs
    wakes = on["wakes_s"]
    summary = {
        "hubs": args.hubs,
        "per_sleeping_hub_mb": round(per_sleeping, 2),
        "per_awake_idle_hub_mb": round(per_awake_10, 1),
        "per_awake_idle_hub_mb_sleep_off": round(per_awake_all, 1),
        "sleeping_vs_sleep_off_ratio": round(per_sleeping / per_awake_all, 4),
        "wake_p50_s": round(statistics.median(wakes), 3),
        "wake_p95_s": round(percentile(wakes, 0.95), 3),
        "held_requests_failed": sum(h["failed"] for h in on["held"]),
        "proxy_p50_ms_one_proxy": on["latency"]["one_proxy"]["p50_ms"],
        "proxy_p50_ms_two_proxies": on["latency"]["two_proxies"]["p50_ms"],
        "proxy_ratio_one_vs_two": round(
            on["latency"]["one_proxy"]["p50_ms"] / on["latency"]["two_proxies"]["p50_ms"], 3
        ),
    }
    common.log("")
    for key, value in summary.items():
        common.log(f"{key:36} {value}")
    common.write_results(
        args.out,
        "density",
        started_at,
        {"settings": {"hubs": args.hubs, "wakes": args.wakes, "requests": args.requests}},
        "Memory of a fleet of small hubs asleep and awake (summed PSS of every process hubfleet runs; MB = 10^6 "
        "bytes), cold wake latency to the login page, requests held during a wake, request latency through one "
        "proxy against two.",
        [
            "sleep on: all hubs start asleep; memory read after 3 s; 10 hubs woken by a browser-style request; memory",
            "wakes: first GET (Accept text/html) of a sleeping hub's login page until the page with the password form",
            "held: a REST call with the fleet's token and an LTI login initiation (form POST) to sleeping hubs at once",
            "latency: GET /hubs/<hub>/hub/api/ through the front door, alternated with the same through a second CHP",
            "sleep off: the same file with sleep: never; every hub awake and idle; memory read after 10 s",
        ],
        common.machine_info(),
        {**summary, "raw": raw},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
