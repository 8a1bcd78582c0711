"""The Slurm backend: the hub (proxy, JupyterHub, idle culler) runs on this machine like a local hub, and each
user's server is a job of a Slurm cluster, running as the user's own Unix account (`hubfleet.hub.slurm`).

Only what differs from the local backend lives here: the hub's settings name the Slurm spawner and the cluster's
slurm.conf (`$SLURM_CONF` of the supervisor), `up` first checks that the cluster answers and has the partitions
the hub's profiles name, and `down` makes sure no job of the hub's users is left in the queue.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from pydantic import ValidationError

from hubfleet.backends.local import LocalBackend, LocalHub
from hubfleet.backends.slurm import jobs
from hubfleet.common.settings import HubSettings, SlurmLink
from hubfleet.common.state import HubState

log = logging.getLogger("hubfleet.slurm")

__all__ = ["SlurmBackend", "SlurmHub", "slurm_conf"]


def slurm_conf() -> Path | None:
    """The slurm.conf this process's Slurm commands use: `$SLURM_CONF`, else None (Slurm's built-in default)."""
    value = os.environ.get("SLURM_CONF")
    return Path(value) if value else None


class SlurmHub(LocalHub):
    """A hub whose users' servers are Slurm jobs."""

    backend = "slurm"
    servers_here = False

    def render_settings(self) -> HubSettings:
        settings = super().render_settings()
        return settings.model_copy(update={"isolation": "slurm", "slurm": SlurmLink(conf=slurm_conf())})

    @property
    def conf(self) -> Path | None:
        return self.settings.slurm.conf if self.settings.slurm is not None else None

    async def start(self) -> None:
        await self.check_cluster()
        await super().start()

    async def check_cluster(self) -> None:
        """Refuse to start when jobs could not run: not root, no controller, or a profile's partition is missing."""
        if os.geteuid() != 0:
            raise RuntimeError("the slurm backend needs root: jobs run as each user's Unix account through sudo")
        try:
            known = await jobs.partitions(self.conf)
        except jobs.SlurmError as exc:
            raise RuntimeError(f"the Slurm cluster does not answer: {exc}") from None
        for profile in self.spec.profiles:
            if profile.partition is not None and profile.partition not in known:
                raise RuntimeError(
                    f"profile {profile.name!r} asks for partition {profile.partition!r}, which the cluster does "
                    f"not have (partitions: {', '.join(sorted(known)) or 'none'})"
                )

    async def busy(self) -> str | None:
        """As a local hub, and while any Slurm job of the hub's users (a server or a Dask cluster) is queued."""
        reason = await super().busy()
        if reason is not None:
            return reason
        try:
            queued = await jobs.hub_jobs(self.name, self.conf)
        except jobs.SlurmError as exc:
            return f"Slurm does not answer ({exc})"
        return f"{len(queued)} Slurm job(s) of its users" if queued else None

    async def stop(self, stop_servers: bool = True) -> None:
        """Stop as a local hub does (servers through the API first); then cancel any job of the hub's users left."""
        await super().stop(stop_servers=stop_servers)
        if stop_servers:
            try:
                cancelled = await jobs.cancel_hub_jobs(self.name, self.conf)
            except jobs.SlurmError as exc:
                log.error("Slurm jobs of hub %s may be left: %s", self.name, exc)
                return
            if cancelled:
                log.info(
                    "cancelled %d Slurm job(s) of hub %s left after its servers stopped", len(cancelled), self.name
                )


class SlurmBackend(LocalBackend):
    """Hubs on this machine whose users' servers run as Slurm jobs."""

    name = "slurm"
    hub_class = SlurmHub

    @classmethod
    def clean_up_after(cls, hub: HubState) -> int:
        """Cancel the jobs of a Slurm hub's users after its supervisor died; how many there were.

        Hubs of other backends, or whose settings cannot be read, have none. Raises SlurmError when Slurm fails.
        """
        try:
            settings = HubSettings.read(hub.settings_file)
        except (OSError, ValidationError):
            return 0
        if settings.isolation != "slurm":
            return 0
        conf = settings.slurm.conf if settings.slurm is not None else None
        return len(asyncio.run(jobs.cancel_hub_jobs(settings.hub, conf)))
