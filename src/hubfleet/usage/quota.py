"""The hard quota, hub side: refuse new servers while the fleet's collector says the hub's budget is spent.

The collector (fleet side) writes `QUOTA_FILE` into the hub's state directory when a hub with `hard_quota` is over
budget, and removes it when it is not; the hub's `Spawner.pre_spawn_hook` reads it before every start. JupyterHub
shows a `SpawnException`'s message to the user on the spawn page (and answers 403 with it on the REST API).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

QUOTA_FILE = "usage-quota.json"
"""In a hub's state directory while its hard quota refuses new servers: {"message": ..., "period": ...}."""

DEFAULT_MESSAGE = "This hub has used its budget, so no new servers can start. Please contact the hub's administrators."


def quota_message(state_dir: Path) -> str | None:
    """The refusal message when the hub's quota file is present, else None."""
    try:
        text = (Path(state_dir) / QUOTA_FILE).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        message = json.loads(text).get("message")
    except (ValueError, AttributeError):
        message = None
    return message if isinstance(message, str) and message else DEFAULT_MESSAGE


class QuotaHook:
    """A `Spawner.pre_spawn_hook` that refuses the start (403, with the message) while the hub is over quota."""

    def __init__(self, state_dir: Path):
        self.state_dir = Path(state_dir)

    def __call__(self, spawner: Any) -> None:
        message = quota_message(self.state_dir)
        if message is not None:
            # Imported here: the fleet side reads QUOTA_FILE from this module without loading JupyterHub.
            from jupyterhub.spawner import SpawnException

            raise SpawnException(message, reason="quota", status_code=403)
