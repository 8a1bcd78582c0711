"""The hub's view of the fleet's one proxy: JupyterHub's configurable-http-proxy client, limited to the hub's prefix.

Every hub of a fleet routes through the front door's configurable-http-proxy (JupyterHub's external-proxy mode:
`should_start = False`). The hub does not talk to that proxy's API directly: it talks to the fleet's route API
(`hubfleet.fleet.routes`), with a token of its own, which lets it see, add and delete only routes under its own
base URL. `FleetProxy` keeps to the same rule on its side, so a mistake in one hub's configuration cannot reach
another hub's routes either way.
"""

from __future__ import annotations

from typing import Any

from jupyterhub.proxy import ConfigurableHTTPProxy


class RouteOutsideHub(ValueError):
    """A route the hub does not own (outside its base URL)."""


class FleetProxy(ConfigurableHTTPProxy):
    """configurable-http-proxy, started and kept alive by the fleet, shared by every hub: this hub's routes only."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.should_start = False

    @property
    def prefix(self) -> str:
        """The hub's base URL (`/hubs/<name>/`): every route of this hub lies below it."""
        return self.app.base_url

    def owns(self, routespec: str) -> bool:
        """Whether `routespec` (a path, ending in `/`) lies under the hub's base URL."""
        return routespec.startswith(self.prefix)

    def _check(self, routespec: str) -> None:
        if not self.owns(routespec):
            raise RouteOutsideHub(f"route {routespec!r} is outside this hub's prefix {self.prefix!r}")

    async def add_route(self, routespec: str, target: str, data: dict) -> None:
        self._check(routespec)
        await super().add_route(routespec, target, data)

    async def delete_route(self, routespec: str) -> None:
        self._check(routespec)
        await super().delete_route(routespec)

    async def get_all_routes(self) -> dict[str, dict]:
        routes = await super().get_all_routes()
        return {spec: route for spec, route in routes.items() if self.owns(spec)}
