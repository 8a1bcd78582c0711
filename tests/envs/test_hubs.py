"""Environments on real hubs: each hub's users get their hub's packages and not the other's, a profile chooses an
environment, a change builds a new version while a running server keeps the old one, rollback, and an R kernel.

Everything is real: builds from PyPI (as the build account), JupyterHubs, Unix users, kernels; the R kernel comes
from Debian's r-cran-irkernel, installed by the build when the operator allows it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from hubfleet.common.environments import EnvStore
from hubfleet.health.client import CodeError, HubUser, PasswordLogin
from tests.envs.conftest import BUILD_ACCOUNT
from tests.helpers import RunningFleet, running_fleet, unique_hub

A, B = unique_hub("eva"), unique_hub("evb")
PASSWORD = "env-test-password"

PROBE = (
    "import sys, importlib.util as u; "
    "print(sys.prefix, bool(u.find_spec('iniconfig')), bool(u.find_spec('tabulate')), bool(u.find_spec('toolz')))"
)


def hubs_yaml(mine_packages: str) -> str:
    return f"""\
{A}:
  auth: {{type: shared-password, password: {PASSWORD}, allowed_users: [alice, ann]}}
  environments:
    mine: {{packages: [{mine_packages}], display_name: Alpha stack}}
  profiles:
    - {{name: small, cpu: 0.5, memory: 400M, environment: mine, default: true}}
  dask: {{worker_memory: 512M, max_worker_memory: 1G, limits: {{max_cores: 2, max_memory: 2G, max_clusters: 1}}}}
{B}:
  auth: {{type: shared-password, password: {PASSWORD}, allowed_users: [bob]}}
  profiles:
    - {{name: plain, cpu: 0.5, memory: 400M, default: true}}
    - {{name: tables, cpu: 0.5, memory: 400M, environment: [tables, stats]}}
"""


TOP = f"""\
builds: {{account: {BUILD_ACCOUNT}, keep: 1, debian_packages: [r-cran-irkernel]}}
environments:
  tables: {{packages: [tabulate], display_name: Tables, description: tabulate on top of the server side}}
  stats: {{debian_packages: [r-cran-irkernel], kernels: [r], display_name: R and Python}}
"""


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, env_store: Path) -> Iterator[RunningFleet]:
    with running_fleet(
        tmp_path_factory.mktemp("envs"), hubs_yaml("iniconfig"), [A, B], PASSWORD, top=TOP, environments=env_store
    ) as running:
        yield running


def run(fleet: RunningFleet, hub: str, user: str, code: str, options: dict | None = None, kernel: str = "") -> str:
    """As `user`: start the server (with `options`) unless it runs, run `code` in a new kernel."""

    async def scenario() -> str:
        async with httpx.AsyncClient(timeout=180) as client:
            person = await HubUser.login(client, fleet.hub_url(hub), PasswordLogin(user, PASSWORD))
            if not (await person.server() or {}).get("ready"):
                await person.start_server(options)
            kernel_id = await person.start_kernel(kernel or None)
            try:
                return (await person.execute(kernel_id, code, 120)).strip()
            finally:
                await person.stop_kernel(kernel_id)

    return asyncio.run(scenario())


def restart(fleet: RunningFleet, hub: str, user: str) -> None:
    async def scenario() -> None:
        async with httpx.AsyncClient(timeout=180) as client:
            person = await HubUser.login(client, fleet.hub_url(hub), PasswordLogin(user, PASSWORD))
            await person.stop_server()

    asyncio.run(scenario())


def probe(fleet: RunningFleet, hub: str, user: str, options: dict | None = None) -> tuple[Path, bool, bool, bool]:
    prefix, *found = run(fleet, hub, user, PROBE, options).split()
    return Path(prefix), *(flag == "True" for flag in found)  # type: ignore[return-value]


def test_each_hubs_users_get_their_environment_and_not_the_others(fleet: RunningFleet, env_store: Path) -> None:
    store = EnvStore(env_store)
    mine = store.active_prefix(f"{A}/mine")
    tables = store.active_prefix("tables")
    assert mine is not None and tables is not None
    prefix, iniconfig, tabulate, toolz = probe(fleet, A, "alice")
    assert (prefix, iniconfig, tabulate) == (mine[1], True, False)
    assert toolz  # the server side (dask-gateway brings toolz) is in every environment
    # bob's default profile names no environment: the fleet's user_env.
    prefix, iniconfig, tabulate, _ = probe(fleet, B, "bob")
    assert not iniconfig and not tabulate and not str(prefix).startswith(str(env_store))
    restart(fleet, B, "bob")
    prefix, iniconfig, tabulate, _ = probe(fleet, B, "bob", {"profile": "tables"})
    assert (prefix, iniconfig, tabulate) == (tables[1], False, True)


DASK_PREFIXES = """\
import json, sys
from dask_gateway import Gateway
with Gateway().new_cluster() as cluster:
    cluster.scale(1)
    client = cluster.get_client()
    client.wait_for_workers(1, timeout=120)
    workers = sorted(set(client.run(lambda: __import__("sys").prefix).values()))
    scheduler = client.run_on_scheduler(lambda: __import__("sys").prefix)
    print(json.dumps({"server": sys.prefix, "workers": workers, "scheduler": scheduler}))
"""


def test_dask_workers_run_from_the_servers_environment(fleet: RunningFleet, env_store: Path) -> None:
    found = json.loads(run(fleet, A, "alice", DASK_PREFIXES))
    assert str(env_store) in found["server"]
    assert found["workers"] == [found["server"]] and found["scheduler"] == found["server"]


def test_the_profile_form_shows_the_environment_choice(fleet: RunningFleet) -> None:
    async def form() -> str:
        async with httpx.AsyncClient(timeout=60) as client:
            person = await HubUser.login(client, fleet.hub_url(B), PasswordLogin("bob", PASSWORD))
            if await person.server():
                await person.stop_server()  # a running server's spawn page redirects to it
            return (await client.get(fleet.hub_url(B) + "hub/spawn")).text

    page = asyncio.run(form())
    assert 'name="environment-tables"' in page
    assert '<option value="tables">Tables</option>' in page and '<option value="stats">R and Python</option>' in page


def test_an_environment_outside_the_profile_is_refused(fleet: RunningFleet) -> None:
    async def start() -> int:
        async with httpx.AsyncClient(timeout=60) as client:
            # Not alice: JupyterHub keeps refused options as the user's next defaults.
            person = await HubUser.login(client, fleet.hub_url(A), PasswordLogin("ann", PASSWORD))
            options = {"profile": "small", "environment": "tables"}
            return (await client.post(person.url(f"{person.user_api}/server"), json=options)).status_code

    assert asyncio.run(start()) == 400


def test_a_change_builds_a_new_version_running_servers_keep_theirs_rollback_goes_back(
    fleet: RunningFleet, env_store: Path
) -> None:
    store = EnvStore(env_store)
    key = f"{A}/mine"
    found = store.active_prefix(key)
    assert found is not None
    before, running = found
    assert probe(fleet, A, "alice")[0] == running
    fleet.write(fleet.file.read_text().replace("packages: [iniconfig]", "packages: [iniconfig, tabulate]"))
    applied = fleet.cli("apply", str(fleet.file))
    assert f"environment {key} v2 active" in applied.stdout
    after = store.history(key).active_version
    assert after is not None and after.number == before.number + 1
    # alice's server still runs from v1 (and a new kernel there has no tabulate) ...
    prefix, _, tabulate, _ = probe(fleet, A, "alice")
    assert (prefix, tabulate) == (running, False)
    # ... until it restarts.
    restart(fleet, A, "alice")
    prefix, _, tabulate, _ = probe(fleet, A, "alice")
    assert (prefix, tabulate) == (store.prefix(after.build), True)
    listing = fleet.cli("env", "list", "--file", str(fleet.file)).stdout
    assert key in listing and "v2" in listing
    # Rollback: the next start is v1 again, and applying the same file keeps it so.
    rolled = fleet.cli("env", "rollback", key, "--file", str(fleet.file))
    assert "v1 is active" in rolled.stdout
    fleet.cli("apply", str(fleet.file))
    assert store.history(key).active == before.number
    restart(fleet, A, "alice")
    prefix, _, tabulate, _ = probe(fleet, A, "alice")
    assert (prefix, tabulate) == (running, False)
    shown = fleet.cli("env", "show", key, "--file", str(fleet.file)).stdout
    assert "v1" in shown and "v2" in shown and "active" in shown
    assert "==> [" in fleet.cli("env", "logs", key, "--file", str(fleet.file)).stdout


def test_an_r_kernel_runs_one_plus_one(fleet: RunningFleet) -> None:
    restart(fleet, B, "bob")
    # IRkernel shows a value as display data: print it to read it back as text.
    result = run(fleet, B, "bob", "print(1+1)", {"profile": "tables", "environment": "stats"}, kernel="ir")
    assert result == "[1] 2"
    with pytest.raises(CodeError):
        run(fleet, B, "bob", "stop('no')", kernel="ir")
    code = "import jupyter_client, json; print(json.dumps(sorted(jupyter_client.kernelspec.find_kernel_specs())))"
    specs = json.loads(run(fleet, B, "bob", code))
    assert specs == ["ir", "python3"]
