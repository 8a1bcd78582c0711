"""The tool's face to LMS admins: its endpoints' URLs, and the configuration documents each kind of LMS asks for."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from hubfleet.spec.edu import LTIPlatform

PREFIX = "lti13"
"""Path of the LTI endpoints below the hub's prefix (`<public hub URL>hub/lti13/…`)."""

SCOPES = [
    "https://purl.imsglobal.org/spec/lti-nrps/scope/contextmembership.readonly",
    "https://purl.imsglobal.org/spec/lti-ags/scope/lineitem",
    "https://purl.imsglobal.org/spec/lti-ags/scope/lineitem.readonly",
    "https://purl.imsglobal.org/spec/lti-ags/scope/result.readonly",
    "https://purl.imsglobal.org/spec/lti-ags/scope/score",
]
"""What the tool asks the LMS for: the course roster (roster sync) and grades (assignments)."""


@dataclass(frozen=True)
class ToolURLs:
    """The hub's LTI endpoints as the LMS reaches them."""

    login: str
    launch: str
    jwks: str
    config: str
    canvas: str

    @classmethod
    def of(cls, hub_public_url: str) -> ToolURLs:
        """For a hub whose public URL (front door + hub prefix, ending in `/`) is `hub_public_url`."""
        base = f"{hub_public_url.rstrip('/')}/hub/{PREFIX}/"
        return cls(
            login=f"{base}login",
            launch=f"{base}launch",
            jwks=f"{base}jwks",
            config=f"{base}config",
            canvas=f"{base}canvas.json",
        )


@dataclass(frozen=True)
class ToolIdentity:
    """What the configuration documents say about one hub's tool."""

    name: str
    urls: ToolURLs
    public_jwk: dict[str, Any]
    platforms: list[LTIPlatform]


def tool_configuration(lti: ToolIdentity) -> dict[str, Any]:
    """Every value an LMS admin needs, per kind of LMS (see docs/lms-admin-guide.md)."""
    urls = lti.urls
    common = {
        "tool_name": lti.name,
        "login_initiation_url": urls.login,
        "redirect_uris": [urls.launch],
        "target_link_uri": urls.launch,
        "jwks_url": urls.jwks,
        "public_key": lti.public_jwk,
        "scopes": SCOPES,
    }
    return {
        "tool": common,
        "canvas": {"developer_key_json_url": urls.canvas, "redirect_uris": [urls.launch]},
        "moodle": {
            "tool_url": urls.launch,
            "lti_version": "LTI 1.3",
            "public_key_type": "Keyset URL",
            "public_keyset": urls.jwks,
            "initiate_login_url": urls.login,
            "redirection_uris": [urls.launch],
            "supports_deep_linking": True,
            "content_selection_url": urls.launch,
            "services": {"ims_lti_names_and_role_provisioning": "use", "ims_lti_assignment_and_grade_services": "use"},
            "privacy": {"share_launcher_name": "always", "share_launcher_email": "always"},
        },
        "openedx": {
            "lti_version": "LTI 1.3",
            "tool_launch_url": urls.launch,
            "tool_initiate_login_url": urls.login,
            "tool_public_key_mode": "Keyset URL",
            "tool_keyset_url": urls.jwks,
            "deep_linking": True,
            "deep_linking_launch_url": urls.launch,
            "request_username": True,
            "request_email": True,
        },
        "registrations": [
            {"label": p.label, "issuer": p.issuer, "client_id": p.client_id, "deployment_ids": p.deployment_ids}
            for p in lti.platforms
        ],
    }


def canvas_developer_key(lti: ToolIdentity) -> dict[str, Any]:
    """The Canvas developer key configuration (Developer Keys → + LTI Key → Method: Enter URL / Paste JSON)."""
    urls = lti.urls
    host = urlparse(urls.launch).hostname or ""
    placement = {"message_type": "LtiResourceLinkRequest", "target_link_uri": urls.launch, "windowTarget": "_blank"}
    # Adding a module item or an assignment: the instructor picks a notebook, an assignment or git content.
    picker = {"message_type": "LtiDeepLinkingRequest", "target_link_uri": urls.launch}
    return {
        "title": lti.name,
        "description": f"JupyterHub {lti.name}: your own Jupyter server, in your course's folder",
        "oidc_initiation_url": urls.login,
        "target_link_uri": urls.launch,
        "public_jwk_url": urls.jwks,
        "scopes": SCOPES,
        "extensions": [
            {
                "platform": "canvas.instructure.com",
                "domain": host,
                "tool_id": f"hubfleet-{lti.name}",
                "privacy_level": "public",
                "settings": {
                    "text": lti.name,
                    "placements": [
                        {"placement": "course_navigation", "text": lti.name, **placement},
                        {"placement": "link_selection", "text": lti.name, **picker},
                        {"placement": "assignment_selection", "text": lti.name, **picker},
                    ],
                },
            }
        ],
        "custom_fields": {},
    }
