"""Scale-to-zero hubs and the fleet's one proxy, on a real fleet: hubs fall asleep when idle (never while a server
runs), the first request of any kind wakes them and is answered, racing requests start a hub once, the proxy's
routes come back after `kill -9`, and a hub can neither see nor touch another hub's routes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from sqlalchemy import func, select

from hubfleet.common.state import FleetState
from hubfleet.db import default_url, open_database
from hubfleet.health.client import HubUser, PasswordLogin
from hubfleet.hub.authenticators.lti import ToolURLs
from hubfleet.usage.metrics import metrics_token
from hubfleet.usage.tables import Coverage, Sample
from tests.helpers import RunningFleet, await_until, running_fleet, unique_hub, wait_until
from tests.lms.courses import answered, peer_with_course, source
from tests.lms.peer import PeerLMS

S, L, K = unique_hub("zs"), unique_hub("zl"), unique_hub("zk")
"""A hub that sleeps, an LTI hub that sleeps, a hub that never sleeps."""
PASSWORD = "sleep-test-password"
IDLE = 10
"""Seconds of idleness after which the sleeping hubs sleep (the shortest the spec allows)."""


def hubs_yaml(lms: PeerLMS) -> str:
    return f"""\
{S}:
  auth: {{type: shared-password, password: {PASSWORD}, allowed_users: [ann, bob]}}
  profiles:
    - {{name: small, cpu: 0.5, memory: 300M, default: true}}
  sleep: {{after: {IDLE}s}}
{L}:
  auth: {{type: shared-password, password: {PASSWORD}, allowed_users: [lee]}}
  sleep: {{after: {IDLE}s}}
  courses:
    - {{name: c1, lms_context: ctx-1, roster: lms}}
  lti:
    username: email
    platforms:
{lms.platform_yaml(indent=6)}{K}:
  auth: {{type: shared-password, password: {PASSWORD}, allowed_users: [kim]}}
  sleep: {{after: never}}
"""


@pytest.fixture(scope="module")
def lms() -> Iterator[PeerLMS]:
    with peer_with_course("moodle", "ctx-1", {"ann": "s-ann"}) as peer:
        yield peer


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, lms: PeerLMS) -> Iterator[RunningFleet]:
    os.environ["HUBFLEET_SLEEP_SWEEP_EVERY"] = "1"  # look for idle hubs every second (10 s in production)
    os.environ["HUBFLEET_OUTBOX_EVERY"] = "2"  # sleeping hubs' scores every 2 s (30 s in production)
    try:
        root = tmp_path_factory.mktemp("sleep")
        usage = "usage: {metering: {interval: 2}}"
        with running_fleet(root, hubs_yaml(lms), [S, L, K], PASSWORD, top=usage) as running:
            urls = ToolURLs.of(running.hub_url(L))
            lms.set_tool(login_url=urls.login, launch_url=urls.launch, jwks_url=urls.jwks)
            yield running
    finally:
        os.environ.pop("HUBFLEET_SLEEP_SWEEP_EVERY", None)
        os.environ.pop("HUBFLEET_OUTBOX_EVERY", None)


def hub_status(fleet: RunningFleet, hub: str) -> dict:
    return next(h for h in fleet.status()["hubs"] if h["name"] == hub)


def wait_asleep(fleet: RunningFleet, hub: str, timeout: float = IDLE + 30) -> dict:
    return wait_until(
        lambda: (s := hub_status(fleet, hub))["state"] == "asleep" and s, timeout, f"hub {hub} asleep", every=0.5
    )


def put_to_sleep(fleet: RunningFleet, hub: str) -> dict:
    """`hubfleet sleep HUB`: the hub asleep at once, its status returned (tests of waking need not wait)."""
    assert f"hub {hub} is asleep" in fleet.cli("sleep", hub).stdout
    status = hub_status(fleet, hub)
    assert status["state"] == "asleep", status
    return status


def api_get(fleet: RunningFleet, hub: str, path: str, token: str) -> httpx.Response:
    return httpx.get(f"{fleet.hub_url(hub)}hub/api/{path}", headers={"Authorization": f"token {token}"}, timeout=90)


@pytest.fixture(scope="module")
def ann_token(fleet: RunningFleet) -> str:
    """A token of ann on the sleeping hub (the requests minting it wake it)."""
    service = {"Authorization": f"token {fleet.service_token(S)}"}
    created = httpx.post(f"{fleet.hub_url(S)}hub/api/users/ann", headers=service, timeout=90)
    assert created.status_code in (201, 409), created.text
    response = httpx.post(
        f"{fleet.hub_url(S)}hub/api/users/ann/tokens", headers=service, json={"expires_in": 3600}, timeout=90
    )
    return response.raise_for_status().json()["token"]


def test_hubs_that_may_sleep_start_asleep_and_a_hub_that_may_not_runs(fleet: RunningFleet) -> None:
    assert hub_status(fleet, K)["state"] == "running" and hub_status(fleet, K)["pids"]["hub"]
    for hub in (S, L):
        status = hub_status(fleet, hub)
        assert status["state"] == "asleep" and status["healthy"] and not status["pids"], status
    assert fleet.status()["hubs"] and all(h["healthy"] for h in fleet.status()["hubs"])


def test_the_operator_puts_a_hub_to_sleep_and_wakes_it(fleet: RunningFleet) -> None:
    before = put_to_sleep(fleet, S)["wakes"]
    assert "is awake" in fleet.cli("wake", S).stdout
    status = hub_status(fleet, S)
    assert status["state"] == "running" and status["wakes"] == before + 1
    never = fleet.cli("sleep", K, check=False)
    assert never.returncode == 1 and "never sleeps" in never.stderr and hub_status(fleet, K)["state"] == "running"
    unknown = fleet.cli("sleep", "nosuchhub", check=False)
    assert unknown.returncode == 1 and "no hub 'nosuchhub'" in unknown.stderr


def test_a_rest_call_with_a_token_wakes_the_hub_and_is_answered(fleet: RunningFleet, ann_token: str) -> None:
    put_to_sleep(fleet, S)
    before = hub_status(fleet, S)["wakes"]
    response = api_get(fleet, S, "user", ann_token)
    assert response.status_code == 200 and response.json()["name"] == "ann"
    status = hub_status(fleet, S)
    assert status["state"] == "running" and status["wakes"] == before + 1 and status["last_wake"]


def test_a_browser_sees_a_starting_page_then_the_login_page(fleet: RunningFleet) -> None:
    put_to_sleep(fleet, S)
    page = httpx.get(f"{fleet.hub_url(S)}hub/login", headers={"Accept": "text/html"}, timeout=30)
    assert page.status_code == 200 and f"Starting {S}" in page.text and page.headers["Cache-Control"] == "no-store"
    wait_until(lambda: httpx.get(f"{fleet.url}/_hubfleet/wake/{S}", timeout=10).json()["awake"], 30, "the hub awake")
    login = httpx.get(f"{fleet.hub_url(S)}hub/login", headers={"Accept": "text/html"}, timeout=30)
    assert login.status_code == 200 and 'name="password"' in login.text


def test_two_requests_racing_during_a_wake_both_succeed_and_the_hub_starts_once(
    fleet: RunningFleet, ann_token: str
) -> None:
    put_to_sleep(fleet, S)
    before = hub_status(fleet, S)["wakes"]

    async def both() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=90, headers={"Authorization": f"token {ann_token}"}) as client:
            url = f"{fleet.hub_url(S)}hub/api/user"
            return list(await asyncio.gather(client.get(url), client.get(url), client.get(f"{url}?again=1")))

    responses = asyncio.run(both())
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert hub_status(fleet, S)["wakes"] == before + 1


def test_a_form_post_login_wakes_the_hub_and_logs_in(fleet: RunningFleet) -> None:
    """An OAuth-style round trip: the login form's POST (with its XSRF cookie) is held, forwarded, and its cookies
    come back; the authorization endpoint then answers the logged-in user."""
    with httpx.Client(timeout=90) as browser:
        page = browser.get(f"{fleet.hub_url(S)}hub/login")  # wakes the hub if needed, sets the _xsrf cookie
        assert page.status_code == 200
    put_to_sleep(fleet, S)
    with httpx.Client(timeout=90, cookies=browser.cookies) as browser:
        xsrf = browser.cookies.get("_xsrf")
        response = browser.post(
            f"{fleet.hub_url(S)}hub/login", data={"username": "bob", "password": PASSWORD, "_xsrf": xsrf}
        )
        assert response.status_code == 302, response.text[:300]
        assert any(name.startswith("jupyterhub-session") for name in response.cookies)


def test_an_lti_launch_wakes_the_hub(fleet: RunningFleet, lms: PeerLMS) -> None:
    put_to_sleep(fleet, L)
    with httpx.Client(timeout=90) as browser:
        response = lms.launch(browser, sub="s-ann", context_id="ctx-1")
    assert response.status_code == 302, response.text[:300]
    spawn = urlparse(response.headers["location"])
    assert spawn.path == f"/hubs/{L}/hub/spawn/ann" and parse_qs(spawn.query)["next"]
    assert hub_status(fleet, L)["state"] == "running"


def test_an_lti_login_initiation_posted_to_a_sleeping_hub_goes_on_to_the_lms(fleet: RunningFleet, lms: PeerLMS) -> None:
    put_to_sleep(fleet, L)
    urls = ToolURLs.of(fleet.hub_url(L))
    form = {
        "iss": lms.issuer,
        "login_hint": "s-ann",
        "target_link_uri": urls.launch,
        "client_id": lms.client_id,
        "lti_deployment_id": lms.deployment_id,
    }
    response = httpx.post(urls.login, data=form, headers={"Accept": "text/html"}, timeout=90)
    assert response.status_code == 302
    assert response.headers["location"].startswith(lms.auth_login_url)
    assert "state=" in response.headers["location"]


def test_scores_pending_for_the_lms_are_sent_while_the_hub_sleeps(
    fleet: RunningFleet, lms: PeerLMS, tmp_path: Path
) -> None:
    """ann (who launched course c1 from the LMS above) submits; the score is queued while the LMS is down; the hub
    falls asleep; when the LMS is back the supervisor delivers it, and the hub sleeps on."""
    fleet.cli("assignment", "release", L, "c1", str(source(tmp_path)), "--by", "operator")
    service = {"Authorization": f"token {fleet.service_token(L)}"}
    token = (
        httpx.post(f"{fleet.hub_url(L)}hub/api/users/ann/tokens", headers=service, json={"expires_in": 600}, timeout=90)
        .raise_for_status()
        .json()["token"]
    )
    exchange = f"{fleet.hub_url(L)}services/assignments/api/courses/c1/assignments/means"
    ann = {"Authorization": f"token {token}"}
    released = httpx.get(f"{exchange}/release", headers=ann, timeout=90).raise_for_status().json()
    body = answered(released["files"], "sum(xs) / len(xs)")
    httpx.post(f"{exchange}/submissions", headers=ann, json=body, timeout=90).raise_for_status()
    fleet.cli("assignment", "collect", L, "c1", "means")
    fleet.cli("assignment", "grade", L, "c1", "means")
    lms.set_down(True)
    try:
        queued = fleet.cli("assignment", "passback", L, "c1", "means", check=False)
        assert queued.returncode == 2 and "1 pending" in queued.stdout, queued.stdout + queued.stderr
        wakes = wait_asleep(fleet, L)["wakes"]
    finally:
        lms.set_down(False)
    wait_until(lambda: lms.scores("ctx-1"), 60, "the score at the LMS")
    assert lms.scores("ctx-1")[-1]["scoreGiven"] == 1
    status = hub_status(fleet, L)
    assert status["state"] == "asleep" and status["wakes"] == wakes


def test_a_hub_never_sleeps_while_a_server_runs(fleet: RunningFleet) -> None:
    def idle_but_awake() -> dict | None:
        # Well past its idle time with no request through the proxy: only the running server keeps it awake.
        return hub_status(fleet, S) if _idle_for(fleet, S) > IDLE + 5 else None

    async def scenario() -> dict:
        async with httpx.AsyncClient(timeout=120) as client:
            user = await HubUser.login(client, fleet.hub_url(S), PasswordLogin("ann", PASSWORD))
            await user.start_server()
            try:
                refused = await asyncio.to_thread(fleet.cli, "sleep", S, check=False)
                assert refused.returncode == 1 and "stays awake" in refused.stderr, refused.stdout + refused.stderr
                return await await_until(lambda: asyncio.to_thread(idle_but_awake), 90, "the hub idle past its time")
            finally:
                await user.stop_server()

    status = asyncio.run(scenario())
    assert status["state"] == "running" and status["running_servers"] == 1
    wait_asleep(fleet, S)


def test_metering_goes_on_across_sleep_without_waking_hubs(fleet: RunningFleet) -> None:
    """The collector skips sleeping hubs (no errors, no wake) and metered the server that kept a hub awake."""
    put_to_sleep(fleet, S)
    wakes = hub_status(fleet, S)["wakes"]
    sessions = open_database(default_url(fleet.state_dir))

    def sweeps() -> int:
        with sessions() as session:
            return session.scalar(select(func.count()).select_from(Coverage)) or 0

    before = sweeps()
    wait_until(lambda: sweeps() >= before + 3, 30, "three more sweeps while the hub sleeps")
    status = hub_status(fleet, S)
    assert status["state"] == "asleep" and status["wakes"] == wakes
    token = metrics_token(FleetState(fleet.state_dir))
    metrics = httpx.get(f"{fleet.url}/_hubfleet/metrics", headers={"Authorization": f"Bearer {token}"}).text
    errors = [line for line in metrics.splitlines() if line.startswith("hubfleet_usage_collector_errors_total")]
    assert errors and float(errors[0].split()[-1]) == 0, errors
    with sessions() as session:
        ann = session.scalar(select(func.count()).select_from(Sample).where(Sample.hub == S, Sample.user == "ann"))
    assert ann, "the server that kept the hub awake was metered"


def test_apply_changes_a_sleeping_hubs_settings_without_waking_it(fleet: RunningFleet) -> None:
    put_to_sleep(fleet, S)
    wakes = hub_status(fleet, S)["wakes"]
    fleet.write(fleet.file.read_text().replace("memory: 300M, default: true", "memory: 400M, default: true"))
    fleet.cli("apply", str(fleet.file))
    settings = json.loads((fleet.state_dir / "hubs" / S / "settings.json").read_text())
    assert settings["profiles"][0]["memory"] == "400M"
    status = hub_status(fleet, S)
    assert status["state"] == "asleep" and status["wakes"] == wakes


def _idle_for(fleet: RunningFleet, hub: str) -> float:
    """Seconds since the proxy last routed a request to `hub` (as the fleet reads it)."""
    token = (fleet.state_dir / "frontdoor" / "proxy_token").read_text().strip()
    port = json.loads((fleet.state_dir / "frontdoor" / "ports.json").read_text())["proxy_api"]
    routes = httpx.get(f"http://127.0.0.1:{port}/api/routes", headers={"Authorization": f"token {token}"}).json()
    stamps = [r["last_activity"] for p, r in routes.items() if p.startswith(f"/hubs/{hub}")]
    last = max(datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() for s in stamps)
    return datetime.now().timestamp() - last


def route_api(fleet: RunningFleet, hub: str) -> httpx.Client:
    """The route API as hub `hub` calls it (with its own token)."""
    port = json.loads((fleet.state_dir / "frontdoor" / "ports.json").read_text())["routes"]
    token = (fleet.state_dir / "hubs" / hub / "secrets" / "proxy_token").read_text().strip()
    return httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"token {token}"})


def test_a_hub_sees_and_changes_only_its_own_routes(fleet: RunningFleet, ann_token: str) -> None:
    api_get(fleet, S, "user", ann_token).raise_for_status()  # S awake, with routes
    with route_api(fleet, S) as hub_s, route_api(fleet, K) as hub_k:
        own = hub_s.get("/api/routes").raise_for_status().json()
        assert own and all(path.startswith(f"/hubs/{S}") for path in own)
        assert all(path.startswith(f"/hubs/{K}") for path in hub_k.get("/api/routes").json())
        assert hub_s.delete(f"/api/routes/hubs/{K}").status_code == 403
        assert hub_s.post(f"/api/routes/hubs/{K}/evil", json={"target": "http://127.0.0.1:1"}).status_code == 403
        assert hub_s.post("/api/routes/", json={"target": "http://127.0.0.1:1"}).status_code == 403
        assert hub_s.get("/api/routes", headers={"Authorization": "token not-a-hub"}).status_code == 403
    assert httpx.get(f"{fleet.hub_url(K)}hub/api/", timeout=30).status_code == 200


def test_the_proxy_killed_with_sigkill_comes_back_with_every_hubs_routes(fleet: RunningFleet, ann_token: str) -> None:
    api_get(fleet, S, "user", ann_token).raise_for_status()  # S awake too
    pid = int((fleet.state_dir / "frontdoor" / "proxy.pid").read_text().split()[0])
    os.kill(pid, signal.SIGKILL)

    def routed() -> bool:
        try:
            return (
                httpx.get(f"{fleet.hub_url(K)}hub/api/", timeout=2).status_code == 200
                and api_get(fleet, S, "user", ann_token).status_code == 200
            )
        except httpx.HTTPError:
            return False

    wait_until(routed, 15, "both hubs routed again after the proxy's restart", every=0.2)
    assert int((fleet.state_dir / "frontdoor" / "proxy.pid").read_text().split()[0]) != pid


def test_an_unknown_hub_gets_a_clear_404_page(fleet: RunningFleet) -> None:
    response = httpx.get(f"{fleet.url}/hubs/nosuchhub/hub/login", headers={"Accept": "text/html"}, timeout=10)
    assert response.status_code == 404 and "There is no hub named" in response.text and S in response.text


def test_the_log_records_sleep_and_wake(fleet: RunningFleet) -> None:
    log = Path(fleet.state_dir / "supervisor.log").read_text()
    assert f"hub {S} is asleep" in log and f"hub {S} woke in" in log
