"""Writing to the usage ledger: samples, rollups, home bytes, activity, group memberships, collector coverage.

Rollups are recomputed from raw samples for the hours that got new samples (a sample counts in the hour it
starts in), so they stay exact however often the collector runs. Raw samples older than `RAW_RETENTION_DAYS` are
pruned once rolled up.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sqlalchemy import case, delete, func, insert, select
from sqlalchemy.orm import Session

from hubfleet.usage.tables import Activity, Coverage, Daily, GroupMember, HomeBytes, Hourly, Sample

HOUR = 3600
DAY = 86400
RAW_RETENTION_DAYS = 35


@dataclass(frozen=True)
class Reading:
    """One interval of one user's server or Dask workers, as the collector measured it."""

    hub: str
    user: str
    kind: str
    start: float  # Unix seconds
    seconds: float
    cpu_seconds: float
    cpu_request: float
    memory_bytes: int
    memory_request: int


def record_samples(session: Session, readings: Iterable[Reading]) -> int:
    """Store readings as raw samples (no rollup); returns how many."""
    rows = [
        {
            "hub": r.hub,
            "user": r.user,
            "kind": r.kind,
            "start": int(r.start),
            "seconds": float(r.seconds),
            "cpu_seconds": float(r.cpu_seconds),
            "cpu_request": float(r.cpu_request),
            "memory_bytes": int(r.memory_bytes),
            "memory_request": int(r.memory_request),
        }
        for r in readings
    ]
    if rows:
        session.execute(insert(Sample), rows)
    return len(rows)


def rollup(session: Session, since: float) -> None:
    """Recompute the hourly rollups from the hour holding `since` on, and the daily rollups of those days."""
    first_hour = int(since) // HOUR * HOUR
    hour = Sample.start // HOUR * HOUR
    requested_cpu = Sample.cpu_request * Sample.seconds
    cpu_charged = case((Sample.cpu_seconds > requested_cpu, Sample.cpu_seconds), else_=requested_cpu)
    memory_charged = case(
        (Sample.memory_bytes > Sample.memory_request, Sample.memory_bytes), else_=Sample.memory_request
    )
    session.execute(delete(Hourly).where(Hourly.hour >= first_hour))
    grouped = (
        select(
            Sample.hub,
            Sample.user,
            Sample.kind,
            hour,
            func.sum(Sample.seconds),
            func.sum(cpu_charged),
            func.sum(Sample.cpu_seconds),
            func.sum(memory_charged * Sample.seconds),
            func.sum(Sample.memory_bytes * Sample.seconds),
        )
        .where(Sample.start >= first_hour)
        .group_by(Sample.hub, Sample.user, Sample.kind, hour)
    )
    columns = ["hub", "user", "kind", "hour", "seconds", "cpu_charged", "cpu_used", "memory_charged", "memory_used"]
    session.execute(insert(Hourly).from_select(columns, grouped))

    first_day = first_hour // DAY * DAY
    day_number = Hourly.hour // DAY
    session.execute(delete(Daily).where(Daily.day >= _date(first_day)))
    daily = session.execute(
        select(
            Hourly.hub,
            Hourly.user,
            Hourly.kind,
            day_number,
            func.sum(Hourly.seconds),
            func.sum(Hourly.cpu_charged),
            func.sum(Hourly.cpu_used),
            func.sum(Hourly.memory_charged),
            func.sum(Hourly.memory_used),
        )
        .where(Hourly.hour >= first_day)
        .group_by(Hourly.hub, Hourly.user, Hourly.kind, day_number)
    ).all()
    rows = [
        dict(zip(["hub", "user", "kind", "day", *columns[4:]], (*row[:3], _date(row[3] * DAY), *row[4:]), strict=True))
        for row in daily
    ]
    if rows:
        session.execute(insert(Daily), rows)


def prune(session: Session, now: float) -> None:
    """Drop raw samples past the retention (their rollups stay)."""
    session.execute(delete(Sample).where(Sample.start < int(now) - RAW_RETENTION_DAYS * DAY))


def record_coverage(session: Session, start: float, seconds: float, cpu_count: float, memory_bytes: int) -> None:
    """Record that the collector covered `seconds` from `start` on a machine of this capacity."""
    session.add(Coverage(start=int(start), seconds=seconds, cpu_count=cpu_count, memory_bytes=memory_bytes))


def record_home_bytes(session: Session, hub: str, user: str, day: dt.date, size: int) -> None:
    """Record the size of a user's home directory on a day (the last measurement of the day wins)."""
    row = session.get(HomeBytes, (hub, user, day))
    if row is None:
        session.add(HomeBytes(hub=hub, user=user, day=day, bytes=size))
    else:
        row.bytes = size


def record_activity(session: Session, hub: str, user: str, when: dt.datetime, logins: int = 0) -> None:
    """Record that `user` was active on `hub` at `when` (UTC), adding `logins` logins to that day."""
    when = when.astimezone(dt.UTC).replace(tzinfo=None) if when.tzinfo else when
    row = session.get(Activity, (hub, user, when.date()))
    if row is None:
        session.add(Activity(hub=hub, user=user, day=when.date(), last_activity=when, logins=logins))
        session.flush()
        return
    if row.last_activity is None or when > row.last_activity:
        row.last_activity = when
    row.logins += logins


def set_group_members(session: Session, hub: str, groups: Mapping[str, Iterable[str]]) -> None:
    """Replace what the ledger knows of `hub`'s groups with `groups` (group → members)."""
    session.execute(delete(GroupMember).where(GroupMember.hub == hub))
    rows = [{"hub": hub, "group": g, "user": u} for g, members in groups.items() for u in sorted(set(members))]
    if rows:
        session.execute(insert(GroupMember), rows)


def _date(unix_seconds: int) -> dt.date:
    return dt.datetime.fromtimestamp(unix_seconds, dt.UTC).date()
