"""The tool-side LTI Advantage client (hubfleet.edu.lti.services) against the real peer LMS."""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
import yaml

from hubfleet.edu.lti.keys import ToolKey
from hubfleet.edu.lti.services import (
    MEDIA_LINEITEM,
    MEDIA_SCORE,
    Member,
    ServiceClient,
    ServiceError,
    ServiceUnavailable,
    scores_url,
)
from hubfleet.spec.edu import LTIPlatform
from tests.helpers import free_port
from tests.lms.minitool import MiniTool
from tests.lms.peer import LIS_ROLES, PeerLMS

T = TypeVar("T")


def platform_of(lms: PeerLMS) -> LTIPlatform:
    return LTIPlatform.model_validate(yaml.safe_load(lms.platform_yaml())[0])


def run(lms: PeerLMS, tool: MiniTool, scenario: Callable[[ServiceClient], Awaitable[T]], **options: object) -> T:
    """Run `scenario` with a fresh client (no cached token) of the peer."""

    async def main() -> T:
        async with httpx.AsyncClient(timeout=10) as http:
            return await scenario(ServiceClient(platform_of(lms), tool.key, http=http, **options))  # type: ignore[arg-type]

    return asyncio.run(main())


def course(lms: PeerLMS, members: int) -> str:
    context_id = f"ctx-{secrets.token_hex(3)}"
    lms.add_course(context_id, title="Data Science 101", label="DS101")
    for index in range(members):
        sub = f"{context_id}-{index}"
        lms.add_person(sub, name=f"Person {index}", email=f"p{index}@uni.example")
        lms.enroll(context_id, sub, ["Learner"])
    return context_id


def calls(lms: PeerLMS, path: str) -> list[dict[str, str]]:
    return [call for call in lms.requests if call["path"].startswith(path)]


def test_one_token_serves_roster_pages_and_grades(lms: PeerLMS, tool: MiniTool) -> None:
    context_id = course(lms, 25)
    lms.enroll(context_id, f"{context_id}-0", ["Instructor"])
    lms.enroll(context_id, f"{context_id}-1", ["Learner"], status="Inactive")
    before = lms.tokens_issued
    stamp = dt.datetime(2026, 11, 27, 10, 0, tzinfo=dt.UTC)

    async def scenario(client: ServiceClient) -> tuple[list[Member], str, str]:
        members = await client.members(lms.nrps_url(context_id))
        lineitems = lms.lineitems_url(context_id)
        first = await client.find_or_create_line_item(
            lineitems, resource_id="hw1", label="Homework 1", score_maximum=10
        )
        again = await client.find_or_create_line_item(
            lineitems, resource_id="hw1", label="Homework 1", score_maximum=10
        )
        await client.post_score(
            first, user_id=f"{context_id}-2", score_given=7.5, score_maximum=10, timestamp=stamp, comment="well done"
        )
        return members, first, again

    members, first, again = run(lms, tool, scenario)
    assert lms.tokens_issued == before + 1
    assert len(calls(lms, f"/nrps/{context_id}/")) == 3  # 25 members, 10 a page
    assert sorted(m.user_id for m in members) == sorted(f"{context_id}-{i}" for i in range(25))
    by_id = {m.user_id: m for m in members}
    assert by_id[f"{context_id}-0"].roles == (LIS_ROLES["Instructor"],)
    assert not by_id[f"{context_id}-1"].active and by_id[f"{context_id}-2"].active
    assert by_id[f"{context_id}-2"].email == "p2@uni.example" and by_id[f"{context_id}-2"].name == "Person 2"

    assert first == again and [item["id"] for item in lms.line_items(context_id)] == [first]
    assert lms.line_items(context_id)[0]["resourceId"] == "hw1"
    [score] = lms.scores(context_id)
    assert score["userId"] == f"{context_id}-2" and score["scoreGiven"] == 7.5 and score["scoreMaximum"] == 10
    assert score["activityProgress"] == "Completed" and score["gradingProgress"] == "FullyGraded"
    assert score["comment"] == "well done" and dt.datetime.fromisoformat(score["timestamp"]) == stamp
    [posted] = [c for c in calls(lms, f"/ags/{context_id}/") if c["path"].endswith("/scores")]
    assert posted["content_type"] == MEDIA_SCORE
    assert all(
        c["content_type"] == MEDIA_LINEITEM
        for c in calls(lms, f"/ags/{context_id}/")
        if c["method"] == "POST" and not c["path"].endswith("/scores")
    )


def test_line_item_changes_are_updated_not_duplicated(lms: PeerLMS, tool: MiniTool) -> None:
    context_id = course(lms, 1)
    lineitems = lms.lineitems_url(context_id)

    async def scenario(client: ServiceClient) -> tuple[str, str]:
        for index in range(12):  # more than a page of other line items
            await client.find_or_create_line_item(
                lineitems, resource_id=f"q{index}", label=f"Q{index}", score_maximum=1
            )
        first = await client.find_or_create_line_item(lineitems, resource_id="hw", label="HW", score_maximum=10)
        second = await client.find_or_create_line_item(
            lineitems, resource_id="hw", label="HW (revised)", score_maximum=12, tag="grade"
        )
        return first, second

    first, second = run(lms, tool, scenario)
    assert first == second
    [item] = [item for item in lms.line_items(context_id) if item["resourceId"] == "hw"]
    assert (item["label"], item["scoreMaximum"], item["tag"]) == ("HW (revised)", 12, "grade")
    assert len(lms.line_items(context_id)) == 13


def test_platform_refusal_raises_service_error_without_retry(lms: PeerLMS, tool: MiniTool) -> None:
    context_id = course(lms, 1)

    async def scenario(client: ServiceClient) -> None:
        item = await client.find_or_create_line_item(
            lms.lineitems_url(context_id), resource_id="hw", label="HW", score_maximum=10
        )
        await client.post_score(
            item, user_id="a-stranger", score_given=1, score_maximum=10, timestamp=dt.datetime.now(dt.UTC)
        )

    with pytest.raises(ServiceError) as refused:
        run(lms, tool, scenario)
    assert refused.value.status == 400 and "not a member" in refused.value.message
    assert not isinstance(refused.value, ServiceUnavailable)
    assert len([c for c in calls(lms, f"/ags/{context_id}/") if c["path"].endswith("/scores")]) == 1


def test_peer_down_retries_then_service_unavailable(lms: PeerLMS, tool: MiniTool) -> None:
    context_id = course(lms, 3)
    url = lms.nrps_url(context_id)

    async def scenario(client: ServiceClient) -> None:
        assert len(await client.members(url)) == 3  # the token is cached now
        lms.set_down(True)
        try:
            with pytest.raises(ServiceUnavailable, match="503"):
                await client.members(url)
        finally:
            lms.set_down(False)
        assert len(await client.members(url)) == 3  # recovered, same token

    before = lms.tokens_issued
    run(lms, tool, scenario, retries=3, backoff=0.01)
    assert len(calls(lms, f"/nrps/{context_id}/")) == 1 + 4 + 1  # first call, 1 + 3 retries, the recovered one
    assert lms.tokens_issued == before + 1


def test_token_endpoint_down_or_unreachable_is_service_unavailable(lms: PeerLMS, tool: MiniTool) -> None:
    context_id = course(lms, 1)
    lms.set_down(True)
    try:
        with pytest.raises(ServiceUnavailable, match="token"):
            run(lms, tool, lambda client: client.members(lms.nrps_url(context_id)), retries=1, backoff=0.01)
    finally:
        lms.set_down(False)

    nowhere = platform_of(lms).model_copy(update={"token_url": f"http://127.0.0.1:{free_port()}/token"})

    async def unreachable() -> None:
        async with httpx.AsyncClient(timeout=2) as http:
            client = ServiceClient(nowhere, tool.key, http=http, retries=1, backoff=0.01)
            await client.members(lms.nrps_url(context_id))

    with pytest.raises(ServiceUnavailable, match="ConnectError"):
        asyncio.run(unreachable())


def test_token_renewed_before_expiry_and_after_rejection(lms: PeerLMS, tool: MiniTool) -> None:
    context_id = course(lms, 2)
    url = lms.nrps_url(context_id)
    now = [1000.0]
    lms.token_lifetime = 30
    try:

        async def scenario(client: ServiceClient) -> list[int]:
            issued = []
            await client.members(url)
            issued.append(lms.tokens_issued)
            now[0] += 20  # well within the 30 s
            await client.members(url)
            issued.append(lms.tokens_issued)
            now[0] += 8  # 2 s before expiry: inside the renewal margin (a tenth of the lifetime)
            await client.members(url)
            issued.append(lms.tokens_issued)
            lms.expire_tokens()  # the platform drops the token early: 401, one new token, the call succeeds
            assert len(await client.members(url)) == 2
            issued.append(lms.tokens_issued)
            return issued

        before = lms.tokens_issued
        issued = run(lms, tool, scenario, clock=lambda: now[0])
    finally:
        lms.token_lifetime = 3600
    assert [count - before for count in issued] == [1, 1, 2, 3]


def test_tool_key_from_the_key_file(lms: PeerLMS, tool: MiniTool, tmp_path: Path) -> None:
    context_id = course(lms, 1)
    key = ToolKey.load_or_create(tmp_path / "tool-key.pem")
    original = tool.key
    tool.key = key.private  # the tool now publishes this key
    try:

        async def scenario(http: httpx.AsyncClient) -> list[Member]:
            return await ServiceClient(platform_of(lms), key, http=http).members(lms.nrps_url(context_id))

        async def main() -> list[Member]:
            async with httpx.AsyncClient() as http:
                return await scenario(http)

        assert [m.user_id for m in asyncio.run(main())] == [f"{context_id}-0"]
    finally:
        tool.key = original


def test_scores_url_keeps_the_query() -> None:
    assert scores_url("https://lms.example/mod/lti/services.php/2/lineitems/7/lineitem?type_id=3") == (
        "https://lms.example/mod/lti/services.php/2/lineitems/7/lineitem/scores?type_id=3"
    )
    assert scores_url("https://canvas.example/api/lti/courses/1/line_items/5") == (
        "https://canvas.example/api/lti/courses/1/line_items/5/scores"
    )


def test_member_from_json_rejects_malformed_entries() -> None:
    assert Member.from_json({"user_id": "u", "roles": ["Learner"]}).status == "Active"
    for bad in (
        {"roles": []},
        {"user_id": "u"},
        {"user_id": "u", "roles": "Learner"},
        "u",
        {"user_id": 3, "roles": []},
    ):
        with pytest.raises(ValueError):
            Member.from_json(bad)
