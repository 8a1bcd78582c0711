"""The peer LMS itself, against a tiny tool (no hub): launches, the token endpoint's checks, NRPS paging, AGS."""

from __future__ import annotations

import datetime as dt
import secrets
import time
from urllib.parse import urlencode

import httpx
import pytest
from joserfc.jwk import RSAKey

from tests.lms.minitool import MiniTool
from tests.lms.peer import (
    LIS_ROLES,
    MEDIA_LINEITEM,
    MEDIA_MEMBERSHIPS,
    MEDIA_SCORE,
    SCOPE_LINEITEM,
    SCOPE_NRPS,
    SCOPE_RESULT_READONLY,
    SCOPE_SCORE,
    PeerLMS,
)

ALL_SCOPES = f"{SCOPE_NRPS} {SCOPE_LINEITEM} {SCOPE_SCORE} {SCOPE_RESULT_READONLY}"


def course(lms: PeerLMS, members: int = 1, roles: tuple[str, ...] = ("Learner",)) -> str:
    """A fresh course with `members` people sub-<ctx>-<i>."""
    context_id = f"ctx-{secrets.token_hex(3)}"
    lms.add_course(context_id, title=f"Course {context_id}", label=context_id.upper())
    for index in range(members):
        sub = f"sub-{context_id}-{index}"
        lms.add_person(sub, name=f"Person {index}", email=f"p{index}@uni.example")
        lms.enroll(context_id, sub, list(roles))
    return context_id


def token(lms: PeerLMS, tool: MiniTool, scope: str = ALL_SCOPES) -> str:
    response = httpx.post(lms.token_url, data=tool.token_form(scope))
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def bearer(access_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {access_token}"}


@pytest.mark.parametrize("initiation", ["GET", "POST"])
def test_launch_end_to_end(lms: PeerLMS, tool: MiniTool, initiation: str) -> None:
    context_id = course(lms, roles=("Instructor",))
    sub = f"sub-{context_id}-0"
    with httpx.Client() as client:
        response = lms.launch(client, sub=sub, context_id=context_id, resource_link_id="rl-9", initiation=initiation)
    assert response.status_code == 200, response.text
    header, claims = response.json()["header"], response.json()["claims"]
    assert header["kid"] == lms.jwks()["keys"][0]["kid"]
    lti = "https://purl.imsglobal.org/spec/lti/claim/"
    assert claims["sub"] == sub and claims["iss"] == lms.issuer and claims["aud"] == lms.client_id
    assert claims[lti + "roles"] == [LIS_ROLES["Instructor"]]
    assert claims[lti + "deployment_id"] == "dep-1" and claims[lti + "version"] == "1.3.0"
    assert claims[lti + "context"]["id"] == context_id
    assert claims[lti + "resource_link"]["id"] == "rl-9"
    assert claims["email"] == "p0@uni.example"
    nrps = claims["https://purl.imsglobal.org/spec/lti-nrps/claim/namesroleservice"]
    assert nrps["context_memberships_url"] == lms.nrps_url(context_id)
    ags = claims["https://purl.imsglobal.org/spec/lti-ags/claim/endpoint"]
    assert ags["lineitems"] == lms.lineitems_url(context_id) and SCOPE_SCORE in ags["scope"]


def test_tamper_edits_claims_before_signing(lms: PeerLMS, tool: MiniTool) -> None:
    context_id = course(lms)

    def expired(claims: dict) -> dict:
        return {**claims, "exp": int(time.time()) - 600}

    with httpx.Client() as client:
        response = lms.launch(client, sub=f"sub-{context_id}-0", context_id=context_id, tamper=expired)
    assert response.status_code == 401 and "exp" in response.text


def test_auth_rejects_wrong_redirect_uri(lms: PeerLMS, tool: MiniTool) -> None:
    context_id = course(lms)
    tool.redirect_uri = f"{tool.url}/elsewhere"
    try:
        with httpx.Client() as client:
            response = lms.launch(client, sub=f"sub-{context_id}-0", context_id=context_id)
    finally:
        tool.redirect_uri = f"{tool.url}/launch"
    assert response.status_code == 400 and "redirect_uri" in response.json()["error_description"]


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"client_id": "someone-else"}, "client_id"),
        ({"response_type": "code"}, "response_type"),
        ({"nonce": ""}, "nonce"),
        ({"lti_message_hint": "never-issued"}, "lti_message_hint"),
    ],
)
def test_auth_rejects_bad_requests(lms: PeerLMS, tool: MiniTool, change: dict, complaint: str) -> None:
    context_id = course(lms)
    params = {
        "scope": "openid",
        "response_type": "id_token",
        "response_mode": "form_post",
        "prompt": "none",
        "client_id": lms.client_id,
        "redirect_uri": f"{tool.url}/launch",
        "login_hint": f"sub-{context_id}-0",
        "lti_message_hint": "never-issued",
        "state": "s",
        "nonce": "n",
        **change,
    }
    response = httpx.get(f"{lms.auth_login_url}?{urlencode(params)}")
    assert response.status_code == 400 and complaint in response.json()["error_description"]


def test_token_endpoint_issues_a_token(lms: PeerLMS, tool: MiniTool) -> None:
    before = lms.tokens_issued
    response = httpx.post(lms.token_url, data=tool.token_form(f"{SCOPE_NRPS} https://example.org/unknown-scope"))
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 3600 and body["scope"] == SCOPE_NRPS
    assert lms.tokens_issued == before + 1


@pytest.mark.parametrize(
    "overrides",
    [
        {"aud": "http://127.0.0.1:1/token"},
        {"iss": "someone-else"},
        {"sub": "someone-else"},
        {"exp": int(time.time()) - 60},
        {"jti": None},
        {"key": RSAKey.generate_key(2048, parameters={"kid": "stranger"})},
    ],
    ids=["aud", "iss", "sub", "expired", "no-jti", "unknown-kid"],
)
def test_token_endpoint_rejects_bad_assertions(lms: PeerLMS, tool: MiniTool, overrides: dict) -> None:
    before = lms.tokens_issued
    response = httpx.post(lms.token_url, data=tool.token_form(SCOPE_NRPS, **overrides))
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"
    assert lms.tokens_issued == before


def test_token_endpoint_rejects_forgery_replay_and_bad_forms(lms: PeerLMS, tool: MiniTool) -> None:
    forger = RSAKey.generate_key(2048, parameters={"kid": tool.key.kid})  # the tool's kid, another key
    assert httpx.post(lms.token_url, data=tool.token_form(SCOPE_NRPS, key=forger)).status_code == 401
    form = tool.token_form(SCOPE_NRPS)
    assert httpx.post(lms.token_url, data=form).status_code == 200
    replay = httpx.post(lms.token_url, data=form)
    assert replay.status_code == 401 and "jti" in replay.json()["error_description"]
    wrong_type = {**tool.token_form(SCOPE_NRPS), "client_assertion_type": "password"}
    assert httpx.post(lms.token_url, data=wrong_type).status_code == 400
    wrong_grant = {**tool.token_form(SCOPE_NRPS), "grant_type": "password"}
    assert httpx.post(lms.token_url, data=wrong_grant).json()["error"] == "unsupported_grant_type"
    no_scope = httpx.post(lms.token_url, data=tool.token_form("https://example.org/unknown-scope"))
    assert no_scope.status_code == 400 and no_scope.json()["error"] == "invalid_scope"
    garbage = {**tool.token_form(SCOPE_NRPS), "client_assertion": "not.a.jwt"}
    assert httpx.post(lms.token_url, data=garbage).status_code == 401


def test_token_endpoint_follows_tool_key_rotation(lms: PeerLMS, tool: MiniTool) -> None:
    old = tool.key
    tool.key = RSAKey.generate_key(2048, parameters={"alg": "RS256", "use": "sig"})
    tool.key.ensure_kid()
    try:
        assert httpx.post(lms.token_url, data=tool.token_form(SCOPE_NRPS)).status_code == 200
        assert httpx.post(lms.token_url, data=tool.token_form(SCOPE_NRPS, key=old)).status_code == 401
    finally:
        tool.key = old


def test_services_check_the_bearer_token(lms: PeerLMS, tool: MiniTool) -> None:
    context_id = course(lms)
    url = lms.nrps_url(context_id)
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers=bearer("garbage")).status_code == 401
    assert (
        httpx.get(url, headers=bearer(lms.sign({"iss": lms.issuer, "exp": 2**33, "scopes": SCOPE_NRPS}))).status_code
        == 401
    )
    nrps_only = token(lms, tool, SCOPE_NRPS)
    assert httpx.get(url, headers=bearer(nrps_only)).status_code == 200
    item = {"label": "HW1", "scoreMaximum": 10}
    headers = {**bearer(nrps_only), "Content-Type": MEDIA_LINEITEM}
    refused = httpx.post(lms.lineitems_url(context_id), json=item, headers=headers)
    assert refused.status_code == 403 and refused.json()["error"] == "insufficient_scope"
    lms.expire_tokens()
    assert httpx.get(url, headers=bearer(nrps_only)).status_code == 401


def test_nrps_pages_with_link_next(lms: PeerLMS, tool: MiniTool) -> None:
    context_id = course(lms, members=25)
    lms.enroll(context_id, f"sub-{context_id}-3", ["TeachingAssistant"], status="Inactive")
    headers = {**bearer(token(lms, tool, SCOPE_NRPS)), "Accept": MEDIA_MEMBERSHIPS}
    url: str | None = lms.nrps_url(context_id)
    pages, members = 0, []
    while url:
        response = httpx.get(url, headers=headers)
        assert response.status_code == 200
        assert response.headers["Content-Type"] == MEDIA_MEMBERSHIPS
        members += response.json()["members"]
        pages += 1
        url = response.links.get("next", {}).get("url")
    assert pages == 3 and len({m["user_id"] for m in members}) == 25
    ta = next(m for m in members if m["user_id"] == f"sub-{context_id}-3")
    assert ta["status"] == "Inactive" and ta["roles"] == [LIS_ROLES["TeachingAssistant"]]
    small = httpx.get(lms.nrps_url(context_id), params={"limit": 30}, headers=headers)
    assert len(small.json()["members"]) == 25 and "next" not in small.links
    learners = httpx.get(lms.nrps_url(context_id), params={"role": "Learner", "limit": 100}, headers=headers)
    assert len(learners.json()["members"]) == 24
    assert httpx.get(lms.nrps_url(context_id), params={"limit": "ten"}, headers=headers).status_code == 400
    assert httpx.get(lms.nrps_url("no-such-course"), headers=headers).status_code == 404


def test_ags_line_items_scores_and_results(lms: PeerLMS, tool: MiniTool) -> None:
    context_id = course(lms, members=2)
    auth = bearer(token(lms, tool))
    items_url = lms.lineitems_url(context_id)
    item = {"label": "HW1", "scoreMaximum": 10, "resourceId": "hw1", "tag": "grade"}
    assert httpx.post(items_url, json=item, headers=auth).status_code == 415  # application/json is not the media type
    created = httpx.post(items_url, json=item, headers={**auth, "Content-Type": MEDIA_LINEITEM})
    assert created.status_code == 201 and created.headers["Content-Type"] == MEDIA_LINEITEM
    item_url = created.json()["id"]
    for index in range(11):
        other = {"label": f"Quiz {index}", "scoreMaximum": 1, "resourceId": f"q{index}"}
        httpx.post(items_url, json=other, headers={**auth, "Content-Type": MEDIA_LINEITEM}).raise_for_status()
    found = httpx.get(items_url, params={"resource_id": "hw1"}, headers=auth).json()
    assert [i["id"] for i in found] == [item_url]
    first = httpx.get(items_url, headers=auth)
    assert len(first.json()) == 10 and "next" in first.links
    assert len(httpx.get(first.links["next"]["url"], headers=auth).json()) == 2
    bad_item = httpx.post(
        items_url, json={"label": "x", "scoreMaximum": 0}, headers={**auth, "Content-Type": MEDIA_LINEITEM}
    )
    assert bad_item.status_code == 400

    now = dt.datetime.now(dt.UTC)
    score = {
        "userId": f"sub-{context_id}-0",
        "scoreGiven": 7,
        "scoreMaximum": 10,
        "activityProgress": "Completed",
        "gradingProgress": "FullyGraded",
        "timestamp": now.isoformat(),
    }
    score_headers = {**auth, "Content-Type": MEDIA_SCORE}
    assert httpx.post(f"{item_url}/scores", json=score, headers=auth).status_code == 415
    assert httpx.post(f"{item_url}/scores", json=score, headers=score_headers).status_code == 201
    older = {**score, "scoreGiven": 1, "timestamp": (now - dt.timedelta(minutes=1)).isoformat()}
    assert httpx.post(f"{item_url}/scores", json=older, headers=score_headers).status_code == 409
    stranger = {**score, "userId": "nobody"}
    assert httpx.post(f"{item_url}/scores", json=stranger, headers=score_headers).status_code == 400
    assert httpx.post(f"{items_url}/999/scores", json=score, headers=score_headers).status_code == 404
    assert [s["scoreGiven"] for s in lms.scores(context_id)] == [7]
    assert lms.scores(context_id)[0]["scoreOf"] == item_url

    results = httpx.get(f"{item_url}/results", headers=auth)
    assert results.status_code == 200
    assert [(r["userId"], r["resultScore"]) for r in results.json()] == [(f"sub-{context_id}-0", 7)]


def test_set_down_answers_503(lms: PeerLMS, tool: MiniTool) -> None:
    context_id = course(lms)
    access_token = token(lms, tool, SCOPE_NRPS)
    lms.set_down(True)
    try:
        assert httpx.post(lms.token_url, data=tool.token_form(SCOPE_NRPS)).status_code == 503
        assert httpx.get(lms.nrps_url(context_id), headers=bearer(access_token)).status_code == 503
    finally:
        lms.set_down(False)
    assert httpx.get(lms.nrps_url(context_id), headers=bearer(access_token)).status_code == 200


def test_rotate_key_publishes_a_new_kid(tool: MiniTool, lms: PeerLMS) -> None:
    old_kid = lms.jwks()["keys"][0]["kid"]
    lms.rotate_key()
    published = httpx.get(lms.jwks_url).json()["keys"]
    assert [k["kid"] for k in published] != [old_kid] and len(published) == 1
    context_id = course(lms)
    with httpx.Client() as client:
        response = lms.launch(client, sub=f"sub-{context_id}-0", context_id=context_id)
    assert response.status_code == 200 and response.json()["header"]["kid"] == published[0]["kid"]
