"""The exchange in a hub's configuration: which hubs run one, its service entry and settings, and how it merges with
the Dask Gateway's (the user role, the servers' token scopes and environment are shared, never overwritten)."""

from __future__ import annotations

from pathlib import Path

from traitlets.config import Config

from hubfleet.backends.local.render import exchange_link, render_exchange_settings, render_settings
from hubfleet.common.settings import HubPorts
from hubfleet.common.state import FleetState
from hubfleet.edu.exchange.settings import ACCESS_SCOPE, SERVICE_NAME
from hubfleet.edu.exchange.student import URL_ENV
from hubfleet.hub.config import configure
from hubfleet.spec import parse
from tests.helpers import address_of

FLEET = """\
name: cfg
hubs:
  teach:
    auth: {type: shared-password, password: a-long-password}
    dask: {enabled: true}
    courses: [{name: ds, instructors: [prof], students: [ann]}]
  plain:
    auth: {type: shared-password, password: a-long-password}
"""

PORTS = HubPorts(hub=1, gateway=5, gateway_tcp=6, gateway_api=7, exchange=8)


def test_hub_with_courses_gets_the_exchange(tmp_path: Path) -> None:
    fleet = parse(FLEET, tmp_path / "fleet.yaml")
    state = FleetState(tmp_path / "state").create()
    teach = state.hub("teach").create()
    settings = render_settings(fleet, fleet.hubs["teach"], teach, address_of(fleet.hubs["teach"], PORTS))
    assert settings.exchange is not None and settings.exchange.url == "http://127.0.0.1:8"
    assert (
        exchange_link(fleet.hubs["plain"], address_of(fleet.hubs["plain"], PORTS)) is None
    )  # no courses, no LTI: no exchange

    c = Config()
    configure(c, settings)
    service = next(s for s in c.JupyterHub.services if s["name"] == SERVICE_NAME)
    assert service["url"] == "http://127.0.0.1:8" and service["oauth_no_confirm"]
    (user_role,) = [role for role in c.JupyterHub.load_roles if role["name"] == "user"]
    assert ACCESS_SCOPE in user_role["scopes"] and "access:services!service=dask-gateway" in user_role["scopes"]
    scopes = c.Spawner.server_token_scopes
    assert ACCESS_SCOPE in scopes and "access:services!service=dask-gateway" in scopes
    assert "read:users:groups!user" in scopes  # the exchange reads the caller's course groups
    assert c.Spawner.environment[URL_ENV] == "http://127.0.0.1:8000/hubs/teach/services/assignments/"
    assert "DASK_GATEWAY__ADDRESS" in c.Spawner.environment

    exchange = render_exchange_settings(fleet, fleet.hubs["teach"], teach, address_of(fleet.hubs["teach"], PORTS))
    assert exchange.prefix == "/hubs/teach/services/assignments/" and exchange.address == "127.0.0.1:8"
    assert exchange.secret("exchange_token") == settings.secret("exchange_token")
    assert exchange.tool_key_file is None  # no LTI: no passback key
