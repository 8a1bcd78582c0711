"""Dask Gateway per hub, for real: clusters created from inside users' servers, as the users, within limits."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from hubfleet.health.client import CodeError, PasswordLogin
from tests.helpers import RunningFleet, running_fleet, unique_hub

HUB = unique_hub("tr")
PASSWORD = "dask-test-password"
HUBS = f"""\
{HUB}:
  template: pangeo
  auth: {{type: shared-password, password: {PASSWORD}, allowed_users: [alice, bob]}}
  groups: {{power: [alice]}}
  profiles: [{{name: small, cpu: 1, memory: 1G}}]
  culling: {{enabled: false}}
  dask:
    worker_cores: 1
    max_worker_cores: 2
    worker_memory: 512M
    max_worker_memory: 1G
    limits: {{max_cores: 3, max_memory: 2G, max_clusters: 1}}
    group_limits:
      power: {{max_cores: 3, max_memory: 3G, max_clusters: 2}}
"""
WATCHED = ["/", "/home", "/srv", "/opt", "/opt/hubfleet", "/etc", "/etc/passwd", "/tmp", "/usr", "/var", "/root"]


@pytest.fixture(scope="module")
def owners_before() -> dict[str, tuple[int, int]]:
    return {path: (os.stat(path).st_uid, os.stat(path).st_gid) for path in WATCHED}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, owners_before: dict) -> Iterator[RunningFleet]:
    with running_fleet(tmp_path_factory.mktemp("dask"), HUBS, [HUB], PASSWORD) as running:
        yield running


def in_kernel(fleet: RunningFleet, user: str, code: str, timeout: float = 180) -> str:
    return fleet.run_code(HUB, PasswordLogin(user, PASSWORD), code, timeout)


NEW_CLUSTER = """\
import json, os, pwd, warnings
from dask_gateway import Gateway
import dask.array as da
gateway = Gateway()
cluster = gateway.new_cluster()
cluster.scale(2)
client = cluster.get_client()
client.wait_for_workers(2, timeout=120)
total = int(da.ones((1000, 1000), chunks=(250, 250)).sum().compute())
accounts = sorted(set(client.run(lambda: __import__("pwd").getpwuid(__import__("os").getuid()).pw_name).values()))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    cluster.scale(10)
cluster.shutdown_on_close = False  # outlive this kernel: later tests use the cluster
print(json.dumps({"name": cluster.name, "total": total, "accounts": accounts,
                  "scale_warning": [str(w.message) for w in caught]}))
"""


@pytest.fixture(scope="module")
def alices_cluster(fleet: RunningFleet) -> dict:
    return json.loads(in_kernel(fleet, "alice", NEW_CLUSTER))


def test_a_cluster_from_inside_a_server_with_no_arguments(alices_cluster: dict) -> None:
    assert alices_cluster["total"] == 1_000_000
    assert alices_cluster["accounts"] == [f"{HUB}_alice"], "workers must run as the user's own Unix account"


def test_scaling_over_the_limit_is_refused_clearly(alices_cluster: dict) -> None:
    # alice's group allows 3 cores: 1 for the scheduler, 2 workers of 1 core.
    assert alices_cluster["scale_warning"] and "limit of 2 workers" in alices_cluster["scale_warning"][0]


def test_too_large_workers_and_too_many_clusters_are_refused(fleet: RunningFleet, alices_cluster: dict) -> None:
    with pytest.raises(CodeError, match="worker_cores"):
        in_kernel(fleet, "bob", "from dask_gateway import Gateway\nGateway().new_cluster(worker_cores=8)")
    code = "from dask_gateway import Gateway\ng = Gateway()\nfirst = g.new_cluster()\ntry:\n    g.new_cluster()\n"
    code += "finally:\n    first.shutdown()"
    with pytest.raises(CodeError, match="your limit is 1"):
        in_kernel(fleet, "bob", code)


def test_another_users_token_can_neither_see_nor_stop_a_cluster(fleet: RunningFleet, alices_cluster: dict) -> None:
    name = alices_cluster["name"]
    code = f"from dask_gateway import Gateway\ng = Gateway()\nprint(len(g.list_clusters()))\ng.stop_cluster('{name}')"
    with pytest.raises(CodeError, match=r"lacks permissions|not found|403|404"):
        in_kernel(fleet, "bob", code)
    still = in_kernel(
        fleet, "alice", "from dask_gateway import Gateway\nprint([c.name for c in Gateway().list_clusters()])"
    )
    assert name in still


def test_tokens_from_outside_the_hub_get_nothing(fleet: RunningFleet) -> None:
    url = f"{fleet.hub_url(HUB)}services/dask-gateway/api/v1/clusters/"
    for header in (
        {},
        {"Authorization": "jupyterhub not-a-token"},
        {"Authorization": f"jupyterhub {fleet.service_token(HUB)}"},
    ):
        assert httpx.get(url, headers=header).status_code in (401, 403)


def test_shutdown_and_nothing_outside_the_hub_changed_owner(
    fleet: RunningFleet, alices_cluster: dict, owners_before: dict
) -> None:
    code = f"from dask_gateway import Gateway\nGateway().stop_cluster('{alices_cluster['name']}')\nprint('stopped')"
    assert in_kernel(fleet, "alice", code) == "stopped"
    owners_after = {path: (os.stat(path).st_uid, os.stat(path).st_gid) for path in WATCHED}
    assert owners_after == owners_before
    assert Path("/").stat().st_uid == 0


def test_hubfleet_check_runs_a_dask_cluster_on_a_dask_hub(fleet: RunningFleet) -> None:
    result = fleet.cli("check", HUB, "--json", check=False, timeout=400)
    report = json.loads(result.stdout)["hubs"][0]
    steps = {step["name"]: step for step in report["steps"]}
    assert result.returncode == 0, [s for s in report["steps"] if not s["ok"]]
    assert steps["dask"]["ok"] and list(steps) == [
        "login",
        "start-server",
        "start-kernel",
        "run-code",
        "dask",
        "stop-kernel",
        "stop-server",
    ]
