"""Scale to zero: which hubs are awake, waking them on demand, and putting idle ones to sleep.

A hub sleeps — its JupyterHub and companions stop, its state stays on disk, its routes leave the proxy — after
`sleep.after` with no request through the proxy and nothing that keeps it awake: a running or starting server,
a Dask cluster or any process of its users, a course meeting (from a little before its start to its end), a grading
run or a passback under way. The first request for it wakes it (`hubfleet.fleet.wake`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from hubfleet.common import events
from hubfleet.common.hubapi import timestamp
from hubfleet.edu.courses import meeting_times
from hubfleet.fleet.backend import Backend
from hubfleet.fleet.routes import RouteTable
from hubfleet.spec.models import Fleet, Hub

MEETING_LEAD = dt.timedelta(minutes=15)
"""A hub stays awake from this long before a course meeting until it ends."""

SWEEP_EVERY = float(os.environ.get("HUBFLEET_SLEEP_SWEEP_EVERY") or 10.0)
"""Seconds between two looks at which hubs may sleep (`$HUBFLEET_SLEEP_SWEEP_EVERY`, for tests)."""


@dataclass
class Wakefulness:
    """One hub's record of sleep and wake (shown by `hubfleet status` and the console)."""

    awake_since: float | None = None
    """When the hub last woke (or started awake); None while it sleeps."""
    last_wake: float | None = None
    wakes: int = 0
    asleep_since: float | None = None


def in_meeting(hub: Hub, now: dt.datetime) -> str | None:
    """The course whose meeting (from its lead time before it) is on at local time `now`, if any."""
    local = now.replace(tzinfo=None)
    for course in hub.courses:
        lead = max(MEETING_LEAD, dt.timedelta(seconds=course.prewarm.lead))
        if any(start - lead <= local < end for start, end in meeting_times(course, local)):
            return course.name
    return None


class SleepKeeper:
    """Wakes hubs (each wake starts a hub once, whoever asks) and puts idle ones to sleep."""

    def __init__(
        self,
        fleet: Callable[[], Fleet],
        backend_of: Callable[[str], Backend | None],
        routes: RouteTable,
        on_change: Callable[[], Awaitable[None]] | None = None,
    ):
        self.fleet = fleet
        self.backend_of = backend_of
        self.routes = routes
        self.on_change = on_change
        self.hubs: dict[str, Wakefulness] = {}
        self._waking: dict[str, asyncio.Task] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def record(self, name: str) -> Wakefulness:
        return self.hubs.setdefault(name, Wakefulness())

    def started(self, name: str, awake: bool) -> None:
        """Hub `name` was brought up, awake or asleep."""
        record = self.record(name)
        now = time.time()
        record.awake_since, record.asleep_since = (now, None) if awake else (None, now)

    def forget(self, name: str) -> None:
        self.hubs.pop(name, None)

    def awake(self, name: str) -> bool:
        """Whether hub `name` runs and is routed."""
        backend = self.backend_of(name)
        return backend is not None and backend.is_awake(name) and self.routes.has_route(name)

    async def wake(self, name: str) -> None:
        """Wake hub `name` and return once it answers (at once when it is awake); one start for many callers."""
        if self.awake(name):
            return
        task = self._waking.get(name)
        if task is None or task.done():
            task = asyncio.ensure_future(self._wake(name))
            self._waking[name] = task
        await asyncio.shield(task)

    async def _wake(self, name: str) -> None:
        backend = self.backend_of(name)
        if backend is None:
            raise KeyError(f"hub {name} is not running on any backend")
        async with self._lock(name):
            if self.awake(name):
                return
            started = time.monotonic()
            await backend.wake(name)
            record = self.record(name)
            record.awake_since = record.last_wake = time.time()
            record.asleep_since = None
            record.wakes += 1
        seconds = round(time.monotonic() - started, 2)
        events.record("hub.woke", f"hub {name} woke in {seconds:.2f} s", hub=name, seconds=seconds)
        if self.on_change is not None:
            await self.on_change()

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    async def sleep(self, name: str, why: str) -> None:
        """Put hub `name` to sleep now."""
        backend = self.backend_of(name)
        if backend is None:
            return
        async with self._lock(name):
            if not backend.is_awake(name):
                return
            await backend.sleep(name)
            record = self.record(name)
            record.awake_since, record.asleep_since = None, time.time()
        events.record("hub.slept", f"hub {name} is asleep ({why})", hub=name, why=why)
        if self.on_change is not None:
            await self.on_change()

    async def keeps_awake(self, hub: Hub, backend: Backend) -> str | None:
        """Why `hub` must stay awake now (None: it may sleep)."""
        after = hub.sleep.after
        if after is None:
            return "sleep: never"
        now = time.time()
        record = self.record(hub.name)
        if record.awake_since is not None and now - record.awake_since < after:
            return "woke recently"
        last = timestamp(await self.routes.last_activity(hub.name))
        if last is not None and now - last < after:
            return "used recently"
        return await self.at_work(hub, backend)

    async def at_work(self, hub: Hub, backend: Backend) -> str | None:
        """What `hub` is doing that keeps it awake whatever its idle time (None: nothing): a course meeting, a
        server, a cluster or a process of its users, grading or a passback."""
        course = in_meeting(hub, dt.datetime.now())
        if course is not None:
            return f"course {course} meets"
        return await backend.busy(hub.name)

    async def sleep_at_once(self, name: str) -> str | None:
        """Put hub `name` to sleep now, recent use or not (`hubfleet sleep`), unless it never sleeps or is at work:
        then the reason, and the hub stays as it is. KeyError when no backend runs it."""
        hub, backend = self.fleet().hubs.get(name), self.backend_of(name)
        if hub is None or backend is None:
            raise KeyError(name)
        if hub.sleep.after is None:
            return "it never sleeps (sleep: never)"
        if backend.is_awake(name):
            why = await self.at_work(hub, backend)
            if why is not None:
                return why
            await self.sleep(name, "`hubfleet sleep`")
        return None

    async def sweep(self) -> None:
        """Put every awake hub that may sleep to sleep."""
        for name, hub in self.fleet().hubs.items():
            backend = self.backend_of(name)
            if backend is None or not backend.is_awake(name) or hub.sleep.after is None:
                continue
            why = await self.keeps_awake(hub, backend)
            if why is None:
                await self.sleep(name, f"idle for {hub.sleep.after} s")
