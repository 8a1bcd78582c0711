"""The usage ledger's tables in the fleet database.

Times are UTC. Raw samples store Unix seconds (compact integers); hourly rollups the hour's first second; daily
rollups a date. Charged usage is max(request, used) per sample, as OpenCost charges.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Date, DateTime, Float, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from hubfleet.db import Base

SERVER = "server"
DASK = "dask"


class Sample(Base):
    """One collector reading of one user's server (or Dask workers) over the interval it covers."""

    __tablename__ = "usage_samples"
    __table_args__ = (Index("ix_usage_samples_start", "start"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    hub: Mapped[str] = mapped_column(String(64))
    user: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(8))  # SERVER or DASK
    start: Mapped[int] = mapped_column(BigInteger)  # Unix seconds at the interval's start
    seconds: Mapped[float] = mapped_column(Float)  # length of the interval (never more than the bound)
    cpu_seconds: Mapped[float] = mapped_column(Float)  # CPU time used in the interval
    cpu_request: Mapped[float] = mapped_column(Float)  # cores requested (the profile's cpu)
    memory_bytes: Mapped[int] = mapped_column(BigInteger)  # memory in use at the reading
    memory_request: Mapped[int] = mapped_column(BigInteger)  # memory requested (the profile's memory)


class _Rollup:
    hub: Mapped[str] = mapped_column(String(64), primary_key=True)
    user: Mapped[str] = mapped_column(String(128), primary_key=True)
    kind: Mapped[str] = mapped_column(String(8), primary_key=True)
    seconds: Mapped[float] = mapped_column(Float, default=0.0)  # seconds covered by samples
    cpu_charged: Mapped[float] = mapped_column(Float, default=0.0)  # core-seconds, max(request, used) per sample
    cpu_used: Mapped[float] = mapped_column(Float, default=0.0)  # core-seconds used
    memory_charged: Mapped[float] = mapped_column(Float, default=0.0)  # byte-seconds, max(request, used)
    memory_used: Mapped[float] = mapped_column(Float, default=0.0)  # byte-seconds used


class Hourly(_Rollup, Base):
    """Samples summed per hub, user, kind and hour (a sample counts in the hour it starts)."""

    __tablename__ = "usage_hourly"
    __table_args__ = (Index("ix_usage_hourly_hour", "hour"),)

    hour: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # Unix seconds of the hour's start


class Daily(_Rollup, Base):
    """Samples summed per hub, user, kind and UTC day."""

    __tablename__ = "usage_daily"
    __table_args__ = (Index("ix_usage_daily_day", "day"),)

    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)


class HomeBytes(Base):
    """Bytes in a user's home directory, measured once a day."""

    __tablename__ = "usage_home_bytes"

    hub: Mapped[str] = mapped_column(String(64), primary_key=True)
    user: Mapped[str] = mapped_column(String(128), primary_key=True)
    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    bytes: Mapped[int] = mapped_column(BigInteger)


class Activity(Base):
    """A user was active on a hub on a day (from the hub's REST API); logins counted from the hub's login log."""

    __tablename__ = "usage_activity"
    __table_args__ = (Index("ix_usage_activity_day", "day"),)

    hub: Mapped[str] = mapped_column(String(64), primary_key=True)
    user: Mapped[str] = mapped_column(String(128), primary_key=True)
    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    last_activity: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    logins: Mapped[int] = mapped_column(Integer, default=0)


class GroupMember(Base):
    """A user's membership of a hub's group, as the hub reports it now (used to attribute cost to groups)."""

    __tablename__ = "usage_group_members"

    hub: Mapped[str] = mapped_column(String(64), primary_key=True)
    group: Mapped[str] = mapped_column(String(128), primary_key=True)
    user: Mapped[str] = mapped_column(String(128), primary_key=True)


class Coverage(Base):
    """A collector sweep: the time it covers and the machine's capacity then (for idle capacity)."""

    __tablename__ = "usage_coverage"
    __table_args__ = (Index("ix_usage_coverage_start", "start"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    start: Mapped[int] = mapped_column(BigInteger)  # Unix seconds
    seconds: Mapped[float] = mapped_column(Float)
    cpu_count: Mapped[float] = mapped_column(Float)
    memory_bytes: Mapped[int] = mapped_column(BigInteger)


class AlertSent(Base):
    """A budget alert already sent: each threshold alerts once per budget period."""

    __tablename__ = "usage_alerts"

    hub: Mapped[str] = mapped_column(String(64), primary_key=True)
    period: Mapped[str] = mapped_column(String(32), primary_key=True)  # "2026-11" or "pilot:2026-10-01"
    threshold: Mapped[float] = mapped_column(Float, primary_key=True)
    sent_at: Mapped[dt.datetime] = mapped_column(DateTime)
    fraction: Mapped[float] = mapped_column(Float)
