"""Scores for the LMS keep going out while a hub sleeps.

An awake hub's assignment exchange delivers its pending scores (its passback outbox, in the fleet database) every
few seconds. A hub that sleeps runs no exchange, so the supervisor delivers them instead — with the same code
(`hubfleet.edu.exchange.passback`), the exchange's own settings and the hub's tool key — without waking the hub.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from hubfleet.db import open_database
from hubfleet.edu.exchange.passback import Passback
from hubfleet.edu.exchange.settings import SETTINGS_FILE, ExchangeSettings
from hubfleet.edu.exchange.store import Exchange
from hubfleet.fleet.backend import RunningHub

log = logging.getLogger("hubfleet.outbox")

DELIVER_EVERY = float(os.environ.get("HUBFLEET_OUTBOX_EVERY") or 30.0)
"""Seconds between two deliveries of sleeping hubs' pending scores (`$HUBFLEET_OUTBOX_EVERY`, for tests)."""


class OutboxRelay:
    """Delivers the pending scores of every sleeping hub that has an exchange."""

    def __init__(self, hubs: Callable[[], list[RunningHub]]):
        self.hubs = hubs
        self._passbacks: dict[str, Passback] = {}

    def _passback(self, hub: RunningHub) -> Passback | None:
        settings_file = hub.settings.state_dir / SETTINGS_FILE
        if not settings_file.exists():
            return None  # the hub never ran an exchange: it has no scores to send
        passback = self._passbacks.get(hub.name)
        if passback is None:
            settings = ExchangeSettings.read(settings_file)
            exchange = Exchange(open_database(settings.database_url), settings.hub)
            passback = Passback(exchange, settings.lti_platforms, settings.tool_key_file)
            self._passbacks[hub.name] = passback
        return passback

    async def deliver(self) -> None:
        """One round: every sleeping hub's pending scores (an awake hub's exchange does its own)."""
        for hub in self.hubs():
            if hub.awake:
                continue
            passback = self._passback(hub)
            if passback is None or not passback.pending():
                continue
            report = await passback.deliver_pending()
            log.info("hub %s (asleep): %d score(s) delivered, %d pending", hub.name, report.delivered, report.pending)

    async def close(self) -> None:
        for passback in self._passbacks.values():
            await passback.close()
