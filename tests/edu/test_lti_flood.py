"""LTI login initiations are anonymous: a flood of 20,000 from one client must neither keep a real student out nor
evict the student's pending login, and must not write a log line per request. The LMS is the real peer (tests/lms);
the flood comes from another loopback address (127.0.0.2) through the front door."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import aiohttp
import httpx
import pytest

from hubfleet.hub.authenticators.lti import ToolURLs
from tests.helpers import RunningFleet, running_fleet, unique_hub, wait_until
from tests.lms.courses import peer_with_course
from tests.lms.peer import PeerLMS

H = unique_hub("cpf")
PASSWORD = "flood-test-password"
FLOOD = 20_000
FLOOD_ADDRESS = "127.0.0.2"


@pytest.fixture(scope="module")
def lms() -> Iterator[PeerLMS]:
    with peer_with_course("canvas", "ctx-A", {"ada": "s-ada"}) as peer:
        yield peer


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, lms: PeerLMS) -> Iterator[RunningFleet]:
    # A small store: the flood's own accepted logins overflow it while the student's launch is pending.
    hubs = f"""\
{H}:
  auth: {{type: shared-password, password: {PASSWORD}}}
  courses: [{{name: ds101, roster: lms, lms_context: ctx-A, folder: false}}]
  lti:
    username: email
    max_pending_logins: 20
    platforms:
{lms.platform_yaml(indent=6)}"""
    with running_fleet(tmp_path_factory.mktemp("flood"), hubs, [H], PASSWORD) as running:
        urls = ToolURLs.of(running.hub_url(H))
        lms.set_tool(login_url=urls.login, launch_url=urls.launch, jwks_url=urls.jwks)
        yield running


async def flood(url: str, params: dict[str, str], sent: list[int], statuses: dict[int, int]) -> None:
    """FLOOD initiations from FLOOD_ADDRESS, 32 at a time, with no cookies kept (a bot's login state cookies would
    pile up). The client is aiohttp: its C parser leaves the two cores to the front door and the hub under test."""
    connector = aiohttp.TCPConnector(limit=32, local_addr=(FLOOD_ADDRESS, 0))
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(
        connector=connector, cookie_jar=aiohttp.DummyCookieJar(), timeout=timeout
    ) as client:

        async def worker(count: int) -> None:
            for index in range(count):
                query = {**params, "login_hint": f"bot-{index}"}
                async with client.get(url, params=query, allow_redirects=False) as response:
                    await response.read()
                statuses[response.status] = statuses.get(response.status, 0) + 1
                sent[0] += 1

        await asyncio.gather(*(worker(FLOOD // 32) for _ in range(32)))


@pytest.mark.needs("root", "cgroups", "acl", "user_env", "proxy")
def test_a_students_launch_during_a_flood_of_initiations_succeeds(fleet: RunningFleet, lms: PeerLMS) -> None:
    urls = ToolURLs.of(fleet.hub_url(H))
    hub_log = fleet.state_dir / "hubs" / H / "hub.log"
    lines_before = len(hub_log.read_text().splitlines())
    params = {
        "iss": lms.issuer,
        "target_link_uri": urls.launch,
        "client_id": lms.client_id,
        "lti_deployment_id": lms.deployment_id,
    }
    sent, statuses = [0], {}
    flooded = threading.Event()

    def run_flood() -> None:
        try:
            asyncio.run(flood(urls.login, params, sent, statuses))
        finally:
            flooded.set()

    def hold_until_the_flood_is_over(message: dict) -> dict:
        """The LMS signs the student's id_token only after the flood: the login stays pending through all of it."""
        flooded.wait(600)
        return message

    started = time.monotonic()
    threading.Thread(target=run_flood, daemon=True).start()
    wait_until(lambda: sent[0] >= FLOOD // 4, 300, "a quarter of the flood to be sent", every=0.05)
    with httpx.Client(timeout=120) as browser:  # from 127.0.0.1, while the flood goes on
        answer = lms.launch(browser, sub="s-ada", context_id="ctx-A", tamper=hold_until_the_flood_is_over)
    seconds = time.monotonic() - started
    assert flooded.is_set() and sum(statuses.values()) == FLOOD // 32 * 32, statuses
    assert answer.status_code == 302, answer.text[:500]
    assert "/hub/spawn/ada" in answer.headers["location"]
    assert statuses.get(429, 0) > FLOOD * 0.9, statuses  # refused over the limit; the rest within it
    assert set(statuses) <= {302, 429}, statuses
    added = hub_log.read_text().splitlines()[lines_before:]
    about_logins = [line for line in added if "/lti/login" in line or "LTI login initiations" in line]
    print(
        f"\nflood of {FLOOD} initiations in {seconds:.1f} s: {statuses}; {len(about_logins)} hub log lines about them"
    )
    assert len(about_logins) < 400, "\n".join(about_logins[:20])
    assert sum("refusing them" in line for line in added) <= 2
