"""LTI 1.3 launches end to end: the real LMS peer (lti1p3platform, tests/lms/peer.py) launches people into a real
hub of a real fleet, through the front door; servers really start, JupyterHub's RBAC really answers.

One module-scoped fleet (one hub with shared-password login plus `lti:`, one fleet-file course linked to the LMS
course ctx-A) serves every test here; the https cookie attributes need a fleet of their own (last test).
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from joserfc.jwk import RSAKey

from hubfleet.edu.lti.launch import CLAIM, MAX_TOKEN_BYTES
from hubfleet.hub.authenticators.lti import STATE_COOKIE_PREFIX, ToolURLs
from tests.helpers import RunningFleet, running_fleet, unique_hub, wait_until
from tests.lms.courses import lti_hub_yaml
from tests.lms.peer import LIS_ROLES, PeerLMS

H = unique_hub("lti")
PASSWORD = "lti-test-password"
READY_TIMEOUT = 180.0

PEOPLE = {  # sub → (name, e-mail); the hub's names come from the e-mails' local parts
    "s-ada": ("Ada Lovelace", "ada@uni.example"),
    "s-tim": ("Tim Berners", "tim@uni.example"),
    "s-ian": ("Ian Newton", "ian@uni.example"),
    "s-bea": ("Bea Curie", "bea@uni.example"),
    "s-sam": ("Sam Nobody", "sam@uni.example"),
    "s-cy": ("Cy Roster", "cy@uni.example"),  # never launches: arrives through the roster sync
}
ENROLMENTS = [  # context, sub, role
    ("ctx-A", "s-ada", "Learner"),
    ("ctx-A", "s-tim", "TeachingAssistant"),
    ("ctx-B", "s-ian", "Instructor"),
    ("ctx-B", "s-bea", "Learner"),
    ("ctx-B", "s-cy", "Learner"),
    ("ctx-C", "s-sam", "Learner"),
]


def hub_yaml(lms: PeerLMS) -> str:
    courses = """\
        - name: ds101
          title: Data Science 101
          roster: lms
          lms_context: ctx-A
        """
    lti = """\
        username: email
        initiations_per_address: 100000  # this module's tests start many logins from one address
        initiations_per_platform: 100000
        """
    return lti_hub_yaml(H, PASSWORD, lms, courses, admins=("boss",), profile=False, lti=lti)


@pytest.fixture(scope="module")
def lms() -> Iterator[PeerLMS]:
    with PeerLMS(label="canvas", client_id="hubfleet-tool", deployment_id="dep-1") as peer:
        for sub, (name, email) in PEOPLE.items():
            peer.add_person(sub, name=name, email=email)
        peer.add_course("ctx-A", title="Data Science 101", label="DS101")
        peer.add_course("ctx-B", title="Physics Two", label="PHYS 2")
        peer.add_course("ctx-C", title="Unlinked", label="NOPE")
        for context, sub, role in ENROLMENTS:
            peer.enroll(context, sub, [role])
        yield peer


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, lms: PeerLMS) -> Iterator[RunningFleet]:
    root = tmp_path_factory.mktemp("lti")
    with running_fleet(root, hub_yaml(lms), [H], PASSWORD) as running:
        urls = ToolURLs.of(running.hub_url(H))
        lms.set_tool(login_url=urls.login, launch_url=urls.launch, jwks_url=urls.jwks)
        running.extra["urls"] = urls
        yield running


def urls_of(fleet: RunningFleet) -> ToolURLs:
    return fleet.extra["urls"]


def api(fleet: RunningFleet, path: str) -> httpx.Response:
    """GET on the hub's REST API with the fleet's service token."""
    return fleet.hub_api(H, "GET", path, timeout=30)


def user_model(fleet: RunningFleet, name: str) -> dict | None:
    response = api(fleet, f"users/{name}")
    return None if response.status_code == 404 else response.raise_for_status().json()


def hub_state(fleet: RunningFleet) -> tuple[set[str], set[str]]:
    """Every user name and group name of the hub."""
    users = {user["name"] for user in api(fleet, "users").raise_for_status().json()}
    groups = {group["name"] for group in api(fleet, "groups").raise_for_status().json()}
    return users, groups


def client() -> httpx.Client:
    return httpx.Client(timeout=READY_TIMEOUT)


def launch_into_server(fleet: RunningFleet, lms: PeerLMS, sub: str, context: str) -> tuple[httpx.Client, str, str]:
    """A launch, followed as a browser would until the user's server runs; (client, user name, landing URL)."""
    browser = client()
    name, landing = fleet.follow_to_server(H, browser, lms.launch(browser, sub=sub, context_id=context), READY_TIMEOUT)
    return browser, name, landing


@pytest.fixture(scope="module")
def launched(fleet: RunningFleet, lms: PeerLMS) -> dict[str, tuple[httpx.Client, str, str]]:
    """Ada (learner, linked course A), Ian (instructor, new course B) and Bea (learner, B) launched, servers up."""
    return {
        sub: launch_into_server(fleet, lms, sub, context)
        for sub, context in [
            ("s-ada", "ctx-A"),
            ("s-ian", "ctx-B"),
            ("s-bea", "ctx-B"),
        ]
    }


def test_learner_and_instructor_land_on_their_servers_in_their_courses(
    fleet: RunningFleet, launched: dict[str, tuple[httpx.Client, str, str]]
) -> None:
    _ada_browser, ada, ada_landing = launched["s-ada"]
    _ian_browser, ian, ian_landing = launched["s-ian"]
    assert (ada, ian) == ("ada", "ian")
    assert ada_landing == f"/hubs/{H}/user/ada/lab/tree/courses/ds101"
    assert ian_landing == f"/hubs/{H}/user/ian/lab/tree/courses/phys-2"

    ada_model = user_model(fleet, "ada")
    assert ada_model is not None and "ds101-students" in ada_model["groups"]
    assert ada_model["auth_state"]["lti"]["context_id"] == "ctx-A"
    assert ada_model["auth_state"]["lti"]["email"] == "ada@uni.example"
    ian_model = user_model(fleet, "ian")
    assert ian_model is not None and ian_model["groups"] == ["phys-2-instructors"]
    course_b = api(fleet, "groups/phys-2-students").raise_for_status().json()
    assert course_b["properties"]["lti_context"] == "ctx-B" and course_b["properties"]["title"] == "Physics Two"
    assert course_b["properties"]["roster"] == "lms"
    assert "bea" in course_b["users"]

    for browser, name, landing in (launched["s-ada"], launched["s-ian"]):
        page = browser.get(f"{fleet.url}{landing}", follow_redirects=True)
        assert page.status_code == 200, (name, page.status_code, str(page.url))
        assert f"/user/{name}/lab" in str(page.url)
        folder = landing.split("/lab/tree/", 1)[1]
        contents = browser.get(f"{fleet.hub_url(H)}user/{name}/api/contents/{folder}")
        assert contents.status_code == 200 and contents.json()["type"] == "directory", contents.text[:300]


def test_a_second_launch_keeps_the_user_and_the_course(
    fleet: RunningFleet, lms: PeerLMS, launched: dict[str, tuple[httpx.Client, str, str]]
) -> None:
    with client() as browser:
        response = lms.launch(browser, sub="s-ian", context_id="ctx-B", resource_link_id="rl-2")
    assert response.status_code == 302
    assert "/spawn/ian?" in response.headers["location"]
    _, groups = hub_state(fleet)
    assert not any(group.startswith("phys-2-2") for group in groups)


def test_an_instructors_launch_syncs_the_roster_in_the_background(
    fleet: RunningFleet, lms: PeerLMS, launched: dict[str, tuple[httpx.Client, str, str]]
) -> None:
    """Cy never launched: the roster sync after Ian's launch (NRPS, with the tool's signed token) added them."""

    def students() -> set[str]:
        return set(api(fleet, "groups/phys-2-students").raise_for_status().json()["users"])

    wait_until(lambda: "cy" in students(), 60, "cy in the course after the roster sync", every=0.25)
    assert students() == {"bea", "cy"}
    assert lms.tokens_issued >= 1


def test_instructors_see_only_their_course_and_tas_get_403_elsewhere(
    fleet: RunningFleet, lms: PeerLMS, launched: dict[str, tuple[httpx.Client, str, str]]
) -> None:
    ian_browser, _, _ = launched["s-ian"]
    listed = ian_browser.get(f"{fleet.hub_url(H)}hub/api/users")
    assert listed.status_code == 200, listed.text[:300]
    seen = {user["name"] for user in listed.json()}
    members = api(fleet, "groups/phys-2-students").json()["users"]
    cy = ian_browser.get(f"{fleet.hub_url(H)}hub/api/users/cy")
    cy_model = user_model(fleet, "cy")
    assert {"bea", "cy"} <= seen <= {"ian", "bea", "cy"}, (seen, members, cy.status_code, cy.text[:300], cy_model)
    # the instructor of B opens the server of B's student (the server's OAuth login with the hub grants it) ...
    assert open_server(ian_browser, fleet, "bea") == 200
    # ... a TA of A does not (the hub refuses the OAuth authorization), but reaches A's student's server
    with client() as tim_browser:
        response = lms.launch(tim_browser, sub="s-tim", context_id="ctx-A")
        assert response.status_code == 302
        tim = user_model(fleet, "tim")
        assert tim is not None and tim["groups"] == ["ds101-tas"]
        assert open_server(tim_browser, fleet, "bea") == 403
        assert open_server(tim_browser, fleet, "ada") == 200


def open_server(browser: httpx.Client, fleet: RunningFleet, owner: str) -> int:
    """Open `owner`'s JupyterLab as a browser would: the hub asks the viewer to authorize the server's OAuth client
    (the form is submitted), then the page. The final status (403 when the hub refuses)."""
    page = browser.get(f"{fleet.hub_url(H)}user/{owner}/lab", follow_redirects=True)
    if page.status_code == 200 and "oauth2/authorize" in page.url.path:
        fields: dict[str, list[str]] = {}
        for name, value in re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', page.text):
            fields.setdefault(name, []).append(html.unescape(value))
        page = browser.post(page.url, data=fields, follow_redirects=True)
    if page.status_code == 200:
        assert f"/user/{owner}/lab" in page.url.path, page.url
    return page.status_code


def test_a_learner_of_an_unlinked_lms_course_gets_a_clear_403(fleet: RunningFleet, lms: PeerLMS) -> None:
    before = hub_state(fleet)
    with client() as browser:
        response = lms.launch(browser, sub="s-sam", context_id="ctx-C")
    assert response.status_code == 403
    assert "not linked to a course on this hub" in response.text
    assert hub_state(fleet) == before


# --------------------------------------------------------------------------------------------- refusals


def initiate(browser: httpx.Client, fleet: RunningFleet, lms: PeerLMS, sub: str) -> tuple[str, str]:
    """A login initiation as the LMS starts it; (state, nonce) from the redirect to the platform."""
    urls = urls_of(fleet)
    response = browser.get(
        urls.login,
        params={
            "iss": lms.issuer,
            "login_hint": sub,
            "target_link_uri": urls.launch,
            "client_id": lms.client_id,
            "lti_deployment_id": lms.deployment_id,
        },
    )
    assert response.status_code == 302, response.text[:300]
    query = parse_qs(urlparse(response.headers["location"]).query)
    return query["state"][0], query["nonce"][0]


def claims_for(lms: PeerLMS, sub: str, nonce: str, context: str = "ctx-A") -> dict[str, Any]:
    """The claims of a valid resource link launch of `sub` (as the peer would make them)."""
    name, email = PEOPLE.get(sub, ("Someone New", f"{sub}@uni.example"))
    now = int(time.time())
    return {
        "iss": lms.issuer,
        "aud": lms.client_id,
        "azp": lms.client_id,
        "sub": sub,
        "iat": now,
        "exp": now + 300,
        "nonce": nonce,
        "name": name,
        "email": email,
        f"{CLAIM}deployment_id": lms.deployment_id,
        f"{CLAIM}version": "1.3.0",
        f"{CLAIM}message_type": "LtiResourceLinkRequest",
        f"{CLAIM}target_link_uri": "ignored-by-the-tool",
        f"{CLAIM}roles": [LIS_ROLES["Learner"]],
        f"{CLAIM}resource_link": {"id": "rl-1"},
        f"{CLAIM}context": {"id": context, "label": "DS101"},
    }


def post_launch(browser: httpx.Client, fleet: RunningFleet, form: dict[str, str]) -> httpx.Response:
    return browser.post(urls_of(fleet).launch, data=form)


def stranger(fleet: RunningFleet, lms: PeerLMS, label: str) -> str:
    """A new LMS person enrolled as a learner in course A (their hub name would be `label`)."""
    sub = f"s-{label}"
    lms.add_person(sub, name=label.title(), email=f"{label}@uni.example")
    lms.enroll("ctx-A", sub, ["Learner"])
    return sub


def _now() -> int:
    return int(time.time())


TAMPERED: dict[str, tuple[Callable[[dict], dict], int]] = {
    "wrong-iss": (lambda c: c | {"iss": "https://evil.example"}, 401),
    "wrong-aud": (lambda c: c | {"aud": "another-tool"}, 401),
    "azp-mismatch": (lambda c: c | {"aud": [c["aud"], "another-tool"], "azp": "another-tool"}, 401),
    "expired": (lambda c: c | {"iat": _now() - 7200, "exp": _now() - 3600}, 401),
    "iat-in-future": (lambda c: c | {"iat": _now() + 3600, "exp": _now() + 4000}, 401),
    "unknown-deployment": (lambda c: c | {f"{CLAIM}deployment_id": "dep-unknown"}, 403),
    "wrong-version": (lambda c: c | {f"{CLAIM}version": "1.1.0"}, 400),
    "deep-linking": (lambda c: c | {f"{CLAIM}message_type": "LtiDeepLinkingRequest"}, 400),
    "missing-roles": (lambda c: {k: v for k, v in c.items() if k != f"{CLAIM}roles"}, 400),
    "missing-resource-link": (lambda c: {k: v for k, v in c.items() if k != f"{CLAIM}resource_link"}, 400),
    "missing-sub": (lambda c: {k: v for k, v in c.items() if k != "sub"}, 400),
    "missing-nonce": (lambda c: {k: v for k, v in c.items() if k != "nonce"}, 401),
}


@pytest.mark.parametrize("case", sorted(TAMPERED))
def test_tampered_launches_are_refused_and_create_nothing(fleet: RunningFleet, lms: PeerLMS, case: str) -> None:
    tamper, status = TAMPERED[case]
    sub = stranger(fleet, lms, f"t{sorted(TAMPERED).index(case)}x")
    before = hub_state(fleet)
    with client() as browser:
        response = lms.launch(browser, sub=sub, context_id="ctx-A", tamper=tamper)
    assert response.status_code == status, (case, response.status_code, response.text[:300])
    assert hub_state(fleet) == before


def test_forged_and_unknown_key_signatures_are_refused(fleet: RunningFleet, lms: PeerLMS) -> None:
    sub = stranger(fleet, lms, "forger")
    other_key = RSAKey.generate_key(2048, private=True)
    before = hub_state(fleet)
    with client() as browser:
        for kid in (lms.jwks()["keys"][0]["kid"], "no-such-kid"):  # our kid with another key; an unknown kid
            state, nonce = initiate(browser, fleet, lms, sub)
            token = lms.sign(claims_for(lms, sub, nonce), key=other_key, kid=kid)
            response = post_launch(browser, fleet, {"id_token": token, "state": state})
            assert response.status_code == 401, (kid, response.text[:300])
    assert hub_state(fleet) == before


def test_replays_missing_state_and_garbage_are_refused(fleet: RunningFleet, lms: PeerLMS) -> None:
    sub = stranger(fleet, lms, "replayer")
    with client() as browser:
        state, nonce = initiate(browser, fleet, lms, sub)
        token = lms.sign(claims_for(lms, sub, nonce))
        assert post_launch(browser, fleet, {"id_token": token, "state": state}).status_code == 302  # valid once
        before = hub_state(fleet)
        replayed_state = post_launch(browser, fleet, {"id_token": token, "state": state})
        assert replayed_state.status_code == 400 and "state" in replayed_state.text
        fresh_state, _ = initiate(browser, fleet, lms, sub)
        replayed_nonce = post_launch(browser, fleet, {"id_token": token, "state": fresh_state})
        assert replayed_nonce.status_code == 401 and "nonce" in replayed_nonce.text
        assert post_launch(browser, fleet, {"id_token": token}).status_code == 400
        for garbage in ("", "garbage", "a.b.c", "x" * (MAX_TOKEN_BYTES + 1), token[: len(token) // 2]):
            fresh_state, _ = initiate(browser, fleet, lms, sub)
            response = post_launch(browser, fleet, {"id_token": garbage, "state": fresh_state})
            assert response.status_code in (400, 401), (garbage[:20], response.status_code)
        assert browser.get(urls_of(fleet).launch).status_code == 405
    assert hub_state(fleet) == before


def test_login_initiation_refuses_unknown_platforms_and_foreign_targets(fleet: RunningFleet, lms: PeerLMS) -> None:
    urls = urls_of(fleet)
    good = {"iss": lms.issuer, "login_hint": "x", "target_link_uri": urls.launch, "client_id": lms.client_id}
    for changes, status in (
        ({"iss": "https://evil.example"}, 400),
        ({"client_id": "someone-else"}, 400),
        ({"target_link_uri": "https://evil.example/phish"}, 400),
        ({"lti_deployment_id": "dep-unknown"}, 403),
        ({"login_hint": ""}, 400),
    ):
        assert httpx.get(urls.login, params=good | changes).status_code == status, changes
    assert httpx.post(urls.login, data=good).status_code == 302  # POST initiation works too


def test_a_browser_that_does_not_send_the_state_cookie_is_offered_a_new_window(
    fleet: RunningFleet, lms: PeerLMS
) -> None:
    """An LMS iframe with third-party cookies blocked: the launch POST arrives without the login's cookie."""
    sub = stranger(fleet, lms, "framed")
    with client() as initiating:
        state, nonce = initiate(initiating, fleet, lms, sub)
    before = hub_state(fleet)
    with client() as framed:  # a browser context without the tool's cookies
        response = post_launch(framed, fleet, {"id_token": lms.sign(claims_for(lms, sub, nonce)), "state": state})
    assert response.status_code == 401
    assert 'target="_blank"' in response.text and "new window" in response.text
    assert urls_of(fleet).login in response.text
    assert "frame-ancestors *" in response.headers["content-security-policy"]
    assert hub_state(fleet) == before


def test_state_cookie_attributes_on_http(fleet: RunningFleet, lms: PeerLMS) -> None:
    with client() as browser:
        initiate(browser, fleet, lms, "s-ada")
        (cookie,) = [c for c in browser.cookies.jar if c.name.startswith(STATE_COOKIE_PREFIX)]
    assert cookie.path == f"/hubs/{H}/hub/lti13/"
    assert not cookie.secure  # http: browsers refuse SameSite=None without Secure, so it is not set


def test_tool_jwks_and_configuration(fleet: RunningFleet) -> None:
    urls = urls_of(fleet)
    (key,) = httpx.get(urls.jwks).raise_for_status().json()["keys"]
    assert key["kty"] == "RSA" and key["alg"] == "RS256" and key["kid"] and "d" not in key
    config = httpx.get(urls.config).raise_for_status().json()
    assert config["tool"]["login_initiation_url"] == urls.login and config["tool"]["jwks_url"] == urls.jwks
    assert config["moodle"]["public_keyset"] == urls.jwks and config["openedx"]["tool_launch_url"] == urls.launch
    canvas = httpx.get(urls.canvas).raise_for_status().json()
    assert canvas["oidc_initiation_url"] == urls.login and canvas["public_jwk_url"] == urls.jwks
    assert canvas["target_link_uri"] == urls.launch
    key_file = fleet.state_dir / "hubs" / H / "lti-tool-key.pem"
    assert key_file.stat().st_mode & 0o777 == 0o600


# --------------------------------------------------------------------------------------------- fuzz

TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=300)
BASE64URL = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_="
JWTISH = st.lists(st.text(BASE64URL, max_size=400), min_size=1, max_size=5)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    method=st.sampled_from(["GET", "POST"]),
    params=st.dictionaries(
        st.sampled_from(["iss", "login_hint", "target_link_uri", "client_id", "lti_deployment_id", "lti_message_hint"])
        | TEXT,
        TEXT,
        max_size=7,
    ),
    real_issuer=st.booleans(),
)
def test_fuzzed_login_initiations_never_fail_with_500(
    fleet: RunningFleet, lms: PeerLMS, method: str, params: dict[str, str], real_issuer: bool
) -> None:
    urls = urls_of(fleet)
    if real_issuer:
        params = {"iss": lms.issuer, "target_link_uri": urls.launch, "login_hint": "x"} | params
    response = httpx.get(urls.login, params=params) if method == "GET" else httpx.post(urls.login, data=params)
    assert response.status_code < 500, (params, response.status_code, response.text[:300])


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    token=st.one_of(TEXT, JWTISH.map(".".join)),
    claims=st.dictionaries(
        st.sampled_from(["iss", "aud", "azp", "sub", "exp", "iat", "nonce", f"{CLAIM}roles", f"{CLAIM}context"]),
        st.one_of(TEXT, st.integers(), st.none(), st.lists(TEXT, max_size=3), st.dictionaries(TEXT, TEXT, max_size=3)),
        max_size=5,
    ),
    signed=st.booleans(),
    real_state=st.booleans(),
)
def test_fuzzed_launches_never_fail_with_500(
    fleet: RunningFleet, lms: PeerLMS, token: str, claims: dict[str, Any], signed: bool, real_state: bool
) -> None:
    with client() as browser:
        state, nonce = initiate(browser, fleet, lms, "s-fuzz") if real_state else ("fuzz", "fuzz")
        if signed:  # properly signed by the platform, with fuzzed claims over a valid launch's
            token = lms.sign(claims_for(lms, "s-fuzz", nonce) | claims)
        response = post_launch(browser, fleet, {"id_token": token, "state": state})
    assert response.status_code < 500, (claims, response.status_code, response.text[:300])
