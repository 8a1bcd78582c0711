"""The supervisor runs each hub on the backend its spec names, and moves a hub whose backend changes (no processes:
the backends are stand-ins that record what they are asked)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from hubfleet.common.state import FleetState
from hubfleet.common.status import HubStatus
from hubfleet.fleet import backend as backend_port
from hubfleet.fleet.backend import Backend, RunningHub
from hubfleet.fleet.plan import HubChange, plan
from hubfleet.fleet.supervisor import Supervisor
from hubfleet.spec import parse
from hubfleet.spec.models import Hub

FLEET = """\
name: mixed
hubs:
  here:
    auth: {type: shared-password, password: long-enough-1}
  there:
    backend: slurm
    auth: {type: shared-password, password: long-enough-2}
"""


class Recorder(Backend):
    """A backend that only remembers which hubs it runs and what it was asked."""

    def __init__(self, fleet, state, host):
        super().__init__(fleet, state, host)
        self.running: list[str] = []
        self.calls: list[tuple[str, str]] = []
        self.closed = False

    def running_hubs(self) -> list[RunningHub]:
        return [RunningHub(name, self.name, None, True, True) for name in self.running]  # type: ignore[arg-type]

    async def up(self, hub: Hub, *, awake: bool = True) -> None:
        self.calls.append(("up", hub.name))
        self.running.append(hub.name)

    def is_awake(self, name: str) -> bool:
        return name in self.running

    async def wake(self, name: str) -> None:
        self.calls.append(("wake", name))

    async def sleep(self, name: str) -> None:
        self.calls.append(("sleep", name))

    async def busy(self, name: str) -> str | None:
        return None

    async def apply(self, hub: Hub, change: HubChange) -> None:
        self.calls.append(("apply", hub.name))

    async def restart(self, name: str) -> bool:
        self.calls.append(("restart", name))
        return True

    async def down(self, name: str, *, stop_servers: bool = True) -> None:
        self.calls.append(("down", name))
        self.running.remove(name)

    async def status(self, name: str) -> HubStatus:
        return HubStatus(name=name, title=name, url="", backend=self.name, state="running", healthy=True)

    async def close(self) -> None:
        self.closed = True


class LocalRecorder(Recorder):
    name = "local"


class SlurmRecorder(Recorder):
    name = "slurm"


def test_each_hub_runs_on_its_own_backend_and_moves_when_it_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backend_port, "registered", lambda: {"local": LocalRecorder, "slurm": SlurmRecorder})
    fleet = parse(FLEET, tmp_path / "fleet.yaml")
    supervisor = Supervisor(fleet, tmp_path / "fleet.yaml", FLEET, FleetState(tmp_path / "state"))
    local, slurm = supervisor.backends["local"], supervisor.backends["slurm"]
    moved = FLEET.replace("    backend: slurm\n", "")
    assert [c.lines() for c in plan(fleet, parse(moved, tmp_path / "fleet.yaml")).hubs if c.kind == "changed"] == [
        ["settings changed (backend): the hub and its servers stop, then it starts on its new backend"]
    ]

    async def scenario() -> None:
        for hub in fleet.hubs.values():
            await supervisor._up(hub)
        assert (local.hub_names(), slurm.hub_names()) == (["here"], ["there"])
        assert (supervisor.running_on("here"), supervisor.running_on("there")) == (local, slurm)
        statuses = await supervisor.refresh_status()
        assert {name: s.backend for name, s in statuses.items()} == {"here": "local", "there": "slurm"}

        await supervisor.apply(tmp_path / "fleet.yaml", moved)
        assert slurm.calls == [("up", "there"), ("down", "there")]
        assert local.calls == [("up", "here"), ("up", "there")]
        assert (supervisor.running_on("here"), supervisor.running_on("there")) == (local, local)

        await supervisor.shutdown()
        assert local.running == [] and local.closed and slurm.closed

    asyncio.run(scenario())
