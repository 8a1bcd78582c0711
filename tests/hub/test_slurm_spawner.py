"""The Slurm spawner without a cluster: profiles as job resources, the job script, the hub's configuration."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import batchspawner.api
import pytest
from jupyterhub import apihandlers
from traitlets.config import Config
from traitlets.utils.importstring import import_item

from hubfleet.backends.local.render import render_settings
from hubfleet.common.settings import SlurmLink
from hubfleet.common.state import FleetState
from hubfleet.hub.config import SLURM_START_TIMEOUT, configure
from hubfleet.hub.slurm import PortHandler, SlurmSpawner, job_resources, slurm_time
from hubfleet.spec import parse
from hubfleet.spec.models import Profile
from tests.helpers import address_of

FLEET = """\
name: hpc
paths: {user_env: /opt/env}
hubs:
  phys:
    backend: slurm
    auth: {type: shared-password, password: long-enough-password, allowed_users: [ann]}
    profiles:
      - {name: small, cpu: 0.5, memory: 1G, partition: short, time_limit: 30m, default: true}
      - {name: big, cpu: 2.5, memory: 3G, partition: long, time_limit: 1d}
"""


def test_profiles_become_job_resources() -> None:
    small = Profile(name="small", cpu=0.5, memory=1024**3, partition="short", time_limit=1800)
    assert job_resources(small) == {
        "req_nprocs": "1",
        "req_memory": "1024M",
        "req_partition": "short",
        "req_runtime": "0-00:30:00",
    }
    plain = Profile(name="plain", cpu=2.5, memory=1536 * 1024**2 + 1)
    assert job_resources(plain) == {"req_nprocs": "3", "req_memory": "1537M", "req_partition": "", "req_runtime": ""}
    assert slurm_time(10) == "0-00:01:00"
    assert slurm_time(2 * 86400 + 3 * 3600 + 4 * 60 + 5) == "2-03:04:05"


def _spawner(user_options: dict) -> SlurmSpawner:
    c = Config()
    c.HubfleetSpawnerMixin.hub_name = "phys"
    c.HubfleetSpawnerMixin.env_prefix = "/opt/env"
    c.HubfleetSpawnerMixin.home_root = "/home"
    c.HubfleetSpawnerMixin.profiles = [
        Profile(name="small", cpu=0.5, memory=1024**3, partition="short", time_limit=1800)
    ]
    user = SimpleNamespace(name="ann", groups=[], admin=False, url="/user/ann/")
    spawner = SlurmSpawner(config=c, user=user, user_options=user_options)
    spawner.req_keepvars = "PATH,HOME"  # normally from get_env(), which needs a running hub
    return spawner


def test_the_job_script_comes_from_the_profile_not_from_user_options() -> None:
    options = {"profile": "small", "memory": "99G", "nprocs": "64", "options": "--exclusive", "partition": "gpu"}
    spawner = _spawner(options)
    for name, value in job_resources(spawner.chosen_profile()).items():
        setattr(spawner, name, value)
    spawner.cmd = ["/opt/env/bin/jupyterhub-singleuser"]
    # batchspawner passes the user's options as template variables: they must not win.
    script = asyncio.run(spawner._get_batch_script(cmd=spawner.cmd_formatted_for_batch(), **options))
    assert "#SBATCH --mem=1024M\n" in script
    assert "#SBATCH --cpus-per-task=1\n" in script
    assert "#SBATCH --partition=short\n" in script
    assert "#SBATCH --time=0-00:30:00\n" in script
    assert "99G" not in script and "--exclusive" not in script and "gpu" not in script
    assert "#SBATCH --chdir=/home/phys_ann\n" in script
    assert "export PATH=/opt/env/bin:" in script
    assert "srun /opt/env/bin/batchspawner-singleuser /opt/env/bin/jupyterhub-singleuser" in script
    assert spawner.exec_prefix.format(username=spawner.req_username) == "sudo -E -u phys_ann"


def test_node_names_map_to_addresses() -> None:
    spawner = _spawner({})
    spawner.node_addresses = {"node1": "10.0.0.1"}
    assert asyncio.run(spawner.node_address("node1")) == "10.0.0.1"


@pytest.fixture
def slurm_settings(tmp_path: Path):
    fleet = parse(FLEET, tmp_path / "fleet.yaml")
    state = FleetState(tmp_path / "state").create()
    hub_state = state.hub("phys").create()
    settings = render_settings(fleet, fleet.hubs["phys"], hub_state, address_of(fleet.hubs["phys"]))
    # What the Slurm backend renders (SlurmHub.render_settings) on top of the local settings.
    return settings.model_copy(update={"isolation": "slurm", "slurm": SlurmLink(conf=Path("/etc/hpc/slurm.conf"))})


def test_a_slurm_hub_runs_the_slurm_spawner(slurm_settings) -> None:
    c = Config()
    configure(c, slurm_settings)
    assert c.JupyterHub.spawner_class == "hubfleet.hub.slurm.SlurmSpawner"
    assert import_item(c.JupyterHub.spawner_class) is SlurmSpawner
    assert c.SlurmSpawner.slurm_conf == "/etc/hpc/slurm.conf"
    assert c.SlurmSpawner.start_timeout == SLURM_START_TIMEOUT
    # batchspawner's own handler (which sets any spawner attribute a job posts) is replaced by a port-only one.
    handlers = [handler for _, handler, *_ in apihandlers.default_handlers]
    assert PortHandler in handlers
    assert batchspawner.api.BatchSpawnerAPIHandler not in handlers
