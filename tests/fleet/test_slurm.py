"""A Slurm hub, end to end: a real two-node Slurm cluster on this host, a real fleet, users through the front door.

The hub runs here like a local hub; each user's server is a Slurm job (batchspawner) running as the user's own Unix
account. Skipped when Slurm is not installed (`apt-get install slurm-wlm munge sudo`; CI installs them).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

from hubfleet.backends.local.render import render_settings
from hubfleet.backends.slurm import SlurmBackend
from hubfleet.common.settings import SlurmLink
from hubfleet.common.state import FleetState
from hubfleet.health.client import HubUser, PasswordLogin
from hubfleet.spec import parse
from hubfleet.system import accounts
from tests.helpers import (
    USER_ENV,
    RunningFleet,
    address_of,
    processes_of_hub_users,
    running_fleet,
    unique_hub,
    wait_until,
)
from tests.slurm import PARTITION, SlurmCluster

T = TypeVar("T")
S = unique_hub("ts")
PASSWORD = "slurm-test-password"
ACCOUNT = f"{S}_sam"

AUTH = f"{{type: shared-password, password: {PASSWORD}, allowed_users: [sam]}}"
HUBS = f"""\
{S}:
  display_name: Slurm Hub
  backend: slurm
  auth: {AUTH}
  profiles:
    - {{name: job, cpu: 1, memory: 1G, partition: {PARTITION}, time_limit: 30m, default: true}}
  culling: {{enabled: false}}
"""

WHO = (
    "import os, pwd\n"
    "print(pwd.getpwuid(os.getuid()).pw_name, os.environ.get('SLURM_JOB_ID') is not None, os.environ['PATH'])"
)

# From inside the job, with the server's own token: batchspawner 1.3's handler would set any spawner attribute.
TAMPER = """\
import json, os, urllib.error, urllib.request
request = urllib.request.Request(
    os.environ["JUPYTERHUB_API_URL"] + "/batchspawner",
    data=json.dumps({"exec_prefix": "touch /tmp/hubfleet-pwned;", "port": 1}).encode(),
    headers={"Authorization": "token " + os.environ["JUPYTERHUB_API_TOKEN"], "Content-Type": "application/json"},
    method="POST",
)
try:
    urllib.request.urlopen(request)
    print("accepted")
except urllib.error.HTTPError as error:
    print(error.code)
"""


@pytest.fixture(scope="module")
def fleet(slurm: SlurmCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningFleet]:
    with running_fleet(tmp_path_factory.mktemp("slurm-fleet"), HUBS, [S], PASSWORD) as running:
        yield running


def as_sam(fleet: RunningFleet, action: Callable[[HubUser], Awaitable[T]]) -> T:
    async def scenario() -> T:
        async with httpx.AsyncClient(timeout=120) as client:
            return await action(await HubUser.login(client, fleet.hub_url(S), PasswordLogin("sam", PASSWORD)))

    return asyncio.run(scenario())


async def run_code(user: HubUser, code: str) -> str:
    kernel = await user.start_kernel()
    try:
        return (await user.execute(kernel, code)).strip()
    finally:
        await user.stop_kernel(kernel)


def wait_for_no_jobs(slurm: SlurmCluster, timeout: float = 30) -> float:
    started = time.monotonic()
    wait_until(lambda: not slurm.jobs(), timeout, lambda: f"no jobs queued (still: {slurm.jobs()})")
    return time.monotonic() - started


def test_the_slurm_hub_is_up_and_passes_hubfleet_check(fleet: RunningFleet) -> None:
    hub = next(h for h in fleet.status()["hubs"] if h["name"] == S)
    assert hub["backend"] == "slurm" and hub["healthy"] is True
    result = fleet.cli("check", "--json", check=False)
    report = json.loads(result.stdout)
    print("\nhubfleet check:", "  ".join(f"{s['name']} {s['seconds']:.2f}s" for s in report["hubs"][0]["steps"]))
    assert report["ok"] is True, result.stdout + result.stderr


def test_a_server_is_a_slurm_job_running_as_the_users_account(fleet: RunningFleet, slurm: SlurmCluster) -> None:
    timings: dict[str, float] = {}

    async def scenario(user: HubUser) -> tuple[str, str, list[dict[str, str]], str]:
        started = time.monotonic()
        # Resource keys in user_options must not reach the job: only the profile sizes it.
        await user.start_server({"profile": "job", "memory": "3G", "nprocs": "2", "options": "--exclusive"})
        timings["start"] = time.monotonic() - started
        jobs = slurm.jobs()
        job = slurm.run("scontrol", "show", "job", "--oneliner", jobs[0]["id"]) if jobs else ""
        who = await run_code(user, WHO)
        tamper = await run_code(user, TAMPER)
        started = time.monotonic()
        await user.stop_server()
        timings["stop"] = time.monotonic() - started
        timings["gone"] = timings["stop"] + wait_for_no_jobs(slurm)
        return who, tamper, jobs, job

    who, tamper, jobs, job = as_sam(fleet, scenario)
    print(
        f"\nslurm server: start → ready {timings['start']:.2f}s, stop {timings['stop']:.2f}s, "
        f"stop → job gone {timings['gone']:.2f}s"
    )
    assert [(j["user"], j["state"], j["name"]) for j in jobs] == [(ACCOUNT, "RUNNING", "spawner-jupyterhub")]
    assert jobs[0]["nodes"] in slurm.nodes
    name, in_job, path = who.split(" ", 2)
    assert (name, in_job) == (ACCOUNT, "True")
    assert path.startswith(f"{USER_ENV}/bin:")  # sudo resets PATH: the job script sets it again
    fields = dict(re.findall(r"(\w+)=(\S+)", job))
    assert fields["Partition"] == PARTITION
    assert fields["NumCPUs"] == "1"
    assert fields["MinMemoryNode"] == "1G"
    assert fields["TimeLimit"] == "00:30:00"
    assert fields["UserId"].startswith(f"{ACCOUNT}(")
    assert tamper == "409"
    assert not os.path.exists("/tmp/hubfleet-pwned")
    assert timings["gone"] < 15


SUBMIT = """\
import subprocess
print(subprocess.run(["sbatch", "--parsable", "--mem=100M", "--wrap", "sleep 600"], capture_output=True, text=True,
                     check=True).stdout.strip())
"""


def test_down_leaves_no_job_and_no_process(fleet: RunningFleet, slurm: SlurmCluster) -> None:
    async def start_and_submit(user: HubUser) -> str:
        await user.start_server()
        return await run_code(user, SUBMIT)  # a job of the user's own, which the hub knows nothing about

    own_job = as_sam(fleet, start_and_submit)
    assert sorted((j["id"] == own_job, j["user"]) for j in slurm.jobs()) == [(False, ACCOUNT), (True, ACCOUNT)]
    fleet.cli("down")
    assert slurm.jobs() == []
    left = processes_of_hub_users(S)
    assert left == [], [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in left]


def test_down_without_a_supervisor_cancels_the_jobs_of_a_slurm_hubs_users(slurm: SlurmCluster, tmp_path: Path) -> None:
    """What `hubfleet down` does for a Slurm hub whose supervisor died: cancel its users' jobs (and only theirs)."""
    hub = unique_hub("tj")
    fleet = parse(f"name: orphans\nhubs:\n  {hub}:\n    backend: slurm\n    auth: {AUTH}\n", tmp_path / "fleet.yaml")
    state = FleetState(tmp_path / "state").create().hub(hub).create()
    settings = render_settings(fleet, fleet.hubs[hub], state, address_of(fleet.hubs[hub]))
    settings.model_copy(update={"isolation": "slurm", "slurm": SlurmLink(conf=slurm.conf)}).write(state.settings_file)
    accounts.ensure_group(accounts.hub_groupname(hub))
    account = accounts.unix_username(hub, "kim")
    accounts.ensure_user(account, Path("/home") / account, groups=[accounts.hub_groupname(hub)])
    try:
        for user in (account, "root"):
            submit = ["sbatch", "--mem=100M", "--chdir=/tmp", "--output=/dev/null", "--wrap=sleep 600"]
            slurm.run("sudo", "-E", "-u", user, *submit)
        assert sorted(j["user"] for j in slurm.jobs()) == sorted([account, "root"])
        assert SlurmBackend.clean_up_after(state) == 1
        assert [j["user"] for j in slurm.jobs()] == ["root"]
    finally:
        slurm.cancel_all()
        accounts.remove_hub_accounts(hub)
