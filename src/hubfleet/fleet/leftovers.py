"""What `hubfleet down` stops after a supervisor that died without cleaning up: the processes its pid files prove are
the fleet's (`hubfleet.system.pidfiles`: a pid alone proves nothing), what backends left elsewhere (Slurm jobs), and
the fleet's cgroups — the ones named after this state directory, never another fleet's."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hubfleet.common.settings import HubSettings
from hubfleet.common.state import FleetState
from hubfleet.fleet.backend import registered
from hubfleet.fleet.processes import Cleanup, kill_pid_file
from hubfleet.system import cgroups

PROCESSES = ("dask-gateway", "exchange", "hub")
"""A hub's processes with pid files, in the order they are stopped."""


@dataclass
class Leftovers:
    """What was found and done."""

    stopped: int = 0
    """Processes (and jobs) stopped."""
    stale: list[Path] = field(default_factory=list)
    """Pid files that named no process of the fleet any more: removed, nothing signalled."""
    warnings: list[str] = field(default_factory=list)
    """What may remain, and why."""


def pid_files(state: FleetState) -> list[Path]:
    """Every pid file the fleet's processes write (hubs' companions before their hub, the front door last)."""
    files = [state.hub(name).root / f"{process}.pid" for name in state.hub_names() for process in PROCESSES]
    return [*files, state.frontdoor_dir / "proxy.pid"]


def hub_cgroups(state: FleetState) -> list[str]:
    """The cgroups of the state directory's hubs, as their settings name them."""
    found = []
    for name in state.hub_names():
        try:
            found.append(HubSettings.read(state.hub(name).settings_file).cgroup)
        except (OSError, ValueError):
            continue
    return found


def clean_up(state: FleetState) -> Leftovers:
    """Stop what a dead supervisor of `state` left running."""
    found = Leftovers()
    for path in pid_files(state):
        outcome = kill_pid_file(path)
        if outcome is Cleanup.STOPPED:
            found.stopped += 1
        elif outcome is Cleanup.STALE:
            found.stale.append(path)
    for name in state.hub_names():
        for backend in registered().values():
            try:
                found.stopped += backend.clean_up_after(state.hub(name))
            except RuntimeError as exc:
                found.warnings.append(f"{backend.name}: what hub {name} left may remain: {exc}")
    driver = cgroups.detect()
    if driver is not None:
        relpaths = hub_cgroups(state)
        for relpath in [*relpaths, *sorted({relpath.rsplit("/", 1)[0] for relpath in relpaths})]:
            group = driver.open(relpath)
            if group is not None:
                found.stopped += len(group.pids())
                try:
                    group.remove()
                except cgroups.CgroupError as exc:
                    found.warnings.append(str(exc))
    return found
