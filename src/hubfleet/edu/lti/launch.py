"""Validation of an LTI 1.3 launch (the id_token a platform POSTs after the OIDC login) into a typed `Launch`.

What is checked, in order (IMS Security Framework 1.0 §5.1.3, LTI 1.3 §5): token size and shape; the login's
`state` (known, unexpired, used once); `alg` is RS256; `iss` is a registered platform (and the one the login
started with); `aud` holds the registration's client_id, and `azp` names it when there are several audiences;
the signature, with the platform's key for the header's `kid` (the key set fetched again once on an unknown kid);
`exp` and `iat` within the leeway; the `nonce` is the login's and was never used before; the deployment is
registered; `version` is 1.3.0; the message type is a resource link launch or a deep linking request (whose
`deep_linking_settings` are read by `hubfleet.edu.lti.deeplinking`); the required claims are there; custom
parameters are a bounded mapping of strings.
Every refusal is a `LaunchError` with the HTTP status to answer (400: malformed, 401: not authentic, 403: not
allowed here, 502: the platform's keys could not be fetched) and a message safe to show.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from joserfc import jws
from joserfc.errors import JoseError

from hubfleet.edu.lti.deeplinking import SETTINGS_CLAIM, DeepLinkingSettings
from hubfleet.edu.lti.jwks import KeyLookupError, PlatformKeys
from hubfleet.edu.lti.roles import course_role
from hubfleet.edu.lti.state import LoginStore, PendingLogin, UsedNonces
from hubfleet.spec.edu import LTIPlatform

MAX_TOKEN_BYTES = 64 * 1024
"""Largest id_token accepted (a Canvas launch with many custom fields is a few KiB)."""

ALGORITHMS = ("RS256",)

CLAIM = "https://purl.imsglobal.org/spec/lti/claim/"
NRPS_CLAIM = "https://purl.imsglobal.org/spec/lti-nrps/claim/namesroleservice"
AGS_CLAIM = "https://purl.imsglobal.org/spec/lti-ags/claim/endpoint"
RESOURCE_LINK_REQUEST = "LtiResourceLinkRequest"
DEEP_LINKING_REQUEST = "LtiDeepLinkingRequest"
MAX_CUSTOM = 32
"""Most custom parameters kept from a launch (each key at most 64, each value at most 2048 characters)."""


class LaunchError(Exception):
    """A refused launch: `status` is the HTTP status to answer, `message` says why (no secrets in it)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Launch:
    """A validated LTI launch (a resource link, or a deep linking request): who, from which platform, in which
    course, with which roles."""

    issuer: str
    client_id: str
    deployment_id: str
    sub: str
    message_type: str
    target_link_uri: str
    roles: tuple[str, ...] = ()
    name: str | None = None
    given_name: str | None = None
    family_name: str | None = None
    email: str | None = None
    context_id: str | None = None
    context_title: str | None = None
    context_label: str | None = None
    resource_link_id: str | None = None
    resource_link_title: str | None = None
    nrps_url: str | None = None
    ags_endpoint: dict[str, Any] = field(default_factory=dict)
    custom: dict[str, str] = field(default_factory=dict)
    """The link's custom parameters (`https://purl.imsglobal.org/spec/lti/claim/custom`)."""
    deep_linking: DeepLinkingSettings | None = None
    """What a deep linking request asks for (None for a resource link launch)."""

    @property
    def is_deep_linking(self) -> bool:
        return self.message_type == DEEP_LINKING_REQUEST

    @property
    def course_role(self) -> str | None:
        """`instructor`, `ta` or `student` from the LIS roles (`hubfleet.edu.lti.roles`), None without one."""
        return course_role(self.roles)

    def auth_state(self) -> dict[str, Any]:
        """What the hub keeps about the launch (JSON; no token, no secret, not the deep linking settings)."""
        return asdict(self) | {"roles": list(self.roles), "deep_linking": None}


def _text(value: Any, limit: int = 1024) -> str | None:
    """A claim as a bounded string, None when absent or not a string."""
    return value[:limit] if isinstance(value, str) and value else None


class LaunchValidator:
    """Validates launches for a hub's registered platforms, with its login store, used-nonce memory and key cache."""

    def __init__(
        self,
        platforms: Sequence[LTIPlatform],
        keys: PlatformKeys,
        logins: LoginStore,
        nonces: UsedNonces,
        *,
        leeway: float = 60,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.platforms = {(p.issuer, p.client_id): p for p in platforms}
        self.keys = keys
        self.logins = logins
        self.nonces = nonces
        self.leeway = leeway
        self._clock = clock

    def platform(self, issuer: str, client_id: str | None) -> LTIPlatform:
        """The registration for a login initiation: by issuer and client_id (client_id may be left out when the
        issuer has a single registration). LaunchError 400 when none matches."""
        if client_id:
            found = self.platforms.get((issuer, client_id))
        else:
            candidates = [p for (iss, _), p in self.platforms.items() if iss == issuer]
            found = candidates[0] if len(candidates) == 1 else None
        if found is None:
            raise LaunchError(400, "this LMS (issuer and client_id) is not registered with this hub")
        return found

    def take_login(self, state: str | None) -> PendingLogin:
        """The pending login of `state`, used up. LaunchError 400 when missing, unknown, expired or used."""
        if not state:
            raise LaunchError(400, "the launch has no state: start it again from the LMS")
        login = self.logins.take(state[:256])
        if login is None:
            raise LaunchError(400, "unknown, expired or already used state: start the launch again from the LMS")
        return login

    async def validate(self, id_token: str | None, login: PendingLogin) -> Launch:
        """The launch in `id_token`, for the pending `login` it answers."""
        header, claims, signed = self._parse(id_token)
        if header.get("alg") not in ALGORITHMS:
            raise LaunchError(401, "the id_token must be signed with RS256")
        issuer = claims.get("iss")
        if issuer != login.issuer or not isinstance(issuer, str):
            raise LaunchError(401, "the id_token's issuer is not the platform the login started with")
        platform = self.platforms.get((issuer, login.client_id))
        if platform is None:  # the registration was removed since the login started
            raise LaunchError(401, "the id_token's issuer is not a registered platform")
        self._check_audience(claims, platform.client_id)
        await self._check_signature(signed, header, platform)
        self._check_times(claims)
        self._check_nonce(claims, login)
        return self._launch(claims, platform)

    @staticmethod
    def _parse(id_token: str | None) -> tuple[dict[str, Any], dict[str, Any], jws.CompactSignature]:
        if not id_token:
            raise LaunchError(400, "the launch has no id_token")
        if len(id_token) > MAX_TOKEN_BYTES:
            raise LaunchError(400, f"the id_token is larger than {MAX_TOKEN_BYTES} bytes")
        try:
            signed = jws.extract_compact(id_token.encode("ascii"))
            claims = json.loads(signed.payload)
            header = signed.headers()
        except (JoseError, ValueError, TypeError, UnicodeError) as exc:
            raise LaunchError(400, "the id_token is not a well-formed signed JWT") from exc
        if not isinstance(claims, dict):
            raise LaunchError(400, "the id_token's payload is not a JSON object")
        return header, claims, signed

    @staticmethod
    def _check_audience(claims: dict[str, Any], client_id: str) -> None:
        audience = claims.get("aud")
        audiences = [audience] if isinstance(audience, str) else audience
        if not isinstance(audiences, list) or client_id not in audiences:
            raise LaunchError(401, "the id_token is not meant for this tool (aud)")
        azp = claims.get("azp")
        if (len(audiences) > 1 or azp is not None) and azp != client_id:
            raise LaunchError(401, "the id_token's authorized party (azp) is not this tool")

    async def _check_signature(
        self, signed: jws.CompactSignature, header: dict[str, Any], platform: LTIPlatform
    ) -> None:
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise LaunchError(401, "the id_token's header names no key (kid)")
        try:
            key = await self.keys.key(str(platform.jwks_url), kid[:256])
        except KeyLookupError as exc:
            raise LaunchError(502 if exc.unavailable else 401, str(exc)) from exc
        try:
            valid = jws.validate_compact(signed, key, algorithms=list(ALGORITHMS))
        except (JoseError, ValueError, TypeError):
            valid = False
        if not valid:
            raise LaunchError(401, "the id_token's signature is not valid")

    def _check_times(self, claims: dict[str, Any]) -> None:
        now = self._clock()
        exp, iat = claims.get("exp"), claims.get("iat")
        for name, value in (("exp", exp), ("iat", iat)):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise LaunchError(401, f"the id_token has no valid {name} claim")
        if exp < now - self.leeway:
            raise LaunchError(401, "the id_token has expired")
        if iat > now + self.leeway:
            raise LaunchError(401, "the id_token was issued in the future (check the clocks)")

    def _check_nonce(self, claims: dict[str, Any], login: PendingLogin) -> None:
        nonce = claims.get("nonce")
        if not isinstance(nonce, str) or not nonce:
            raise LaunchError(401, "the id_token has no nonce")
        if nonce in self.nonces:
            raise LaunchError(401, "the id_token's nonce was already used (replayed launch)")
        if nonce != login.nonce:
            raise LaunchError(401, "the id_token's nonce does not belong to this login")
        self.nonces.add(nonce)

    def _launch(self, claims: dict[str, Any], platform: LTIPlatform) -> Launch:
        deployment = claims.get(f"{CLAIM}deployment_id")
        if not isinstance(deployment, str) or not deployment:
            raise LaunchError(400, "the id_token has no deployment_id")
        if deployment not in platform.deployment_ids:
            raise LaunchError(403, "this deployment of the tool is not registered with this hub")
        if claims.get(f"{CLAIM}version") != "1.3.0":
            raise LaunchError(400, "only LTI version 1.3.0 launches are supported")
        message_type = claims.get(f"{CLAIM}message_type")
        if message_type not in (RESOURCE_LINK_REQUEST, DEEP_LINKING_REQUEST):
            raise LaunchError(
                400, f"unknown message type: only {RESOURCE_LINK_REQUEST} and {DEEP_LINKING_REQUEST} are supported"
            )
        deep_linking = None
        if message_type == DEEP_LINKING_REQUEST:
            try:
                deep_linking = DeepLinkingSettings.from_claim(claims.get(SETTINGS_CLAIM))
            except ValueError as exc:
                raise LaunchError(400, f"a deep linking request that cannot be answered: {exc}") from None
        sub = _text(claims.get("sub"), 255)
        if sub is None:
            raise LaunchError(400, "the id_token has no subject (sub): anonymous launches are not supported")
        roles = claims.get(f"{CLAIM}roles")
        if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
            raise LaunchError(400, "the id_token has no roles claim (a list of role URIs)")
        link = _mapping(claims, f"{CLAIM}resource_link")
        if _text(link.get("id"), 255) is None and deep_linking is None:
            raise LaunchError(400, "the id_token has no resource_link id")
        target = _text(claims.get(f"{CLAIM}target_link_uri"), 2048)
        if target is None:
            raise LaunchError(400, "the id_token has no target_link_uri")
        context = _mapping(claims, f"{CLAIM}context")
        nrps = _mapping(claims, NRPS_CLAIM)
        ags = _mapping(claims, AGS_CLAIM)
        return Launch(
            issuer=platform.issuer,
            client_id=platform.client_id,
            deployment_id=deployment,
            sub=sub,
            message_type=message_type,
            target_link_uri=target,
            roles=tuple(role[:256] for role in roles[:64]),
            name=_text(claims.get("name"), 255),
            given_name=_text(claims.get("given_name"), 255),
            family_name=_text(claims.get("family_name"), 255),
            email=_text(claims.get("email"), 255),
            context_id=_text(context.get("id"), 255),
            context_title=_text(context.get("title"), 255),
            context_label=_text(context.get("label"), 255),
            resource_link_id=_text(link.get("id"), 255),
            resource_link_title=_text(link.get("title"), 255),
            nrps_url=_text(nrps.get("context_memberships_url"), 2048),
            ags_endpoint=_json_safe(ags, {"lineitems", "lineitem", "scope"}),
            custom=_custom(claims.get(f"{CLAIM}custom")),
            deep_linking=deep_linking,
        )


def _custom(value: Any) -> dict[str, str]:
    """The custom parameters: string keys and values (numbers and booleans as text, as some platforms send them),
    bounded; LaunchError 400 for anything else."""
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > MAX_CUSTOM:
        raise LaunchError(400, f"the custom claim must be an object of at most {MAX_CUSTOM} parameters")
    custom: dict[str, str] = {}
    for key, entry in value.items():
        if isinstance(entry, bool):
            entry = "true" if entry else "false"
        elif isinstance(entry, int | float):
            entry = str(entry)
        if not isinstance(entry, str) or len(key) > 64 or len(entry) > 2048:
            raise LaunchError(400, f"the custom parameter {key[:64]!r} is not a string of at most 2048 characters")
        custom[key] = entry
    return custom


def _mapping(claims: dict[str, Any], name: str) -> dict[str, Any]:
    value = claims.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise LaunchError(400, f"the claim {name} must be a JSON object")
    return value


def _json_safe(value: dict[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    """The named entries of `value` that are strings or lists of strings (bounded)."""
    kept: dict[str, Any] = {}
    for key in keys:
        item = value.get(key)
        if isinstance(item, str):
            kept[key] = item[:2048]
        elif isinstance(item, list) and all(isinstance(entry, str) for entry in item):
            kept[key] = [entry[:512] for entry in item[:32]]
    return kept
