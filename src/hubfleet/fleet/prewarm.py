"""Course pre-warm: before each meeting of a course's `schedule`, the servers of the students likely to come are
started, so that the class starts at once; those nobody came to are stopped a while after the meeting starts.

- **When:** from `prewarm.lead` before a meeting's start (the hub is awake then: a meeting keeps it so).
- **Who:** the course's students, those active on the most days of the last four weeks first (the usage ledger),
  then the others; never anyone outside the course's students group, so a student of another course or hub never
  gets one. Each server is the student's own, started as them through the hub's API (their profile, cgroup,
  environment), so "handing it over" is nothing at all: when they log in, it is running.
- **How many:** as many as the machine's free memory allows after a safety margin, an estimate of what an idle
  server holds each (`SERVER_BYTES`), and at most `prewarm.max_servers`.
- **At what cost:** one start at a time (a start is about half a CPU-second from the fork server), so pre-warming
  never takes the CPU from other hubs' logins. Until its student comes, a pre-warmed server is metered on a line of
  its own ("pre-warmed servers"), billed to nobody (`hubfleet.usage.collector`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from hubfleet.common.hubapi import HubAPI, timestamp
from hubfleet.common.state import HubState, claimed
from hubfleet.edu.courses import meeting_times
from hubfleet.fleet.backend import RunningHub
from hubfleet.spec.edu import Course, group_name
from hubfleet.spec.models import Fleet
from hubfleet.usage.tables import Activity

log = logging.getLogger("hubfleet.prewarm")

LOOK_EVERY = float(os.environ.get("HUBFLEET_PREWARM_EVERY") or 30.0)
"""Seconds between two looks at which courses meet soon (`$HUBFLEET_PREWARM_EVERY`, for tests)."""

SERVER_BYTES = 256 * 2**20
"""Memory an idle pre-warmed server is counted to hold (a forked idle server holds about 100-150 MiB)."""

MEMORY_MARGIN = 2 * 2**30
"""Free memory pre-warming always leaves to everything else (and at least a tenth of the machine's)."""

HISTORY_DAYS = 28
"""How far back a student's activity makes them likely to come."""

READY_TIMEOUT = 120.0


@dataclass(frozen=True)
class Meeting:
    """One meeting of one course on one hub, as pre-warm sees it."""

    hub: str
    course: Course
    start: dt.datetime
    end: dt.datetime


def available_memory(meminfo: str | None = None) -> int:
    """Memory the machine can still give (MemAvailable of /proc/meminfo, or of `meminfo`) minus the safety margin,
    in bytes (0 if none)."""
    if meminfo is None:
        with open("/proc/meminfo", encoding="ascii") as source:
            meminfo = source.read()
    values = {}
    for line in meminfo.splitlines():
        key, _, rest = line.partition(":")
        if rest.split():
            values[key] = int(rest.split()[0]) * 1024
    margin = max(MEMORY_MARGIN, values["MemTotal"] // 10)
    return max(0, values["MemAvailable"] - margin)


def likely_first(sessions: sessionmaker[Session], hub: str, students: list[str], today: dt.date) -> list[str]:
    """`students`, those active on the most days of the last `HISTORY_DAYS` first (ties by name)."""
    since = today - dt.timedelta(days=HISTORY_DAYS)
    with sessions() as session:
        query = (
            select(Activity.user, func.count())
            .where(Activity.hub == hub, Activity.day >= since, Activity.user.in_(students))
            .group_by(Activity.user)
        )
        days = dict(session.execute(query).tuples().all())
    return sorted(students, key=lambda user: (-days.get(user, 0), user))


class PreWarmer:
    """Pre-warms the fleet's courses before their meetings and stops what nobody used afterwards."""

    def __init__(
        self,
        fleet: Callable[[], Fleet],
        hubs: Callable[[], list[RunningHub]],
        wake: Callable[[str], Awaitable[None]],
        sessions: Callable[[], sessionmaker[Session]],
    ):
        self.fleet = fleet
        self.hubs = hubs
        self.wake = wake
        self.sessions = sessions
        self._busy = asyncio.Lock()

    def meetings(self, now: dt.datetime) -> list[Meeting]:
        """Meetings whose pre-warm window (lead before the start to keep_unused after it) is on at `now`."""
        found = []
        for name, hub in self.fleet().hubs.items():
            for course in hub.courses:
                if not course.prewarm.enabled:
                    continue
                lead = dt.timedelta(seconds=course.prewarm.lead)
                keep = dt.timedelta(seconds=course.prewarm.keep_unused)
                for start, end in meeting_times(course, now, days=2):
                    if start - lead <= now < start + keep:
                        found.append(Meeting(name, course, start, end))
        return found

    async def sweep(self) -> None:
        """Warm what meets soon, stop what nobody came to (one sweep at a time)."""
        if self._busy.locked():
            return
        async with self._busy:
            now = dt.datetime.now()
            on = self.meetings(now)
            for meeting in on:
                if now < meeting.start:
                    await self.warm(meeting)
            running = {hub.name: hub for hub in self.hubs()}
            keep_until = {m.hub: m.start + dt.timedelta(seconds=m.course.prewarm.keep_unused) for m in on}
            for name, hub in running.items():
                if hub.awake and hub.settings.state_dir.joinpath("prewarm.json").exists():
                    await self.settle(hub, now < keep_until.get(name, now))

    async def warm(self, meeting: Meeting) -> int:
        """Start the servers of the meeting's likely students, one at a time, within the memory budget."""
        await self.wake(meeting.hub)
        hub = next(h for h in self.hubs() if h.name == meeting.hub)
        state = HubState(hub.settings.state_dir)
        records = state.prewarmed()
        started = 0
        async with _api(hub) as api:
            group = await api.group(group_name(meeting.course.name, "student"))
            students = sorted((group or {}).get("users", []))
            today = dt.datetime.now(dt.UTC).date()
            for user in await asyncio.to_thread(likely_first, self.sessions(), hub.name, students, today):
                limit = meeting.course.prewarm.max_servers
                if limit is not None and len(records) >= limit:
                    break
                if available_memory() < SERVER_BYTES:
                    log.info("pre-warm of %s/%s stops: no free memory left for more", hub.name, meeting.course.name)
                    break
                model = await api.user(user)
                if model is None or (model.get("servers") or {}).get(""):
                    continue  # gone, or already has a server (pending or running)
                if await self._start(api, user):
                    records[user] = time.time()
                    state.keep_prewarmed(records)
                    started += 1
        if started:
            log.info("pre-warmed %d server(s) of course %s on hub %s", started, meeting.course.name, hub.name)
        return started

    async def _start(self, api: HubAPI, user: str) -> bool:
        """Start `user`'s server and wait until it is ready (so that starts never pile up)."""
        try:
            await api.start_server(user)
        except httpx.HTTPStatusError as exc:
            log.warning("pre-warm: the server of %s did not start: %s", user, exc.response.text)
            return False
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            server = ((await api.user(user)) or {}).get("servers", {}).get("")
            if server is None:
                return False
            if server.get("ready"):
                return True
            await asyncio.sleep(0.25)
        return False

    async def settle(self, hub: RunningHub, keep: bool) -> None:
        """Forget the servers whose students came (they are theirs now); stop the others once `keep` is over."""
        state = HubState(hub.settings.state_dir)
        records = state.prewarmed()
        async with _api(hub) as api:
            for user, started in list(records.items()):
                model = await api.user(user)
                server = (model or {}).get("servers", {}).get("")
                last = model.get("last_activity") if model else None
                if server is None or claimed(started, timestamp(last)):
                    del records[user]
                elif not keep:
                    await api.stop_server(user)
                    log.info("pre-warm: stopped the unused server of %s on hub %s", user, hub.name)
                    del records[user]
        state.keep_prewarmed(records)


def _api(hub: RunningHub) -> HubAPI:
    return HubAPI(hub.settings.address.hub_api_url, hub.settings.secret("service_token"), timeout=30.0)
