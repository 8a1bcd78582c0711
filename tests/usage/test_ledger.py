"""The ledger: raw samples rolled up hourly and daily (charged = max(request, used)), activity, pruning."""

from __future__ import annotations

import calendar
import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from hubfleet.usage import ledger
from hubfleet.usage.tables import Activity, Daily, Hourly, Sample

GIB = 2**30
T0 = calendar.timegm(dt.datetime(2026, 11, 3, 10, 0).timetuple())


def reading(
    user: str, start: float, cpu: float, memory: int, *, request: float = 1.0, seconds: float = 60
) -> ledger.Reading:
    return ledger.Reading("h", user, "server", start, seconds, cpu, request, memory, 2 * GIB)


def test_rollups_charge_the_larger_of_request_and_use(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        ledger.record_samples(
            session,
            [
                reading("idle", T0, cpu=6, memory=GIB),  # under its request: charged the request
                reading("busy", T0, cpu=120, memory=3 * GIB),  # two cores, over its request: charged the use
            ],
        )
        ledger.rollup(session, T0)
    with sessions() as session:
        rows = {r.user: r for r in session.execute(select(Hourly)).scalars()}
    assert rows["idle"].cpu_charged == 60 and rows["idle"].cpu_used == 6
    assert rows["idle"].memory_charged == 2 * GIB * 60 and rows["idle"].memory_used == GIB * 60
    assert rows["busy"].cpu_charged == 120 and rows["busy"].memory_charged == 3 * GIB * 60
    assert rows["busy"].hour == T0 and rows["busy"].seconds == 60


def test_rolling_up_again_never_counts_twice(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        ledger.record_samples(session, [reading("a", T0 + 60 * i, cpu=30, memory=GIB) for i in range(90)])
        ledger.rollup(session, T0)
        ledger.rollup(session, T0)
        ledger.record_samples(session, [reading("a", T0 + 90 * 60, cpu=30, memory=GIB)])
        ledger.rollup(session, T0 + 90 * 60)  # only the newest hour is recomputed
    with sessions() as session:
        hourly = session.execute(select(Hourly).order_by(Hourly.hour)).scalars().all()
        daily = session.execute(select(Daily)).scalars().all()
    assert [h.seconds for h in hourly] == [3600, 31 * 60]
    assert [h.cpu_used for h in hourly] == [60 * 30, 31 * 30]
    assert len(daily) == 1 and daily[0].day == dt.date(2026, 11, 3)
    assert daily[0].seconds == 91 * 60 and daily[0].cpu_charged == 91 * 60


def test_a_sample_counts_in_the_hour_and_day_it_starts(sessions: sessionmaker[Session]) -> None:
    midnight = calendar.timegm(dt.datetime(2026, 11, 4).timetuple())
    with sessions.begin() as session:
        ledger.record_samples(session, [reading("a", midnight - 30, cpu=60, memory=GIB)])
        ledger.rollup(session, midnight - 30)
    with sessions() as session:
        (daily,) = session.execute(select(Daily)).scalars().all()
    assert daily.day == dt.date(2026, 11, 3) and daily.cpu_used == 60


def test_activity_is_one_row_per_user_and_day(sessions: sessionmaker[Session]) -> None:
    morning = dt.datetime(2026, 11, 3, 8, tzinfo=dt.UTC)
    with sessions.begin() as session:
        ledger.record_activity(session, "h", "a", morning + dt.timedelta(hours=2))
        ledger.record_activity(session, "h", "a", morning, logins=1)
        ledger.record_activity(session, "h", "a", morning + dt.timedelta(hours=1), logins=2)
        ledger.record_activity(session, "h", "a", morning + dt.timedelta(days=1))
    with sessions() as session:
        rows = session.execute(select(Activity).order_by(Activity.day)).scalars().all()
    assert [(r.day.day, r.logins) for r in rows] == [(3, 3), (4, 0)]
    assert rows[0].last_activity == dt.datetime(2026, 11, 3, 10)


def test_raw_samples_past_retention_are_pruned_but_rollups_stay(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        ledger.record_samples(session, [reading("a", T0, cpu=30, memory=GIB)])
        ledger.rollup(session, T0)
        ledger.prune(session, T0 + (ledger.RAW_RETENTION_DAYS + 1) * ledger.DAY)
    with sessions() as session:
        assert session.execute(select(Sample)).first() is None
        assert session.execute(select(Daily)).scalar_one().cpu_used == 30
