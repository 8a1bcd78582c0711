"""LTI 1.3 launch validation throughput: hubfleet's validator against jupyterhub-ltiauthenticator 1.6.3, same run.

Usage (from the repository root; no root needed, nothing is started but a loopback JWKS server):

    .venv/bin/python bench/lti.py [--launches N] [--out bench/results/lti.json]

What is compared, exactly. N resource link launches are signed once (RS256, 2048-bit platform key, the claims an
LMS sends: iss, aud, azp, sub, iat, exp, nonce, name, email, deployment_id, version, message_type, target_link_uri,
roles, context, resource_link, NRPS claim), each with its own nonce; the platform's JWKS is served over HTTP on
127.0.0.1. Then each implementation validates the same N tokens, one after the other on one thread, in
alternating rounds (hubfleet, ltiauthenticator, hubfleet, …); a launch counts when validation accepts it.

- **hubfleet**: `LaunchValidator.validate(id_token, login)` (hubfleet.edu.lti.launch), as the launch handler calls
  it after taking the login's server-side state: header and claims parsed, registration looked up, `aud`/`azp`,
  RS256 signature with the platform key from the JWKS cache (warm: fetched once before the rounds), `exp`/`iat`
  with leeway, nonce matched to the login and recorded as used (replay memory), deployment, version, message type,
  required claims, and the typed `Launch` built.
- **ltiauthenticator** (`LTI13CallbackHandler.decode_and_validate_launch_request` of 1.6.3, step by step):
  `validate_auth_response(args)`, `verify_and_decode_jwt(...)` with the authenticator's issuer, client_id set,
  JWKS endpoint and `["RS256"]`, `validate_id_token`, `validate_azp_claim`, then its `check_nonce` comparison
  (sha256 of the nonce state cookie's value against the token's nonce). Its handler creates a new
  `jwt.PyJWKClient` per launch, which fetches the JWKS over HTTP every time. Two variants are measured:
  `ltiauthenticator (warm JWKS)`: one PyJWKClient, warmed before the rounds, reused (its validation with a warm
  cache, like hubfleet's: **the headline ratio**; PyJWKClient's defaults, as its handler constructs it: the JWKS
  document is cached, the key is parsed from it on each call), and `ltiauthenticator (as shipped)`: a new
  PyJWKClient per launch, as its handler does (one JWKS GET per launch).

Each round is timed by the wall clock and by the CPU time of the validating thread (`time.thread_time`): on a
busy machine other processes stretch the wall clock of both sides alike, while the CPU time is what the validation
itself costs; the headline is the CPU-time ratio against the warm variant. Neither side's state check is timed
(hubfleet: a dict pop; ltiauthenticator: a signed-cookie comparison), nor the JupyterHub login that follows
validation. See bench/README.md for the house rules (same machine, same run, ratios).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import hashlib
import secrets
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any
from unittest import mock

import jwt as pyjwt
from common import REPO, BenchError, command_output, log, log_table_header, machine_info, write_results
from joserfc import jwt
from joserfc.jwk import RSAKey

from hubfleet.edu.lti.jwks import PlatformKeys
from hubfleet.edu.lti.launch import CLAIM, NRPS_CLAIM, LaunchValidator
from hubfleet.edu.lti.state import LoginStore, PendingLogin, UsedNonces
from hubfleet.spec.edu import LTIPlatform
from tests.served import JSONServer

DEFAULT_OUT = REPO / "bench" / "results" / "lti.json"
ISSUER = "https://lms.bench.example"
CLIENT_ID = "hubfleet-bench"
DEPLOYMENT = "dep-bench"
KID = "bench-platform-key"
LEARNER = "http://purl.imsglobal.org/vocab/lis/v2/membership#Learner"
BASELINE_VERSION = "1.6.3"
WARM = "ltiauthenticator (warm JWKS)"
SHIPPED = "ltiauthenticator (as shipped)"


@dataclass(frozen=True)
class SignedLaunch:
    token: str
    nonce_state: str
    """ltiauthenticator's nonce state (its cookie); the token's nonce is sha256(nonce_state), as it requires."""

    @property
    def nonce(self) -> str:
        return hashlib.sha256(self.nonce_state.encode()).hexdigest()


@contextlib.contextmanager
def jwks_server(key: RSAKey) -> Iterator[JSONServer]:
    """The platform's JWKS on http://127.0.0.1:<port>/jwks (the server counts the requests)."""
    jwks = {"keys": [{**key.as_dict(private=False), "kid": KID, "use": "sig", "alg": "RS256"}]}
    with contextlib.closing(JSONServer(lambda: jwks)) as server:
        yield server


def sign_launches(key: RSAKey, count: int) -> list[SignedLaunch]:
    launches = []
    for number in range(count):
        state = secrets.token_urlsafe(48)
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "aud": CLIENT_ID,
            "azp": CLIENT_ID,
            "sub": f"person-{number}",
            "iat": now,
            "exp": now + 3600,
            "nonce": hashlib.sha256(state.encode()).hexdigest(),
            "name": f"Person {number}",
            "email": f"person{number}@uni.example",
            f"{CLAIM}deployment_id": DEPLOYMENT,
            f"{CLAIM}version": "1.3.0",
            f"{CLAIM}message_type": "LtiResourceLinkRequest",
            f"{CLAIM}target_link_uri": "https://hub.example/hubs/h/hub/lti13/launch",
            f"{CLAIM}roles": [LEARNER],
            f"{CLAIM}context": {"id": "ctx-1", "label": "DS101", "title": "Data Science 101"},
            f"{CLAIM}resource_link": {"id": "rl-1"},
            NRPS_CLAIM: {"context_memberships_url": "https://lms.bench.example/nrps", "service_versions": ["2.0"]},
        }
        launches.append(SignedLaunch(jwt.encode({"alg": "RS256", "kid": KID, "typ": "JWT"}, claims, key), state))
    return launches


@dataclass(frozen=True)
class Timing:
    """One round: wall-clock seconds, and CPU seconds of the validating thread (what other processes on a busy
    machine take from it does not count; the JWKS server thread is not counted either)."""

    wall: float
    cpu: float

    @classmethod
    def since(cls, wall: float, cpu: float) -> Timing:
        return cls(time.perf_counter() - wall, time.thread_time() - cpu)


def hubfleet_round(jwks_url: str, launches: list[SignedLaunch], keys: PlatformKeys) -> Timing:
    """Seconds hubfleet's validator takes for every launch (fresh login and nonce memories, warm key cache)."""
    platform = LTIPlatform(
        label="other",
        issuer=ISSUER,
        client_id=CLIENT_ID,
        deployment_ids=[DEPLOYMENT],
        auth_login_url="https://lms.bench.example/auth",
        token_url="https://lms.bench.example/token",
        jwks_url=jwks_url,
    )
    nonces = UsedNonces(ttl=3600, max_entries=10 * len(launches))
    validator = LaunchValidator([platform], keys, LoginStore(ttl=600, max_entries=10), nonces, leeway=60)
    logins = [
        PendingLogin(f"state-{i}", launch.nonce, ISSUER, CLIENT_ID, "https://hub.example/", 0.0)
        for i, launch in enumerate(launches)
    ]

    async def run() -> Timing:
        wall, cpu = time.perf_counter(), time.thread_time()
        for launch, login in zip(launches, logins, strict=True):
            await validator.validate(launch.token, login)
        return Timing.since(wall, cpu)

    return asyncio.run(run())


def ltiauthenticator_round(jwks_url: str, launches: list[SignedLaunch], shared_client: Any | None) -> Timing:
    """Seconds ltiauthenticator 1.6.3's launch validation takes for every launch (see the module docstring)."""
    from ltiauthenticator.lti13 import validator as lti_validator
    from ltiauthenticator.lti13.handlers import get_nonce
    from ltiauthenticator.lti13.validator import LTI13LaunchValidator

    validator = LTI13LaunchValidator()
    validator.time_leeway = 60
    audience = {CLIENT_ID}

    def validate_one(launch: SignedLaunch) -> None:
        args = {"id_token": launch.token, "state": "state"}
        validator.validate_auth_response(args)
        id_token = validator.verify_and_decode_jwt(
            encoded_jwt=args["id_token"],
            issuer=ISSUER,
            audience=audience,
            jwks_endpoint=jwks_url,
            jwks_algorithms=["RS256"],
        )
        validator.validate_id_token(id_token)
        validator.validate_azp_claim(id_token, audience)
        if get_nonce(launch.nonce_state) != id_token.get("nonce"):
            raise BenchError("ltiauthenticator: nonce mismatch")

    # The warm variant: the handler's per-launch `jwt.PyJWKClient(...)` hands out one client, warmed beforehand.
    warm: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
    if shared_client is not None:
        warm = mock.patch.object(lti_validator.jwt, "PyJWKClient", lambda *args, **kwargs: shared_client)
    with warm:
        wall, cpu = time.perf_counter(), time.thread_time()
        for launch in launches:
            validate_one(launch)
        return Timing.since(wall, cpu)


def measure(launch_count: int, rounds: int) -> dict[str, Any]:
    key = RSAKey.generate_key(2048, private=True)
    log(f"signing {launch_count} launches …")
    launches = sign_launches(key, launch_count)
    with jwks_server(key) as served:
        jwks_url = f"{served.url}/jwks"
        keys = PlatformKeys()
        asyncio.run(keys.key(jwks_url, KID))  # warm hubfleet's cache
        shared = pyjwt.PyJWKClient(jwks_url)
        shared.get_signing_key(KID)  # warm ltiauthenticator's shared client
        setups: dict[str, Callable[[], Timing]] = {
            "hubfleet": lambda: hubfleet_round(jwks_url, launches, keys),
            WARM: lambda: ltiauthenticator_round(jwks_url, launches, shared),
            SHIPPED: lambda: ltiauthenticator_round(jwks_url, launches, None),
        }
        timings: dict[str, list[Timing]] = {name: [] for name in setups}
        fetches = dict.fromkeys(setups, 0)
        for number in range(rounds):
            log(f"round {number + 1}/{rounds}")
            for name, run in setups.items():
                before = served.requests
                timings[name].append(run())
                fetches[name] += served.requests - before
    summary = {name: rates(launch_count, values) for name, values in timings.items()}
    ratios = {
        f"{clock}_vs_{label}": round(
            summary["hubfleet"][f"{clock}_launches_per_second_median"]
            / summary[baseline][f"{clock}_launches_per_second_median"],
            2,
        )
        for clock in ("wall", "cpu")
        for label, baseline in (("warm", WARM), ("as_shipped", SHIPPED))
    }
    return {"setups": summary, "ratios": ratios, "jwks_fetches_during_rounds": fetches}


def rates(launch_count: int, values: list[Timing]) -> dict[str, Any]:
    """Launches per second of each round and their median, by wall clock and by the thread's CPU time."""
    out: dict[str, Any] = {}
    for clock in ("wall", "cpu"):
        per_second = [launch_count / getattr(value, clock) for value in values]
        out[f"{clock}_launches_per_second_median"] = round(statistics.median(per_second), 1)
        out[f"{clock}_launches_per_second_rounds"] = [round(value, 1) for value in per_second]
    out["wall_microseconds_per_launch_median"] = round(1e6 / out["wall_launches_per_second_median"], 1)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--launches", "-n", type=int, default=1000, help="signed launches per round (default 1000)")
    parser.add_argument("--rounds", "-r", type=int, default=5, help="rounds per setup, alternating (default 5)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON results (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    if args.launches < 1 or args.rounds < 1:
        parser.error("--launches and --rounds must be at least 1")
    try:
        baseline = metadata.version("jupyterhub-ltiauthenticator")
    except metadata.PackageNotFoundError:
        log(f"error: install the baseline first: .venv/bin/pip install jupyterhub-ltiauthenticator=={BASELINE_VERSION}")
        return 2
    if baseline != BASELINE_VERSION:
        log(f"warning: jupyterhub-ltiauthenticator {baseline} installed; the baseline is {BASELINE_VERSION}")
    started = dt.datetime.now(dt.UTC)
    results = measure(args.launches, args.rounds)
    log_table_header(
        f"LTI launch validation, {args.launches} launches, {args.rounds} rounds (median of rounds)",
        f"{'setup':<32} {'launches/s (wall)':>18} {'launches/s (CPU)':>17} {'µs/launch (wall)':>17}",
    )
    for name, row in results["setups"].items():
        log(
            f"{name:<32} {row['wall_launches_per_second_median']:>18.1f} {row['cpu_launches_per_second_median']:>17.1f}"
            f" {row['wall_microseconds_per_launch_median']:>17.1f}"
        )
    ratios = results["ratios"]
    log(f"\nratio hubfleet / {WARM}: {ratios['wall_vs_warm']}x wall clock, {ratios['cpu_vs_warm']}x CPU (headline)")
    log(f"ratio hubfleet / {SHIPPED}: {ratios['wall_vs_as_shipped']}x wall clock, {ratios['cpu_vs_as_shipped']}x CPU")
    machine = machine_info(
        after_jupyterhub={
            "jupyterhub_ltiauthenticator_version": baseline,
            "pyjwt_version": metadata.version("PyJWT"),
            "joserfc_version": metadata.version("joserfc"),
            "pip_check": command_output(sys.executable, "-m", "pip", "check"),
        }
    )
    write_results(
        args.out,
        "lti launch validation",
        started,
        settings={"launches_per_round": args.launches, "rounds": args.rounds},
        definition="validated LTI 1.3 resource link launches per second, one thread, same signed launches for both",
        method=[paragraph.replace("\n", " ") for paragraph in (__doc__ or "").split("\n\n")[2:6]],
        machine=machine,
        results=results,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
