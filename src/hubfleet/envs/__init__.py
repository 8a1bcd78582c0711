"""Users' environments: built from the fleet file's specs with uv, versioned, shared through one cache, collected.

The face of the room: `Builder` builds a version (as the unprivileged build account), `build_fleet` builds what
a fleet file changed, `rollback` makes an older version active again, `collect` removes versions nothing uses.
Readers (the spawner, the Dask Gateway) need only `hubfleet.common.environments`.
"""

from __future__ import annotations

from collections.abc import Iterator

from hubfleet.common.environments import EnvStore, History, Version
from hubfleet.envs._build import Builder, BuildError, Result, Say, server_side, spec_hash
from hubfleet.envs._gc import Collected, collect, disk_use, processes_in
from hubfleet.envs._history import save_history
from hubfleet.spec.environments import Environment
from hubfleet.spec.models import Fleet


def store_of(fleet: Fleet) -> EnvStore:
    """The store the fleet's environments are built in."""
    return EnvStore(fleet.paths.environments)


def outdated(fleet: Fleet) -> Iterator[tuple[str, Environment]]:
    """(key, spec) of each environment a profile names whose spec changed since it was last built or asked for (or
    that never was). Environments no profile names (a template may bring some) are built only when asked for."""
    store = store_of(fleet)
    for key, env in fleet.used_environments().items():
        history = store.history(key)
        if history.requested != spec_hash(env, fleet.builds) or history.active_version is None:
            yield key, env


def rollback(store: EnvStore, key: str, to: int | None = None) -> Version:
    """Make version `to` (default: the newest live version older than the active one) active for new servers.

    The spec stays "asked for": `apply` with the same fleet file keeps the rollback; a changed spec builds anew.
    """
    history = store.history(key)
    if not history.versions:
        raise LookupError(f"environment {key} has no versions")
    live = [v for v in history.live if store.complete(v.build)]
    if to is None:
        older = [v for v in live if history.active is None or v.number < history.active]
        if not older:
            raise LookupError(f"environment {key} has no older version to go back to")
        target = older[-1]
    else:
        target = next((v for v in live if v.number == to), None)
        if target is None:
            numbers = ", ".join(f"v{v.number}" for v in live) or "none"
            raise LookupError(f"environment {key} has no version v{to} on disk (versions: {numbers})")
    save_history(store, history.model_copy(update={"active": target.number}))
    return target


__all__ = [
    "BuildError",
    "Builder",
    "Collected",
    "EnvStore",
    "History",
    "Result",
    "Say",
    "Version",
    "collect",
    "disk_use",
    "outdated",
    "processes_in",
    "rollback",
    "server_side",
    "spec_hash",
    "store_of",
]
