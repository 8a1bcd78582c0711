"""What a hub's Dask Gateway process is told: the contract between the fleet side and the gateway process."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from hubfleet.spec.models import Dask

SETTINGS_ENV = "HUBFLEET_GATEWAY_SETTINGS"
"""Environment variable holding the path of a gateway's settings file."""

SERVICE_NAME = "dask-gateway"
"""The gateway's JupyterHub service name (its URL prefix is the hub's services/dask-gateway)."""


class GatewaySettings(BaseModel):
    """What one hub's gateway process is told (written by the fleet side as JSON; secrets are files)."""

    model_config = ConfigDict(frozen=True)

    hub: str
    hub_api_url: str
    prefix: str
    public_url: str
    address: str
    proxy_address: str
    tcp_address: str
    state_dir: Path
    clusters_dir: Path
    user_env: Path
    home_root: Path
    dask: Dask
    backend: Literal["local", "slurm"] = "local"
    partition: str | None = None
    """Slurm partition for scheduler and worker jobs (Slurm hubs)."""
    secrets: dict[str, Path]

    def secret(self, name: str) -> str:
        return self.secrets[name].read_text(encoding="utf-8").strip()

    @classmethod
    def read(cls, path: str | Path | None = None) -> GatewaySettings:
        return cls.model_validate_json(Path(path or os.environ[SETTINGS_ENV]).read_text(encoding="utf-8"))

    def write(self, path: Path) -> None:
        fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(self.model_dump(mode="json"), out, indent=2)
        os.replace(path.with_suffix(".tmp"), path)
