"""Unit tests of LTI 1.3 launch validation, the login store, the tool key and the identity mapping.

Tokens are signed with joserfc by a small platform stand-in whose JWKS is served by a real HTTP server on loopback
(the full LMS peer is used by tests/edu/test_lti.py).
"""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import os
import stat
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from hubfleet.db import open_database
from hubfleet.edu.lti.identity import MAX_USERNAME, IdentityStore, derive_username, normalise
from hubfleet.edu.lti.jwks import PlatformKeys
from hubfleet.edu.lti.keys import ToolKey
from hubfleet.edu.lti.launch import CLAIM, MAX_TOKEN_BYTES, NRPS_CLAIM, Launch, LaunchError, LaunchValidator
from hubfleet.edu.lti.state import InitiationLimits, LoginStore, UsedNonces
from hubfleet.spec.edu import LTIPlatform
from tests.served import JSONServer

ISSUER = "https://lms.example"
CLIENT_ID = "tool-1"
DEPLOYMENT = "dep-1"
INSTRUCTOR = "http://purl.imsglobal.org/vocab/lis/v2/membership#Instructor"
LEARNER = "http://purl.imsglobal.org/vocab/lis/v2/membership#Learner"
TA = "http://purl.imsglobal.org/vocab/lis/v2/membership/Instructor#TeachingAssistant"


class Platform:
    """A platform's key set, served over HTTP by a real server; counts the fetches."""

    def __init__(self) -> None:
        self.key = RSAKey.generate_key(2048, private=True)
        self.kid = "platform-key-1"
        self.server = JSONServer(self.jwks)
        self.jwks_url = f"{self.server.url}/jwks"

    @property
    def fetches(self) -> int:
        return self.server.requests

    def jwks(self) -> dict[str, Any]:
        return {"keys": [{**self.key.as_dict(private=False), "kid": self.kid, "use": "sig", "alg": "RS256"}]}

    def rotate(self) -> None:
        self.key = RSAKey.generate_key(2048, private=True)
        self.kid = f"platform-key-{time.monotonic_ns()}"

    def registration(self) -> LTIPlatform:
        return LTIPlatform(
            label="canvas",
            issuer=ISSUER,
            client_id=CLIENT_ID,
            deployment_ids=[DEPLOYMENT],
            auth_login_url="https://lms.example/auth",
            token_url="https://lms.example/token",
            jwks_url=self.jwks_url,
        )

    def sign(self, claims: dict[str, Any], *, key: RSAKey | None = None, kid: str | None = None, alg: str = "RS256"):
        return jwt.encode({"alg": alg, "kid": kid or self.kid}, claims, key or self.key)


@pytest.fixture(scope="module")
def platform() -> Iterator[Platform]:
    served = Platform()
    yield served
    served.server.close()


class Tool:
    """A validator with fresh stores, plus helpers to start a login and build its id_token's claims."""

    def __init__(self, platform: Platform, leeway: float = 60) -> None:
        self.platform = platform
        self.logins = LoginStore(ttl=600, max_entries=100)
        self.nonces = UsedNonces(ttl=3600, max_entries=1000)
        self.keys = PlatformKeys(min_refresh=0.5)
        self.validator = LaunchValidator([platform.registration()], self.keys, self.logins, self.nonces, leeway=leeway)

    def start(self):
        return self.logins.start(issuer=ISSUER, client_id=CLIENT_ID, target_link_uri="https://hub.example/")

    @staticmethod
    def claims(nonce: str, /, **changes: Any) -> dict[str, Any]:
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "aud": CLIENT_ID,
            "sub": "person-1",
            "exp": now + 300,
            "iat": now,
            "nonce": nonce,
            "name": "Ada Lovelace",
            "email": "Ada.Lovelace@uni.example",
            f"{CLAIM}deployment_id": DEPLOYMENT,
            f"{CLAIM}version": "1.3.0",
            f"{CLAIM}message_type": "LtiResourceLinkRequest",
            f"{CLAIM}target_link_uri": "https://hub.example/",
            f"{CLAIM}roles": [LEARNER],
            f"{CLAIM}resource_link": {"id": "rl-1", "title": "Week 1"},
            f"{CLAIM}context": {"id": "ctx-A", "label": "DS101", "title": "Data Science 101"},
            NRPS_CLAIM: {"context_memberships_url": "https://lms.example/nrps/ctx-A", "service_versions": ["2.0"]},
        }
        for name, value in changes.items():
            full = f"{CLAIM}{name[4:]}" if name.startswith("lti_") else name  # lti_roles: the LTI roles claim
            if value is DROP:
                claims.pop(full, None)
            else:
                claims[full] = value
        return claims

    def launch(self, token: str, login: Any) -> Launch:
        return asyncio.run(self.validator.validate(token, login))

    def refused(self, token: str, login: Any) -> LaunchError:
        with pytest.raises(LaunchError) as caught:
            self.launch(token, login)
        return caught.value


DROP = object()


def test_a_valid_launch_gives_the_person_the_course_and_the_services(platform: Platform) -> None:
    tool = Tool(platform)
    login = tool.start()
    launch = tool.launch(platform.sign(tool.claims(login.nonce)), tool.validator.take_login(login.state))
    assert (launch.issuer, launch.client_id, launch.deployment_id, launch.sub) == (
        ISSUER,
        CLIENT_ID,
        DEPLOYMENT,
        "person-1",
    )
    assert (launch.context_id, launch.context_label, launch.context_title) == ("ctx-A", "DS101", "Data Science 101")
    assert launch.course_role == "student" and launch.resource_link_id == "rl-1"
    assert launch.nrps_url == "https://lms.example/nrps/ctx-A"
    assert launch.email == "Ada.Lovelace@uni.example" and launch.name == "Ada Lovelace"
    assert json.loads(json.dumps(launch.auth_state()))["roles"] == [LEARNER]


@pytest.mark.parametrize(
    ("roles", "role"),
    [([LEARNER], "student"), ([INSTRUCTOR], "instructor"), ([INSTRUCTOR, TA], "ta"), ([TA], "ta"), ([], None)],
)
def test_lis_roles_map_to_course_roles(roles: list[str], role: str | None) -> None:
    launch = Launch(ISSUER, CLIENT_ID, DEPLOYMENT, "s", "LtiResourceLinkRequest", "https://hub/", roles=tuple(roles))
    assert launch.course_role == role


def _expect(error: LaunchError, status: int, words: str) -> None:
    assert error.status == status, error.message
    assert words in error.message, error.message


@pytest.mark.parametrize(
    ("changes", "status", "words"),
    [
        ({"iss": "https://evil.example"}, 401, "issuer"),
        ({"aud": "another-tool"}, 401, "aud"),
        ({"aud": ["another-tool", CLIENT_ID]}, 401, "azp"),
        ({"aud": [CLIENT_ID, "other"], "azp": "other"}, 401, "azp"),
        ({"exp": int(time.time()) - 3600}, 401, "expired"),
        ({"iat": int(time.time()) + 3600}, 401, "future"),
        ({"exp": "tomorrow"}, 401, "exp"),
        ({"nonce": "not-the-login-nonce"}, 401, "nonce"),
        ({"nonce": DROP}, 401, "nonce"),
        ({"lti_deployment_id": "dep-unknown"}, 403, "deployment"),
        ({"lti_deployment_id": DROP}, 400, "deployment"),
        ({"lti_version": "1.1"}, 400, "version"),
        ({"lti_message_type": "LtiDeepLinkingRequest"}, 400, "deep linking"),
        ({"lti_message_type": "Whatever"}, 400, "message type"),
        ({"sub": DROP}, 400, "sub"),
        ({"lti_roles": DROP}, 400, "roles"),
        ({"lti_roles": "Learner"}, 400, "roles"),
        ({"lti_resource_link": DROP}, 400, "resource_link"),
        ({"lti_resource_link": "rl-1"}, 400, "resource_link"),
        ({"lti_target_link_uri": DROP}, 400, "target_link_uri"),
        ({"lti_context": ["ctx"]}, 400, "context"),
    ],
)
def test_wrong_claims_are_refused(platform: Platform, changes: dict[str, Any], status: int, words: str) -> None:
    tool = Tool(platform)
    login = tool.start()
    token = platform.sign(tool.claims(login.nonce, **changes))
    _expect(tool.refused(token, tool.validator.take_login(login.state)), status, words)


def test_timestamps_within_the_leeway_pass(platform: Platform) -> None:
    tool = Tool(platform, leeway=120)
    login = tool.start()
    now = int(time.time())
    token = platform.sign(tool.claims(login.nonce, exp=now - 60, iat=now + 60))
    assert tool.launch(token, tool.validator.take_login(login.state)).sub == "person-1"


def test_a_forged_signature_is_refused(platform: Platform) -> None:
    tool = Tool(platform)
    login = tool.start()
    forged = platform.sign(tool.claims(login.nonce), key=RSAKey.generate_key(2048, private=True))
    _expect(tool.refused(forged, tool.validator.take_login(login.state)), 401, "signature")
    # a valid token with its signature of another token spliced in
    login = tool.start()
    good = platform.sign(tool.claims(login.nonce)).split(".")
    other = platform.sign(tool.claims(login.nonce, sub="person-2")).split(".")
    spliced = ".".join([good[0], other[1], good[2]])
    _expect(tool.refused(spliced, tool.validator.take_login(login.state)), 401, "signature")


@pytest.mark.parametrize("alg", ["HS256", "none", "RS512"])
def test_only_rs256_is_accepted(platform: Platform, alg: str) -> None:
    tool = Tool(platform)
    login = tool.start()
    header = {"alg": alg, "kid": platform.kid}
    body = jwt.encode({"alg": "RS256", "kid": platform.kid}, tool.claims(login.nonce), platform.key).split(".")
    head = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
    _expect(tool.refused(".".join([head, body[1], body[2]]), tool.validator.take_login(login.state)), 401, "RS256")


def test_unknown_kid_is_refused_after_one_refresh_and_floods_are_rate_limited(platform: Platform) -> None:
    tool = Tool(platform)
    login = tool.start()
    tool.launch(platform.sign(tool.claims(login.nonce)), tool.validator.take_login(login.state))
    time.sleep(0.6)  # past the tool's min_refresh: the first unknown kid may refresh the key set
    fetched = platform.fetches
    for number in range(20):
        login = tool.start()
        token = platform.sign(tool.claims(login.nonce), kid=f"made-up-{number}")
        _expect(tool.refused(token, tool.validator.take_login(login.state)), 401, "no key")
    assert platform.fetches - fetched == 1, "one refresh for a flood of unknown kids"


def test_a_rotated_platform_key_is_found_by_refreshing(platform: Platform) -> None:
    tool = Tool(platform)
    login = tool.start()
    tool.launch(platform.sign(tool.claims(login.nonce)), tool.validator.take_login(login.state))
    platform.rotate()
    time.sleep(0.6)  # the tool's min_refresh
    login = tool.start()
    assert tool.launch(platform.sign(tool.claims(login.nonce)), tool.validator.take_login(login.state)).sub


def test_state_is_single_use_and_required(platform: Platform) -> None:
    tool = Tool(platform)
    login = tool.start()
    tool.launch(platform.sign(tool.claims(login.nonce)), tool.validator.take_login(login.state))
    for state in (login.state, None, "", "never-issued", "x" * 10_000):
        with pytest.raises(LaunchError) as caught:
            tool.validator.take_login(state)
        _expect(caught.value, 400, "state")


def test_a_replayed_id_token_is_refused_even_with_a_fresh_state(platform: Platform) -> None:
    tool = Tool(platform)
    login = tool.start()
    token = platform.sign(tool.claims(login.nonce))
    tool.launch(token, tool.validator.take_login(login.state))
    fresh = tool.start()
    _expect(tool.refused(token, tool.validator.take_login(fresh.state)), 401, "already used")


@pytest.mark.parametrize(
    "token",
    [
        "",
        "garbage",
        "a.b.c",
        "a.b",
        "....",
        "\x00\xff",
        "eyJhbGciOiJSUzI1NiJ9.bm90IGpzb24.c2ln",  # payload not JSON
        "eyJhbGciOiJSUzI1NiJ9.WzEsMl0.c2ln",  # payload a JSON list
        "x" * (MAX_TOKEN_BYTES + 1),
    ],
)
def test_garbage_and_oversized_tokens_are_refused_as_bad_requests(platform: Platform, token: str) -> None:
    tool = Tool(platform)
    login = tool.start()
    _expect(tool.refused(token, tool.validator.take_login(login.state)), 400, "id_token")


def test_platform_lookup_for_login_initiation(platform: Platform) -> None:
    tool = Tool(platform)
    assert tool.validator.platform(ISSUER, CLIENT_ID).client_id == CLIENT_ID
    assert tool.validator.platform(ISSUER, None).client_id == CLIENT_ID  # single registration of the issuer
    for issuer, client_id in ((ISSUER, "other"), ("https://evil.example", None)):
        with pytest.raises(LaunchError) as caught:
            tool.validator.platform(issuer, client_id)
        assert caught.value.status == 400


# --------------------------------------------------------------------------------------------- login store


def test_login_store_entries_are_single_use_and_expire() -> None:
    now = [1000.0]
    store = LoginStore(ttl=10, max_entries=5, clock=lambda: now[0])
    first = store.start(issuer=ISSUER, client_id=CLIENT_ID, target_link_uri="t")
    assert store.take(first.state) == first and store.take(first.state) is None
    second = store.start(issuer=ISSUER, client_id=CLIENT_ID, target_link_uri="t")
    now[0] += 11
    assert store.take(second.state) is None
    for _ in range(8):
        store.start(issuer=ISSUER, client_id=CLIENT_ID, target_link_uri="t")
    assert len(store) == 5


def test_100000_abandoned_logins_keep_the_store_bounded() -> None:
    bound = 10_000
    store = LoginStore(ttl=600, max_entries=bound)
    initiation = {"iss": ISSUER, "login_hint": "h" * 64, "target_link_uri": "https://hub.example/", "client_id": "c"}
    gc.collect()
    tracemalloc.start()
    try:
        for _ in range(bound):
            store.start(issuer=ISSUER, client_id=CLIENT_ID, target_link_uri="https://hub", initiation=initiation)
        at_bound, _ = tracemalloc.get_traced_memory()
        for _ in range(100_000 - bound):
            store.start(issuer=ISSUER, client_id=CLIENT_ID, target_link_uri="https://hub", initiation=initiation)
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(store) == bound
    per_login = at_bound / bound
    print(
        f"\nlogin store: {len(store)} entries, {after / 2**20:.1f} MiB after 100,000 starts ({per_login:.0f} B/login)"
    )
    assert after < at_bound * 1.1 + 256 * 1024, "memory stays at what the bound holds"
    assert peak < at_bound * 1.2 + 512 * 1024


def test_used_nonces_are_remembered_for_their_ttl_and_bounded() -> None:
    now = [0.0]
    nonces = UsedNonces(ttl=100, max_entries=3, clock=lambda: now[0])
    assert nonces.add("a") and not nonces.add("a") and "a" in nonces
    now[0] += 101
    assert "a" not in nonces and nonces.add("a")
    for name in "bcdef":
        nonces.add(name)
    assert len(nonces) == 3


# --------------------------------------------------------------------------------------------- tool key


def test_tool_key_is_made_once_private_and_stable(tmp_path: Path) -> None:
    path = tmp_path / "state" / "lti-tool-key.pem"
    first = ToolKey.load_or_create(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again = ToolKey.load_or_create(path)
    assert first.kid == again.kid
    (jwk,) = first.jwks()["keys"]
    assert jwk["kid"] == first.kid and jwk["alg"] == "RS256" and "d" not in jwk and "p" not in jwk
    # what the tool signs verifies with what it publishes
    token = jwt.encode({"alg": "RS256", "kid": first.kid}, {"iss": "tool"}, first.private)
    assert jwt.decode(token, RSAKey.import_key(jwk), algorithms=["RS256"]).claims == {"iss": "tool"}


# --------------------------------------------------------------------------------------------- identities


def test_usernames_are_normalised_by_rule() -> None:
    assert normalise("Zoë O'Brien-Smith") == "zoe-o-brien-smith"
    assert derive_username("email", sub="s1", email="Ada.Lovelace@uni.example") == "ada-lovelace"
    assert derive_username("email", sub="s1", email=None, name="Ada L") == "ada-l"
    assert derive_username("name", sub="s1", email="x@y", name="Ada Lovelace") == "ada-lovelace"
    assert derive_username("sub", sub="A1B2:c3", email="x@y") == "a1b2-c3"
    assert derive_username("email", sub="!!!", email="@uni", name="***") == "user"
    assert len(derive_username("name", sub="s", name="x" * 500)) == MAX_USERNAME


def test_identities_are_durable_and_never_merged(tmp_path: Path) -> None:
    store = IdentityStore(open_database(f"sqlite:///{tmp_path / 'fleet.sqlite'}"))
    ada = store.username_for(ISSUER, "s-1", email="ada@uni.example", rule="email")
    assert ada == "ada"
    # same person again, even with a changed e-mail: same name
    assert store.username_for(ISSUER, "s-1", email="ada.l@uni.example", rule="email") == "ada"
    # another person whose rule gives the same name, on the same or another LMS: numbered, never merged
    assert store.username_for(ISSUER, "s-2", email="ada@other.example", rule="email") == "ada2"
    assert store.username_for("https://other-lms", "s-1", email="ada@x", rule="email") == "ada3"
    # names the hub already uses for someone else are skipped
    assert store.username_for(ISSUER, "s-4", email="bob@x", taken=lambda name: name in {"bob", "bob2"}) == "bob3"
    long_name = "x" * 40
    first = store.username_for(ISSUER, "s-5", name=long_name, rule="name")
    second = store.username_for(ISSUER, "s-6", name=long_name, rule="name")
    assert len(first) == len(second) == MAX_USERNAME and first != second and second.endswith("2")
    assert store.lookup(ISSUER, "s-2") == "ada2" and store.lookup(ISSUER, "nobody") is None


def test_a_full_store_evicts_the_logins_of_the_address_holding_the_most() -> None:
    store = LoginStore(ttl=600, max_entries=50)
    student = store.start(issuer=ISSUER, client_id=CLIENT_ID, target_link_uri="t", client="10.0.0.7")
    for index in range(20_000):  # a flood from a few addresses (each within its rate limit, say)
        store.start(issuer=ISSUER, client_id=CLIENT_ID, target_link_uri="t", client=f"192.0.2.{index % 5}")
    assert len(store) == 50
    assert store.take(student.state) == student


def test_initiation_limits_per_address_and_platform_log_once_per_burst() -> None:
    now = [0.0]
    limits = InitiationLimits(per_address=60, per_platform=100, clock=lambda: now[0])
    verdicts = [limits.check("192.0.2.1", "lms") for _ in range(20_000)]
    assert sum(v.allowed for v in verdicts) == 60
    lines = [v.log for v in verdicts if v.log]
    assert lines == ["LTI login initiations from address 192.0.2.1 over 60/min: refusing them"]
    assert verdicts[-1].retry_after >= 1
    # Another address is let in at once; the platform's own limit still holds for everyone together.
    assert limits.check("198.51.100.9", "lms").allowed
    others = [limits.check(f"203.0.113.{i}", "lms") for i in range(100)]
    assert sum(v.allowed for v in others) == 39
    # A minute later the burst is over: one summary line, and the flooding address may start logins again.
    now[0] += 61
    again = limits.check("192.0.2.1", "lms")
    assert again.allowed
    assert again.log is not None and "19940 from address 192.0.2.1" in again.log


DL_SETTINGS = "https://purl.imsglobal.org/spec/lti-dl/claim/deep_linking_settings"


def test_a_deep_linking_request_is_validated_like_a_launch(platform: Platform) -> None:
    tool = Tool(platform)
    login = tool.start()
    settings = {"deep_link_return_url": "https://lms.example/return", "accept_types": ["ltiResourceLink"], "data": "d"}
    claims = tool.claims(
        login.nonce, lti_message_type="LtiDeepLinkingRequest", lti_resource_link=DROP, lti_roles=[INSTRUCTOR]
    )
    launch = tool.launch(platform.sign(claims | {DL_SETTINGS: settings}), tool.validator.take_login(login.state))
    assert launch.is_deep_linking and launch.deep_linking is not None
    assert launch.deep_linking.return_url == "https://lms.example/return" and launch.deep_linking.data == "d"
    assert launch.resource_link_id is None and launch.auth_state()["deep_linking"] is None
    # without its settings, a deep linking request cannot be answered
    login = tool.start()
    token = platform.sign(tool.claims(login.nonce, lti_message_type="LtiDeepLinkingRequest"))
    _expect(tool.refused(token, tool.validator.take_login(login.state)), 400, "deep linking")


@pytest.mark.parametrize(
    ("custom", "status"),
    [({"notebook": "a.ipynb", "points": 3, "graded": True}, None), (["x"], 400), ({"k": {"nested": 1}}, 400)],
)
def test_custom_parameters_are_kept_as_strings(platform: Platform, custom: Any, status: int | None) -> None:
    tool = Tool(platform)
    login = tool.start()
    token = platform.sign(tool.claims(login.nonce, lti_custom=custom))
    if status is None:
        launch = tool.launch(token, tool.validator.take_login(login.state))
        assert launch.custom == {"notebook": "a.ipynb", "points": "3", "graded": "true"}
    else:
        _expect(tool.refused(token, tool.validator.take_login(login.state)), status, "custom")
