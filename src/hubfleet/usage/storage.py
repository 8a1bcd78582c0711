"""Home quotas as operators see them: each user's home use against the fleet file's quota (`hubfleet usage
--storage`, the console's hub page), the check that refuses a quota below what a home holds, and growing every
home of a hub when its quota is raised. The mechanism itself is in `hubfleet.system.homes`."""

from __future__ import annotations

import logging
import pwd
from dataclasses import dataclass
from pathlib import Path

from hubfleet.spec.models import Fleet
from hubfleet.system import homes

log = logging.getLogger("hubfleet.usage.storage")


@dataclass(frozen=True)
class HomeRow:
    """One user's home on this machine."""

    hub: str
    user: str
    """The hub user (the Unix account's name when its comment does not say)."""
    account: str
    used: int
    size: int | None
    """What the home may hold now (None: no quota image)."""
    quota: int | None
    """What the fleet file says it may hold."""
    mounted: bool

    @property
    def percent(self) -> float | None:
        """Use in percent of what the home may hold."""
        return 100 * self.used / self.size if self.size else None


def hub_user(hub: str, account: str) -> str:
    """The hub user an account belongs to: from the comment hubfleet gives every account (`<user> on hub <hub>`),
    else from a plain account name (`<hub>_<user>`), else the account's name."""
    try:
        user, found, _ = pwd.getpwnam(account).pw_gecos.rpartition(" on hub ")
    except KeyError:
        found = ""
    if found:
        return user
    plain = account.removeprefix(f"{hub}_")
    return plain if plain != account and not plain.startswith("_") else account


def storage_report(fleet: Fleet, hub: str | None = None) -> list[HomeRow]:
    """Every home of the fleet's hubs (or of `hub`) found on this machine, by hub and user."""
    rows = []
    for name, spec in fleet.hubs.items():
        if hub is not None and name != hub:
            continue
        for use in homes.hub_homes(fleet.paths.home_root, f"{name}_"):
            rows.append(
                HomeRow(
                    hub=name,
                    user=hub_user(name, use.user),
                    account=use.user,
                    used=use.used,
                    size=use.size,
                    quota=spec.storage.home_quota,
                    mounted=use.mounted,
                )
            )
    return sorted(rows, key=lambda row: (row.hub, row.user))


def gib(count: float) -> str:
    """Bytes as GiB with two decimals."""
    return f"{count / 1024**3:.2f} GiB"


def quota_problems(current: Fleet | None, desired: Fleet) -> list[str]:
    """Why `desired` cannot be applied: a home quota lowered (or newly set) below what a home already holds."""
    problems = []
    for name, hub in desired.hubs.items():
        quota = hub.storage.home_quota
        before = current.hubs[name].storage.home_quota if current is not None and name in current.hubs else None
        if quota is None or (before is not None and quota >= before):
            continue
        for row in storage_report(desired, name):
            if row.used > quota:
                problems.append(
                    f"hub {name}: the home of {row.user} holds {gib(row.used)}, more than the home quota of "
                    f"{gib(quota)}: keep the quota at least that large, or ask them to make room first"
                )
    return problems


def grow_homes(home_root: Path, hub: str, quota: int | None) -> None:
    """Bring every home of `hub` that has a quota image to `quota`: mounted homes grow at once (online); a lower
    quota is applied at each home's next server start (see `hubfleet.system.homes`)."""
    if quota is None:
        return
    for use in homes.hub_homes(home_root, f"{hub}_"):
        if use.size is None:
            continue  # moves into an image at its next server start
        try:
            homes.set_quota(use.home, quota)
        except homes.QuotaError as exc:
            log.warning("hub %s: %s", hub, exc)
