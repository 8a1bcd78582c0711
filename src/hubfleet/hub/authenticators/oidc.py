"""Log in with any OpenID Connect provider (oauthenticator's GenericOAuthenticator), its endpoints read from the
provider's discovery document when the hub starts."""

from __future__ import annotations

from typing import Any

import httpx
from oauthenticator.generic import GenericOAuthenticator as _Generic
from traitlets import Unicode

from hubfleet.hub.authenticators import LoginRecorderMixin
from hubfleet.hub.authenticators.directory import ClaimGroupsMixin
from hubfleet.hub.home_export import ExportMixin

DISCOVERY = "/.well-known/openid-configuration"


def discover(issuer: str, timeout: float = 15.0) -> dict[str, Any]:
    """The provider's discovery document (OpenID Connect Discovery 1.0), checked to be the issuer's own."""
    url = issuer.rstrip("/") + DISCOVERY
    try:
        response = httpx.get(url, timeout=timeout, follow_redirects=True)
        response.raise_for_status()
        document = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise RuntimeError(f"cannot read the OpenID provider's discovery document {url}: {exc}") from exc
    if str(document.get("issuer", "")).rstrip("/") != issuer.rstrip("/"):
        raise RuntimeError(f"{url} names issuer {document.get('issuer')!r}, not {issuer!r}")
    for endpoint in ("authorization_endpoint", "token_endpoint"):
        if not document.get(endpoint):
            raise RuntimeError(f"{url} has no {endpoint}")
    return document


class OIDCAuthenticator(ExportMixin, LoginRecorderMixin, ClaimGroupsMixin, _Generic):
    """OpenID Connect login, recording logins, with directory groups from a claim."""

    issuer = Unicode(config=True, help="the provider's issuer URL (endpoints from its discovery document)")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self.issuer:
            document = discover(self.issuer)
            self.authorize_url = document["authorization_endpoint"]
            self.token_url = document["token_endpoint"]
            if document.get("userinfo_endpoint"):
                self.userdata_url = document["userinfo_endpoint"]
            else:  # the claims come with the id_token (straight from the token endpoint, over TLS)
                self.userdata_from_id_token = True
