"""LTI on top of a hub's own login: from the fleet file to the hub's authenticator class and its settings."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import httpx
import pytest
import tornado.httpserver
import tornado.netutil
import tornado.web
from traitlets.config import Config

from hubfleet.backends.local.render import render_settings
from hubfleet.common.settings import HubSettings
from hubfleet.common.state import FleetState
from hubfleet.edu.lti.launch import Launch
from hubfleet.hub.authenticators.lti import (
    LaunchLogin,
    LTI13Authenticator,
    ToolURLs,
    course_slug,
    state_cookie_options,
)
from hubfleet.hub.config import configure
from hubfleet.spec import parse
from tests.helpers import address_of

FLEET = """\
name: cfg
front_door: {public_url: "https://hubs.uni.example"}
hubs:
  gh:
    auth: {type: github, client_id: abc123, client_secret: very-secret-value, admins: [octocat]}
    lti:
      username: name
      platforms:
        - label: canvas
          issuer: https://canvas.instructure.com
          client_id: "10000000000123"
          deployment_ids: ["1:abc"]
          auth_login_url: https://sso.canvaslms.com/api/lti/authorize_redirect
          token_url: https://canvas.uni.example/login/oauth2/token
          jwks_url: https://sso.canvaslms.com/api/lti/security/jwks
  pw:
    auth: {type: shared-password, password: long-enough-password}
"""


@pytest.fixture
def configs(tmp_path: Path) -> dict[str, tuple[HubSettings, Config]]:
    fleet = parse(FLEET, tmp_path / "fleet.yaml")
    state = FleetState(tmp_path / "state").create()
    out = {}
    for name, hub in fleet.hubs.items():
        settings = render_settings(fleet, hub, state.hub(name).create(), address_of(hub))
        settings.write(state.hub(name).settings_file)
        settings = HubSettings.read(state.hub(name).settings_file)
        c = Config()
        configure(c, settings)
        out[name] = (settings, c)
    return out


def test_lti_is_added_to_the_hubs_own_login(configs: dict[str, tuple[HubSettings, Config]]) -> None:
    settings, c = configs["gh"]
    cls = c.JupyterHub.authenticator_class
    assert issubclass(cls, LTI13Authenticator)
    assert [base.__name__ for base in cls.__mro__[1:3]] == ["LTI13Authenticator", "GitHubAuthenticator"]
    assert c.LTI13Authenticator.hub_public_url == "https://hubs.uni.example/hubs/gh/"
    assert c.LTI13Authenticator.lti.username == "name"
    assert c.Authenticator.enable_auth_state is True and len(c.CryptKeeper["keys"]) == 1
    assert "octocat" in c.LTI13Authenticator.reserved_usernames
    assert "very-secret-value" not in settings.model_dump_json()
    # a hub without `lti:` keeps its plain authenticator
    _, plain = configs["pw"]
    assert plain.JupyterHub.authenticator_class == "hubfleet.hub.authenticators.SharedPasswordAuthenticator"


def test_the_combined_authenticator_dispatches(configs: dict[str, tuple[HubSettings, Config]]) -> None:
    settings, c = configs["gh"]
    authenticator = c.JupyterHub.authenticator_class(config=c)
    paths = [path for path, _ in authenticator.get_handlers(None)]
    assert "/oauth_login" in paths and "/oauth_callback" in paths  # GitHub's login is still there
    assert {"/lti13/login", "/lti13/launch", "/lti13/jwks", "/lti13/config", "/lti13/canvas.json"} <= set(paths)
    key_file = settings.state_dir / "lti-tool-key.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert authenticator.tool_key.kid == authenticator.tool_key.jwks()["keys"][0]["kid"]

    launch = Launch(
        "https://canvas.instructure.com", "10000000000123", "1:abc", "s1", "LtiResourceLinkRequest", "t", name="Ann B"
    )
    model = asyncio.run(authenticator.authenticate(None, LaunchLogin(launch, "ann-b")))
    assert model["name"] == "ann-b" and model["auth_state"]["lti"]["sub"] == "s1"
    assert authenticator.check_allowed("ann-b", model) is True
    assert asyncio.run(authenticator.usernames.of(launch.issuer, "s1", email=None, name="Ann B")) == "ann-b"
    assert ToolURLs.of(settings.public_url).launch == "https://hubs.uni.example/hubs/gh/hub/lti13/launch"


@pytest.mark.parametrize(
    ("text", "slug"),
    [("PHYS 2", "phys-2"), ("Data Science 101", "data-science-101"), ("***", "course"), ("Ü" * 40, "course")],
)
def test_course_names_from_lms_courses(text: str, slug: str) -> None:
    assert course_slug(text) == slug


@pytest.mark.parametrize(
    ("public_url", "cross_site"),
    [("https://hubs.uni.example/hubs/gh/", True), ("http://127.0.0.1:8000/hubs/gh/", False)],
)
def test_login_state_cookie_survives_the_lms_cross_site_post_on_https(public_url: str, cross_site: bool) -> None:
    """Behind https the state cookie is `SameSite=None; Secure; HttpOnly` (browsers drop other cookies on the LMS's
    cross-site form POST); on plain http browsers refuse SameSite=None, so it is not set. The header is the one
    tornado really sends with these options (httpx does not enforce SameSite, so a launch test cannot see this)."""
    options = state_cookie_options("/hubs/gh/hub/", public_url)

    class Login(tornado.web.RequestHandler):
        def get(self) -> None:
            self.set_secure_cookie("lti-state", "s", **options)

    async def set_cookie_header() -> str:
        sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
        server = tornado.httpserver.HTTPServer(tornado.web.Application([("/", Login)], cookie_secret="x" * 32))
        server.add_sockets(sockets)
        try:
            async with httpx.AsyncClient() as client:
                response = await client.get(f"http://127.0.0.1:{sockets[0].getsockname()[1]}/")
        finally:
            server.stop()
        return response.headers["set-cookie"]

    set_cookie = asyncio.run(set_cookie_header())
    attributes = {part.strip().split("=")[0].lower(): part.strip() for part in set_cookie.split(";")[1:]}
    assert attributes["path"] == "Path=/hubs/gh/hub/lti13/"
    assert "httponly" in attributes
    assert ("secure" in attributes) is cross_site
    assert (attributes.get("samesite", "").lower() == "samesite=none") is cross_site
