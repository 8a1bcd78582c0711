"""Roster sync (hubfleet.edu.roster) from the peer LMS into the course groups of a real hub.

One fleet (one real hub with course `rs`) and one peer LMS serve the module; the tests run in file order and build
on each other: the first sync fills the course, the LMS roster then changes and the second sync follows it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from dataclasses import replace

import httpx
import pytest
import yaml

from hubfleet.common.hubapi import HubAPI
from hubfleet.edu.lti.launch import Launch
from hubfleet.edu.lti.roles import course_role
from hubfleet.edu.lti.services import Member, ServiceClient
from hubfleet.edu.roster import CourseNotOnHub, SyncReport, sync_course
from hubfleet.spec.edu import LTIPlatform, group_name
from tests.helpers import RunningFleet, running_fleet, unique_hub
from tests.lms.courses import lti_hub_yaml
from tests.lms.minitool import MiniTool
from tests.lms.peer import LIS_ROLES, PeerLMS

H = unique_hub("rs")
PASSWORD = "roster-test-password"
CONTEXT = "ctx-roster"
CLI_CONTEXT = "ctx-cli"


def hub_yaml(lms: PeerLMS) -> str:
    """Hub H: LTI from the peer, course `rs` (fleet-file staff and students) and course `cl` (LMS members only)."""
    courses = f"""\
        - name: rs
          title: Roster Sync 101
          roster: lms
          lms_context: {CONTEXT}
          instructors: [prof]
          students: [old1, s03, s04]
        - name: cl
          title: Synced from the command line
          roster: lms
          lms_context: {CLI_CONTEXT}
        """
    return lti_hub_yaml(H, PASSWORD, lms, courses, profile=False)


@pytest.fixture(scope="module")
def fleet(lms: PeerLMS, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningFleet]:
    with running_fleet(tmp_path_factory.mktemp("roster"), hub_yaml(lms), [H], PASSWORD) as running:
        yield running


@pytest.fixture(scope="module")
def lms_course(lms: PeerLMS, tool: MiniTool) -> PeerLMS:
    """25 members: one instructor, two TAs (s04 was a student in the fleet file), 21 learners, one content developer."""
    lms.add_course(CONTEXT, title="Roster Sync 101")
    for index in range(25):
        sub = f"lms-{index:02d}"
        lms.add_person(sub, name=f"Student {index}", email=f"s{index:02d}@uni.example")
        role = {0: "Instructor", 1: "TeachingAssistant", 4: "TeachingAssistant", 2: "ContentDeveloper"}.get(
            index, "Learner"
        )
        lms.enroll(CONTEXT, sub, [role])
    return lms


@pytest.fixture(scope="module")
def sync(fleet: RunningFleet, lms_course: PeerLMS, tool: MiniTool) -> Iterator[Callable[..., SyncReport]]:
    """`sync(course)` runs one roster sync with one long-lived ServiceClient (its token cached across syncs)."""
    platform = LTIPlatform.model_validate(yaml.safe_load(lms_course.platform_yaml())[0])
    loop = asyncio.new_event_loop()
    http = httpx.AsyncClient(timeout=10)
    client = ServiceClient(platform, tool.key, http=http)

    def by_email(member: Member) -> str:
        return (member.email or member.user_id).split("@")[0]

    async def run(course: str) -> SyncReport:
        async with HubAPI(f"{fleet.hub_url(H)}hub/api", fleet.service_token(H)) as api:
            return await sync_course(
                api, client, course=course, context_memberships_url=lms_course.nrps_url(CONTEXT), usernames=by_email
            )

    yield lambda course="rs": loop.run_until_complete(run(course))
    loop.run_until_complete(http.aclose())
    loop.close()


def groups(fleet: RunningFleet) -> dict[str, set[str]]:
    async def go() -> dict[str, set[str]]:
        async with HubAPI(f"{fleet.hub_url(H)}hub/api", fleet.service_token(H)) as api:
            return {
                role: set((await api.group(group_name("rs", role)))["users"])
                for role in ("instructor", "ta", "student")
            }

    return asyncio.run(go())


def hub_users(fleet: RunningFleet) -> set[str]:
    async def go() -> set[str]:
        async with HubAPI(f"{fleet.hub_url(H)}hub/api", fleet.service_token(H)) as api:
            return {user["name"] async for user in api.users()}

    return asyncio.run(go())


def test_course_role_mapping() -> None:
    assert course_role([LIS_ROLES["Learner"]]) == "student"
    assert course_role(["Instructor"]) == "instructor"  # NRPS may send the simple names
    assert course_role([LIS_ROLES["Instructor"], LIS_ROLES["TeachingAssistant"]]) == "ta"
    assert course_role([LIS_ROLES["ContentDeveloper"]]) is None
    assert course_role([LIS_ROLES["Mentor"], "Learner"]) == "student"


@pytest.mark.needs("root", "cgroups", "user_env")
def test_first_sync_fills_the_course(fleet: RunningFleet, lms_course: PeerLMS, sync) -> None:
    before_tokens = lms_course.tokens_issued
    before_pages = len([r for r in lms_course.requests if r["path"].startswith(f"/nrps/{CONTEXT}/")])
    report = sync()
    assert len([r for r in lms_course.requests if r["path"].startswith(f"/nrps/{CONTEXT}/")]) - before_pages == 3
    assert lms_course.tokens_issued - before_tokens == 1
    learners = {f"s{i:02d}" for i in range(3, 25)} - {"s04"}
    assert report.members == 25 and report.ignored == 1
    assert report.added == {"s00": "instructor", "s01": "ta"} | {u: "student" for u in learners - {"s03"}}
    assert report.updated == {"s04": ("student", "ta")}
    assert report.removed == ["old1"]
    assert groups(fleet) == {"instructor": {"prof", "s00"}, "ta": {"s01", "s04"}, "student": learners}
    assert {"old1", "s02"} & hub_users(fleet) == {"old1"}  # old1 keeps their user; the content developer got none


@pytest.mark.needs("root", "cgroups", "user_env")
def test_second_sync_follows_roster_changes(fleet: RunningFleet, lms_course: PeerLMS, sync) -> None:
    tokens = lms_course.tokens_issued
    lms_course.enroll(CONTEXT, "lms-05", ["Learner"], status="Inactive")
    lms_course.unenroll(CONTEXT, "lms-06")
    lms_course.enroll(CONTEXT, "lms-07", ["Instructor"])
    lms_course.add_person("lms-30", email="s30@uni.example")
    lms_course.enroll(CONTEXT, "lms-30", ["Learner"])
    report = sync()
    assert report.added == {"s30": "student"}
    assert report.updated == {"s07": ("student", "instructor")}
    assert report.removed == ["s05", "s06"]
    assert lms_course.tokens_issued == tokens  # the first sync's token still serves
    now = groups(fleet)
    assert now["instructor"] == {"prof", "s00", "s07"} and {"s05", "s06", "s07"}.isdisjoint(now["student"])
    assert "s30" in now["student"] and {"s05", "s06"} <= hub_users(fleet)
    unchanged = sync()
    assert (unchanged.added, unchanged.updated, unchanged.removed) == ({}, {}, [])


@pytest.mark.needs("root", "cgroups", "user_env")
def test_sync_of_a_course_not_on_the_hub(sync) -> None:
    with pytest.raises(CourseNotOnHub, match="nope"):
        sync("nope")


@pytest.mark.needs("root", "cgroups", "user_env")
def test_cli_sync_with_the_hubs_own_tool_key(fleet: RunningFleet, lms: PeerLMS) -> None:
    """`hubfleet course sync`: the hub's tool key (made by its LTI authenticator), its published JWKS, the fleet
    database's LMS identities. Runs last: the peer's tool becomes the hub."""
    hub = f"{fleet.hub_url(H)}hub/lti13/"
    lms.set_tool(login_url=f"{hub}login", launch_url=f"{hub}launch", jwks_url=f"{hub}jwks")
    lms.add_course(CLI_CONTEXT, title="CLI course")
    for index in range(12):
        lms.add_person(f"cli-{index}", name=f"Cli Person {index}", email=f"c{index:02d}@uni.example")
        lms.enroll(CLI_CONTEXT, f"cli-{index}", ["Instructor" if index == 0 else "Learner"])
    before = lms.tokens_issued
    result = fleet.cli("course", "sync", H, "cl", "--memberships-url", lms.nrps_url(CLI_CONTEXT), "--json")
    report = json.loads(result.stdout)
    assert report["added"] == {"c00": "instructor"} | {f"c{i:02d}": "student" for i in range(1, 12)}
    assert lms.tokens_issued == before + 1

    async def members() -> set[str]:
        async with HubAPI(f"{fleet.hub_url(H)}hub/api", fleet.service_token(H)) as api:
            return set((await api.group(group_name("cl", "student")))["users"])

    assert asyncio.run(members()) == {f"c{i:02d}" for i in range(1, 12)}
    refused = fleet.cli("course", "sync", H, "cl", check=False)
    assert refused.returncode == 1 and "--memberships-url" in refused.stderr


def test_a_launch_and_a_roster_sync_give_the_same_course_role() -> None:
    """One rule for both ways in: whatever roles the LMS sends, launch and roster sync agree."""
    for roles in (["Administrator"], [LIS_ROLES["ContentDeveloper"]], ["Instructor#TeachingAssistant"], ["Learner"]):
        launch = Launch(issuer="i", client_id="c", deployment_id="d", sub="s", message_type="m", target_link_uri="t")
        assert replace(launch, roles=tuple(roles)).course_role == course_role(roles)
