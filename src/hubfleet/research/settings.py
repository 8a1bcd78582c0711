"""What a hub's Dask Gateway process is told: the contract between the fleet side and the gateway process."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from hubfleet.common.settings import SettingsFile
from hubfleet.spec.models import Dask

SETTINGS_ENV = "HUBFLEET_GATEWAY_SETTINGS"
"""Environment variable holding the path of a gateway's settings file."""

SERVICE_NAME = "dask-gateway"
"""The gateway's JupyterHub service name (its URL prefix is the hub's services/dask-gateway)."""


class GatewaySettings(SettingsFile):
    """What one hub's gateway process is told (written by the fleet side as JSON; secrets are files)."""

    env_var: ClassVar[str] = SETTINGS_ENV

    hub: str
    cgroup: str
    """The hub's cgroup: each user's Dask processes share one group below it."""
    hub_api_url: str
    prefix: str
    public_url: str
    address: str
    proxy_address: str
    tcp_address: str
    state_dir: Path
    clusters_dir: Path
    user_env: Path
    environments_root: Path | None = None
    """The environment store: a cluster's `environment` option (a build id) runs its processes from there."""
    home_root: Path
    dask: Dask
    backend: Literal["local", "slurm"] = "local"
    partition: str | None = None
    """Slurm partition for scheduler and worker jobs (Slurm hubs)."""
