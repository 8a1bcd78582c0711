"""Class-start storm: N students arrive within 10 s, each logs in, starts a server, opens JupyterLab and runs code,
against a bare JupyterHub 6.1.1, on a hubfleet hub, and on a hubfleet hub whose course was pre-warmed.

Usage (as root, from the repository root):

    .venv/bin/python bench/storm.py [--users 30,60] [--runs 2] [--ramp 10] [--out bench/results/storm.json]

Each student is a client of its own that behaves like a browser (httpx, its own cookies): the login form (with the
`_xsrf` cookie sent back as a form field), `GET /hub/spawn` following redirects — through the spawn-pending page,
whose progress event stream it follows until `ready`, then reloading as the page's script does — until the
JupyterLab page; then a kernel through the server's REST API (cookie and `X-XSRFToken`, as JupyterLab calls it),
`print(5*4)` over the kernel's websocket, which must print 20; then it stops its server through the hub's REST API
(as the hub's home page does) once every student has a result, as at the end of a class. Students arrive
uniformly over the ramp.

For each size, three systems are up at once and stormed in turn, run after run (a, b, c, a, b, c, …):

(a) **bare**: a bare JupyterHub 6.1.1 with its own proxy and LocalProcessSpawner; students are real Unix users
    `st<hex>a<i>` made with `useradd -m` (removed at the end).
(b) **hubfleet**: a hub of a fleet started with the real CLI (reached through its front door), servers forked from
    the environment's fork server; its students' Unix accounts are made before the first storm, as they would be
    for a class that met before.
(c) **pre-warm**: a second hub of that fleet, whose course (the students are its roster) meets in `--lead`
    minutes: the fleet's pre-warm starts their servers before it. Each run first waits until pre-warm has started
    them all (or stopped for want of memory), so that it never runs during a storm.

Also measured: the CPU seconds a server has used when its JupyterLab page arrives (its process tree's user +
system time, reaped children included): a plain `jupyterhub-singleuser` start on the bare hub (before) against a
forked start on hubfleet (after). Everything the benchmark starts or creates (hubs, proxies, servers, Unix users
and groups, cgroups) is removed at the end, also on failure or Ctrl-C. Writes bench/results/storm.json; see
bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import re
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
from common import (
    REPO,
    BenchError,
    CpuMeter,
    CpuUse,
    bare_hub,
    check_spawn_prerequisites,
    cmdline_with_cwd,
    log,
    machine_info,
    parse_args,
    prepare,
    run_async,
    run_in_workdir,
    running_fleet,
    server_cpu,
    summary,
    uids_of,
    warm_file_cache,
    write_results,
)
from rich import box
from rich.console import Console
from rich.table import Table

from hubfleet.health.client import HubError, execute_over_websocket, expect, log_in_with_form, xsrf_cookie
from hubfleet.system import accounts

DEFAULT_OUT = REPO / "bench" / "results" / "storm.json"

SYSTEMS = ("bare", "hubfleet", "prewarm")
TITLES = {"bare": "a bare", "hubfleet": "b hubfleet", "prewarm": "c pre-warm"}

CODE, EXPECTED = "print(5*4)", "20"
VISIT_TIMEOUT = 600.0
"""A student who has not seen the result of their code after this long counts as a failure."""
KERNEL_TIMEOUT = 300.0
"""How long the kernel's websocket may take to open and to answer (JupyterLab keeps waiting: no browser limit)."""
PORT_CLASH = "Address already in use"
"""What a kernel logs when another kernel took one of the ports its server picked for it (it is started again)."""
RECONNECT_SECONDS = 3.0
"""A browser's EventSource reconnects this long after the progress stream closed without a decision."""
STOP_TIMEOUT = 120.0
PREWARM_EVERY = "10"
"""Seconds between two looks of the fleet's pre-warm loop ($HUBFLEET_PREWARM_EVERY; 30 by default)."""
PREWARM_STALL = 90.0
"""Pre-warm counts as finished when no further server got ready for this long (its memory budget is spent)."""
PREWARM_TIMEOUT = 1200.0
BARE_HTTP_TIMEOUT = 180
"""The bare hub's `Spawner.http_timeout`: LocalProcessSpawner's start returns at once, so a server's whole start-up
falls under it, while hubfleet's spawner waits for its server itself (`start_timeout`, 120 s) before JupyterHub's
check (`http_timeout`, 60 s) begins. Both get 180 s, so that slow starts are measured, not cut off."""
PROFILE = {"name": "class", "display_name": "Class (1 CPU, 1G)", "cpu": 1, "memory": "1G", "default": True}

DEFINITION = (
    "lab_s: from a student's arrival (GET of the login page) until the JupyterLab page of their server arrived"
    " (login form, GET /hub/spawn and its redirects, the spawn-pending page and its progress events, OAuth);"
    " kernel_s: from POST api/kernels until the output of print(5*4) arrived over the kernel's websocket;"
    " first_result_s: lab_s + kernel_s; <system>_p95_<n>_s: p95 of lab_s over every run of that system and size,"
    " <system>_first_result_p95_<n>_s: the same of first_result_s"
)
METHOD = [
    "systems up at once for each size and stormed in turn, run after run: bare, hubfleet, pre-warm, bare, …;"
    " before each storm the script waits (at most --quiet-timeout s) for the CPUs to be < 20% busy",
    "students arrive at i * ramp / N s (i = 0 … N-1); each has its own cookie jar (httpx.AsyncClient)",
    "browser: GET hub/login, POST the form with the _xsrf cookie's value; GET hub/spawn following redirects; on the"
    " spawn-pending page, the EventSource URL of its script is streamed until an event with ready (failed: a"
    " failure), then the page is reloaded; after a stream ends undecided, reload after 3 s; a 200 page under"
    " …/lab is the JupyterLab page (static assets are not fetched: a returning student's browser has them)",
    "kernel: POST <server>/api/kernels with the server's _xsrf cookie as X-XSRFToken; the channels websocket with"
    " the browser's cookies, Origin and Sec-Fetch-Mode: websocket (it may take 300 s to open and to answer:"
    " JupyterLab keeps waiting); execute_request print(5*4) must print 20",
    "kernel_port_clashes: 'Address already in use' in the system's log: a kernel that could not bind a port its"
    " server had picked for it (jupyter_client picks free ports, then the kernel binds them: another kernel can"
    " take one in between); the kernel is started again, and its websocket waits for the first one's"
    " kernel_info reply until jupyter_server's kernel_info_timeout (60 s)",
    "stop: once every student has a result (or failed), as at the end of a class, so that no stop overlaps what is"
    " measured: DELETE hub/api/users/<u>/server with the hub's _xsrf cookie as X-XSRFToken; GET"
    " hub/api/users/<u> every 0.5 s until that server is gone (or replaced by a new start: the pre-warm of a"
    " meeting still ahead starts it again); wall_s: the storm's first arrival until its last result",
    "failure: any step answering unexpectedly, a failed spawn, a wrong result, or no result within 600 s",
    "server CPU: user + system time of every process of the student's Unix account (reaped children included)"
    " read when the Lab page arrived; start_cpu_s_before: median over the bare hub's plain starts,"
    " start_cpu_s_after: median over hubfleet's forked starts (system b)",
    "pre-warm: a course of the N students, schedule meeting `lead` ahead (its pre-warm on from the start),"
    " $HUBFLEET_PREWARM_EVERY=10; before each storm of (c) every student's server must be ready, or pre-warm"
    " must have started none for 90 s (prewarmed: how many were ready)",
    "cpu.busy_percent / cpu.others_percent: the machine's CPUs busy during the storm, and the part used by"
    " processes that are not the benchmark's (other work on the shared machine: noise); cpu.seconds: CPU seconds"
    " of the system under test (hubs, proxies, fleet, servers) and of this script (client)",
    "p95: statistics.quantiles(n=20, method='inclusive'); ratios: system p95 / bare p95 of the same size",
]


# --------------------------------------------------------------------------------------------- the browser


@dataclass
class Visit:
    """One student's visit during a storm."""

    user: str
    arrival_s: float
    lab_s: float | None = None
    kernel_s: float | None = None
    first_result_s: float | None = None
    """lab_s + kernel_s: from arriving until the code's output."""
    stop_s: float | None = None
    server_cpu_s: float | None = None
    """CPU seconds the student's server had used when the Lab page arrived."""
    spawn_page: bool = False
    """Whether the student saw the spawn-pending page (False: the server was ready at once)."""
    error: str | None = None


class Browser:
    """One student's browser on one hub: its own cookies; pages, event streams and API calls made the way the hub's
    pages and JupyterLab make them."""

    def __init__(self, client: httpx.AsyncClient, hub_url: str):
        self.client = client
        self.base = httpx.URL(hub_url.rstrip("/") + "/")
        self.origin = f"{self.base.scheme}://{self.base.netloc.decode()}"

    async def navigate(self, url: httpx.URL | str) -> httpx.Response:
        """A page load: GET following redirects; the page must answer 200."""
        headers = {"Accept": "text/html", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Site": "same-origin"}
        return expect(await self.client.get(url, headers=headers, follow_redirects=True), self.base, 200)

    def _api_headers(self, path: str) -> dict[str, str]:
        """Headers of a same-origin fetch() by a page below `path` (its `_xsrf` cookie as X-XSRFToken)."""
        return {
            "X-XSRFToken": xsrf_cookie(self.client, path) or "",
            "Sec-Fetch-Mode": "cors",
            "Sec-Fetch-Site": "same-origin",
            "Origin": self.origin,
        }

    async def open_lab(self, visit: Visit) -> httpx.Response:
        """From /hub/spawn to the JupyterLab page, through the spawn-pending page and its progress events."""
        page = await self.navigate(self.base.join("hub/spawn"))
        while not is_lab(page):
            progress = progress_url(page)
            if progress is None:
                raise HubError(f"{page.url.path}: neither JupyterLab nor the spawn-pending page")
            visit.spawn_page = True
            if not await self.follow_progress(progress):
                await asyncio.sleep(RECONNECT_SECONDS)
            page = await self.navigate(page.url)  # window.location.reload()
        return page

    async def follow_progress(self, url: httpx.URL) -> bool:
        """The spawn-pending page's EventSource: True at the `ready` event, False if the stream ended without one;
        HubError on a `failed` event."""
        headers = {
            "Accept": "text/event-stream",
            "Cache-Control": "no-cache",
            "Sec-Fetch-Mode": "cors",
            "Sec-Fetch-Site": "same-origin",
            "Sec-Fetch-Dest": "empty",
        }
        async with self.client.stream("GET", url, headers=headers) as response:
            if response.status_code != 200:
                return False
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                event = json.loads(line[5:])
                if event.get("failed"):
                    raise HubError(f"the spawn failed: {event.get('message', '')}")
                if event.get("ready"):
                    return True
        return False

    async def run_code(self, lab: httpx.Response, user: str, code: str) -> str:
        """Start a kernel on the server whose Lab page is `lab` and run `code` over its websocket; its output."""
        server = lab.url.copy_with(path=lab.url.path[: lab.url.path.rindex("/lab")] + "/", query=None)
        answer = await self.client.post(server.join("api/kernels"), json={}, headers=self._api_headers(server.path))
        kernel = expect(answer, self.base, 201).json()["id"]
        channels = server.join(f"api/kernels/{kernel}/channels")
        cookies = self.client.build_request("GET", channels).headers.get("cookie", "")
        headers = {
            "Cookie": cookies,
            "Origin": self.origin,
            "Sec-Fetch-Mode": "websocket",
            "Sec-Fetch-Site": "same-origin",
        }
        return await execute_over_websocket(channels, headers, user, code, KERNEL_TIMEOUT)

    async def stop_server(self, user: str) -> None:
        """Stop the default server as the hub's home page does; wait until it is gone (or started anew)."""
        model_url = self.base.join(f"hub/api/users/{user}")
        headers = self._api_headers(self.base.path + "hub/")
        model = expect(await self.client.get(model_url, headers=headers), self.base, 200).json()
        started = ((model.get("servers") or {}).get("") or {}).get("started")
        expect(
            await self.client.delete(self.base.join(f"hub/api/users/{user}/server"), headers=headers),
            self.base,
            202,
            204,
        )
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline:
            model = expect(await self.client.get(model_url, headers=headers), self.base, 200).json()
            server = (model.get("servers") or {}).get("")
            if server is None or server.get("pending") == "spawn" or server.get("started") != started:
                return
            await asyncio.sleep(0.5)
        raise HubError(f"the server did not stop within {STOP_TIMEOUT:.0f} s")


def is_lab(page: httpx.Response) -> bool:
    return bool(re.search(r"/lab(/|$)", page.url.path)) and "jupyter-config-data" in page.text


def progress_url(page: httpx.Response) -> httpx.URL | None:
    """The URL the spawn-pending page's script streams progress events from (taken as the script has it)."""
    found = re.search(r"new EventSource\(\"([^\"]+)\"\)", page.text)
    return page.url.join(found.group(1)) if found else None


# --------------------------------------------------------------------------------------------- systems


@dataclass
class System:
    """One system under test: a hub, its students, and how to reach it as an admin."""

    key: str
    url: str
    """The hub's public URL (no trailing slash)."""
    password: str
    users: list[str]
    unix_users: list[str]
    token: str
    """An API token with admin rights on users and servers."""
    log_file: Path
    """The hub's log, which also holds its servers' output."""

    async def admin(self, client: httpx.AsyncClient, method: str, path: str) -> httpx.Response:
        response = await client.request(
            method, f"{self.url}/hub/api/{path}", headers={"Authorization": f"token {self.token}"}
        )
        response.raise_for_status()
        return response

    async def servers(self, client: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
        """Student → their default server's model, for those with one."""
        users = (await self.admin(client, "GET", "users")).json()
        return {u["name"]: u["servers"][""] for u in users if u["name"] in self.users and "" in (u["servers"] or {})}

    async def stop_all(self, client: httpx.AsyncClient) -> None:
        """Stop every student's server (what failed visits left) and wait until none is left."""
        deadline = time.monotonic() + STOP_TIMEOUT
        while servers := await self.servers(client):
            for user, server in servers.items():
                if server.get("pending") != "stop":
                    with contextlib.suppress(httpx.HTTPStatusError):
                        await self.admin(client, "DELETE", f"users/{user}/server")
            if time.monotonic() > deadline:
                raise BenchError(f"{self.key}: servers of {sorted(servers)} did not stop within {STOP_TIMEOUT:.0f} s")
            await asyncio.sleep(0.5)


def meeting(lead: dt.timedelta) -> dict[str, str]:
    """The schedule entry (local time, as the fleet file has it) of a meeting whose pre-warm is on from now: it starts
    `lead` minus half a minute from now."""
    start = (dt.datetime.now() + lead - dt.timedelta(seconds=30)).replace(microsecond=0)
    end = min(start + dt.timedelta(hours=1), start.replace(hour=23, minute=59, second=59))
    if end <= start:
        raise BenchError("the meeting would start at midnight: run the benchmark a minute later")
    day = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[start.weekday()]
    return {"day": day, "start": f"{start:%H:%M:%S}", "end": f"{end:%H:%M:%S}"}


def hub_specs(tag: str, users: list[str], password: str, lead: dt.timedelta) -> dict[str, dict[str, Any]]:
    """(b) a hub of the students; (c) a hub whose course of the students meets after `lead` (pre-warm on)."""
    entry = meeting(lead)
    auth = {"type": "shared-password", "password": password, "allowed_users": users}
    plain = {"display_name": "Storm", "auth": auth, "profiles": [PROFILE], "sleep": {"after": "never"}}
    course = {"name": "storm", "students": users, "schedule": [entry], "prewarm": {"lead": int(lead.total_seconds())}}
    return {f"st{tag}b": plain, f"st{tag}c": {**plain, "display_name": "Storm, pre-warmed", "courses": [course]}}


def make_accounts(hub: str, users: list[str]) -> None:
    """The students' Unix accounts as the spawner makes them at a first start (their class met before)."""
    group = accounts.hub_groupname(hub)
    accounts.ensure_group(group)
    for user in users:
        name = accounts.unix_username(hub, user)
        accounts.ensure_user(name, Path("/home") / name, comment=f"{user} on hub {hub}", groups=[group])


@contextlib.contextmanager
def systems(n: int, workdir: Path, lead: dt.timedelta) -> Iterator[dict[str, System]]:
    """The three systems for `n` students, up at once; all removed at the end."""
    tag = secrets.token_hex(2)
    root = workdir / f"n{n}"
    (root / "bare").mkdir(parents=True)
    password = secrets.token_urlsafe(12)
    students = [f"s{i}" for i in range(1, n + 1)]
    specs = hub_specs(tag, students, password, lead)
    (hub_b, spec_b), (hub_c, spec_c) = specs.items()
    unix = {hub: [accounts.unix_username(hub, user) for user in students] for hub in specs}
    bare_users = [f"st{tag}a{i}" for i in range(1, n + 1)]
    with contextlib.ExitStack() as stack:
        bare = stack.enter_context(bare_hub("bare", root / "bare", bare_users, BARE_HTTP_TIMEOUT))
        fleet = stack.enter_context(
            running_fleet(
                "storm",
                hub_b,
                spec_b,
                root / "fleet.yaml",
                root / "state",
                root / "shared",
                lambda: uids_of(unix[hub_b] + unix[hub_c]),
                more_hubs={hub_c: spec_c},
            )
        )
        make_accounts(hub_b, students)

        def log_of(hub: str) -> Path:
            return root / "state" / "hubs" / hub / "hub.log"

        token_of = {
            hub: (root / "state" / "hubs" / hub / "secrets" / "service_token").read_text().strip() for hub in specs
        }
        yield {
            "bare": System("bare", bare.url, bare.password, bare_users, bare_users, bare.token, bare.log_file),
            "hubfleet": System(
                "hubfleet", fleet.door_of(hub_b), password, students, unix[hub_b], token_of[hub_b], log_of(hub_b)
            ),
            "prewarm": System(
                "prewarm", fleet.door_of(hub_c), password, students, unix[hub_c], token_of[hub_c], log_of(hub_c)
            ),
        }


# --------------------------------------------------------------------------------------------- storms


class StormMeter(CpuMeter):
    """The machine's CPU during a storm: the benchmark's (`system`: the students' servers, and everything that runs
    in or names the benchmark's directory — hubs, proxies, the fleet, fork servers, with the servers they reaped;
    `client`: this script) and everyone else's."""

    def __init__(self, workdir: Path):
        self.workdir = str(workdir)
        self.unix_users: list[str] = []

    def categorizer(self) -> Callable[[psutil.Process], str | None]:
        uids = uids_of(self.unix_users)

        def category(process: psutil.Process) -> str | None:
            if process.uids().real in uids or any(self.workdir in arg for arg in cmdline_with_cwd(process)):
                return "system"
            return None

        return category


@dataclass
class Storm:
    system: str
    users: int
    run: int
    visits: list[Visit]
    wall_s: float
    load_at_start: list[float]
    quiet_wait_s: float
    cpu: CpuUse
    prewarmed: int | None = None
    """(c) only: servers pre-warmed and ready before the run began."""
    prewarm_s: float | None = None
    """(c) only: how long pre-warm took to start them (from the fleet's start, or the end of the last storm of (c)
    until the last of them was ready)."""

    @property
    def failures(self) -> int:
        return sum(1 for visit in self.visits if visit.error is not None)


async def attend(browser: Browser, password: str, student: Visit, unix_user: str) -> None:
    """One student logs in, opens JupyterLab and runs the code (timings recorded in `student`)."""
    start = time.perf_counter()
    await log_in_with_form(browser.client, browser.base, student.user, password)
    lab = await browser.open_lab(student)
    student.lab_s = round(time.perf_counter() - start, 3)
    student.server_cpu_s = (await asyncio.to_thread(server_cpu, unix_user))[0]
    start = time.perf_counter()
    output = (await browser.run_code(lab, student.user, CODE)).strip()
    if output != EXPECTED:
        raise HubError(f"{CODE} printed {output!r}, not {EXPECTED}")
    student.kernel_s = round(time.perf_counter() - start, 3)
    student.first_result_s = round(student.lab_s + student.kernel_s, 3)


def failed(system: System, student: Visit, exc: Exception, step: str = "") -> None:
    """Record a student's failure (the first one) and say it."""
    if student.error is None:
        student.error = (step + f"{type(exc).__name__}: {exc}")[:500]
    log(f"  {system.key} {student.user}: FAILED {step}{type(exc).__name__}: {exc}"[:300])


async def storm(system: System, n: int, ramp: float) -> tuple[list[Visit], float]:
    """N students arriving uniformly over `ramp` seconds, each with a browser of their own: they log in, open
    JupyterLab and run the code; once every one has a result (or has failed) they stop their servers, as at the end
    of a class — so that no stop overlaps what is measured (and in (c) no server stopped before the meeting is
    pre-warmed again during the storm). The visits, and the wall time until the last result."""
    students = [Visit(user, round(ramp * i / n, 3)) for i, user in enumerate(system.users[:n])]
    finished: list[Visit] = []
    class_over = asyncio.Event()

    async def come(student: Visit, unix_user: str) -> None:
        limits = httpx.Limits(max_connections=8)
        async with httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=30.0), limits=limits) as client:
            browser = Browser(client, system.url)
            await asyncio.sleep(student.arrival_s)
            try:
                await asyncio.wait_for(attend(browser, system.password, student, unix_user), VISIT_TIMEOUT)
            except Exception as exc:  # this student's failure: recorded, the storm goes on
                failed(system, student, exc)
            finally:
                finished.append(student)
                if len(finished) == len(students):
                    class_over.set()
            await class_over.wait()
            if student.first_result_s is None:
                return  # what a failure left is stopped by System.stop_all
            start = time.perf_counter()
            try:
                await browser.stop_server(student.user)
                student.stop_s = round(time.perf_counter() - start, 3)
            except Exception as exc:
                failed(system, student, exc, "stop: ")

    start = time.perf_counter()
    everyone = asyncio.gather(*(come(s, u) for s, u in zip(students, system.unix_users, strict=True)))
    try:
        await class_over.wait()
        wall = time.perf_counter() - start
        await everyone
    finally:
        if not everyone.done():  # interrupted: the students leave (their browsers close)
            everyone.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await everyone
    return students, wall


async def wait_prewarmed(system: System, client: httpx.AsyncClient, n: int) -> tuple[int, float]:
    """Wait until pre-warm has started every student's server (or started none for PREWARM_STALL s): how many are
    ready, and when (time.monotonic()) the last of them got ready."""
    start = last_change = time.monotonic()
    ready = -1
    while True:
        now_ready = sum(1 for server in (await system.servers(client)).values() if server.get("ready"))
        now = time.monotonic()
        if now_ready != ready:
            ready, last_change = now_ready, now
        if ready >= n or now - last_change > PREWARM_STALL:
            return ready, last_change
        if now - start > PREWARM_TIMEOUT:
            raise BenchError(f"pre-warm started only {ready} of {n} servers in {PREWARM_TIMEOUT:.0f} s")
        await asyncio.sleep(1.0)


async def storms_of_size(
    running: dict[str, System], n: int, args: argparse.Namespace, meter: StormMeter
) -> list[Storm]:
    """`args.runs` storms of each system with `n` students, alternating the systems run by run."""
    done: list[Storm] = []
    warming_since = time.monotonic()  # the fleet is just up: pre-warm has begun
    async with httpx.AsyncClient(timeout=60.0) as client:
        for run in range(1, args.runs + 1):
            # Pre-warm (at the start, and again after each storm of (c)) must not overlap a storm of (a) or (b).
            log(f"  waiting for pre-warm to start the {n} students' servers")
            ready, finished = await wait_prewarmed(running["prewarm"], client, n)
            warm_s = round(finished - warming_since, 1)
            log(f"  pre-warm: {ready} server(s) ready, {warm_s:.0f} s after it began")
            for key in SYSTEMS:
                system = running[key]
                quiet = await meter.wait_quiet(args.quiet_timeout)
                load = [round(value, 2) for value in os.getloadavg()]
                log(f"{TITLES[key]}, {n} students, run {run}/{args.runs} (load {load[0]:.2f}, waited {quiet:.0f} s)")
                before = meter.sample()
                visits, wall = await storm(system, n, args.ramp)
                cpu = meter.usage(before, meter.sample())
                result = Storm(key, n, run, visits, round(wall, 2), load, quiet, cpu)
                if key == "prewarm":
                    result.prewarmed, result.prewarm_s = ready, warm_s
                    warming_since = time.monotonic()
                done.append(result)
                log_storm(result)
                if key != "prewarm":
                    await system.stop_all(client)
    return done


def log_storm(result: Storm) -> None:
    labs = [v.lab_s for v in result.visits if v.lab_s is not None]
    kernels = [v.kernel_s for v in result.visits if v.kernel_s is not None]
    figures = []
    if labs:
        s = summary(labs)
        figures.append(f"Lab p50 {s['median']:.1f} p95 {s['p95']:.1f} max {s['max']:.1f} s")
    if kernels:
        figures.append(f"kernel p95 {summary(kernels)['p95']:.1f} s")
    figures.append(f"{result.failures} failed, wall {result.wall_s:.0f} s, CPU {result.cpu.busy_percent:.0f}% busy")
    log("  " + "; ".join(figures))


# --------------------------------------------------------------------------------------------- report


def figures(storms: list[Storm], attribute: str) -> dict[str, float] | None:
    values = [getattr(v, attribute) for s in storms for v in s.visits if getattr(v, attribute) is not None]
    return summary(values) if values else None


def report(storms: list[Storm], sizes: list[int], clashes: dict[str, int]) -> dict[str, Any]:
    """Top-level figures, per system and size (over all runs), and the ratios against bare. `clashes`: kernel port
    clashes found in each system's log, by `<system>_<n>`."""
    top: dict[str, Any] = {}
    by: dict[str, Any] = {}
    for n in sizes:
        for key in SYSTEMS:
            mine = [s for s in storms if s.system == key and s.users == n]
            if not mine:
                continue
            lab, first = figures(mine, "lab_s"), figures(mine, "first_result_s")
            by[f"{key}_{n}"] = {
                "lab_s": lab,
                "kernel_s": figures(mine, "kernel_s"),
                "first_result_s": first,
                "failures": sum(s.failures for s in mine),
                "visits": sum(len(s.visits) for s in mine),
                "lab_p95_by_run": [(figures([s], "lab_s") or {}).get("p95") for s in mine],
                "server_cpu_s": figures(mine, "server_cpu_s"),
                "kernel_port_clashes": clashes.get(f"{key}_{n}", 0),
            }
            if lab is not None:
                top[f"{key}_p95_{n}_s"] = lab["p95"]
                top[f"{key}_p50_{n}_s"] = lab["median"]
            if first is not None:
                top[f"{key}_first_result_p95_{n}_s"] = first["p95"]
        for key in SYSTEMS[1:]:
            for metric in ("p95", "first_result_p95"):
                bare, mine = top.get(f"bare_{metric}_{n}_s"), top.get(f"{key}_{metric}_{n}_s")
                if bare and mine is not None:
                    top[f"{key}_vs_bare_{metric}_{n}"] = round(mine / bare, 3)
    top["failures"] = sum(s.failures for s in storms)
    for key in SYSTEMS:
        top[f"failures_{key}"] = sum(s.failures for s in storms if s.system == key)
    before = figures([s for s in storms if s.system == "bare"], "server_cpu_s")
    after = figures([s for s in storms if s.system == "hubfleet"], "server_cpu_s")
    if before is not None:
        top["start_cpu_s_before"] = before["median"]
    if after is not None:
        top["start_cpu_s_after"] = after["median"]
    if before is not None and after is not None:
        top["start_cpu_ratio"] = round(after["median"] / before["median"], 3)
    return {**top, "goals": goals(top, sizes), "systems": by}


def goals(top: dict[str, Any], sizes: list[int]) -> dict[str, bool | None]:
    """The issue's goals on the p95 of login → Lab page, each True/False (None: not measured in this run)."""

    def within(key: str, share: float, n: int) -> bool | None:
        value, bare = top.get(key), top.get(f"bare_p95_{n}_s")
        return None if value is None or bare is None else value <= bare * share

    found: dict[str, bool | None] = {
        f"hubfleet_p95_{n}_at_most_half_of_bare": within(f"hubfleet_p95_{n}_s", 0.5, n) for n in sizes
    }
    if 30 in sizes:
        found["prewarm_p95_30_at_most_5_s"] = top["prewarm_p95_30_s"] <= 5.0 if "prewarm_p95_30_s" in top else None
    if 60 in sizes:
        found["prewarm_p95_60_at_most_a_fifth_of_bare"] = within("prewarm_p95_60_s", 0.2, 60)
    found["no_failures"] = top["failures"] == 0
    found["no_failures_on_hubfleet"] = top["failures_hubfleet"] + top["failures_prewarm"] == 0
    return found


def _cells(values: dict[str, float] | None, keys: tuple[str, ...] = ("median", "p95", "max")) -> list[str]:
    return [f"{values[k]:.1f}" if values else "-" for k in keys]


def _ratio(results: dict[str, Any], key: str, metric: str, n: int) -> str:
    if key == "bare":
        return "1.00"
    ratio = results.get(f"{key}_vs_bare_{metric}_{n}")
    return "-" if ratio is None else f"{ratio:.2f}"


def _table(title: str, *figures: str) -> Table:
    """A results table: the system and N on the left, then `figures` right-aligned."""
    table = Table(title=title, box=box.SIMPLE_HEAD)
    table.add_column("system", no_wrap=True)
    for name in ("N", *figures):
        table.add_column(name, justify="right", no_wrap=True)
    return table


def print_tables(results: dict[str, Any], sizes: list[int]) -> None:
    """The figures in tables of at most 80 columns."""
    console = Console(width=80)
    rows = [
        (key, n, results["systems"][f"{key}_{n}"])
        for n in sizes
        for key in SYSTEMS
        if f"{key}_{n}" in results["systems"]
    ]
    lab = _table("Login → JupyterLab page (s)", "p50", "p95", "max", "p95 / bare", "failed", "port clashes")
    for key, n, entry in rows:
        lab.add_row(
            TITLES[key],
            str(n),
            *_cells(entry["lab_s"]),
            _ratio(results, key, "p95", n),
            f"{entry['failures']}/{entry['visits']}",
            str(entry["kernel_port_clashes"]),
        )
    console.print(lab)
    code = _table(
        "Kernel + first result, and login → first result (s)",
        *("kernel\np50", "kernel\np95", "kernel\nmax", "to result\np50", "to result\np95", "p95 /\nbare"),
    )
    for key, n, entry in rows:
        code.add_row(
            TITLES[key],
            str(n),
            *_cells(entry["kernel_s"]),
            *_cells(entry["first_result_s"], ("median", "p95")),
            _ratio(results, key, "first_result_p95", n),
        )
    console.print(code)
    cpu = Table(title="CPU seconds of a server when its Lab page arrived", box=box.SIMPLE_HEAD)
    for name in ("start", "median", "p95", "max", "ratio"):
        cpu.add_column(name, justify="left" if name == "start" else "right")
    starts = (("plain (bare, before)", "bare"), ("forked (hubfleet, after)", "hubfleet"), ("pre-warmed", "prewarm"))
    for label, key in starts:
        pooled = [entry["server_cpu_s"] for k, _, entry in rows if k == key and entry["server_cpu_s"]]
        if not pooled:
            continue
        ratio = results.get("start_cpu_ratio") if key == "hubfleet" else None
        cpu.add_row(
            label,
            f"{statistics.median(p['median'] for p in pooled):.2f}",
            f"{max(p['p95'] for p in pooled):.2f}",
            f"{max(p['max'] for p in pooled):.2f}",
            "1.00" if key == "bare" else ("-" if ratio is None else f"{ratio:.2f}"),
        )
    console.print(cpu)
    console.print("Goals (p95 of login → Lab page):")
    for name, ok in results["goals"].items():
        console.print(f"  {name}: {'yes' if ok else 'no' if ok is False else 'not measured'}")


def port_clashes(log_file: Path) -> int:
    """How many kernels in `log_file` failed to bind a port another kernel had taken."""
    try:
        return log_file.read_text(errors="replace").count(PORT_CLASH)
    except OSError:
        return 0


# --------------------------------------------------------------------------------------------- main


def sizes_option(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected sizes such as 30,60") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected sizes of at least 1 student")
    return sizes


def more_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--users", type=sizes_option, default=[30, 60], help="storm sizes (default 30,60)")
    parser.add_argument("--ramp", type=float, default=10.0, help="seconds over which students arrive (default 10)")
    parser.add_argument(
        "--lead", type=float, default=60.0, help="minutes from now to the pre-warmed course's meeting (default 60)"
    )


def main(argv: list[str] | None = None) -> int:
    runs = ("--runs", "-r", 2, "storms of each system and size (default 2)")
    args = parse_args(argv, __doc__, runs, DEFAULT_OUT, "storm", "hub logs, configs, fleet state", more_options)
    started = prepare(check_spawn_prerequisites)
    if started is None:
        return 2
    os.environ["HUBFLEET_PREWARM_EVERY"] = PREWARM_EVERY  # read by the fleet's supervisor
    load = [round(value, 2) for value in os.getloadavg()]
    info = machine_info()
    log(f"Storm benchmark: sizes {args.users}, {args.runs} run(s) each, ramp {args.ramp:g} s, load {load[0]:.2f}")
    warm_file_cache()
    lead = dt.timedelta(minutes=args.lead)

    def run(workdir: Path) -> tuple[list[Storm], dict[str, int]]:
        meter = StormMeter(workdir)
        done: list[Storm] = []
        clashes: dict[str, int] = {}
        for n in args.users:
            with systems(n, workdir, lead) as running:
                meter.unix_users = [u for system in running.values() for u in system.unix_users]
                done += run_async(storms_of_size(running, n, args, meter))
                clashes.update({f"{key}_{n}": port_clashes(system.log_file) for key, system in running.items()})
        return done, clashes

    errors = (BenchError, httpx.HTTPError, subprocess.SubprocessError, OSError)
    status, outcome = run_in_workdir("hubfleet-storm-bench-", run, errors, args.keep_workdir, "logs and fleet state")
    if outcome is None:
        return status
    storms, clashes = outcome
    results = report(storms, args.users, clashes)
    print_tables(results, args.users)
    write_results(
        args.out,
        "class-start storm",
        started,
        settings={"sizes": args.users, "runs": args.runs, "ramp_s": args.ramp, "lead_minutes": args.lead},
        definition=DEFINITION,
        method=METHOD,
        machine={**info, "load_average_at_start": load},
        results={
            "load_average_at_start": load,
            **results,
            "storms": [storm_record(s) for s in storms],
        },
    )
    return 0


def storm_record(result: Storm) -> dict[str, Any]:
    record = asdict(result)
    record["cpu"] = asdict(result.cpu)
    record["failures"] = result.failures
    record["lab_s"] = figures([result], "lab_s")
    record["kernel_s"] = figures([result], "kernel_s")
    record["first_result_s"] = figures([result], "first_result_s")
    return record


if __name__ == "__main__":
    sys.exit(main())
