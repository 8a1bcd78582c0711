"""LTI Deep Linking 2.0 on the tool's side: what the platform's `LtiDeepLinkingRequest` asks for, the instructor's
picking session, and the signed `LtiDeepLinkingResponse` carrying the chosen content items back.

The request's `deep_linking_settings` claim is read into `DeepLinkingSettings` (bounded; anything malformed is a
ValueError the launch validator turns into a 400). A validated request opens a `PickSession` (single use, expiring,
bounded in number, like a pending login) that the picker page's form names; `response_token` signs the response
with the tool's key: `iss` = the tool's client id, `aud` = the platform, a fresh `nonce`, the request's
`deployment_id`, the content items and the request's `data` echoed unchanged (IMS Deep Linking 2.0 §4.2, §4.5).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from joserfc import jwt

from hubfleet.edu.lti.keys import ALGORITHM, ToolKey
from hubfleet.edu.lti.state import Expiring

if TYPE_CHECKING:
    from hubfleet.edu.lti.launch import Launch

DL_CLAIM = "https://purl.imsglobal.org/spec/lti-dl/claim/"
SETTINGS_CLAIM = f"{DL_CLAIM}deep_linking_settings"
LTI_CLAIM = "https://purl.imsglobal.org/spec/lti/claim/"
RESPONSE_MESSAGE_TYPE = "LtiDeepLinkingResponse"

RESOURCE_LINK = "ltiResourceLink"
LINK = "link"
OFFERED_TYPES = (RESOURCE_LINK, LINK)
"""The content item types the tool makes: LTI resource links (notebooks, assignments, git content) and plain links
(git content through the front door, for platforms that take no resource links)."""

MAX_DATA_BYTES = 4096
"""Largest `data` value echoed back (the spec's examples are a short opaque string)."""

MAX_ITEMS = 50
"""Most content items one response carries."""

RESPONSE_LIFETIME = 300
"""Seconds the signed response stays valid (the browser posts it to the platform at once)."""


def _strings(value: Any, name: str, limit: int = 16) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(entry, str) for entry in value):
        raise ValueError(f"deep_linking_settings.{name} must be a list of strings")
    return tuple(entry[:128] for entry in value[:limit])


def _flag(value: Any, name: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise ValueError(f"deep_linking_settings.{name} must be true or false")


def _text(value: Any, limit: int = 1024) -> str | None:
    return value[:limit] if isinstance(value, str) and value else None


@dataclass(frozen=True)
class DeepLinkingSettings:
    """The platform's `deep_linking_settings` (IMS Deep Linking 2.0 §4.4.1)."""

    return_url: str
    accept_types: tuple[str, ...]
    accept_presentation_document_targets: tuple[str, ...] = ()
    accept_multiple: bool = False
    accept_lineitem: bool | None = None
    """True: the platform makes a line item from an item's `lineItem`; False: it ignores them; None: not said."""
    auto_create: bool = False
    title: str | None = None
    text: str | None = None
    data: Any = None
    """Opaque: echoed unchanged in the response when present (`has_data`)."""
    has_data: bool = False

    @classmethod
    def from_claim(cls, claim: Any) -> DeepLinkingSettings:
        """The settings in a request's claim; ValueError saying what is wrong."""
        if not isinstance(claim, dict):
            raise ValueError("the deep linking request has no deep_linking_settings object")
        return_url = claim.get("deep_link_return_url")
        if not isinstance(return_url, str) or not return_url or len(return_url) > 2048:
            raise ValueError("deep_linking_settings has no deep_link_return_url")
        try:
            scheme = urlsplit(return_url).scheme
        except ValueError:
            scheme = ""
        if scheme not in ("https", "http"):
            raise ValueError("deep_linking_settings.deep_link_return_url must be an http(s) URL")
        accept_types = _strings(claim.get("accept_types"), "accept_types")
        if not accept_types:
            raise ValueError("deep_linking_settings.accept_types names no content item type")
        has_data = "data" in claim
        if has_data and len(json.dumps(claim["data"])) > MAX_DATA_BYTES:
            raise ValueError(f"deep_linking_settings.data is larger than {MAX_DATA_BYTES} bytes")
        return cls(
            return_url=return_url,
            accept_types=accept_types,
            accept_presentation_document_targets=_strings(
                claim.get("accept_presentation_document_targets"), "accept_presentation_document_targets"
            ),
            accept_multiple=bool(_flag(claim.get("accept_multiple"), "accept_multiple")),
            accept_lineitem=_flag(claim.get("accept_lineitem"), "accept_lineitem"),
            auto_create=bool(_flag(claim.get("auto_create"), "auto_create")),
            title=_text(claim.get("title")),
            text=_text(claim.get("text")),
            data=claim.get("data"),
            has_data=has_data,
        )

    def accepts(self, item_type: str) -> bool:
        return item_type in self.accept_types

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe (for logs and pages)."""
        return {
            "return_url": self.return_url,
            "accept_types": list(self.accept_types),
            "accept_multiple": self.accept_multiple,
            "accept_lineitem": self.accept_lineitem,
        }


@dataclass(frozen=True)
class LineItemRequest:
    """A grade column the platform should make for a resource link (Deep Linking 2.0 §3.4.2 `lineItem`)."""

    label: str
    score_maximum: float
    resource_id: str
    tag: str = "hubfleet"

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "scoreMaximum": self.score_maximum,
            "resourceId": self.resource_id,
            "tag": self.tag,
        }


def resource_link_item(
    settings: DeepLinkingSettings,
    *,
    url: str,
    title: str,
    text: str | None = None,
    custom: dict[str, str] | None = None,
    line_item: LineItemRequest | None = None,
) -> dict[str, Any]:
    """An `ltiResourceLink` content item: launched at `url` with the `custom` parameters; opened in a window of its
    own when the platform allows (the hub's pages refuse to be framed by other sites)."""
    item: dict[str, Any] = {"type": RESOURCE_LINK, "url": url, "title": title[:255]}
    if text:
        item["text"] = text[:1024]
    if custom:
        item["custom"] = dict(custom)
    if line_item is not None:
        item["lineItem"] = line_item.to_json()
    targets = settings.accept_presentation_document_targets
    if "window" in targets or not targets:
        item["window"] = {"targetName": "_blank"}
    return item


def link_item(*, url: str, title: str, text: str | None = None) -> dict[str, Any]:
    """A plain `link` content item (the platform shows it as a hyperlink)."""
    item: dict[str, Any] = {"type": LINK, "url": url, "title": title[:255]}
    if text:
        item["text"] = text[:1024]
    return item


def response_token(
    tool_key: ToolKey,
    launch: Launch,
    items: Sequence[dict[str, Any]],
    *,
    message: str | None = None,
    clock: Callable[[], float] = time.time,
) -> str:
    """The signed `LtiDeepLinkingResponse` JWT answering `launch` (a validated deep linking request)."""
    settings = launch.deep_linking
    if settings is None:
        raise ValueError("not a deep linking request")
    if len(items) > (MAX_ITEMS if settings.accept_multiple else 1):
        raise ValueError("more content items than the platform accepts")
    now = int(clock())
    claims: dict[str, Any] = {
        "iss": launch.client_id,
        "aud": launch.issuer,
        "iat": now,
        "exp": now + RESPONSE_LIFETIME,
        "nonce": secrets.token_urlsafe(24),
        f"{LTI_CLAIM}deployment_id": launch.deployment_id,
        f"{LTI_CLAIM}message_type": RESPONSE_MESSAGE_TYPE,
        f"{LTI_CLAIM}version": "1.3.0",
        f"{DL_CLAIM}content_items": list(items),
    }
    if settings.has_data:
        claims[f"{DL_CLAIM}data"] = settings.data
    if message:
        claims[f"{DL_CLAIM}msg"] = message[:512]
    header = {"alg": ALGORITHM, "kid": tool_key.kid, "typ": "JWT"}
    return jwt.encode(header, claims, tool_key.private)


@dataclass(frozen=True)
class PickSession:
    """A validated deep linking request waiting for the instructor's choice on the picker page."""

    id: str
    launch: Launch
    username: str
    course: str


class PickSessions:
    """Open picker sessions by id: each taken at most once, gone after `ttl` seconds, at most `max_entries` (the
    oldest dropped to make room)."""

    def __init__(self, ttl: float, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        if ttl <= 0 or max_entries < 1:
            raise ValueError("picker sessions need a positive TTL and room for at least one")
        self._open: Expiring[PickSession] = Expiring(ttl, max_entries, clock)

    def __len__(self) -> int:
        return len(self._open)

    def start(self, launch: Launch, username: str, course: str) -> PickSession:
        session = PickSession(secrets.token_urlsafe(32), launch, username, course)
        self._open.add(session.id, session)
        return session

    def get(self, session_id: str) -> PickSession | None:
        """The open session `session_id` (still open afterwards); None if unknown, expired or taken."""
        return self._open.get(session_id[:128])

    def take(self, session_id: str) -> PickSession | None:
        """The open session `session_id`, closed (a second take gets None)."""
        return self._open.pop(session_id[:128])
