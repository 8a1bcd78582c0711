"""Writing an environment's history (root's, readable by everyone: spawners and gateways read it)."""

from __future__ import annotations

import os

from hubfleet.common.environments import EnvStore, History


def save_history(store: EnvStore, history: History) -> None:
    """Replace the history of `history.key` atomically."""
    path = store.history_file(history.key)
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(history.model_dump_json(indent=2))
    os.replace(tmp, path)
