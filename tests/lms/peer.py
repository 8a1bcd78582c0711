"""A real LMS for tests: lti1p3platform 0.1.8 (the LMS side of LTI 1.3, written by others) served on loopback.

`PeerLMS` runs a tornado HTTP server on 127.0.0.1 in a background thread with in-memory storage; the API is the one
agreed in /work/helpers/PEER_API.md.

What the library does here: the platform registration and its keys (`Registration`; the platform JWKS and the `kid` in
the id_token header), the third-party login initiation URL (`OIDCLoginAbstract`), the launch message with its claims
and the AGS/NRPS claims, the preflight checks and the id_token signing (`LTIAdvantageMessageLaunchAbstract`), the
client-credentials grant (assertion signature, granted scopes: `LTI1P3PlatformConfAbstract.get_access_token`), and the
AGS / NRPS service handlers with their IMS media types (`AssignmentsGradesService`, `NamesRoleProvisioningService`).

What is ours (the library ships no routes, no storage and is lax as a platform):
- the tornado routes, the request/response glue, the in-memory storage of people, courses, enrollments, line items,
  scores and results (the AGS / NRPS storage methods the library leaves abstract), written per the IMS specs;
- the auth endpoint's checks: `client_id`, `redirect_uri` equal to the registered launch URL, `response_type`,
  `scope`, `response_mode`, `prompt`, `nonce`, a `login_hint` / `lti_message_hint` that match a launch we started;
- the token endpoint's checks: `client_assertion_type`, the assertion's signature against the tool JWKS fetched from
  the registered `jwks_url` (on every request, so rotated tool keys work), `aud` == token URL, `iss` == `sub` ==
  client_id, `exp`/`iat`, a never-seen `jti`; the access token is minted here (with a `jti` and a settable lifetime);
- the service endpoints' checks: a bearer token we issued, not expired, carrying the scope of *that* endpoint
  (403 otherwise), bad tokens as 401 (the library raises them out as 500), request media types (415 otherwise),
  score and line item validation, AGS's "older timestamp" rule (409);
- paging: `page`/`limit` converted to int (the library adds 1 to the raw query string), a default `limit` so that
  NRPS and line item lists page at all, and the library's `next` turned into a `Link: <…>; rel="next"` header;
- `set_down` (503 from the token and service endpoints), `tokens_issued`, `requests` (a log of service calls);
- Deep Linking 2.0 as a platform (the library gives the request's `deep_linking_settings` claim builder, `set_dl`,
  and `validate_deeplinking_resp`: the response's signature with the tool's key by `kid`, its message type and
  the accepted item types): ours are the request's `accept_multiple` / `accept_lineitem` / `data` (the library
  fixes the first and drops a `data` that is not a dict), a return URL per request, and the response's checks the
  library leaves out — RS256 with a `kid`, `iss` == client_id, `aud` == the platform, `exp`/`iat`, a never-seen
  `nonce`, the deployment, version 1.3.0, `data` echoed unchanged, at most one item unless `accept_multiple`, each
  item's type accepted, `ltiResourceLink` URLs on the tool's host, custom parameters as strings, `lineItem`
  validated; then the platform's part (§3.4.2): one resource link per item, with a line item bound to it
  (`resourceLinkId`) when the item asks for one and the request accepted line items. Links are launched again
  with their custom parameters and their line item in the AGS claim (`launch_link`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import html
import json
import secrets
import textwrap
import threading
import time
import typing as t
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import parse_qsl, urlsplit

import httpx
import tornado.httpclient
import tornado.httpserver
import tornado.netutil
import tornado.web
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet, RSAKey
from lti1p3platform import exceptions as lti_errors
from lti1p3platform.constants import LTI_1P3_ACCESS_TOKEN_SCOPES
from lti1p3platform.ltiplatform import LTI1P3PlatformConfAbstract
from lti1p3platform.membership import Context
from lti1p3platform.message_launch import LTIAdvantageMessageLaunchAbstract
from lti1p3platform.oidc_login import OIDCLoginAbstract
from lti1p3platform.registration import Registration
from lti1p3platform.request import Request, TRequest
from lti1p3platform.response import Response
from lti1p3platform.score import ActivityProgress, GradeProgress, UpdateScoreStatus
from lti1p3platform.service_connector import AssignmentsGradesService, NamesRoleProvisioningService, TPage

LIS = "http://purl.imsglobal.org/vocab/lis/v2/membership"
LIS_ROLES = {
    "Learner": f"{LIS}#Learner",
    "Instructor": f"{LIS}#Instructor",
    "TeachingAssistant": f"{LIS}/Instructor#TeachingAssistant",
    "ContentDeveloper": f"{LIS}#ContentDeveloper",
    "Mentor": f"{LIS}#Mentor",
}

SCOPE_LINEITEM = "https://purl.imsglobal.org/spec/lti-ags/scope/lineitem"
SCOPE_LINEITEM_READONLY = "https://purl.imsglobal.org/spec/lti-ags/scope/lineitem.readonly"
SCOPE_RESULT_READONLY = "https://purl.imsglobal.org/spec/lti-ags/scope/result.readonly"
SCOPE_SCORE = "https://purl.imsglobal.org/spec/lti-ags/scope/score"
SCOPE_NRPS = "https://purl.imsglobal.org/spec/lti-nrps/scope/contextmembership.readonly"

MEDIA_LINEITEM = "application/vnd.ims.lis.v2.lineitem+json"
MEDIA_LINEITEMS = "application/vnd.ims.lis.v2.lineitemcontainer+json"
MEDIA_SCORE = "application/vnd.ims.lis.v1.score+json"
MEDIA_RESULTS = "application/vnd.ims.lis.v2.resultcontainer+json"
MEDIA_MEMBERSHIPS = "application/vnd.ims.lti-nrps.v2.membershipcontainer+json"

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

LTI_CLAIM = "https://purl.imsglobal.org/spec/lti/claim/"
DL_CLAIM = "https://purl.imsglobal.org/spec/lti-dl/claim/"
DL_SETTINGS_CLAIM = f"{DL_CLAIM}deep_linking_settings"
DEFAULT_PAGE_SIZE = 10


class LoopbackServer:
    """A tornado application served on 127.0.0.1 (a port the OS picks) by an event loop in a background thread."""

    def __init__(self, app: tornado.web.Application):
        self._app = app
        self._sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
        self.port: int = self._sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: tornado.httpserver.HTTPServer | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"loopback-{self.port}", daemon=True)

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)

        async def listen() -> None:
            self._server = tornado.httpserver.HTTPServer(self._app)
            self._server.add_sockets(self._sockets)

        self._loop.run_until_complete(listen())
        self._ready.set()
        self._loop.run_forever()
        self._loop.close()

    def start(self) -> LoopbackServer:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is None or self._server is None:
            return
        server, loop = self._server, self._loop

        async def close() -> None:
            server.stop()
            await server.close_all_connections()
            loop.stop()

        asyncio.run_coroutine_threadsafe(close(), loop)
        self._thread.join(10)

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- the library's abstract parts, bound to this peer -------------------------------------------------------------


class _TornadoRequest(Request):
    """The library's request view of a tornado request (query and form as str → str; JSON body parsed)."""

    def build_metadata(self, request: t.Any) -> TRequest:
        handler: tornado.web.RequestHandler = request
        req = handler.request
        content_type = req.headers.get("Content-Type", "")
        body_json = None
        if req.body and "json" in content_type:
            body_json = json.loads(req.body)
        return {
            "method": req.method,
            "form_data": {k: v[-1].decode() for k, v in req.body_arguments.items()},
            "get_data": {k: v[-1].decode() for k, v in req.query_arguments.items()},
            "headers": req.headers,
            "content_type": content_type,
            "path": req.path,
            "json": body_json,
        }


class _PlatformConfig(LTI1P3PlatformConfAbstract):
    """The library's platform configuration with the peer's one registration."""

    def init_platform_config(self, **kwargs: t.Any) -> None:
        self._registration = kwargs["registration"]

    def get_registration_by_params(self, **kwargs: t.Any) -> Registration:
        return self._registration


class _LoginInitiation(OIDCLoginAbstract):
    """Third-party login initiation: the library builds the tool login URL with its parameters."""

    def set_lti_message_hint(self, **kwargs: t.Any) -> None:
        self._lti_message_hint = kwargs["hint"]

    def get_redirect(self, url: str) -> str:
        return url


class _Launch(LTIAdvantageMessageLaunchAbstract):
    """A resource link launch, or a deep linking request (after `set_dl`, with `dl_settings` overriding what the
    library fixes); `tamper` may edit the claims before the library signs them."""

    def __init__(
        self,
        request: Request,
        config: _PlatformConfig,
        tamper: Callable[[dict], dict] | None,
        dl_settings: dict[str, t.Any] | None = None,
    ):
        super().__init__(request, config)
        self._tamper = tamper
        self._dl_settings = dl_settings or {}

    def generate_launch_request(self) -> dict[str, str]:
        """The library's message and signature; `iat`/`exp` set here first so that `tamper` can change them too."""
        assert self._registration is not None
        message, state = self.get_launch_data()
        now = int(time.time())
        message = {**message, "iat": now, "exp": now + self.id_token_expiration}
        if self._deep_linking_launch_data:  # what the library's own generate_launch_request does for set_dl
            message[f"{LTI_CLAIM}message_type"] = "LtiDeepLinkingRequest"
            claim = dict(self._deep_linking_launch_data[DL_SETTINGS_CLAIM]) | self._dl_settings
            message[DL_SETTINGS_CLAIM] = {k: v for k, v in claim.items() if v is not None}
        if self._tamper is not None:
            message = self._tamper(message)
        return {"state": state, "id_token": self._registration.platform_encode_and_sign(message)}

    def render_launch_form(self, launch_data: dict[str, t.Any], **kwargs: t.Any) -> str:
        fields = "".join(
            f'<input type="hidden" name="{name}" value="{html.escape(launch_data[name])}">'
            for name in ("id_token", "state")
        )
        return (
            '<!doctype html><html><body onload="document.forms[0].submit()">'
            f'<form method="post" action="{html.escape(launch_data["launch_url"])}">{fields}</form></body></html>'
        )


class _FormParser(HTMLParser):
    """The action and hidden inputs of the first form of a page (what a browser would auto-submit), or of the first
    form whose action starts with `action_prefix`."""

    def __init__(self, action_prefix: str = "") -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}
        self._prefix = action_prefix
        self._in_form = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "form" and self.action is None and (values.get("action") or "").startswith(self._prefix):
            self.action = values.get("action") or ""
            self._in_form = True
        elif tag == "input" and values.get("name") and self._in_form and values.get("type") == "hidden":
            self.fields[values["name"] or ""] = values.get("value") or ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._in_form = False


# --- storage ------------------------------------------------------------------------------------------------------


@dataclass
class _Person:
    sub: str
    name: str | None = None
    email: str | None = None
    given_name: str | None = None
    family_name: str | None = None


@dataclass
class _Course:
    context_id: str
    title: str | None
    label: str | None
    enrollments: dict[str, tuple[list[str], str]] = field(default_factory=dict)  # sub -> (role URIs, status)
    line_items: dict[str, dict] = field(default_factory=dict)  # id -> line item
    scores: list[dict] = field(default_factory=list)  # every score posted, in order
    results: dict[tuple[str, str], dict] = field(default_factory=dict)  # (line item id, user) -> result
    links: dict[str, dict] = field(default_factory=dict)  # resource link id -> link made by deep linking


@dataclass
class _DeepLinkRequest:
    """A deep linking request sent, waiting for the tool's response at its own return URL."""

    id: str
    context_id: str
    accept_types: list[str]
    accept_multiple: bool
    accept_lineitem: bool | None
    data: t.Any
    answered: bool = False


@dataclass
class _PendingLaunch:
    sub: str
    context_id: str
    resource_link_id: str
    target_link_uri: str
    tamper: Callable[[dict], dict] | None
    custom: dict[str, str] | None = None
    lineitem: str | None = None
    title: str | None = None
    deep_link: _DeepLinkRequest | None = None


class PeerError(Exception):
    """A request the peer refuses: `status` with an OAuth-style `error` code and a message."""

    def __init__(self, status: int, message: str, error: str = "invalid_request"):
        super().__init__(message)
        self.status, self.message, self.error = status, message, error


def _page(items: list, page: int, limit: int | None) -> TPage:
    if limit is None:
        return {"content": items, "has_next": False}
    start = (page - 1) * limit
    return {"content": items[start : start + limit], "has_next": start + limit < len(items)}


def _roles(roles: list[str]) -> list[str]:
    uris = []
    for role in roles:
        if role in LIS_ROLES:
            uris.append(LIS_ROLES[role])
        elif role.startswith("http://purl.imsglobal.org/vocab/"):
            uris.append(role)
        else:
            raise ValueError(f"unknown role {role!r}: use {sorted(LIS_ROLES)} or a LIS role URI")
    return uris


def _paging(query: dict[str, str], default_limit: int | None) -> dict[str, t.Any]:
    """`page` and `limit` as ints (the library adds 1 to the raw strings), with a default limit."""
    params: dict[str, t.Any] = dict(query)
    try:
        params["page"] = int(query.get("page", 1))
        if "limit" in query or default_limit is not None:
            params["limit"] = int(query.get("limit", default_limit or 0))
    except ValueError as error:
        raise PeerError(400, "page and limit must be integers") from error
    if params["page"] < 1 or params.get("limit", 1) < 1:
        raise PeerError(400, "page and limit must be positive")
    return params


def _timestamp(value: object) -> dt.datetime:
    if not isinstance(value, str):
        raise PeerError(400, "timestamp is required (ISO 8601 with a time zone)")
    try:
        stamp = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as error:
        raise PeerError(400, f"timestamp {value!r} is not ISO 8601") from error
    if stamp.tzinfo is None:
        raise PeerError(400, "timestamp needs a time zone")
    return stamp


# --- the peer -----------------------------------------------------------------------------------------------------


class PeerLMS:
    """A real LTI 1.3 platform (LMS) on loopback, for end-to-end tests of the tool (see the module docstring)."""

    def __init__(
        self,
        label: str = "other",
        client_id: str = "hubfleet-1",
        deployment_id: str = "dep-1",
        issuer: str | None = None,
        token_lifetime: int = 3600,
    ):
        self.label, self.client_id, self.deployment_id = label, client_id, deployment_id
        self.token_lifetime = token_lifetime
        self.requests: list[dict[str, str]] = []  # service calls: method, path, content_type, accept
        self._lock = threading.RLock()
        self._people: dict[str, _Person] = {}
        self._courses: dict[str, _Course] = {}
        self._pending: dict[str, _PendingLaunch] = {}
        self._seen_jtis: set[str] = set()
        self._tokens: dict[str, float] = {}  # access token jti -> expiry
        self._tokens_issued = 0
        self._down = False
        self._deep_links: dict[str, _DeepLinkRequest] = {}
        self._seen_response_nonces: set[str] = set()
        self.deep_link_returns: list[dict[str, t.Any]] = []  # every accepted deep linking response
        self._server = LoopbackServer(self._application())
        self.url = self._server.url
        self.issuer = issuer or self.url
        self._key = self._new_key()
        self._registration = (
            Registration()
            .set_iss(self.issuer)
            .set_client_id(client_id)
            .set_deployment_id(deployment_id)
            .set_platform_private_key(self._key.as_pem(private=True).decode())
            .set_platform_public_key(self._key.as_pem(private=False).decode())
        )
        self._config = _PlatformConfig(registration=self._registration)

    # lifecycle and endpoints

    def __enter__(self) -> PeerLMS:
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop()

    @property
    def auth_login_url(self) -> str:
        return f"{self.url}/auth"

    @property
    def token_url(self) -> str:
        return f"{self.url}/token"

    @property
    def jwks_url(self) -> str:
        return f"{self.url}/jwks"

    def nrps_url(self, context_id: str) -> str:
        return f"{self.url}/nrps/{context_id}/memberships"

    def lineitems_url(self, context_id: str) -> str:
        return f"{self.url}/ags/{context_id}/lineitems"

    def platform_yaml(self, indent: int = 0) -> str:
        """One entry of a fleet file's `lti: platforms:` list (YAML, starting with `- `), indented by `indent` spaces
        (6 under a hub's `lti: platforms:`)."""
        return textwrap.indent(
            f"- label: {self.label}\n"
            f"  issuer: {json.dumps(self.issuer)}\n"
            f"  client_id: {json.dumps(self.client_id)}\n"
            f"  deployment_ids: [{json.dumps(self.deployment_id)}]\n"
            f"  auth_login_url: {self.auth_login_url}\n"
            f"  token_url: {self.token_url}\n"
            f"  jwks_url: {self.jwks_url}\n",
            " " * indent,
        )

    # the tool and the people

    def set_tool(self, *, login_url: str, launch_url: str, jwks_url: str) -> None:
        """Register the tool's endpoints (its JWKS is fetched from `jwks_url` on every token request)."""
        with self._lock:
            self._registration.set_oidc_login_url(login_url).set_launch_url(launch_url).set_tool_key_set_url(jwks_url)
            self._registration.set_deeplink_launch_url(launch_url)

    def add_person(
        self,
        sub: str,
        *,
        name: str | None = None,
        email: str | None = None,
        given_name: str | None = None,
        family_name: str | None = None,
    ) -> None:
        with self._lock:
            self._people[sub] = _Person(sub, name, email, given_name, family_name)

    def add_course(self, context_id: str, *, title: str | None = None, label: str | None = None) -> None:
        with self._lock:
            self._courses.setdefault(context_id, _Course(context_id, title, label))

    def enroll(self, context_id: str, sub: str, roles: list[str], *, status: str = "Active") -> None:
        """Enroll (or re-enroll with other roles / another NRPS status: Active, Inactive, Deleted)."""
        if status not in ("Active", "Inactive", "Deleted"):
            raise ValueError(f"unknown membership status {status!r}")
        with self._lock:
            if sub not in self._people:
                raise KeyError(f"add_person({sub!r}) first")
            self._courses[context_id].enrollments[sub] = (_roles(roles), status)

    def unenroll(self, context_id: str, sub: str) -> None:
        with self._lock:
            self._courses[context_id].enrollments.pop(sub, None)

    # keys and signing

    @staticmethod
    def _new_key() -> RSAKey:
        key = RSAKey.generate_key(2048, parameters={"alg": "RS256", "use": "sig"})
        key.ensure_kid()  # RFC 7638 thumbprint, the kid lti1p3platform puts in the id_token header too
        return key

    def jwks(self) -> dict:
        """The platform's public key set (what /jwks serves)."""
        with self._lock:
            return {"keys": self._registration.get_jwks()}

    def rotate_key(self) -> None:
        """A new platform key with a new kid, published on /jwks; the old one is removed."""
        with self._lock:
            self._key = self._new_key()
            self._registration.set_platform_private_key(self._key.as_pem(private=True).decode())
            self._registration.set_platform_public_key(self._key.as_pem(private=False).decode())

    def sign(self, claims: dict, *, key: RSAKey | None = None, kid: str | None = None) -> str:
        """Sign arbitrary claims as the platform (or with another key); `kid` overrides the header's kid."""
        signing_key = key or self._key
        header = {"alg": "RS256", "kid": kid or signing_key.kid}
        return jwt.encode(header, claims, signing_key)

    # deep linking

    def deep_link_request(
        self,
        context_id: str,
        *,
        accept_types: t.Sequence[str] = ("ltiResourceLink",),
        accept_multiple: bool = True,
        accept_lineitem: bool | None = True,
        data: t.Any = None,
    ) -> _DeepLinkRequest:
        """A deep linking request of `context_id`, with its own return URL (launch it with `login_url(deep_link=…)`
        or `deep_link`)."""
        request = _DeepLinkRequest(
            id=secrets.token_urlsafe(12),
            context_id=context_id,
            accept_types=list(accept_types),
            accept_multiple=accept_multiple,
            accept_lineitem=accept_lineitem,
            data=data,
        )
        with self._lock:
            self._deep_links[request.id] = request
        return request

    def deep_link(
        self,
        client: httpx.Client,
        *,
        sub: str,
        context_id: str,
        tamper: Callable[[dict], dict] | None = None,
        **settings: t.Any,
    ) -> httpx.Response:
        """An instructor adding the tool's content to `context_id`: the whole login flow as `launch`, with a deep
        linking request (`settings`: as for `deep_link_request`); returns the tool's answer to the id_token POST
        (its picker page, or a refusal)."""
        request = self.deep_link_request(context_id, **settings)
        return self.launch(client, sub=sub, context_id=context_id, tamper=tamper, deep_link=request)

    def post_deep_link_return(self, client: httpx.Client, page: str) -> httpx.Response:
        """What a browser does with the tool's response page: submit its form to this platform's return URL."""
        form = _FormParser(f"{self.url}/deep_link_return/")
        form.feed(page)
        if not form.action:
            raise AssertionError(f"no form posting to the platform in the page: {page[:500]}")
        return client.post(form.action, data=form.fields, follow_redirects=False)

    def links(self, context_id: str) -> dict[str, dict]:
        """The resource links deep linking made in the course, by id."""
        with self._lock:
            return {link_id: dict(link) for link_id, link in self._courses[context_id].links.items()}

    def _link_launch(self, context_id: str, link_id: str) -> dict[str, t.Any]:
        """What a launch of a link deep linking made carries: its id, URL, title, custom parameters and line item."""
        link = self.links(context_id)[link_id]
        return {
            "resource_link_id": link_id,
            "target_link_uri": link.get("url"),
            "custom": link.get("custom"),
            "lineitem": link.get("lineitem"),
            "title": link.get("title"),
        }

    def link_login_url(self, *, sub: str, context_id: str, link_id: str) -> str:
        """The login initiation URL of a learner clicking a link deep linking made."""
        return self.login_url(sub=sub, context_id=context_id, **self._link_launch(context_id, link_id))

    def launch_link(self, client: httpx.Client, *, sub: str, context_id: str, link_id: str) -> httpx.Response:
        """A learner clicking a link deep linking made, driven as `launch`."""
        return self.launch(client, sub=sub, context_id=context_id, **self._link_launch(context_id, link_id))

    def _tool_keys(self) -> KeySet:
        """The tool's key set, fetched now from its registered JWKS URL (and given to the library)."""
        jwks_url = self._registration.get_tool_key_set_url()
        if not jwks_url:
            raise PeerError(401, "no tool registered", "invalid_client")
        try:
            tool_keys = httpx.get(jwks_url, timeout=10).raise_for_status().json()
            key_set = KeySet.import_key_set(tool_keys)
        except (httpx.HTTPError, ValueError, JoseError) as error:
            raise PeerError(401, f"cannot read the tool JWKS at {jwks_url}: {error}", "invalid_client") from error
        self._registration.set_tool_key_set(tool_keys)
        return key_set

    def _receive_deep_link(self, request_id: str, token: str) -> dict[str, t.Any]:
        """The deep linking return URL: verify the tool's response (see the module docstring), then make the links."""
        if not token:
            raise PeerError(400, "the deep linking response has no JWT")
        key_set = self._tool_keys()
        with self._lock:
            request = self._deep_links.get(request_id)
            if request is None:
                raise PeerError(400, "no deep linking request has this return URL")
            try:
                header = jwt.decode(token, key_set, algorithms=["RS256"]).header
                self._config.set_accepted_deeplinking_types(request.accept_types)
                items = self._config.validate_deeplinking_resp({"JWT": token})  # the library's checks
                claims = jwt.decode(token, key_set, algorithms=["RS256"]).claims
                jwt.JWTClaimsRegistry(
                    iss={"essential": True, "value": self.client_id},
                    aud={"essential": True, "value": self.issuer},
                    exp={"essential": True},
                    iat={"essential": True},
                    nonce={"essential": True},
                    leeway=5,
                ).validate(claims)
            except (JoseError, ValueError) as error:
                raise PeerError(401, f"deep linking response rejected: {error}", "invalid_token") from error
            except Exception as error:  # the library's LtiException and friends: the tool's fault
                raise PeerError(400, f"deep linking response rejected: {error}") from error
            if not header.get("kid"):
                raise PeerError(401, "the deep linking response's header names no key (kid)", "invalid_token")
            if claims["nonce"] in self._seen_response_nonces:
                raise PeerError(401, "deep linking response replayed (nonce already used)", "invalid_token")
            if request.answered:
                raise PeerError(400, "this deep linking request was answered already")
            self._check_response(request, claims, items)
            self._seen_response_nonces.add(claims["nonce"])
            request.answered = True
            made = [self._make_link(self._courses[request.context_id], request, item) for item in items]
            answer = {
                "request": request.id,
                "items": items,
                "links": made,
                "data": claims.get(f"{DL_CLAIM}data"),
                "msg": claims.get(f"{DL_CLAIM}msg"),
                "header": header,
                "claims": claims,
            }
            self.deep_link_returns.append(answer)
            return answer

    def _check_response(self, request: _DeepLinkRequest, claims: dict, items: list[dict]) -> None:
        if claims.get(f"{LTI_CLAIM}message_type") != "LtiDeepLinkingResponse":
            raise PeerError(400, "not an LtiDeepLinkingResponse")
        if claims.get(f"{LTI_CLAIM}version") != "1.3.0":
            raise PeerError(400, "version must be 1.3.0")
        if claims.get(f"{LTI_CLAIM}deployment_id") != self.deployment_id:
            raise PeerError(400, "deployment_id is not this tool's deployment")
        if request.data is not None and claims.get(f"{DL_CLAIM}data") != request.data:
            raise PeerError(400, "the data of the request was not echoed unchanged")
        if not isinstance(items, list) or (len(items) > 1 and not request.accept_multiple):
            raise PeerError(400, "more than one content item, but the request did not accept multiple")
        tool_host = urlsplit(self._registration.get_launch_url() or "").netloc
        for item in items:
            if not isinstance(item, dict) or item.get("type") not in request.accept_types:
                raise PeerError(400, f"content item type {item.get('type')!r} was not accepted")
            url = item.get("url")
            if item["type"] == "ltiResourceLink" and url is not None and urlsplit(str(url)).netloc != tool_host:
                raise PeerError(400, f"an ltiResourceLink's url {url!r} is not on the tool's host")
            custom = item.get("custom", {})
            if not isinstance(custom, dict) or not all(isinstance(v, str) for v in custom.values()):
                raise PeerError(400, "custom parameters must be strings")
            line_item = item.get("lineItem")
            if line_item is not None:
                maximum = line_item.get("scoreMaximum") if isinstance(line_item, dict) else None
                if not isinstance(maximum, int | float) or isinstance(maximum, bool) or maximum <= 0:
                    raise PeerError(400, "a lineItem needs a scoreMaximum > 0")

    def _make_link(self, course: _Course, request: _DeepLinkRequest, item: dict) -> str:
        """The platform's part: a resource link for an `ltiResourceLink` item (with its line item when asked for and
        accepted), or a plain link; its id."""
        link_id = f"dl-{len(course.links) + 1}"
        link = {
            "type": item["type"],
            "title": item.get("title"),
            "url": item.get("url"),
            "custom": dict(item.get("custom") or {}),
        }
        line_item = item.get("lineItem")
        if item["type"] == "ltiResourceLink" and line_item is not None and request.accept_lineitem:
            item_id = str(len(course.line_items) + 1)
            while item_id in course.line_items:
                item_id = secrets.token_hex(4)
            url = f"{self.lineitems_url(course.context_id)}/{item_id}"
            course.line_items[item_id] = {
                "id": url,
                "label": line_item.get("label") or item.get("title") or link_id,
                "scoreMaximum": line_item["scoreMaximum"],
                "resourceLinkId": link_id,
                **{key: line_item[key] for key in ("resourceId", "tag") if key in line_item},
            }
            link["lineitem"] = url
        course.links[link_id] = link
        return link_id

    # services: what the tool did

    def line_items(self, context_id: str) -> list[dict]:
        with self._lock:
            return [dict(item) for item in self._courses[context_id].line_items.values()]

    def scores(self, context_id: str) -> list[dict]:
        """Every score the tool posted, in order, each with `scoreOf` (the line item URL) added."""
        with self._lock:
            return [dict(score) for score in self._courses[context_id].scores]

    @property
    def tokens_issued(self) -> int:
        return self._tokens_issued

    def set_down(self, down: bool) -> None:
        """While down, the token and service endpoints answer 503."""
        self._down = down

    def expire_tokens(self) -> None:
        """Make every access token issued so far expire now (a tool must then get a new one)."""
        with self._lock:
            self._tokens = dict.fromkeys(self._tokens, 0.0)

    # the launch

    def login_url(
        self,
        *,
        sub: str,
        context_id: str,
        resource_link_id: str = "rl-1",
        target_link_uri: str | None = None,
        tamper: Callable[[dict], dict] | None = None,
        custom: dict[str, str] | None = None,
        lineitem: str | None = None,
        title: str | None = None,
        deep_link: _DeepLinkRequest | None = None,
    ) -> str:
        """The tool's login initiation URL that starts a launch of `sub` in `context_id` (what the LMS's page sends a
        browser to). `custom`: the link's custom parameters; `lineitem`: the line item bound to the link (AGS
        claim); `deep_link`: a deep linking request instead (see `deep_link`)."""
        with self._lock:
            launch_url = self._registration.get_launch_url()
            if launch_url is None:
                raise RuntimeError("set_tool() first")
            if sub not in self._people or context_id not in self._courses:
                raise KeyError(f"add_person({sub!r}) and add_course({context_id!r}) first")
            hint = secrets.token_urlsafe(16)
            target = target_link_uri or launch_url
            self._pending[hint] = _PendingLaunch(
                sub, context_id, resource_link_id, target, tamper, custom, lineitem, title, deep_link
            )
            login = _LoginInitiation(None, self._config)
            login.set_lti_message_hint(hint=hint)
            login.set_launch_url(target)
            return login.initiate_login(sub)

    def launch(
        self,
        client: httpx.Client,
        *,
        sub: str,
        context_id: str,
        initiation: str = "GET",
        **launch: t.Any,
    ) -> httpx.Response:
        """Drive a whole LTI 1.3 launch with `client` (which keeps the tool's cookies); returns the tool's answer to
        the id_token POST, or the first answer that is not the next step of the flow (a refusal). `launch`: as for
        `login_url`."""
        login_url = self.login_url(sub=sub, context_id=context_id, **launch)
        if initiation == "POST":
            base, _, query = login_url.partition("?")
            response = client.post(base, data=dict(parse_qsl(query)), follow_redirects=False)
        else:
            response = client.get(login_url, follow_redirects=False)
        location = response.headers.get("Location", "")
        if not (response.is_redirect and location.startswith(self.auth_login_url)):
            return response
        response = client.get(location, follow_redirects=False)
        if response.status_code != 200:
            return response
        form = _FormParser()
        form.feed(response.text)
        return client.post(form.action or "", data=form.fields, follow_redirects=False)

    def _authorize(self, params: dict[str, str]) -> str:
        """The OIDC authorization endpoint: check the tool's auth request and answer the launch form."""
        with self._lock:
            registration = self._registration
            expected = {
                "scope": "openid",
                "response_type": "id_token",
                "response_mode": "form_post",
                "prompt": "none",
                "client_id": registration.get_client_id(),
                "redirect_uri": registration.get_launch_url(),
            }
            for name, value in expected.items():
                if params.get(name) != value:
                    raise PeerError(400, f"{name} must be {value!r}, got {params.get(name)!r}")
            for name in ("nonce", "state", "login_hint", "lti_message_hint"):
                if not params.get(name):
                    raise PeerError(400, f"{name} is required")
            pending = self._pending.pop(params["lti_message_hint"], None)
            if pending is None or pending.sub != params["login_hint"]:
                raise PeerError(400, "login_hint / lti_message_hint do not match a launch of this platform")
            person = self._people[pending.sub]
            course = self._courses[pending.context_id]
            roles, _status = course.enrollments.get(pending.sub, ([], "Active"))
            deep_link = pending.deep_link
            dl_settings = None
            if deep_link is not None:
                dl_settings = {
                    "accept_multiple": deep_link.accept_multiple,
                    "accept_lineitem": deep_link.accept_lineitem,
                    "accept_presentation_document_targets": ["iframe", "window"],
                    "data": deep_link.data,
                }
            launch = _Launch(_ParamsRequest(params), self._config, pending.tamper, dl_settings)
            launch.set_launch_url(pending.target_link_uri)
            launch.set_user_data(pending.sub, roles, full_name=person.name, email_address=person.email)
            names = {"given_name": person.given_name, "family_name": person.family_name}
            launch.set_extra_claims({k: v for k, v in names.items() if v})
            launch.set_launch_context_claim(
                course.context_id,
                context_types=["http://purl.imsglobal.org/vocab/lis/v2/course#CourseOffering"],
                context_title=course.title,
                context_label=course.label,
            )
            if deep_link is None:
                launch.set_resource_link_claim(pending.resource_link_id, title=pending.title)
            else:
                return_url = f"{self.url}/deep_link_return/{deep_link.id}"
                launch.set_dl(return_url, title=course.title or "", accept_types=set(deep_link.accept_types))
            if pending.custom:
                launch.set_custom_parameters_claim(dict(pending.custom))
            launch.set_launch_presentation_claim(document_target="iframe")
            launch.set_ags(self.lineitems_url(course.context_id), lineitem_url=pending.lineitem)
            launch.set_nrps(self.nrps_url(course.context_id))
            try:
                return launch.lti_launch()
            except lti_errors.PreflightRequestValidationException as error:
                raise PeerError(400, "invalid authentication request") from error

    # the token endpoint

    async def _issue_token(self, form: dict[str, str]) -> dict[str, t.Any]:
        """Client-credentials grant with a JWT assertion (IMS Security Framework, RFC 7523)."""
        for name in ("grant_type", "client_assertion_type", "client_assertion", "scope"):
            if not form.get(name):
                raise PeerError(400, f"{name} is required")
        if form["grant_type"] != "client_credentials":
            raise PeerError(400, "grant_type must be client_credentials", "unsupported_grant_type")
        if form["client_assertion_type"] != CLIENT_ASSERTION_TYPE:
            raise PeerError(400, f"client_assertion_type must be {CLIENT_ASSERTION_TYPE}")
        jwks_url = self._registration.get_tool_key_set_url()
        if not jwks_url:
            raise PeerError(401, "no tool registered", "invalid_client")
        try:
            fetched = await tornado.httpclient.AsyncHTTPClient().fetch(jwks_url, request_timeout=10)
            tool_keys = json.loads(fetched.body)
            key_set = KeySet.import_key_set(tool_keys)
        except (tornado.httpclient.HTTPClientError, OSError, ValueError, JoseError) as error:
            raise PeerError(401, f"cannot read the tool JWKS at {jwks_url}: {error}", "invalid_client") from error
        assertion = form["client_assertion"]
        try:
            token = jwt.decode(assertion, key_set, algorithms=["RS256"])
            jwt.JWTClaimsRegistry(
                iss={"essential": True, "value": self.client_id},
                sub={"essential": True, "value": self.client_id},
                aud={"essential": True, "value": self.token_url},
                exp={"essential": True},
                iat={"essential": True},
                jti={"essential": True},
                leeway=5,
            ).validate(token.claims)
        except (JoseError, ValueError) as error:
            raise PeerError(401, f"client assertion rejected: {error}", "invalid_client") from error
        with self._lock:
            if token.claims["jti"] in self._seen_jtis:
                raise PeerError(401, "client assertion replayed (jti already used)", "invalid_client")
            self._seen_jtis.add(token.claims["jti"])
            self._registration.set_tool_key_set(tool_keys)
            try:
                granted = self._config.get_access_token(dict(form))["scope"]
            except Exception as error:  # the library's own checks; any failure is the client's
                raise PeerError(401, f"client assertion rejected: {error}", "invalid_client") from error
            if not granted:
                raise PeerError(400, f"none of the scopes is supported: {LTI_1P3_ACCESS_TOKEN_SCOPES}", "invalid_scope")
            jti = secrets.token_urlsafe(16)
            now = int(time.time())
            self._tokens[jti] = now + self.token_lifetime
            self._tokens_issued += 1
            claims = {"iss": self.issuer, "sub": self.client_id, "scopes": granted, "iat": now, "jti": jti}
            access_token = self._registration.platform_encode_and_sign({**claims, "exp": now + self.token_lifetime})
        return {
            "access_token": access_token,
            "token_type": "bearer",
            "expires_in": self.token_lifetime,
            "scope": granted,
        }

    def _check_bearer(self, authorization: str, scopes: set[str]) -> None:
        """A bearer token this peer issued, unexpired, granting one of `scopes` (401 / 403 otherwise)."""
        kind, _, token = authorization.partition(" ")
        if kind.lower() != "bearer" or not token:
            raise PeerError(401, "a bearer token is required", "invalid_token")
        try:
            claims = jwt.decode(token.strip(), self._key, algorithms=["RS256"]).claims
            jwt.JWTClaimsRegistry(iss={"essential": True, "value": self.issuer}, exp={"essential": True}).validate(
                claims
            )
        except (JoseError, ValueError) as error:
            raise PeerError(401, f"invalid access token: {error}", "invalid_token") from error
        with self._lock:
            if self._tokens.get(claims.get("jti", ""), 0.0) <= time.time():
                raise PeerError(401, "access token expired or unknown", "invalid_token")
        if not scopes & set(str(claims.get("scopes", "")).split()):
            raise PeerError(403, f"the token lacks the scope this needs: {sorted(scopes)}", "insufficient_scope")

    # services

    def _course(self, context_id: str) -> _Course:
        course = self._courses.get(context_id)
        if course is None:
            raise PeerError(404, f"no course {context_id!r}", "not_found")
        return course

    def _nrps(self, request: Request, context_id: str) -> Response:
        with self._lock:
            course = self._course(context_id)
            service = _NRPS(request, self._config, self.nrps_url(context_id), self, course)
            return service.handle_resp(service.handle_get_members)

    def _ags(self, request: Request, context_id: str, line_item_id: str | None, action: str) -> Response:
        with self._lock:
            course = self._course(context_id)
            lineitems_url = self.lineitems_url(context_id)
            item_url = f"{lineitems_url}/{line_item_id}" if line_item_id else None
            service = _AGS(request, self._config, lineitems_url, item_url, self, course)
            handlers: dict[str, Callable[..., Response]] = {
                "list": service.handle_get_lineitems,
                "create": service.handle_create_lineitem,
                "get": service.handle_get_lineitem,
                "update": service.handle_update_lineitem,
                "delete": service.handle_delete_lineitem,
                "score": service.handle_update_score,
                "results": service.handle_get_results,
            }
            kwargs = {"line_item_id": line_item_id} if line_item_id else {}
            return service.handle_resp(handlers[action], **kwargs)

    def _record_score(self, course: _Course, line_item_id: str, score: dict) -> UpdateScoreStatus:
        item = course.line_items.get(line_item_id)
        if item is None:
            raise lti_errors.LineItemNotFoundException()
        user = score.get("userId")
        if not isinstance(user, str) or user not in course.enrollments:
            raise PeerError(400, f"userId {user!r} is not a member of this course")
        if score.get("activityProgress") not in {p.value for p in ActivityProgress}:
            raise PeerError(400, "activityProgress is missing or unknown")
        if score.get("gradingProgress") not in {p.value for p in GradeProgress}:
            raise PeerError(400, "gradingProgress is missing or unknown")
        stamp = _timestamp(score.get("timestamp"))
        given, maximum = score.get("scoreGiven"), score.get("scoreMaximum")
        if given is not None:
            if not isinstance(given, int | float) or isinstance(given, bool) or given < 0:
                raise PeerError(400, "scoreGiven must be a number ≥ 0")
            if not isinstance(maximum, int | float) or isinstance(maximum, bool) or maximum <= 0:
                raise PeerError(400, "scoreMaximum must be a number > 0 when scoreGiven is given")
        result = course.results.get((line_item_id, user))
        if result is not None and stamp < result["_timestamp"]:
            return UpdateScoreStatus.OLD_TIMESTAMP
        course.scores.append({**score, "scoreOf": item["id"]})
        course.results[(line_item_id, user)] = {
            "id": f"{item['id']}/results/{user}",
            "scoreOf": item["id"],
            "userId": user,
            "resultScore": given,
            "resultMaximum": maximum if given is not None else None,
            "comment": score.get("comment"),
            "_timestamp": stamp,
        }
        return UpdateScoreStatus.SUCCESS if result else UpdateScoreStatus.CREATED

    def _application(self) -> tornado.web.Application:
        peer = {"peer": self}
        return tornado.web.Application(
            [
                (r"/jwks", _JWKSHandler, peer),
                (r"/auth", _AuthHandler, peer),
                (r"/token", _TokenHandler, peer),
                (r"/nrps/([^/]+)/memberships", _NRPSHandler, peer),
                (r"/ags/([^/]+)/lineitems", _LineItemsHandler, peer),
                (r"/ags/([^/]+)/lineitems/([^/]+)", _LineItemHandler, peer),
                (r"/ags/([^/]+)/lineitems/([^/]+)/(scores|results)", _LineItemSubHandler, peer),
                (r"/deep_link_return/([^/]+)", _DeepLinkReturnHandler, peer),
            ]
        )


class _ParamsRequest(Request):
    """The library's request view of already-parsed auth request parameters."""

    def build_metadata(self, request: t.Any) -> TRequest:
        return {"method": "GET", "get_data": dict(request), "form_data": {}, "headers": {}, "path": "/auth"}


class _NRPS(NamesRoleProvisioningService):
    """The library's NRPS handler over the peer's enrollments (paged, filtered by `role`)."""

    def __init__(self, request: Request, config: _PlatformConfig, url: str, peer: PeerLMS, course: _Course):
        super().__init__(request, config, url)
        self._peer, self._course = peer, course

    def get_context_by_id(self) -> Context:
        return Context(id=self._course.context_id, label=self._course.label or "", title=self._course.title or "")

    def get_member_data_page(
        self, page: int = 1, limit: int | None = None, role: str | None = None, **_: t.Any
    ) -> TPage:
        members = []
        role_uri = LIS_ROLES.get(role or "", role)
        for sub, (roles, status) in self._course.enrollments.items():
            if role_uri and role_uri not in roles:
                continue
            person = self._peer._people[sub]
            member = {"user_id": sub, "roles": roles, "status": status}
            for attribute in ("name", "email", "given_name", "family_name"):
                if getattr(person, attribute):
                    member[attribute] = getattr(person, attribute)
            members.append(member)
        return _page(members, page, limit)


class _AGS(AssignmentsGradesService):
    """The library's AGS handlers over the peer's line items, scores and results."""

    def __init__(
        self,
        request: Request,
        config: _PlatformConfig,
        lineitems_url: str,
        lineitem_url: str | None,
        peer: PeerLMS,
        course: _Course,
    ):
        super().__init__(request, config, lineitems_url, lineitem_url)
        self._peer, self._course, self._lineitems_url = peer, course, lineitems_url

    def find_lineitems(
        self,
        page: int = 1,
        limit: int | None = None,
        line_item_id: str | None = None,
        resource_link_id: str | None = None,
        resource_id: str | None = None,
        tag: str | None = None,
    ) -> TPage:
        wanted = {"resourceLinkId": resource_link_id, "resourceId": resource_id, "tag": tag}
        items = [
            item
            for item in self._course.line_items.values()
            if all(value is None or item.get(key) == value for key, value in wanted.items())
        ]
        return _page(items, page, limit)

    def find_lineitem(self, line_item_id: str) -> dict:
        item = self._course.line_items.get(line_item_id)
        if item is None:
            raise lti_errors.LineItemNotFoundException()
        return item

    def _validated(self, data: t.Any) -> dict:
        if not isinstance(data, dict):
            raise PeerError(400, "a line item must be a JSON object")
        if not isinstance(data.get("label"), str) or not data["label"].strip():
            raise PeerError(400, "label is required")
        maximum = data.get("scoreMaximum")
        if not isinstance(maximum, int | float) or isinstance(maximum, bool) or maximum <= 0:
            raise PeerError(400, "scoreMaximum must be a number > 0")
        allowed = {"label", "scoreMaximum", "resourceId", "resourceLinkId", "tag", "startDateTime", "endDateTime"}
        return {k: v for k, v in data.items() if k in allowed}

    def create_lineitem(self, creation_data: t.Any) -> dict:
        line_item_id = str(len(self._course.line_items) + 1)
        while line_item_id in self._course.line_items:
            line_item_id = secrets.token_hex(4)
        item = {"id": f"{self._lineitems_url}/{line_item_id}", **self._validated(creation_data)}
        self._course.line_items[line_item_id] = item
        return item

    def update_lineitem(self, update_data: t.Any) -> dict:
        line_item_id = update_data["id"]
        self.find_lineitem(line_item_id)
        item = {"id": f"{self._lineitems_url}/{line_item_id}", **self._validated(update_data)}
        self._course.line_items[line_item_id] = item
        return item

    def delete_lineitem(self, line_item_id: str) -> None:
        self.find_lineitem(line_item_id)
        del self._course.line_items[line_item_id]

    def update_score(self, line_item_id: str, score: t.Any) -> UpdateScoreStatus:
        if not isinstance(score, dict):
            raise PeerError(400, "a score must be a JSON object")
        return self._peer._record_score(self._course, line_item_id, score)

    def get_results(
        self, line_item_id: str, page: int = 1, limit: int | None = None, user_id: str | None = None, **_: t.Any
    ) -> TPage:
        self.find_lineitem(line_item_id)
        results = [
            {k: v for k, v in result.items() if not k.startswith("_") and v is not None}
            for (item, user), result in self._course.results.items()
            if item == line_item_id and user_id in (None, user)
        ]
        return _page(results, page, limit)


# --- HTTP handlers ------------------------------------------------------------------------------------------------


class _PeerHandler(tornado.web.RequestHandler):
    """Common glue: the peer, JSON errors, the library's `Response` written with its media type and paging links."""

    def initialize(self, peer: PeerLMS) -> None:
        self.peer = peer

    def check_xsrf_cookie(self) -> None:
        """Not a browser app: no XSRF cookies."""

    def fail(self, error: PeerError) -> None:
        self.set_status(error.status)
        if error.status == 401 and error.error == "invalid_token":
            self.set_header("WWW-Authenticate", f'Bearer error="{error.error}"')
        self.set_header("Content-Type", "application/json")
        self.finish({"error": error.error, "error_description": error.message})

    def write_error(self, status_code: int, **kwargs: t.Any) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish({"error": "server_error", "error_description": self._reason})

    def service_request(
        self,
        scopes: set[str],
        media_type: str | None = None,
        *,
        query: set[str] | None = None,
        default_limit: int | None = None,
    ) -> Request:
        """Log the call, refuse while down, check the bearer token's scope and the body's media type; with `query`,
        keep only those query parameters (the library's handlers get them as keyword arguments) plus `page`/`limit`
        as ints."""
        req = self.request
        content_type = req.headers.get("Content-Type", "")
        self.peer.requests.append(
            {
                "method": req.method or "",
                "path": req.path,
                "content_type": content_type,
                "accept": req.headers.get("Accept", ""),
            }
        )
        if self.peer._down:
            raise PeerError(503, "the LMS is down for maintenance", "temporarily_unavailable")
        self.peer._check_bearer(req.headers.get("Authorization", ""), scopes)
        if media_type is not None and content_type.split(";")[0].strip() != media_type:
            raise PeerError(415, f"Content-Type must be {media_type}", "unsupported_media_type")
        try:
            request = _TornadoRequest(self)
        except ValueError as error:
            raise PeerError(400, "the body is not valid JSON") from error
        if media_type is not None and not isinstance(request.json, dict):
            raise PeerError(400, "the body must be a JSON object")
        if query is not None:
            given = {k: v for k, v in request.get_data.items() if k in query | {"page", "limit"}}
            request.request["get_data"] = _paging(given, default_limit)
        return request

    def reply(self, response: Response, *, body_key: str | None = None) -> None:
        """Write a library `Response`: a page's `next` becomes a Link header; `body_key` picks a page's items."""
        self.set_status(response.code)
        result = response.result
        if response.code >= 400:
            self.set_header("Content-Type", "application/json")
            self.finish({"error": "invalid_request", "error_description": response.message})
            return
        if isinstance(result, dict) and result.get("next"):
            self.set_header("Link", f'<{result.pop("next")}>; rel="next"')
        if body_key is not None and isinstance(result, dict):
            result = result[body_key]
        if result is None:
            self.finish()
            return
        self.set_header("Content-Type", response.media_type)
        self.finish(json.dumps(result))


class _JWKSHandler(_PeerHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(self.peer.jwks())


class _AuthHandler(_PeerHandler):
    def _handle(self) -> None:
        arguments = self.request.query_arguments if self.request.method == "GET" else self.request.body_arguments
        params = {k: v[-1].decode(errors="replace") for k, v in arguments.items()}
        try:
            page = self.peer._authorize(params)
        except PeerError as error:
            self.fail(error)
            return
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(page)

    get = post = _handle


class _DeepLinkReturnHandler(_PeerHandler):
    """The deep linking return URL: the browser posts the tool's response (form field `JWT`) here."""

    def post(self, request_id: str) -> None:
        try:
            answer = self.peer._receive_deep_link(request_id, self.get_body_argument("JWT", ""))
        except PeerError as error:
            self.fail(error)
            return
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(f"<!doctype html><p>{len(answer['links'])} item(s) added to the course.</p>")


class _TokenHandler(_PeerHandler):
    async def post(self) -> None:
        form = {k: v[-1].decode(errors="replace") for k, v in self.request.body_arguments.items()}
        try:
            if self.peer._down:
                raise PeerError(503, "the LMS is down for maintenance", "temporarily_unavailable")
            answer = await self.peer._issue_token(form)
        except PeerError as error:
            self.fail(error)
            return
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(answer)


class _NRPSHandler(_PeerHandler):
    def get(self, context_id: str) -> None:
        try:
            request = self.service_request({SCOPE_NRPS}, query={"role"}, default_limit=DEFAULT_PAGE_SIZE)
            self.reply(self.peer._nrps(request, context_id))
        except PeerError as error:
            self.fail(error)


class _LineItemsHandler(_PeerHandler):
    def get(self, context_id: str) -> None:
        try:
            request = self.service_request(
                {SCOPE_LINEITEM, SCOPE_LINEITEM_READONLY},
                query={"resource_link_id", "resource_id", "tag"},
                default_limit=DEFAULT_PAGE_SIZE,
            )
            self.reply(self.peer._ags(request, context_id, None, "list"), body_key="content")
        except PeerError as error:
            self.fail(error)

    def post(self, context_id: str) -> None:
        try:
            request = self.service_request({SCOPE_LINEITEM}, MEDIA_LINEITEM)
            self.reply(self.peer._ags(request, context_id, None, "create"))
        except PeerError as error:
            self.fail(error)


class _LineItemHandler(_PeerHandler):
    def get(self, context_id: str, line_item_id: str) -> None:
        self._act(context_id, line_item_id, "get", {SCOPE_LINEITEM, SCOPE_LINEITEM_READONLY})

    def put(self, context_id: str, line_item_id: str) -> None:
        self._act(context_id, line_item_id, "update", {SCOPE_LINEITEM}, MEDIA_LINEITEM)

    def delete(self, context_id: str, line_item_id: str) -> None:
        self._act(context_id, line_item_id, "delete", {SCOPE_LINEITEM})

    def _act(
        self, context_id: str, line_item_id: str, action: str, scopes: set[str], media_type: str | None = None
    ) -> None:
        try:
            request = self.service_request(scopes, media_type)
            self.reply(self.peer._ags(request, context_id, line_item_id, action))
        except PeerError as error:
            self.fail(error)


class _LineItemSubHandler(_PeerHandler):
    def post(self, context_id: str, line_item_id: str, what: str) -> None:
        if what != "scores":
            raise tornado.web.HTTPError(405)
        try:
            request = self.service_request({SCOPE_SCORE}, MEDIA_SCORE)
            self.reply(self.peer._ags(request, context_id, line_item_id, "score"))
        except PeerError as error:
            self.fail(error)

    def get(self, context_id: str, line_item_id: str, what: str) -> None:
        if what != "results":
            raise tornado.web.HTTPError(405)
        try:
            request = self.service_request({SCOPE_RESULT_READONLY}, query={"user_id"})
            self.reply(self.peer._ags(request, context_id, line_item_id, "results"), body_key="content")
        except PeerError as error:
            self.fail(error)
