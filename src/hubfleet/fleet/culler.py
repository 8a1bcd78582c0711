"""One idle culler for the whole fleet: jupyterhub-idle-culler's `cull_idle`, run by the supervisor against each awake
hub every `culling.every` seconds (a culler process per hub would cost every hub ~30 MB for a few requests an hour).
A sleeping hub has no servers to cull and is left alone."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from jupyterhub_idle_culler import cull_idle

from hubfleet.fleet.backend import RunningHub
from hubfleet.spec.models import Fleet

log = logging.getLogger("hubfleet.culler")

LOOK_EVERY = 10.0
"""Seconds between two looks at which hubs are due a cull."""


class Culler:
    """Culls idle servers of every awake hub with `culling.enabled`, each on its own schedule."""

    def __init__(self, fleet: Callable[[], Fleet], hubs: Callable[[], list[RunningHub]]):
        self.fleet = fleet
        self.hubs = hubs
        self._last: dict[str, float] = {}

    async def cull_due(self) -> None:
        """Cull each awake hub whose `culling.every` has passed since its last cull."""
        now = time.monotonic()
        specs = self.fleet().hubs
        for hub in self.hubs():
            spec = specs.get(hub.name)
            if spec is None or not hub.awake or not spec.culling.enabled:
                continue
            if now - self._last.get(hub.name, 0.0) < spec.culling.every:
                continue
            self._last[hub.name] = now
            try:
                await cull_idle(
                    url=hub.settings.address.hub_api_url,
                    api_token=hub.settings.secret("culler_token"),
                    inactive_limit=spec.culling.timeout,
                    logger=log,
                    max_age=spec.culling.max_age,
                )
            except Exception as exc:  # a hub that does not answer now is culled next time
                log.warning("culling idle servers of hub %s failed: %s", hub.name, exc)
