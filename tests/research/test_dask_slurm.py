"""Dask on a Slurm hub, end to end: the user's server, the scheduler and two workers are all Slurm jobs.

Skipped where Slurm is not installed (CI installs it).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import httpx
import pytest

from hubfleet.health.client import HubUser, PasswordLogin
from tests.helpers import RunningFleet, running_fleet, unique_hub
from tests.slurm import PARTITION, SlurmCluster

HUB = unique_hub("tq")
PASSWORD = "dask-slurm-password"
HUBS = f"""\
{HUB}:
  backend: slurm
  auth: {{type: shared-password, password: {PASSWORD}, allowed_users: [sam]}}
  profiles:
    - {{name: job, cpu: 1, memory: 1G, partition: {PARTITION}, time_limit: 30m, default: true}}
  culling: {{enabled: false}}
  dask:
    worker_cores: 1
    worker_memory: 512M
    limits: {{max_cores: 3, max_memory: 2G, max_clusters: 1}}
"""

CODE = """\
import json, os
from dask_gateway import Gateway
import dask.array as da
with Gateway().new_cluster() as cluster:
    cluster.scale(2)
    with cluster.get_client() as client:
        client.wait_for_workers(2, timeout=120)
        total = int(da.ones((1000, 1000), chunks=(250, 250)).sum().compute())
        where = client.run(lambda: (__import__("pwd").getpwuid(__import__("os").getuid()).pw_name,
                                    __import__("os").environ.get("SLURM_JOB_ID")))
        jobs = [" ".join(line.split()) for line in os.popen("squeue -h -o '%.50j %.50u'").read().splitlines()]
print(json.dumps({"total": total, "workers": sorted(map(list, where.values())), "jobs": sorted(filter(None, jobs))}))
"""


@pytest.fixture(scope="module")
def fleet(slurm: SlurmCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningFleet]:
    with running_fleet(tmp_path_factory.mktemp("dask-slurm"), HUBS, [HUB], PASSWORD) as running:
        yield running


def test_a_dask_cluster_runs_as_slurm_jobs_of_the_user(fleet: RunningFleet, slurm: SlurmCluster) -> None:
    async def scenario() -> dict:
        async with httpx.AsyncClient(timeout=300) as client:
            user = await HubUser.login(client, fleet.hub_url(HUB), PasswordLogin("sam", PASSWORD))
            await user.start_server()
            kernel = await user.start_kernel()
            try:
                return json.loads(await user.execute(kernel, CODE, timeout=240))
            finally:
                await user.stop_kernel(kernel)
                await user.stop_server()

    result = asyncio.run(scenario())
    account = f"{HUB}_sam"
    assert result["total"] == 1_000_000
    assert len(result["workers"]) == 2
    assert all(name == account and job_id for name, job_id in result["workers"]), result["workers"]
    assert result["jobs"].count(f"dask-gateway {account}") == 3, result["jobs"]  # scheduler + 2 workers
    fleet.cli("down")
    assert slurm.jobs() == []
