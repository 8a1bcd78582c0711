"""What a hub's exchange service process is told: the contract between the fleet side and the service."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from hubfleet.common.settings import SettingsFile
from hubfleet.spec.edu import LTIPlatform

SETTINGS_ENV = "HUBFLEET_EXCHANGE_SETTINGS"
"""Environment variable holding the path of an exchange service's settings file."""

SETTINGS_FILE = "exchange.json"
"""The service's settings file, in the hub's state directory."""

SERVICE_NAME = "assignments"
"""The exchange's JupyterHub service name: its URL prefix is the hub's services/assignments/."""

ACCESS_SCOPE = f"access:services!service={SERVICE_NAME}"
"""What a user's (or a server's) token needs to reach the exchange."""

DEFAULT_MAX_UPLOAD_BYTES = 20 * 1024 * 1024
"""Largest release or submission (all files together) the exchange accepts."""


class ExchangeSettings(SettingsFile):
    """One hub's exchange service: where it listens, how it reaches the hub and the fleet database, and the LMS
    registrations grade passback uses. Secrets (`exchange_token`, `exchange_cookie_secret`) are files."""

    env_var: ClassVar[str] = SETTINGS_ENV

    hub: str
    address: str
    """host:port the service listens on (loopback; the hub's proxy routes its prefix there)."""
    prefix: str
    """The service's URL prefix (`/hubs/<hub>/services/assignments/`)."""
    hub_api_url: str
    hub_prefix: str
    """The hub's own prefix (`/hubs/<hub>/hub/`): OAuth endpoints for browsers."""
    database_url: str
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    grading_workers: int = 0
    """Autograding workers (0: sized to the machine's cores)."""
    instant_feedback_workers: int = 2
    """Instant-feedback graders (warm sandboxes) of the hub: the most submissions checked at once."""
    instant_feedback_per_student: int = 6
    instant_feedback_window: float = 60.0
    """A student gets at most `instant_feedback_per_student` checks per `instant_feedback_window` seconds."""
    passback_every: float = 10.0
    """Seconds between attempts to deliver pending scores to the LMS."""
    lti_platforms: list[LTIPlatform] = []
    tool_key_file: Path | None = None
    """The hub's LTI tool key (PEM): signs the client-credentials assertion for AGS."""
