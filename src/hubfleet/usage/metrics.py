"""`/_hubfleet/metrics` on the front door: the usage collector's Prometheus gauges (per hub, group and user).

Usage per user is personal data, so the endpoint wants `Authorization: Bearer <token>` with the token kept in the
state directory (`frontdoor/metrics_token`, made on first use, readable by the fleet's owner only).
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from tornado import web

from hubfleet.common.files import write_private
from hubfleet.common.state import FleetState

__all__ = ["METRICS_TOKEN_FILE", "CollectorRegistry", "MetricsHandler", "metrics_token"]

METRICS_TOKEN_FILE = "metrics_token"


def metrics_token(state: FleetState) -> str:
    """The bearer token of the metrics endpoint (created on first use)."""
    path = state.frontdoor_dir / METRICS_TOKEN_FILE
    if not path.exists():
        write_private(path, secrets.token_hex(32))
    return path.read_text(encoding="utf-8").strip()


class MetricsHandler(web.RequestHandler):
    """Prometheus text exposition of the usage gauges; 401 without the bearer token, 503 before the first sweep."""

    def initialize(self, registry: Callable[[], CollectorRegistry | None], state: FleetState) -> None:
        self.registry = registry
        self.state = state

    def get(self) -> None:
        given = self.request.headers.get("Authorization", "")
        expected = f"Bearer {metrics_token(self.state)}"
        if not hmac.compare_digest(given.encode(), expected.encode()):
            self.set_header("WWW-Authenticate", 'Bearer realm="hubfleet metrics"')
            raise web.HTTPError(401)
        registry = self.registry()
        if registry is None:
            raise web.HTTPError(503)
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.set_header("Cache-Control", "no-store")
        self.finish(generate_latest(registry))
