"""The usage collector: run by the fleet supervisor every `usage.metering.interval`, it measures every hub.

Each sweep, for every hub:

- asks the hub's REST API (as the fleet's service) for its users, their servers, groups and last activity;
- reads each running server's cgroup (`<hub cgroup>/<unix user>[-<server>]`, made by the IsolatedSpawner) and each
  user's Dask cgroup (`<hub cgroup>/<unix user>-dask`): CPU time since the last reading, memory in use (the working
  set), and the request (the cgroup's limits, i.e. the profile; else the profile the server was started with);
- counts new lines of the hub's `logins.jsonl`, and measures home directories every `metering.storage_interval`.

Gaps are never usage: a reading becomes a sample only when the previous reading of the same cgroup is at most
`max_gap(interval)` old, and then covers exactly the time between the two; otherwise (collector stopped, hub not
answering, new server) the CPU delta is discarded and the reading only starts a new interval. The same rule decides
which time counts as covered (for idle capacity).

After writing samples, the sweep refreshes the rollups, checks budgets (alerts, quota files) and updates the
Prometheus gauges served at the front door's `/_hubfleet/metrics`. Errors are logged, never fatal.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import stat
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge
from sqlalchemy.orm import Session, sessionmaker

from hubfleet import db
from hubfleet.common.hubapi import HubAPI
from hubfleet.common.periodic import every
from hubfleet.common.settings import CHECK_USER
from hubfleet.common.state import HubState, claimed
from hubfleet.spec.models import Fleet, Profile
from hubfleet.system import accounts, cgroups
from hubfleet.usage import ledger
from hubfleet.usage.budgets import budget_statuses, send_alerts, write_quota
from hubfleet.usage.cost import NO_GROUP, PREWARMED, price
from hubfleet.usage.tables import DASK, SERVER

log = logging.getLogger("hubfleet.usage.collector")

LOGINS_FILE = "logins.jsonl"
COLLECTOR_STATE_FILE = "usage-collector.json"
"""Per hub, in its state directory: how far `logins.jsonl` was read, when homes were last measured."""

PRUNE_EVERY = 3600.0


def max_gap(interval: float) -> float:
    """The longest time between two readings that still counts as measured: 1.5 intervals, at least interval + 5 s
    (so a slow sweep on a busy machine is not taken for an outage)."""
    return max(1.5 * interval, interval + 5.0)


@dataclass(frozen=True)
class HubTarget:
    """What the collector needs to reach one hub."""

    name: str
    api_url: str
    token: str
    state_dir: Path
    home_root: Path
    cgroup: str
    """The hub's cgroup (its servers' and Dask clusters' groups are below it)."""
    local_servers: bool = True  # servers run on this machine (their cgroups can be read here)


@dataclass
class _Server:
    hub: str
    user: str
    kind: str
    relpath: str
    profile: str | None


@dataclass
class _HubView:
    target: HubTarget
    servers: list[_Server] = field(default_factory=list)
    users: list[str] = field(default_factory=list)
    groups: dict[str, list[str]] = field(default_factory=dict)
    activity: dict[str, dt.datetime] = field(default_factory=dict)
    profiles: dict[str, str | None] = field(default_factory=dict)


@dataclass
class SweepResult:
    """What one sweep did."""

    samples: int = 0
    servers: int = 0
    hubs: int = 0
    covered: bool = False
    alerts: list[dict] = field(default_factory=list)
    seconds: float = 0.0


class Collector:
    """Samples every hub of the fleet into the usage ledger."""

    def __init__(
        self,
        fleet: Callable[[], Fleet],
        targets: Callable[[], list[HubTarget]],
        database_url: str,
        *,
        driver: cgroups.CgroupDriver | None = None,
    ):
        self.fleet = fleet
        self.targets = targets
        self.database_url = database_url
        self.driver = driver if driver is not None else cgroups.detect()
        self._sessions: sessionmaker[Session] | None = None
        self._readings: dict[str, tuple[float, float]] = {}  # cgroup relpath → (time, cpu seconds) at last reading
        self._last_sweep: float | None = None
        self._last_prune = 0.0
        self._seen_activity: dict[tuple[str, str], dt.datetime] = {}
        self._stop = asyncio.Event()
        self.registry = CollectorRegistry()
        self._gauges = _Gauges(self.registry)

    @property
    def interval(self) -> float:
        """Seconds between sweeps (at least one)."""
        return max(1.0, float(self.fleet().usage.metering.interval))

    def sessions(self) -> sessionmaker[Session]:
        """The ledger's session factory (the database is migrated on first use)."""
        if self._sessions is None:
            self._sessions = db.open_database(self.database_url)
        return self._sessions

    async def run(self) -> None:
        """Sweep every interval until `stop()`; a failed sweep is logged and the next one runs as usual."""
        self._stop.clear()
        await every(lambda: self.interval, self._sweep_if_enabled, log=log, what="usage sweep", stop=self._stop)

    async def _sweep_if_enabled(self) -> None:
        if not self.fleet().usage.metering.enabled:
            return
        try:
            await self.sweep()
        except Exception:
            self._gauges.errors.inc()
            raise

    def stop(self) -> None:
        """Stop after the current sweep."""
        self._stop.set()

    async def sweep(self) -> SweepResult:
        """Measure every hub once, record it, refresh rollups, budgets and gauges."""
        started = time.monotonic()
        fleet = self.fleet()
        targets = [t for t in self.targets() if t.name in fleet.hubs]
        views = await asyncio.gather(*(self._view(fleet, t) for t in targets), return_exceptions=True)
        answered = []
        still_up = {t.name for t in self.targets()}  # a hub that fell asleep during the sweep is no failure
        for target, view in zip(targets, views, strict=True):
            if not isinstance(view, BaseException):
                answered.append(view)
            elif target.name in still_up:
                self._gauges.errors.inc()
                log.warning("usage: hub %s did not answer: %s", target.name, view)
            else:
                log.info("usage: hub %s went to sleep during the sweep", target.name)
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(None, self._record, fleet, answered, time.time())
        result.seconds = time.monotonic() - started
        self._gauges.sweep_seconds.set(result.seconds)
        return result

    async def _view(self, fleet: Fleet, target: HubTarget) -> _HubView:
        """The hub's users, groups, activity and running servers, from its REST API."""
        view = _HubView(target)
        prewarmed = HubState(target.state_dir).prewarmed()
        async with HubAPI(target.api_url, target.token, timeout=10.0) as api:
            async for user in api.users():
                name = user["name"]
                if name == CHECK_USER:
                    continue
                view.users.append(name)
                for group in user.get("groups") or []:
                    view.groups.setdefault(group, []).append(name)
                if user.get("last_activity"):
                    view.activity[name] = _parse_time(user["last_activity"])
                unix = accounts.unix_username(target.name, name)
                for server_name, server in (user.get("servers") or {}).items():
                    if not server.get("ready"):
                        continue
                    relpath = f"{target.cgroup}/{unix}" + (f"-{server_name}" if server_name else "")
                    profile = (server.get("user_options") or {}).get("profile")
                    started = prewarmed.get(name) if not server_name else None
                    # A server pre-warmed for a meeting is the pre-warm line's until its student comes to it.
                    billed = PREWARMED if started is not None and not claimed(started, _seconds(view, name)) else name
                    view.servers.append(_Server(target.name, billed, SERVER, relpath, profile))
                view.servers.append(_Server(target.name, name, DASK, f"{target.cgroup}/{unix}-dask", None))
        return view

    # ------------------------------------------------------------------------------------------ in a thread

    def _record(self, fleet: Fleet, views: list[_HubView], now: float) -> SweepResult:
        result = SweepResult(hubs=len(views))
        bound = max_gap(max(1.0, float(fleet.usage.metering.interval)))
        readings, live = [], {}
        for view in views:
            if not view.target.local_servers:
                continue
            for server in view.servers:
                reading = self._read(fleet, server, now, bound)
                if reading is None:
                    continue
                if server.kind == SERVER:
                    result.servers += 1
                live[(server.hub, server.user, server.kind)] = reading
                if reading.seconds > 0:
                    readings.append(reading)
        with self.sessions().begin() as session:
            if self._last_sweep is not None and 0 < now - self._last_sweep <= bound:
                ledger.record_coverage(
                    session, self._last_sweep, now - self._last_sweep, float(os.cpu_count() or 1), _memory_total()
                )
                result.covered = True
            self._last_sweep = now
            result.samples = ledger.record_samples(session, readings)
            if readings:
                ledger.rollup(session, min(r.start for r in readings))
            if now - self._last_prune > PRUNE_EVERY:
                ledger.prune(session, now)
                self._last_prune = now
            for view in views:
                self._record_hub(session, fleet, view, now)
        with self.sessions().begin() as session:
            today = dt.datetime.fromtimestamp(now, dt.UTC).date()
            statuses = budget_statuses(session, fleet, today)
            result.alerts = send_alerts(session, fleet, statuses, dt.datetime.fromtimestamp(now, dt.UTC))
            by_hub = {s.hub: s for s in statuses}
            for view in views:
                try:
                    write_quota(view.target.state_dir, by_hub.get(view.target.name))
                except OSError as exc:
                    log.error("usage: cannot write the quota file of hub %s: %s", view.target.name, exc)
            month = price(session, fleet, today.replace(day=1), today)
        self._gauges.update(views, live, month, by_hub)
        return result

    def _read(self, fleet: Fleet, server: _Server, now: float, bound: float) -> ledger.Reading | None:
        """A reading of one cgroup: seconds 0 when there is no recent previous reading (nothing counted)."""
        group = self.driver.open(server.relpath) if self.driver is not None else None
        if group is None:
            self._readings.pop(server.relpath, None)
            return None
        try:
            cpu = group.cpu_seconds()
            memory = group.memory_working_set_bytes()
            limits = group.limits() if server.kind == SERVER else cgroups.Limits()
        except (OSError, ValueError, cgroups.CgroupError) as exc:
            log.warning("usage: cannot read cgroup %s: %s", server.relpath, exc)
            return None
        previous = self._readings.get(server.relpath)
        self._readings[server.relpath] = (now, cpu)
        cpu_request, memory_request = 0.0, 0
        if server.kind == SERVER:
            profile = _profile(fleet, server)
            cpu_request = limits.cpu or (profile.cpu if profile else 0.0)
            memory_request = limits.memory_bytes or (profile.memory if profile else 0)
        if previous is None or not 0 < now - previous[0] <= bound or cpu < previous[1]:
            start, seconds, used = now, 0.0, 0.0
        else:
            start, seconds, used = previous[0], now - previous[0], cpu - previous[1]
        return ledger.Reading(
            server.hub, server.user, server.kind, start, seconds, used, cpu_request, memory, memory_request
        )

    def _record_hub(self, session: Session, fleet: Fleet, view: _HubView, now: float) -> None:
        hub = view.target.name
        ledger.set_group_members(session, hub, view.groups)
        for user, when in view.activity.items():
            if self._seen_activity.get((hub, user)) != when:
                ledger.record_activity(session, hub, user, when)
                self._seen_activity[(hub, user)] = when
        state_file = view.target.state_dir / COLLECTOR_STATE_FILE
        try:
            state = json.loads(state_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            state = {}
        state["logins_offset"] = _count_logins(session, hub, view.target.state_dir / LOGINS_FILE, state)
        if now - float(state.get("homes_measured", 0)) >= float(fleet.usage.metering.storage_interval):
            day = dt.datetime.fromtimestamp(now, dt.UTC).date()
            for user in view.users:
                home = view.target.home_root / accounts.unix_username(hub, user)
                size = disk_usage(home)
                if size is not None:
                    ledger.record_home_bytes(session, hub, user, day, size)
            state["homes_measured"] = now
        try:
            state_file.write_text(json.dumps(state), encoding="utf-8")
        except OSError as exc:
            log.warning("usage: cannot keep the collector state of hub %s: %s", hub, exc)


def _count_logins(session: Session, hub: str, path: Path, state: dict) -> int:
    """Record the logins appended to `path` since the offset in `state`; returns the new offset."""
    offset = int(state.get("logins_offset", 0))
    try:
        with path.open("rb") as logins:
            if os.fstat(logins.fileno()).st_size < offset:  # a new file: start again
                offset = 0
            logins.seek(offset)
            for line in logins:
                if not line.endswith(b"\n"):
                    break  # being written: next sweep
                offset += len(line)
                try:
                    record = json.loads(line)
                    when = dt.datetime.fromtimestamp(float(record["time"]), dt.UTC)
                    user = str(record["user"])
                except (ValueError, KeyError, TypeError):
                    continue
                if user != CHECK_USER:
                    ledger.record_activity(session, hub, user, when, logins=1)
    except FileNotFoundError:
        return 0
    return offset


def disk_usage(path: Path) -> int | None:
    """Bytes allocated to the files below `path` (never following symlinks); None when `path` is not a folder."""
    try:
        top = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISDIR(top.st_mode):
        return None
    total, pending = top.st_blocks * 512, [str(path)]
    while pending:
        try:
            entries = os.scandir(pending.pop())
        except OSError:
            continue
        with entries:
            for entry in entries:
                try:
                    info = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                total += info.st_blocks * 512
                if stat.S_ISDIR(info.st_mode):
                    pending.append(entry.path)
    return total


def _profile(fleet: Fleet, server: _Server) -> Profile | None:
    hub = fleet.hubs.get(server.hub)
    if hub is None:
        return None
    return next((p for p in hub.profiles if p.name == server.profile), None) or hub.default_profile()


def _memory_total() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _parse_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(dt.UTC)


class _Gauges:
    """The Prometheus gauges, per hub, group and user."""

    def __init__(self, registry: CollectorRegistry):
        def gauge(name: str, text: str, labels: tuple[str, ...]) -> Gauge:
            return Gauge(name, text, labels, registry=registry)

        self.servers = gauge("hubfleet_usage_running_servers", "user servers measured in the last sweep", ("hub",))
        self.hub_cpu = gauge("hubfleet_usage_hub_cpu_cores", "CPU cores used (last interval)", ("hub",))
        self.hub_memory = gauge("hubfleet_usage_hub_memory_bytes", "memory in use", ("hub",))
        self.group_cpu = gauge("hubfleet_usage_group_cpu_cores", "CPU cores used by a group", ("hub", "group"))
        self.group_memory = gauge("hubfleet_usage_group_memory_bytes", "memory of a group", ("hub", "group"))
        self.user_cpu = gauge("hubfleet_usage_user_cpu_cores", "CPU cores used by a user", ("hub", "user"))
        self.user_memory = gauge("hubfleet_usage_user_memory_bytes", "memory of a user", ("hub", "user"))
        self.hub_cost = gauge("hubfleet_usage_hub_cost_month", "cost this month so far", ("hub",))
        self.group_cost = gauge("hubfleet_usage_group_cost_month", "a group's cost this month", ("hub", "group"))
        self.user_cost = gauge("hubfleet_usage_user_cost_month", "a user's cost this month", ("hub", "user"))
        self.budget = gauge("hubfleet_usage_budget_fraction", "fraction of the budget spent", ("hub",))
        self.sweep_seconds = Gauge(
            "hubfleet_usage_sweep_seconds", "duration of the last collector sweep", registry=registry
        )
        self.errors = Counter("hubfleet_usage_collector_errors", "failed sweeps and hub reads", registry=registry)

    def update(self, views: list[_HubView], live: dict, month: dict, budgets: dict) -> None:
        for labelled in (
            self.servers,
            self.hub_cpu,
            self.hub_memory,
            self.group_cpu,
            self.group_memory,
            self.user_cpu,
            self.user_memory,
            self.hub_cost,
            self.group_cost,
            self.user_cost,
            self.budget,
        ):
            labelled.clear()
        for view in views:
            hub = view.target.name
            groups_of: dict[str, list[str]] = defaultdict(list)
            for group, members in view.groups.items():
                for member in members:
                    groups_of[member].append(group)
            self.servers.labels(hub).set(0)
            cpu = memory = 0.0
            per_user: dict[str, tuple[float, float]] = defaultdict(lambda: (0.0, 0.0))
            for (reading_hub, user, kind), reading in live.items():
                if reading_hub != hub:
                    continue
                if kind == SERVER:
                    self.servers.labels(hub).inc()
                cores = reading.cpu_seconds / reading.seconds if reading.seconds else 0.0
                old_cores, old_memory = per_user[user]
                per_user[user] = (old_cores + cores, old_memory + reading.memory_bytes)
            for user, (cores, used) in per_user.items():
                self.user_cpu.labels(hub, user).set(cores)
                self.user_memory.labels(hub, user).set(used)
                cpu, memory = cpu + cores, memory + used
                groups = groups_of.get(user) or [NO_GROUP]
                for group in groups:
                    self.group_cpu.labels(hub, group).inc(cores / len(groups))
                    self.group_memory.labels(hub, group).inc(used / len(groups))
            self.hub_cpu.labels(hub).set(cpu)
            self.hub_memory.labels(hub).set(memory)
            pricing = month.get(hub)
            if pricing is not None:
                self.hub_cost.labels(hub).set(pricing.total)
                for user, amounts in pricing.users.items():
                    self.user_cost.labels(hub, user).set(amounts.cost)
                for group, amounts in pricing.groups.items():
                    self.group_cost.labels(hub, group).set(amounts.cost)
            status = budgets.get(hub)
            if status is not None and status.fraction is not None:
                self.budget.labels(hub).set(status.fraction)


def _seconds(view: _HubView, user: str) -> float | None:
    """The user's last activity as Unix time, if the hub knows one."""
    when = view.activity.get(user)
    return when.timestamp() if when is not None else None
