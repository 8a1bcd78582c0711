"""The console's URL paths at the front door (the hubs are under /hubs/, the fleet's internals under /_hubfleet/)."""

from __future__ import annotations

PREFIX = "/console/"
"""Every console page, and the path its cookies are scoped to: hubs and users' servers never receive them."""

LOGIN = f"{PREFIX}login"
STATIC = f"{PREFIX}static/"


def oauth_callback(hub: str) -> str:
    """Where hub `hub` sends the browser back to after a console login (the hub's OAuth redirect URI)."""
    return f"{PREFIX}oauth_callback/{hub}"


def hub_page(hub: str) -> str:
    """The console page of hub `hub`."""
    return f"{PREFIX}hubs/{hub}"
