"""LTI Advantage services, tool side: the platform's access token, roster (NRPS) and grades (AGS).

- Access token: OAuth 2 client-credentials grant authenticated by a JWT the tool signs (IMS Security Framework 1.0
  §4.1, RFC 7523): `iss` = `sub` = client_id, `aud` = the token URL, `iat`/`exp`, a unique `jti`. One token is asked
  for every scope the client uses and reused by all calls until shortly before its `expires_in`.
- NRPS 2.0: the context memberships, following `Link: <…>; rel="next"` through every page.
- AGS 2.0: find a line item by `resourceId` (or create it), post scores (`FullyGraded`, `Completed`).

Failures: 5xx, timeouts and connection errors are retried with exponential backoff, then raise `ServiceUnavailable`;
a 401 with a cached token gets one fresh token and one retry; other 4xx raise `ServiceError` with the platform's
message. Tokens and assertions are never logged.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import httpx
from joserfc import jwt
from joserfc.jwk import RSAKey

from hubfleet.edu.lti.keys import ToolKey
from hubfleet.spec.edu import LTIPlatform

log = logging.getLogger(__name__)

SCOPE_NRPS = "https://purl.imsglobal.org/spec/lti-nrps/scope/contextmembership.readonly"
SCOPE_LINEITEM = "https://purl.imsglobal.org/spec/lti-ags/scope/lineitem"
SCOPE_LINEITEM_READONLY = "https://purl.imsglobal.org/spec/lti-ags/scope/lineitem.readonly"
SCOPE_SCORE = "https://purl.imsglobal.org/spec/lti-ags/scope/score"
SCOPE_RESULT_READONLY = "https://purl.imsglobal.org/spec/lti-ags/scope/result.readonly"
DEFAULT_SCOPES = (SCOPE_NRPS, SCOPE_LINEITEM, SCOPE_SCORE)
"""What a roster-syncing, grade-passing tool needs: asked for together, so that one token serves every call."""

MEDIA_MEMBERSHIPS = "application/vnd.ims.lti-nrps.v2.membershipcontainer+json"
MEDIA_LINEITEM = "application/vnd.ims.lis.v2.lineitem+json"
MEDIA_LINEITEMS = "application/vnd.ims.lis.v2.lineitemcontainer+json"
MEDIA_SCORE = "application/vnd.ims.lis.v1.score+json"

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_LIFETIME = 300
REFRESH_MARGIN = 60.0
"""A token is renewed this many seconds (at most a tenth of its lifetime) before it expires."""
MAX_PAGES = 10_000
"""Bound on pages followed through `Link: rel="next"` (a platform answering in a loop)."""


class ServiceError(Exception):
    """The platform refused a request (a 4xx, or an answer that is not what the spec says)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.message = message
        self.status = status


class ServiceUnavailable(ServiceError):
    """The platform did not answer usefully (5xx, timeouts, connection errors) after every retry."""


@dataclass(frozen=True)
class Member:
    """One membership of a context (NRPS): the person's LMS id (`sub`), roles and status."""

    user_id: str
    roles: tuple[str, ...]
    status: str = "Active"
    name: str | None = None
    given_name: str | None = None
    family_name: str | None = None
    email: str | None = None

    @property
    def active(self) -> bool:
        return self.status == "Active"

    @classmethod
    def from_json(cls, data: Any) -> Member:
        """A member from NRPS JSON; raises ValueError when `user_id` or `roles` is missing or malformed."""
        if not isinstance(data, dict) or not isinstance(data.get("user_id"), str) or not data["user_id"]:
            raise ValueError("a member without a user_id")
        roles = data.get("roles")
        if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
            raise ValueError(f"member {data['user_id']!r} has no list of roles")

        def text(key: str) -> str | None:
            value = data.get(key)
            return value if isinstance(value, str) and value else None

        return cls(
            user_id=data["user_id"],
            roles=tuple(roles),
            status=text("status") or "Active",
            name=text("name"),
            given_name=text("given_name"),
            family_name=text("family_name"),
            email=text("email"),
        )


@dataclass
class _Token:
    value: str
    scopes: frozenset[str]
    renew_at: float


class ServiceClient:
    """The LTI Advantage services of one platform registration, called as the tool (async, on `http`)."""

    def __init__(
        self,
        platform: LTIPlatform,
        tool_key: RSAKey | ToolKey,
        *,
        http: httpx.AsyncClient,
        scopes: Iterable[str] = DEFAULT_SCOPES,
        retries: int = 4,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.platform = platform
        if isinstance(tool_key, ToolKey):
            self._key, self._kid = tool_key.private, tool_key.kid
        else:
            self._key, self._kid = tool_key, tool_key.kid or tool_key.thumbprint()
        self._http = http
        self.scopes = frozenset(scopes)
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._clock = clock
        self._tokens: dict[frozenset[str], _Token] = {}
        self._token_lock = asyncio.Lock()
        self._line_item_locks: dict[tuple[str, str], asyncio.Lock] = {}

    # the access token

    def _assertion(self) -> str:
        now = int(time.time())
        claims = {
            "iss": self.platform.client_id,
            "sub": self.platform.client_id,
            "aud": str(self.platform.token_url),
            "iat": now,
            "exp": now + ASSERTION_LIFETIME,
            "jti": secrets.token_urlsafe(24),
        }
        return jwt.encode({"alg": "RS256", "kid": self._kid}, claims, self._key)

    async def access_token(self, scope: str) -> str:
        """A valid token granting `scope`: a cached one, else a new one for all the client's scopes (or, if the
        platform grants fewer, for `scope` alone)."""
        async with self._token_lock:
            now = self._clock()
            for token in self._tokens.values():
                if scope in token.scopes and now < token.renew_at:
                    return token.value
            for wanted in (self.scopes | {scope}, frozenset({scope})):
                token = self._tokens.get(wanted)
                if token is None or now >= token.renew_at:
                    token = self._tokens[wanted] = await self._request_token(wanted)
                if scope in token.scopes:
                    return token.value
            raise ServiceError(f"{self.platform.issuer} does not grant the scope {scope}")

    def _forget_token(self, value: str) -> None:
        self._tokens = {key: token for key, token in self._tokens.items() if token.value != value}

    async def _request_token(self, scopes: frozenset[str]) -> _Token:
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": CLIENT_ASSERTION_TYPE,
            "scope": " ".join(sorted(scopes)),
        }
        url = str(self.platform.token_url)
        response = await self._send(
            "POST", url, lambda: {"data": {**form, "client_assertion": self._assertion()}}, retry_unauthorized=False
        )
        try:
            body = response.json()
            value, expires_in = body["access_token"], float(body.get("expires_in", 3600))
            if not isinstance(value, str) or not value:
                raise ValueError("empty access_token")
        except (ValueError, KeyError, TypeError) as error:
            raise ServiceError(f"the token endpoint {url} answered no usable token: {error}") from error
        granted = frozenset(str(body["scope"]).split()) if body.get("scope") else scopes
        margin = min(REFRESH_MARGIN, expires_in / 10)
        log.info("new access token from %s for %d scope(s), valid %.0f s", url, len(granted), expires_in)
        return _Token(value=value, scopes=granted, renew_at=self._clock() + expires_in - margin)

    # requests

    async def _send(
        self,
        method: str,
        url: str,
        arguments: Callable[[], dict[str, Any]],
        *,
        retry_unauthorized: bool,
        scope: str | None = None,
    ) -> httpx.Response:
        """`method url` with `arguments()` (rebuilt per attempt), the bearer token for `scope` if given; retried on
        5xx / timeouts / connection errors; a 401 gets a fresh token once (if `retry_unauthorized`)."""
        failure = ""
        attempt = 0
        refreshed = False
        while True:
            kwargs = arguments()
            token = await self.access_token(scope) if scope else None
            if token is not None:
                kwargs["headers"] = {**kwargs.get("headers", {}), "Authorization": f"Bearer {token}"}
            try:
                response = await self._http.request(method, url, **kwargs)
            except (httpx.TimeoutException, httpx.TransportError) as error:
                failure = f"{type(error).__name__}: {error}"
            else:
                if response.status_code < 400:
                    return response
                if response.status_code == 401 and token is not None and retry_unauthorized and not refreshed:
                    self._forget_token(token)
                    refreshed = True
                    continue
                if response.status_code < 500:
                    raise ServiceError(
                        f"{method} {url} refused ({response.status_code}): {_platform_message(response)}",
                        response.status_code,
                    )
                failure = f"{response.status_code} {_platform_message(response)}"
            if attempt >= self.retries:
                raise ServiceUnavailable(f"{method} {url} failed {attempt + 1} times; last: {failure}")
            delay = min(self.max_backoff, self.backoff * 2**attempt)
            log.warning("%s %s failed (%s); retrying in %.1f s", method, url, failure, delay)
            await asyncio.sleep(delay)
            attempt += 1

    async def _call(
        self,
        method: str,
        url: str,
        scope: str,
        *,
        accept: str,
        params: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
        content_type: str | None = None,
    ) -> httpx.Response:
        headers = {"Accept": accept}
        if content_type:
            headers["Content-Type"] = content_type

        def arguments() -> dict[str, Any]:
            kwargs: dict[str, Any] = {"headers": dict(headers)}
            if params:
                kwargs["params"] = params
            if body is not None:
                kwargs["content"] = json.dumps(body).encode()
            return kwargs

        return await self._send(method, url, arguments, retry_unauthorized=True, scope=scope)

    async def _pages(
        self, url: str, scope: str, accept: str, params: dict[str, str] | None = None
    ) -> list[httpx.Response]:
        """Every page of a paged collection, following `Link: rel="next"` (params apply to the first page only)."""
        pages: list[httpx.Response] = []
        seen: set[str] = set()
        next_url: str | None = url
        while next_url is not None:
            if next_url in seen or len(pages) >= MAX_PAGES:
                raise ServiceError(f"{url} pages in a loop (next page {next_url} again)")
            seen.add(next_url)
            response = await self._call("GET", next_url, scope, accept=accept, params=params if not pages else None)
            pages.append(response)
            next_url = response.links.get("next", {}).get("url")
        return pages

    # NRPS

    async def members(self, context_memberships_url: str, *, limit: int | None = None) -> list[Member]:
        """Every member of the context, through all pages (`limit`: page size to ask for)."""
        params = {"limit": str(limit)} if limit else None
        members: list[Member] = []
        for page in await self._pages(context_memberships_url, SCOPE_NRPS, MEDIA_MEMBERSHIPS, params):
            body = _json(page)
            entries = body.get("members") if isinstance(body, dict) else None
            if not isinstance(entries, list):
                raise ServiceError(f"{context_memberships_url} answered no list of members")
            for entry in entries:
                try:
                    members.append(Member.from_json(entry))
                except ValueError as error:
                    log.warning("skipping a malformed member from %s: %s", context_memberships_url, error)
        return members

    # AGS

    async def line_items(self, lineitems_url: str, *, resource_id: str | None = None) -> list[dict[str, Any]]:
        """The context's line items (those with `resourceId` == `resource_id` if given), through all pages."""
        params = {"resource_id": resource_id} if resource_id is not None else None
        items: list[dict[str, Any]] = []
        for page in await self._pages(lineitems_url, SCOPE_LINEITEM, MEDIA_LINEITEMS, params):
            entries = _json(page)
            if not isinstance(entries, list):
                raise ServiceError(f"{lineitems_url} answered no list of line items")
            items += [item for item in entries if isinstance(item, dict) and isinstance(item.get("id"), str)]
        if resource_id is not None:  # a platform may ignore the filter
            items = [item for item in items if item.get("resourceId") == resource_id]
        return items

    async def find_or_create_line_item(
        self, lineitems_url: str, *, resource_id: str, label: str, score_maximum: float, tag: str | None = None
    ) -> str:
        """The URL of the line item with `resourceId` == `resource_id`, created if missing (and its label and
        maximum updated if they changed)."""
        lock = self._line_item_locks.setdefault((lineitems_url, resource_id), asyncio.Lock())
        async with lock:
            found = await self.line_items(lineitems_url, resource_id=resource_id)
            wanted: dict[str, Any] = {"label": label, "scoreMaximum": score_maximum, "resourceId": resource_id}
            if tag is not None:
                wanted["tag"] = tag
            if found:
                item = found[0]
                if any(item.get(key) != value for key, value in wanted.items()):
                    await self._call(
                        "PUT",
                        item["id"],
                        SCOPE_LINEITEM,
                        accept=MEDIA_LINEITEM,
                        body={**item, **wanted},
                        content_type=MEDIA_LINEITEM,
                    )
                return item["id"]
            response = await self._call(
                "POST", lineitems_url, SCOPE_LINEITEM, accept=MEDIA_LINEITEM, body=wanted, content_type=MEDIA_LINEITEM
            )
            created = _json(response)
            if not isinstance(created, dict) or not isinstance(created.get("id"), str):
                raise ServiceError(f"{lineitems_url} created a line item without an id")
            return created["id"]

    async def post_score(
        self,
        line_item_url: str,
        *,
        user_id: str,
        score_given: float,
        score_maximum: float,
        timestamp: dt.datetime,
        comment: str | None = None,
    ) -> None:
        """Post a final score (`FullyGraded`, `Completed`) of `user_id` to the line item (its `/scores` endpoint)."""
        if timestamp.tzinfo is None:
            raise ValueError("a score's timestamp needs a time zone")
        score: dict[str, Any] = {
            "userId": user_id,
            "scoreGiven": score_given,
            "scoreMaximum": score_maximum,
            "activityProgress": "Completed",
            "gradingProgress": "FullyGraded",
            "timestamp": timestamp.isoformat(timespec="milliseconds"),
        }
        if comment is not None:
            score["comment"] = comment
        await self._call(
            "POST",
            scores_url(line_item_url),
            SCOPE_SCORE,
            accept="application/json",
            body=score,
            content_type=MEDIA_SCORE,
        )


def scores_url(line_item_url: str) -> str:
    """The scores endpoint of a line item: its URL with `/scores` appended to the path (query kept, as Moodle's)."""
    url = httpx.URL(line_item_url)
    return str(url.copy_with(path=url.path.rstrip("/") + "/scores"))


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError as error:
        raise ServiceError(f"{response.request.url} answered {response.status_code} without JSON") from error


def _platform_message(response: httpx.Response, limit: int = 300) -> str:
    """What the platform said: an OAuth / JSON error's description, else the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:limit].strip() or response.reason_phrase
    if isinstance(body, dict):
        for key in ("error_description", "error", "message", "errors"):
            if body.get(key):
                return str(body[key])[:limit]
    return json.dumps(body)[:limit]
