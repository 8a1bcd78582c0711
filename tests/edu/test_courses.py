"""Courses on one real hub: groups and the staff role from the fleet file, what staff may do to whose servers,
course folders with their ACLs, and membership changed live by the CLI and by `hubfleet apply`.

One fleet (a real JupyterHub, proxy, Unix users, cgroups) serves the whole module: hub H with courses `ca` and
`cb`. Tests run in file order and build on each other's servers (starting servers is the slow part).
"""

from __future__ import annotations

import asyncio
import html
import json
import re
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import httpx
import pytest
from typer.testing import CliRunner, Result

from hubfleet.cli.course import course_app
from hubfleet.common.hubapi import HubAPI
from hubfleet.edu.courses import course_folder_path
from hubfleet.health.client import HubUser, PasswordLogin
from hubfleet.system import accounts, cgroups
from tests.helpers import RunningFleet, await_until, running_fleet, unique_hub

T = TypeVar("T")
H = unique_hub("ed")
PASSWORD = "course-test-password"

HUB = f"""\
{H}:
  auth: {{type: shared-password, password: {PASSWORD}, admins: [boss]}}
  culling: {{enabled: false}}
  profiles:
    - {{name: small, cpu: 0.5, memory: 256M, default: true}}
    - {{name: lab, cpu: 0.5, memory: 320M, groups: [ca-instructors]}}
  courses:
    - name: ca
      title: Course A
      instructors: [ia]
      tas: [ta]
      students: [sa1, sa2]
      profile: lab
      schedule: [{{day: mon, start: "09:00", end: "10:30"}}]
    - name: cb
      title: Course B
      instructors: [ib]
      students: [sb1]
"""

pytestmark = pytest.mark.needs("root", "cgroups", "user_env")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningFleet]:
    with running_fleet(tmp_path_factory.mktemp("courses"), HUB, [H], PASSWORD) as running:
        yield running


def api_url(fleet: RunningFleet) -> str:
    return f"{fleet.hub_url(H)}hub/api"


def on_hub(fleet: RunningFleet, action: Callable[[HubAPI], Awaitable[T]], token: str | None = None) -> T:
    """Run `action` with the hub's API, as the fleet's service (or as the owner of `token`)."""

    async def go() -> T:
        async with HubAPI(api_url(fleet), token or fleet.service_token(H)) as api:
            return await action(api)

    return asyncio.run(go())


def token_of(fleet: RunningFleet, user: str) -> str:
    """An API token of `user` with all of the user's permissions."""
    return on_hub(fleet, lambda api: api.new_token(user, note="course test"))


def status(fleet: RunningFleet, token: str, method: str, path: str, **kwargs: Any) -> int:
    """The HTTP status of one hub API call made with `token`."""

    async def go(api: HubAPI) -> int:
        return (await api._client.request(method, path, **kwargs)).status_code

    return on_hub(fleet, go, token)


async def wait_ready(api: HubAPI, user: str, timeout: float = 120) -> None:
    """Wait until `user`'s default server is ready."""

    async def ready() -> bool:
        server = ((await api.user(user)) or {}).get("servers", {}).get("")
        return bool(server and server.get("ready"))

    await await_until(ready, timeout, f"the server of {user} to get ready", every=0.25)


def start_as_service(fleet: RunningFleet, user: str, restart: bool = False) -> None:
    """Start `user`'s server as the fleet's service (stopping it first with `restart`) and wait until it is ready."""

    async def go(api: HubAPI) -> None:
        if restart:
            await api.request("DELETE", f"/users/{user}/server")

            async def stopped() -> bool:
                return not ((await api.user(user)) or {}).get("servers")

            await await_until(stopped, 120, f"the server of {user} to stop", every=0.25)
        response = await api._client.post(f"/users/{user}/server")
        assert response.status_code in (201, 202), response.text
        await wait_ready(api, user)

    on_hub(fleet, go)


def as_unix_user(user: str, script: str) -> subprocess.CompletedProcess:
    """Run a shell script as hub user `user`'s Unix account, with its groups, from its home."""
    name = accounts.unix_username(H, user)
    return subprocess.run(
        ["runuser", "-u", name, "--", "sh", "-c", f"cd && {script}"], capture_output=True, text=True, check=False
    )


def hub_pid(fleet: RunningFleet) -> int:
    return int((fleet.state_dir / "hubs" / H / "hub.pid").read_text().split()[0])


def course_cli(fleet: RunningFleet, *args: str, code: int = 0) -> Result:
    """`hubfleet course ARGS` (the real commands, in this process: a new interpreter per call costs seconds)."""
    result = CliRunner().invoke(course_app, [*args, "--state-dir", str(fleet.state_dir)])
    assert result.exit_code == code, result.stdout + result.stderr
    return result


def course(fleet: RunningFleet, name: str) -> dict[str, Any]:
    return json.loads(course_cli(fleet, "show", H, name, "--json").stdout)


def members(document: dict[str, Any], role: str) -> dict[str, str]:
    return {m["name"]: m["source"] for m in document["members"][role]}


def test_the_fleet_files_courses_are_groups_with_their_members(fleet: RunningFleet) -> None:
    listed = json.loads(course_cli(fleet, "list", H, "--json").stdout)
    assert [c["name"] for c in listed] == ["ca", "cb"]
    shown = listed[0]
    assert shown["title"] == "Course A" and shown["origin"] == "fleet-file" and shown["profile"] == "lab"
    assert members(shown, "instructor") == {"ia": "fleet file"}
    assert members(shown, "ta") == {"ta": "fleet file"}
    assert members(shown, "student") == {"sa1": "fleet file", "sa2": "fleet file"}
    assert shown["schedule"] == [{"day": "mon", "start": "09:00:00", "end": "10:30:00"}]
    text = course_cli(fleet, "show", H, "ca").stdout
    assert "Course A" in text and "sa2" in text and "mon 09:00 to 10:30" in text
    assert "Course B" in course_cli(fleet, "list", H).stdout
    assert "no course 'nope'" in course_cli(fleet, "show", H, "nope", code=1).stderr


def test_an_instructor_lists_only_their_courses_students(fleet: RunningFleet) -> None:
    async def names(api: HubAPI) -> set[str]:
        return {user["name"] async for user in api.users()}

    seen = on_hub(fleet, names, token_of(fleet, "ia"))
    assert {"sa1", "sa2"} <= seen <= {"sa1", "sa2", "ia"}
    assert on_hub(fleet, names, token_of(fleet, "ib")) <= {"sb1", "ib"}
    # Staff get JupyterHub's admin page (showing what their scopes allow); students do not.
    assert asyncio.run(page_status(fleet, "ia", "hub/admin")) == 200
    assert asyncio.run(page_status(fleet, "sa1", "hub/admin")) == 403


async def page_status(fleet: RunningFleet, user: str, path: str) -> int:
    """Log in as `user` and open the hub page `path` with the session cookie, like a browser."""
    async with httpx.AsyncClient(timeout=60) as client:
        await HubUser.login(client, fleet.hub_url(H), PasswordLogin(user, PASSWORD))
        del client.headers["Authorization"]
        return (await client.get(f"{fleet.hub_url(H)}{path}", follow_redirects=True)).status_code


def test_a_ta_manages_the_servers_of_their_course_only(fleet: RunningFleet) -> None:
    ta = token_of(fleet, "ta")
    start_as_service(fleet, "sb1")
    # Course B's student: not readable, not startable, not stoppable. JupyterHub's API answers 404 to a token that
    # holds a scope for other resources only ("same error for nonexistence as missing permission").
    assert status(fleet, ta, "GET", "/users/sb1") == 404
    assert status(fleet, ta, "POST", "/users/sb1/server") == 404
    assert status(fleet, ta, "DELETE", "/users/sb1/server") == 404
    assert status(fleet, ta, "GET", "/groups/cb-students") == 404
    assert on_hub(fleet, lambda api: api.user("sb1"))["servers"][""]["ready"]
    # Course A's student: start (with the course's profile), read, stop.
    assert status(fleet, ta, "POST", "/users/sa1/server") in (201, 202)
    on_hub(fleet, lambda api: wait_ready(api, "sa1"), ta)
    group = cgroups.detect().open(f"{fleet.cgroup(H)}/{accounts.unix_username(H, 'sa1')}")
    assert group is not None and group.limits().memory_bytes == 320 * 1024**2  # profile `lab` of course ca
    # Course B's people may not use course A's profile.
    refused = status(fleet, fleet.service_token(H), "POST", "/users/ib/server", json={"profile": "lab"})
    assert refused == 400
    assert status(fleet, ta, "GET", "/users/sa1") == 200


def test_a_ta_opens_their_students_servers_and_no_others(fleet: RunningFleet) -> None:
    ta = token_of(fleet, "ta")
    # An API token for a server must name it (the single-user server does not resolve group filters); the hub
    # refuses to put a scope the TA does not hold into a token (400 "Not assigning requested scopes").
    scoped = {"note": "open", "expires_in": 600}
    assert status(fleet, ta, "POST", "/users/ta/tokens", json={**scoped, "scopes": ["access:servers!user=sb1"]}) == 400
    response = on_hub(
        fleet,
        lambda api: api.request("POST", "/users/ta/tokens", json={**scoped, "scopes": ["access:servers!user=sa1"]}),
        ta,
    )
    server_token = response.json()["token"]
    headers = {"Authorization": f"token {server_token}"}
    assert httpx.get(f"{fleet.hub_url(H)}user/sa1/api/status", headers=headers).status_code == 200
    assert httpx.get(f"{fleet.hub_url(H)}user/sb1/api/status", headers=headers).status_code == 403
    # In a browser: course A's student's server opens after the hub's authorize page; course B's is refused.
    assert asyncio.run(open_in_browser(fleet, "ta", "sb1")) == 403
    assert asyncio.run(open_in_browser(fleet, "ta", "sa1")) == 200


async def open_in_browser(fleet: RunningFleet, viewer: str, owner: str) -> int:
    """Log in as `viewer` and open `owner`'s JupyterLab like a browser: the final HTTP status."""
    async with httpx.AsyncClient(timeout=60) as client:
        await HubUser.login(client, fleet.hub_url(H), PasswordLogin(viewer, PASSWORD))
        del client.headers["Authorization"]  # cookies only, as in a browser
        page = await client.get(f"{fleet.hub_url(H)}user/{owner}/lab", follow_redirects=True)
        if page.status_code != 200 or "oauth2/authorize" not in page.url.path:
            return page.status_code
        fields: dict[str, list[str]] = {}
        for name, value in re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', page.text):
            fields.setdefault(name, []).append(html.unescape(value))
        authorized = await client.post(page.url, data=fields, follow_redirects=True)
        return authorized.status_code if "/lab" in authorized.url.path else -authorized.status_code


def test_students_see_only_their_course_folders(fleet: RunningFleet) -> None:
    # A course created at run time (groups named and marked like ensure_course's): sb1 is one of its students.
    async def runtime_course(api: HubAPI) -> None:
        await api.ensure_group("rt-students")
        await api.request("PUT", "/groups/rt-students/properties", json={"course": "rt", "role": "student"})
        await api.add_members("rt-students", ["sb1"])

    on_hub(fleet, runtime_course)
    start_as_service(fleet, "ta")
    start_as_service(fleet, "sb1", restart=True)  # account preparation now sees course rt

    folder_a = course_folder_path(fleet.shared_root, H, "ca")
    assert as_unix_user("ta", "echo notes > courses/ca/notes.txt").returncode == 0
    assert as_unix_user("sa1", "cat courses/ca/notes.txt").stdout.strip() == "notes"
    assert as_unix_user("sa1", "echo x > courses/ca/mine.txt").returncode != 0  # read-only for students
    assert as_unix_user("sa1", "echo x >> courses/ca/notes.txt").returncode != 0
    assert as_unix_user("sa1", "ls courses").stdout.split() == ["ca"]
    assert as_unix_user("sb1", "ls courses").stdout.split() == ["cb", "rt"]
    assert as_unix_user("sb1", f"ls {folder_a}").returncode != 0  # another course's folder: unreadable
    assert as_unix_user("sb1", "ls courses/rt").returncode == 0
    assert as_unix_user("ta", f"ls {course_folder_path(fleet.shared_root, H, 'cb')}").returncode != 0


def test_cli_changes_members_live(fleet: RunningFleet) -> None:
    pid = hub_pid(fleet)
    ib = token_of(fleet, "ib")
    assert status(fleet, ib, "GET", "/users/sa2") == 404
    course_cli(fleet, "add-member", H, "cb", "sa2", "--role", "student")
    assert status(fleet, ib, "GET", "/users/sa2") == 200
    assert members(course(fleet, "cb"), "student") == {"sa2": "run time", "sb1": "fleet file"}
    course_cli(fleet, "add-member", H, "cb", "newta", "--role", "ta")  # a user the hub did not know
    course_cli(fleet, "add-member", H, "cb", "sa2", "--role", "ta")  # a new role replaces the old one
    shown = course(fleet, "cb")
    assert members(shown, "ta") == {"newta": "run time", "sa2": "run time"} and "sa2" not in members(shown, "student")
    assert "no longer a member" in course_cli(fleet, "remove-member", H, "cb", "sa2").stdout
    assert status(fleet, ib, "GET", "/users/sa2") == 404
    assert "was not a member" in course_cli(fleet, "remove-member", H, "cb", "sa2").stdout
    assert "--role must be one of" in course_cli(fleet, "add-member", H, "cb", "x", "--role", "dean", code=1).stderr
    assert "invalid user name" in course_cli(fleet, "add-member", H, "cb", "a/b", "--role", "ta", code=1).stderr
    assert hub_pid(fleet) == pid


def test_apply_changes_only_the_members_the_file_changed(fleet: RunningFleet) -> None:
    pid = hub_pid(fleet)
    course_cli(fleet, "add-member", H, "ca", "late", "--role", "student")
    text = fleet.file.read_text()
    fleet.write(text.replace("students: [sa1, sa2]", "students: [sa1, sa3]"))
    planned = fleet.cli("plan", str(fleet.file)).stdout
    assert "group ca-students: + sa3" in planned and "group ca-students: - sa2" in planned
    assert "restart" not in planned
    fleet.cli("apply", str(fleet.file))
    assert members(course(fleet, "ca"), "student") == {"late": "run time", "sa1": "fleet file", "sa3": "fleet file"}
    assert hub_pid(fleet) == pid
