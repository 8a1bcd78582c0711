"""The server side every built environment gets matches the default environment's pins (a server always matches
its hub, whichever environment it runs from)."""

from __future__ import annotations

from pathlib import Path

from packaging.requirements import Requirement

from hubfleet import envs

ROOT = Path(__file__).resolve().parents[2]


def pins(lines: list[str]) -> dict[str, str]:
    found = {}
    for line in lines:
        requirement = Requirement(line)
        found[requirement.name.lower().replace("_", "-")] = str(requirement.specifier)
    return found


def test_server_side_pins_agree_with_the_default_environment() -> None:
    server_side = pins(envs.server_side())
    assert set(server_side) >= {"jupyterhub", "jupyter-server", "jupyterlab", "ipykernel", "batchspawner"}
    assert {"dask-gateway", "nbgitpuller"} <= set(server_side)
    assert all(spec.startswith("==") for spec in server_side.values())
    text = (ROOT / "requirements" / "user-env.txt").read_text(encoding="utf-8")
    default = pins([line.split("#")[0].strip() for line in text.splitlines() if line.split("#")[0].strip()])
    shared = set(server_side) & set(default)
    assert {"jupyterhub", "jupyter-server", "jupyterlab", "ipykernel", "batchspawner", "dask-gateway"} <= shared
    assert {name: server_side[name] for name in shared} == {name: default[name] for name in shared}
