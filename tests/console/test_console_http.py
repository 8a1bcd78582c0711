"""The console over plain HTTP (httpx): logins through the hubs' real OAuth, who sees what, redirects, cookies, CSRF,
and clear 4xx answers to bad requests."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Iterator
from http.cookies import SimpleCookie
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from hubfleet.health.client import HubUser, PasswordLogin
from tests.console.shared import HUB_ADMIN, OPERATOR, PLAIN_USER, A, B, ConsoleFleet, password

SESSION = "hubfleet-console"


@contextlib.contextmanager
def console_login(
    url: str, hub: str, user: str, next_url: str = "/console/"
) -> Iterator[tuple[httpx.Client, httpx.Response]]:
    """Log in to hub `hub` through its login form, then to the console with it; the client keeps the cookies."""

    async def hub_cookies() -> httpx.Cookies:
        async with httpx.AsyncClient(timeout=60) as client:
            await HubUser.login(client, f"{url}/hubs/{hub}/", PasswordLogin(user, password(user)))
            return client.cookies

    with httpx.Client(base_url=url, timeout=60, cookies=asyncio.run(hub_cookies())) as client:
        yield client, client.get(f"/console/login/{hub}", params={"next": next_url}, follow_redirects=True)


def set_cookie_headers(response: httpx.Response) -> list[str]:
    return [value for r in [*response.history, response] for value in r.headers.get_list("set-cookie")]


@pytest.fixture(scope="module")
def operator(console_fleet: ConsoleFleet) -> Iterator[httpx.Client]:
    with console_login(console_fleet.fleet.url, A, OPERATOR) as (client, response):
        assert response.status_code == 200, response.text
        yield client


@pytest.fixture(scope="module")
def hub_admin(console_fleet: ConsoleFleet) -> Iterator[httpx.Client]:
    with console_login(console_fleet.fleet.url, B, HUB_ADMIN) as (client, response):
        assert response.status_code == 200, response.text
        yield client


def test_anonymous_visitors_see_the_hubs_and_how_to_log_in(console_fleet: ConsoleFleet) -> None:
    page = httpx.get(console_fleet.fleet.url + "/")
    assert page.status_code == 200
    assert "Alpha Research" in page.text and "Beta College" in page.text
    assert f'href="/hubs/{A}/"' in page.text and f'href="/hubs/{B}/"' in page.text
    assert f'href="/console/login/{A}?next=' in page.text
    assert httpx.get(console_fleet.fleet.url + "/_hubfleet/health").json()["healthy"] is True


@pytest.mark.parametrize(
    "path", ["/console/", f"/console/hubs/{A}", "/console/pilots", "/console/economics", "/console/contributions"]
)
def test_anonymous_requests_to_console_pages_redirect_to_login(console_fleet: ConsoleFleet, path: str) -> None:
    response = httpx.get(console_fleet.fleet.url + path)
    assert response.status_code == 302
    location = urlsplit(response.headers["location"])
    assert location.path == "/console/login"
    assert parse_qs(location.query)["next"] == [path]


def test_login_goes_through_the_hub_oauth_and_sets_a_strict_session_cookie(console_fleet: ConsoleFleet) -> None:
    with console_login(console_fleet.fleet.url, A, OPERATOR, next_url=f"/console/hubs/{B}") as (_, response):
        paths = [urlsplit(str(r.url)).path for r in response.history]
        assert f"/hubs/{A}/hub/api/oauth2/authorize" in paths
        assert f"/console/oauth_callback/{A}" in paths
        assert response.url.path == f"/console/hubs/{B}"  # back where the login started
        cookies = [c for c in set_cookie_headers(response) if c.startswith(f"{SESSION}=")]
        assert len(cookies) == 1
        attributes = {part.strip().split("=")[0].lower() for part in cookies[0].split(";")}
        assert {"httponly", "expires", "path"} <= attributes
        morsel = SimpleCookie(cookies[0])[SESSION]
        assert morsel["path"] == "/console/"  # hubs and users' servers never receive it
        assert morsel["samesite"] == "Lax"


def test_the_operator_sees_every_hub(operator: httpx.Client) -> None:
    page = operator.get("/console/")
    assert page.status_code == 200
    assert f'data-hub="{A}"' in page.text and f'data-hub="{B}"' in page.text
    assert f'data-viewer="{A}:{OPERATOR}"' in page.text
    for hub in (A, B):
        assert operator.get(f"/console/hubs/{hub}").status_code == 200
    assert operator.get("/console/pilots").status_code == 200


def test_a_hub_admin_sees_only_their_hub(hub_admin: httpx.Client) -> None:
    page = hub_admin.get("/console/")
    assert page.status_code == 200
    assert f'data-hub="{B}"' in page.text and f'data-hub="{A}"' not in page.text
    assert hub_admin.get(f"/console/hubs/{B}").status_code == 200
    other = hub_admin.get(f"/console/hubs/{A}")
    assert other.status_code == 403
    assert f"not of hub {A}" in other.text
    assert hub_admin.get("/console/pilots").status_code == 403
    assert hub_admin.get("/console/economics").status_code == 403
    assert hub_admin.get("/console/contributions").status_code == 403


def test_a_user_who_is_neither_operator_nor_admin_gets_a_clear_403(console_fleet: ConsoleFleet) -> None:
    with console_login(console_fleet.fleet.url, A, PLAIN_USER) as (client, response):
        assert response.status_code == 403
        assert f"You are {PLAIN_USER} on hub {A}" in response.text
        assert not any(c.startswith(f"{SESSION}=") for c in set_cookie_headers(response))
        assert client.get("/console/").status_code == 302


def test_logout_needs_the_xsrf_token(console_fleet: ConsoleFleet) -> None:
    with console_login(console_fleet.fleet.url, B, HUB_ADMIN) as (client, response):
        assert client.post("/console/logout").status_code == 403  # no token: refused
        assert client.get("/console/").status_code == 200  # still logged in
        token = re.search(r'name="_xsrf" value="([^"]+)"', client.get("/console/").text)
        assert token is not None
        response = client.post("/console/logout", data={"_xsrf": token.group(1)})
        assert response.status_code == 302
        assert client.get("/console/").status_code == 302  # logged out


def test_a_forged_or_foreign_session_cookie_is_not_a_login(console_fleet: ConsoleFleet) -> None:
    forged = "2|1:0|10:1700000000|16:hubfleet-console|40:eyJodWIiOiAiYSIsICJ1c2VyIjogIm8iLCAiYWRtaW4iOiB0cnVlfQ==|00"
    response = httpx.get(console_fleet.fleet.url + "/console/", cookies={SESSION: forged})
    assert response.status_code == 302


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/console/login/no-such-hub", 404),
        (f"/console/oauth_callback/{A}?code=abc&state=def", 400),  # no login started here
        (f"/console/oauth_callback/{A}", 400),
        ("/console/hubs/no-such-hub", 302),  # anonymous: to the login first
        ("/no/such/page", 404),
    ],
)
def test_bad_requests_get_clear_4xx(console_fleet: ConsoleFleet, path: str, status: int) -> None:
    assert httpx.get(console_fleet.fleet.url + path).status_code == status


def test_a_stolen_login_state_from_another_hub_is_refused(console_fleet: ConsoleFleet) -> None:
    with httpx.Client(base_url=console_fleet.fleet.url) as client:
        start = client.get(f"/console/login/{A}")
        assert start.status_code == 302
        state = parse_qs(urlsplit(start.headers["location"]).query)["state"][0]
        assert client.get(f"/console/oauth_callback/{B}", params={"code": "x", "state": state}).status_code == 400
        # the right hub and state, but a code the hub never gave: the hub refuses it, the console says so
        refused = client.get(f"/console/oauth_callback/{A}", params={"code": "x", "state": state})
        assert refused.status_code == 400
        assert "log in again" in refused.text


def test_console_pages_answer_bad_input_with_4xx(operator: httpx.Client) -> None:
    assert operator.get("/console/", params={"month": "last-year"}).status_code == 400
    assert operator.get("/console/hubs/no-such-hub").status_code == 404
    assert operator.get(f"/console/hubs/{A}", params={"month": "2026-13"}).status_code == 400


def test_login_never_redirects_to_another_site(console_fleet: ConsoleFleet) -> None:
    with console_login(console_fleet.fleet.url, A, OPERATOR, next_url="https://evil.example/") as (_, response):
        assert response.url.host == "127.0.0.1"
        assert response.url.path == "/console/"


def test_no_login_secret_reaches_the_logs(console_fleet: ConsoleFleet, operator: httpx.Client) -> None:
    state = console_fleet.fleet.state_dir
    secrets = [(state / "frontdoor" / "console_cookie_secret").read_text().strip()]
    secrets += [path.read_text().strip() for path in state.glob("hubs/*/secrets/console_oauth_secret")]
    secrets.append(operator.cookies.get(SESSION, path="/console/"))
    logs = {path: path.read_text(errors="replace") for path in [*state.rglob("*.log"), *state.rglob("*.out")]}
    assert any("/console/oauth_callback/" in text for text in logs.values())  # logins were logged, without their codes
    for path, text in logs.items():
        assert not any(secret in text for secret in secrets), path
        for line in text.splitlines():  # JupyterHub logs its redirects with "code=[secret]"
            assert "/console/oauth_callback/" not in line or not re.search(r"code=(?!\[secret\])", line), line
