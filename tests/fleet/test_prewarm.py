"""Course pre-warm on a real fleet: before a meeting of a course's schedule, the servers of the students likely to
come start (as those students, the most active first, at most `max_servers`), nobody else's; a student who comes
keeps theirs; the one nobody came to is stopped once the meeting has started; until then it is metered on a line of
its own. And the memory budget's arithmetic."""

from __future__ import annotations

import datetime as dt
import json
import os
import textwrap
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import select

from hubfleet.common.state import PREWARM_CLAIM_MARGIN
from hubfleet.db import default_url, open_database
from hubfleet.fleet.prewarm import MEMORY_MARGIN, SERVER_BYTES, available_memory
from hubfleet.health.client import PasswordLogin
from hubfleet.usage import ledger
from hubfleet.usage.cost import PREWARMED
from hubfleet.usage.tables import Sample
from tests.helpers import RunningFleet, running_fleet, unique_hub, wait_until

P = unique_hub("pw")
PASSWORD = "prewarm-test-password"


@pytest.fixture(scope="module")
def start() -> dt.datetime:
    """The meeting starts 55 s after the module's fleet is set up: its pre-warm (1 minute before) is on at once."""
    return dt.datetime.now() + dt.timedelta(seconds=55)


def hubs_yaml(start: dt.datetime) -> str:
    day = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[start.weekday()]
    end = (start + dt.timedelta(minutes=30)).time()
    return textwrap.dedent(
        f"""\
        {P}:
          auth: {{type: shared-password, password: {PASSWORD}}}
          profiles:
            - {{name: small, cpu: 0.5, memory: 400M, default: true}}
          courses:
            - name: algebra
              students: [sa, sb, sc, sd]
              schedule:
                - {{day: {day}, start: "{start:%H:%M:%S}", end: "{end:%H:%M:%S}"}}
              prewarm: {{lead: 1m, keep_unused: 10s, max_servers: 2}}
            - name: other
              students: [ox]
        """
    )


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, start: dt.datetime) -> Iterator[RunningFleet]:
    root = tmp_path_factory.mktemp("prewarm")
    state = root / "state"
    state.mkdir()
    # History before the fleet starts: sc and sb were active on recent days, sa and sd never.
    sessions = open_database(default_url(state.resolve()))
    with sessions.begin() as session:
        today = dt.datetime.now(dt.UTC)
        for user, days in (("sc", 5), ("sb", 3), ("ox", 9)):
            for day in range(days):
                ledger.record_activity(session, P, user, today - dt.timedelta(days=day + 1))
    os.environ["HUBFLEET_PREWARM_EVERY"] = "2"
    try:
        with running_fleet(root, hubs_yaml(start), [P], PASSWORD, top="usage: {metering: {interval: 2}}") as running:
            yield running
    finally:
        os.environ.pop("HUBFLEET_PREWARM_EVERY", None)


def servers(fleet: RunningFleet) -> dict[str, bool]:
    """User → whether their default server is ready, for every user with a server."""
    headers = {"Authorization": f"token {fleet.service_token(P)}"}
    users = httpx.get(f"{fleet.hub_url(P)}hub/api/users", headers=headers, timeout=30).raise_for_status().json()
    return {u["name"]: bool(u["servers"][""].get("ready")) for u in users if "" in (u.get("servers") or {})}


def test_the_likely_students_servers_start_before_the_meeting(fleet: RunningFleet, start: dt.datetime) -> None:
    assert dt.datetime.now() < start, "the test machine was too slow: the meeting started before the checks"
    wait_until(lambda: servers(fleet) == {"sc": True, "sb": True}, 45, "sc's and sb's servers pre-warmed")
    records = json.loads((fleet.state_dir / "hubs" / P / "prewarm.json").read_text())
    assert set(records) == {"sc", "sb"}  # the two most active of the course, never ox (another course)
    shown = fleet.cli("course", "show", P, "algebra").stdout
    assert "next pre-warm:" in shown or "meets" in shown


def test_a_student_who_comes_keeps_the_server_and_the_unused_one_stops(fleet: RunningFleet, start: dt.datetime) -> None:
    wait_until(lambda: servers(fleet).get("sc"), 45, "sc's server pre-warmed")
    started = json.loads((fleet.state_dir / "hubs" / P / "prewarm.json").read_text())["sc"]
    # sc comes later than the server's own start-up activity (PREWARM_CLAIM_MARGIN), as a student does.
    wait_until(lambda: dt.datetime.now().timestamp() > started + PREWARM_CLAIM_MARGIN + 2, 60, "sc arrives")
    assert fleet.run_code(P, PasswordLogin("sc", PASSWORD), "print(2 + 2)") == "4"  # no start to wait for
    wait_until(lambda: dt.datetime.now() > start + dt.timedelta(seconds=15), 80, "the meeting started")
    wait_until(lambda: "sb" not in servers(fleet), 60, "sb's unused server stopped")
    assert servers(fleet).get("sc") is True


def test_unclaimed_pre_warmed_servers_are_metered_on_their_own_line(fleet: RunningFleet) -> None:
    sessions = open_database(default_url(fleet.state_dir))
    with sessions() as session:
        users = set(session.scalars(select(Sample.user).where(Sample.hub == P)))
    assert PREWARMED in users and "sb" not in users


def test_the_memory_budget_leaves_a_margin() -> None:
    gib = 2**30
    meminfo = f"MemTotal: {24 * gib // 1024} kB\nMemFree: 1 kB\nMemAvailable: {10 * gib // 1024} kB\n"
    assert available_memory(meminfo) == 10 * gib - max(MEMORY_MARGIN, 24 * gib // 10)
    tight = f"MemTotal: {24 * gib // 1024} kB\nMemAvailable: {(5 * gib // 2) // 1024} kB\n"
    assert available_memory(tight) < SERVER_BYTES
