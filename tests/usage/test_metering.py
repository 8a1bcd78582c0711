"""Usage metering on a real fleet: user servers burning known CPU and memory, a collector outage, budget alerts to a
real webhook receiver, the hard quota refusing a real spawn, pilots, reports and /_hubfleet/metrics."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner, Result

from hubfleet import db
from hubfleet.cli import app
from hubfleet.common.state import FleetState
from hubfleet.health.client import HubUser, PasswordLogin
from hubfleet.spec import load
from hubfleet.usage import ledger
from hubfleet.usage.collector import max_gap
from hubfleet.usage.cost import days_in_month
from hubfleet.usage.metrics import metrics_token
from hubfleet.usage.reports import PilotStatus, cost_report, pilot_statuses
from hubfleet.usage.tables import AlertSent, Coverage, HomeBytes, Sample
from tests.helpers import RunningFleet, running_fleet, unique_hub, wait_until

METER = unique_hub("um")
PILOT = unique_hub("up")
PASSWORD = "usage-test-password"
INTERVAL = 2
TODAY = dt.datetime.now(dt.UTC).date()
HUBS = f"""\
{METER}:
  auth: {{type: shared-password, password: {PASSWORD}, allowed_users: [alice]}}
  groups: {{lab: [alice]}}
  profiles: [{{name: one, cpu: 1, memory: 1G}}]
  culling: {{enabled: false}}
{PILOT}:
  auth: {{type: shared-password, password: {PASSWORD}, admins: [boss], allowed_users: [carol]}}
  profiles: [{{name: small, cpu: 1, memory: 512M}}]
  culling: {{enabled: false}}
  plan:
    type: pilot
    start: {TODAY - dt.timedelta(days=10)}
    end: {TODAY + dt.timedelta(days=10)}
    budget: 0.5
    hard_quota: true
"""
BURN_SECONDS = 8.0
BURN = f"""\
import time
start = time.process_time()
while time.process_time() - start < {BURN_SECONDS}:
    pass
print(time.process_time() - start)
"""
HOLD_MIB = 400


@dataclass
class Receiver:
    """A real alert receiver on loopback: keeps every JSON body POSTed to it."""

    port: int
    received: list[dict]


@pytest.fixture(scope="module")
def webhook() -> Iterator[Receiver]:
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0)))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield Receiver(server.server_address[1], received)
    server.shutdown()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, webhook: Receiver) -> Iterator[RunningFleet]:
    usage = (
        "usage:\n"
        f"  metering: {{interval: {INTERVAL}}}\n"
        "  rates: {hub_monthly_fee: 1.0}\n"
        f"  alert_webhook: http://127.0.0.1:{webhook.port}/alerts\n"
    )
    with running_fleet(tmp_path_factory.mktemp("usage"), HUBS, [METER, PILOT], PASSWORD, top=usage) as running:
        yield running


@pytest.fixture(scope="module")
def sessions(fleet: RunningFleet) -> sessionmaker[Session]:
    return db.open_database(db.default_url(fleet.state_dir))


def samples(session: Session, hub: str, user: str) -> list[Sample]:
    query = select(Sample).where(Sample.hub == hub, Sample.user == user, Sample.kind == "server")
    return list(session.execute(query.order_by(Sample.start)).scalars())


def wait_for_sample_after(sessions: sessionmaker[Session], hub: str, user: str, moment: float) -> list[Sample]:
    """Wait until the collector has a sample of the user's server ending after `moment`; all samples."""

    def after() -> list[Sample] | None:
        with sessions() as session:
            found = samples(session, hub, user)
        return found if found and found[-1].start + found[-1].seconds >= moment else None

    return wait_until(after, 60, f"a sample of {user} on {hub} after {moment}", every=0.5)


def sweeps_done(sessions: sessionmaker[Session]) -> int:
    """How many sweeps the collector has recorded (one coverage row each)."""
    with sessions() as session:
        return session.scalar(select(func.count()).select_from(Coverage)) or 0


def cpu_total(found: list[Sample]) -> float:
    return sum(s.cpu_seconds for s in found)


class LoggedIn:
    """One user's logged-in session with a running server and a kernel, driven from the test."""

    def __init__(self, fleet: RunningFleet, hub: str, user: str):
        self.fleet, self.hub, self.user = fleet, hub, user
        self.loop = asyncio.new_event_loop()
        self.client = httpx.AsyncClient(timeout=180)
        self.hub_user: HubUser = self.run(HubUser.login(self.client, fleet.hub_url(hub), PasswordLogin(user, PASSWORD)))

    def run(self, coroutine):  # type: ignore[no-untyped-def]
        return self.loop.run_until_complete(coroutine)

    def start(self) -> str:
        if not (self.run(self.hub_user.server()) or {}).get("ready"):
            self.run(self.hub_user.start_server())
        return self.run(self.hub_user.start_kernel())

    def execute(self, kernel: str, code: str) -> str:
        return self.run(self.hub_user.execute(kernel, code, 120)).strip()

    def close(self) -> None:
        self.run(self.client.aclose())
        self.loop.close()


@pytest.fixture(scope="module")
def alice(fleet: RunningFleet) -> Iterator[tuple[LoggedIn, str]]:
    session = LoggedIn(fleet, METER, "alice")
    kernel = session.start()
    yield session, kernel
    session.close()


def test_metered_cpu_and_memory_match_what_the_server_burned(
    sessions: sessionmaker[Session], alice: tuple[LoggedIn, str]
) -> None:
    user, kernel = alice
    before = wait_for_sample_after(sessions, METER, "alice", time.time() + 0.5)
    burned = float(user.execute(kernel, BURN))
    after = wait_for_sample_after(sessions, METER, "alice", time.time() + 0.5)
    metered = cpu_total(after) - cpu_total(before)
    assert burned == pytest.approx(BURN_SECONDS, rel=0.02)
    assert metered == pytest.approx(BURN_SECONDS, rel=0.10), f"metered {metered:.2f} s of CPU for {burned:.2f} s"

    resting = wait_for_sample_after(sessions, METER, "alice", time.time() + 0.5)[-1].memory_bytes
    user.execute(kernel, f"held = b'x' * ({HOLD_MIB} * 2**20)")
    holding = wait_for_sample_after(sessions, METER, "alice", time.time() + 0.5)[-1]
    grown = (holding.memory_bytes - resting) / 2**20
    assert grown == pytest.approx(HOLD_MIB, rel=0.10), f"metered {grown:.0f} MiB more for {HOLD_MIB} MiB held"
    assert holding.memory_request == 2**30 and holding.cpu_request == 1.0, "the request is the profile's"
    user.execute(kernel, "del held")


def test_the_cost_report_is_the_rate_card_applied_to_charged_usage(
    fleet: RunningFleet, sessions: sessionmaker[Session], alice: tuple[LoggedIn, str]
) -> None:
    spec = load(fleet.file)
    rates = spec.usage.rates
    with sessions.begin() as session:  # one snapshot for the raw samples and the report
        raw = samples(session, METER, "alice") + list(
            session.execute(
                select(Sample).where(Sample.hub == METER, Sample.user == "alice", Sample.kind == "dask")
            ).scalars()
        )
        homes = session.execute(select(HomeBytes).where(HomeBytes.hub == METER, HomeBytes.user == "alice")).scalars()
        storage = sum(h.bytes / 2**30 / days_in_month(h.day) for h in homes)
        report = cost_report(session, spec, month=TODAY)
    cpu_hours = sum(max(s.cpu_request * s.seconds, s.cpu_seconds) for s in raw) / 3600
    memory_gb_hours = sum(max(s.memory_request, s.memory_bytes) * s.seconds for s in raw) / 3600 / 2**30
    line = next(line for line in report.hub(METER).lines if line.kind == "user" and line.name == "alice")
    assert line.cpu_hours == pytest.approx(cpu_hours, rel=1e-9)
    assert line.memory_gb_hours == pytest.approx(memory_gb_hours, rel=1e-9)
    assert line.storage_gb_months == pytest.approx(storage, rel=1e-9)
    expected = (
        line.cpu_hours * rates.cpu_hour
        + line.memory_gb_hours * rates.memory_gb_hour
        + line.storage_gb_months * rates.storage_gb_month
    )
    assert line.cost == pytest.approx(expected, rel=1e-12)
    assert line.cpu_hours >= BURN_SECONDS / 3600, "charged is at least what was used"
    group = next(line for line in report.hub(METER).lines if line.kind == "group" and line.name == "lab")
    assert group.cost == pytest.approx(line.cost), "alice is lab's only member"
    hub = report.hub(METER)
    assert hub.total == pytest.approx(sum(x.cost for x in hub.lines if x.kind in ("user", "idle", "fee")))


def test_a_collector_outage_counts_no_usage(
    fleet: RunningFleet, sessions: sessionmaker[Session], alice: tuple[LoggedIn, str]
) -> None:
    user, kernel = alice
    supervisor = int((fleet.state_dir / "supervisor.pid").read_text().split()[0])
    before = wait_for_sample_after(sessions, METER, "alice", time.time() + 0.5)
    stopped = time.time()
    os.kill(supervisor, signal.SIGSTOP)  # the collector (in the supervisor) is down; hubs and servers run on
    try:
        burned = float(user.execute(kernel, BURN))
        time.sleep(max(0.0, stopped + max_gap(INTERVAL) + 2 - time.time()))  # an outage longer than the gap rule
    finally:
        os.kill(supervisor, signal.SIGCONT)
    resumed = time.time()
    after = wait_for_sample_after(sessions, METER, "alice", resumed + 2 * INTERVAL)
    assert burned >= BURN_SECONDS
    assert cpu_total(after) - cpu_total(before) < 1.0, "CPU burned while the collector was down was counted"
    for sample in after:
        assert not (sample.start < resumed - 1 and sample.start + sample.seconds > stopped + 1), (
            "a sample spans the gap"
        )
    with sessions() as session:
        spans = session.execute(select(Coverage.start, Coverage.seconds).where(Coverage.start >= stopped - 10)).all()
    assert spans and all(not (start < resumed - 1 and start + seconds > stopped + 1) for start, seconds in spans)


def test_budget_alerts_reach_the_webhook_once_per_threshold(
    webhook: Receiver, sessions: sessionmaker[Session], fleet: RunningFleet
) -> None:
    wait_until(lambda: len([a for a in webhook.received if a["hub"] == PILOT]) >= 2, 30, "two alerts", every=0.5)
    sweeps = sweeps_done(sessions)
    wait_until(lambda: sweeps_done(sessions) >= sweeps + 3, 60, "three more sweeps")  # nothing is sent twice
    alerts = [a for a in webhook.received if a["hub"] == PILOT]
    assert sorted(a["threshold"] for a in alerts) == [0.8, 1.0]
    assert alerts[0]["budget"] == 0.5 and alerts[0]["fraction"] >= 1.0 and alerts[0]["hard_quota"] is True
    assert "spent" in alerts[0]["message"]
    assert not [a for a in webhook.received if a["hub"] == METER], "a hub without a budget never alerts"
    with sessions() as session:
        assert session.execute(select(func.count()).select_from(AlertSent).where(AlertSent.hub == PILOT)).scalar() == 2


def test_the_hard_quota_refuses_a_new_server_with_a_clear_message(fleet: RunningFleet) -> None:
    async def spawn() -> tuple[httpx.Response, httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as client:
            carol = await HubUser.login(client, fleet.hub_url(PILOT), PasswordLogin("carol", PASSWORD))
            api = await client.post(carol.url(f"{carol.user_api}/server"), json={})
            page = await client.get(carol.url("hub/spawn"), follow_redirects=True)
            return api, page

    api, page = asyncio.run(spawn())
    assert api.status_code == 403, api.text
    assert "used its budget" in api.json()["message"]
    assert "used its budget" in page.text, page.text[:2000]
    assert (fleet.state_dir / "hubs" / PILOT / "usage-quota.json").exists()
    assert not (fleet.state_dir / "hubs" / METER / "usage-quota.json").exists()


def test_a_pilot_with_enough_active_non_staff_users_is_ready_to_convert(
    fleet: RunningFleet, sessions: sessionmaker[Session]
) -> None:
    spec = load(fleet.file)

    def status() -> PilotStatus:
        with sessions() as session:
            (pilot,) = pilot_statuses(session, spec, today=TODAY)
        return pilot

    now = dt.datetime.now(dt.UTC)
    with sessions.begin() as session:
        ledger.record_activity(session, PILOT, "boss", now)  # an admin: staff, never counted
        ledger.record_activity(session, PILOT, "old", now - dt.timedelta(days=20))  # outside the window
    active = status().active_non_staff_users  # carol, who logged in above
    newcomers = [f"student{i}" for i in range(5 - active)]
    with sessions.begin() as session:
        for name in newcomers[:-1]:
            ledger.record_activity(session, PILOT, name, now - dt.timedelta(days=3))
    assert status().ready_to_convert is False
    with sessions.begin() as session:
        ledger.record_activity(session, PILOT, newcomers[-1], now)
    pilot = status()
    assert pilot.ready_to_convert and pilot.active_non_staff_users == 5
    assert pilot.expiring and pilot.days_left == 10 and not pilot.idle
    assert pilot.budget_fraction is not None and pilot.budget_fraction >= 1.0


def test_metrics_on_the_front_door_need_the_token(fleet: RunningFleet, alice: tuple[LoggedIn, str]) -> None:
    url = f"{fleet.url}/_hubfleet/metrics"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
    token = metrics_token(FleetState(fleet.state_dir))
    response = httpx.get(url, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    text = response.text
    assert f'hubfleet_usage_user_memory_bytes{{hub="{METER}",user="alice"}}' in text
    assert f'hubfleet_usage_group_cpu_cores{{group="lab",hub="{METER}"}}' in text
    assert f'hubfleet_usage_running_servers{{hub="{METER}"}} 1.0' in text
    assert f'hubfleet_usage_budget_fraction{{hub="{PILOT}"}}' in text


def test_reports_on_the_command_line(fleet: RunningFleet, tmp_path: Path) -> None:
    def cli(*args: str) -> Result:
        return CliRunner().invoke(app, [*args, "--state-dir", str(fleet.state_dir)], env={"COLUMNS": "200"})

    cost = cli("cost", "--json", "--plot", str(tmp_path / "cost.png"))
    assert cost.exit_code == 0, cost.output
    hubs = {h["hub"]: h for h in json.loads(cost.stdout)["hubs"]}
    assert hubs[PILOT]["plan"] == "pilot" and hubs[PILOT]["budget"] == 0.5
    assert any(line["name"] == "alice" for line in hubs[METER]["lines"])
    assert (tmp_path / "cost.png").read_bytes().startswith(b"\x89PNG")
    table = cli("cost", "--hub", METER).stdout
    assert "alice" in table and "idle capacity" in table and "lab" in table
    by_group = cli("usage", "--by", "group", "--hub", METER, "--csv", "--plot", str(tmp_path / "usage.html"))
    lines = by_group.stdout.splitlines()
    assert lines[0].startswith("hub,key,cpu_hours") and any(line.startswith(f"{METER},lab,") for line in lines[1:])
    assert "data:image/png;base64," in (tmp_path / "usage.html").read_text()
    assert json.loads(cli("mau", "--json").stdout)[METER] >= 1
    pilots = json.loads(cli("pilots", "--json").stdout)
    assert [p["hub"] for p in pilots] == [PILOT] and pilots[0]["ready_to_convert"] is True
    bad = cli("cost", "--month", "2026-13")
    assert bad.exit_code != 0 and "YYYY-MM" in bad.output
