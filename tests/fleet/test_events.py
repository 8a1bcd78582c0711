"""The fleet's event log and logs on a real fleet: starts, a crash caused from outside and its restart, an apply and
the stop are recorded with their reasons (`hubfleet events`, also followed live); `hubfleet logs` shows a hub's own
log; supervisor.log is free of migration chatter; logs are rotated by size while their writer goes on."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from hubfleet.common import events
from hubfleet.common.state import FleetState
from hubfleet.fleet import logs
from hubfleet.system import pidfiles
from tests.helpers import RunningFleet, running_fleet, unique_hub, wait_until

H = unique_hub("sv")
PASSWORD = "events-test-pw"
HUBS = f"{H}:\n  auth: {{type: shared-password, password: {PASSWORD}, allowed_users: [alice]}}\n"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningFleet]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HUBFLEET_ROTATE_EVERY", "1")  # the supervisor looks at its logs' sizes every second
        with running_fleet(tmp_path_factory.mktemp("events"), HUBS, [H], PASSWORD) as running:
            patch.undo()
            yield running


def _events(fleet: RunningFleet, *args: str) -> list[dict]:
    out = fleet.cli("events", "--json", "-n", "1000", *args).stdout
    return [json.loads(line) for line in out.splitlines()]


def _kinds(found: list[dict]) -> list[str]:
    return [event["event"] for event in found]


class Follower:
    """`hubfleet events --follow` (or `logs --follow`) running, its lines collected as they come."""

    def __init__(self, fleet: RunningFleet, *args: str):
        argv = [sys.executable, "-m", "hubfleet", *args, "--follow", "-n", "1", "--state-dir", str(fleet.state_dir)]
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "200"})
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        # The command takes the file's size before it prints: whatever is written from now on, it prints.
        wait_until(lambda: self.lines, 60, "the follower's first line (the last one kept)")

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def stop(self) -> None:
        # SIGTERM, not Ctrl-C's SIGINT: a test run started in the background (as CI may) has SIGINT ignored, and
        # every process it starts inherits that.
        self.process.terminate()
        self.process.wait(10)


def test_the_start_is_recorded(fleet: RunningFleet) -> None:
    found = _events(fleet)
    assert _kinds(found)[:3] == ["fleet.starting", "hub.started", "fleet.started"]
    started = found[1]
    assert started["hub"] == H and started["details"] == {"awake": True}
    assert found[2]["message"].startswith(f"fleet testfleet up at {fleet.url}/ with 1 hub(s)")
    log = (fleet.state_dir / "supervisor.log").read_text()
    assert "alembic" not in log  # migrations at start are not news
    assert f"hub {H} started (local)" in log


def test_a_process_killed_from_outside_is_recorded_with_why(fleet: RunningFleet) -> None:
    follower = Follower(fleet, "events", "--hub", H)
    try:
        hub = pidfiles.running(fleet.state_dir / "hubs" / H / "hub.pid")
        assert hub is not None
        os.kill(hub.pid, signal.SIGKILL)
        wait_until(lambda: "process.restarted" in _kinds(_events(fleet, "--hub", H)), 60, "the hub restarted")
        wait_until(lambda: any("process.restarted" in line for line in follower.lines), 10, "the follower to see it")
    finally:
        follower.stop()
    crashed = next(event for event in _events(fleet, "--hub", H) if event["event"] == "process.crashed")
    assert crashed["level"] == "WARNING" and crashed["details"]["process"] == "hub"
    assert crashed["details"]["code"] == -signal.SIGKILL
    assert "was killed by SIGKILL from outside the fleet" in crashed["message"]
    assert any("process.crashed" in line and "SIGKILL" in line for line in follower.lines)
    assert all(H in line for line in follower.lines)  # --hub: this hub's events only
    assert "was killed by SIGKILL from outside the fleet" in (fleet.state_dir / "supervisor.log").read_text()
    wait_until(lambda: fleet.status()["hubs"][0]["healthy"], 60, "the hub healthy again")


def test_apply_is_recorded(fleet: RunningFleet) -> None:
    follower = Follower(fleet, "events")
    try:
        fleet.write(fleet.file.read_text().replace("allowed_users: [alice]", "allowed_users: [alice, bob]"))
        fleet.cli("apply", str(fleet.file))
        wait_until(lambda: any("fleet.applied" in line for line in follower.lines), 10, "the applied event followed")
    finally:
        follower.stop()
    applied = [event for event in _events(fleet) if event["event"] == "fleet.applied"][-1]
    assert applied["details"]["changed"] == [H] and applied["message"] == f"applying {fleet.file}: changed {H}"


def test_logs_show_a_hubs_own_log(fleet: RunningFleet) -> None:
    result = fleet.cli("logs", H, "-n", "5")
    assert len(result.stdout.splitlines()) == 5
    follower = Follower(fleet, "logs", H)
    try:
        httpx.get(f"{fleet.hub_url(H)}hub/login", timeout=30)
        wait_until(lambda: any("/hub/login" in line for line in follower.lines), 20, "the login page in the log")
    finally:
        follower.stop()
    missing = fleet.cli("logs", H, "--process", "exchange", check=False)
    assert missing.returncode == 1 and "assignment exchange" in missing.stderr
    unknown = fleet.cli("logs", "nosuchhub", check=False)
    assert unknown.returncode == 1 and f"(hubs: {H})" in unknown.stderr


def test_the_fleet_files_log_limits_apply_to_a_running_fleet(fleet: RunningFleet) -> None:
    """`logs:` changed by an apply: a hub's log over the new size is rotated, with no more copies than it keeps."""
    fleet.write(fleet.file.read_text().replace("hubs:\n", "logs: {max_size: 1M, keep: 1}\nhubs:\n", 1))
    fleet.cli("apply", str(fleet.file))
    hub_log = logs.log_of(FleetState(fleet.state_dir), H, "hub")
    for _ in range(2):
        with open(hub_log, "a") as out:
            out.writelines("x" * 1023 + "\n" for _ in range(1100))  # 1.1 MiB
        wait_until(lambda: hub_log.stat().st_size < 1024**2, 30, "the hub's log rotated")
    assert hub_log.with_name("hub.log.1").stat().st_size > 1024**2
    assert not hub_log.with_name("hub.log.2").exists()


def test_down_is_recorded_last(fleet: RunningFleet) -> None:
    fleet.cli("down")
    found = _events(fleet)
    assert _kinds(found)[-3:] == ["fleet.stopping", "hub.stopped", "fleet.stopped"]
    assert found[-3]["details"]["why"] == "`hubfleet down`"
    assert found[-2]["hub"] == H


# --------------------------------------------------------------------------------------------- rotation


def test_a_log_is_rotated_while_its_writer_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "hub.log"
    writer = subprocess.Popen(
        ["sh", "-c", f"while true; do echo 0123456789abcdef; sleep 0.001; done >> {path}"], start_new_session=True
    )
    try:
        wait_until(lambda: path.exists() and path.stat().st_size > 4096, 20, "the log over 4 KiB")
        assert logs.rotate(path, max_bytes=4096, backups=2)
        assert path.with_name("hub.log.1").stat().st_size > 4096
        assert path.stat().st_size < 4096
        wait_until(lambda: path.stat().st_size > 4096, 20, "the writer going on in the emptied file")
        assert logs.rotate(path, max_bytes=4096, backups=2)
        assert path.with_name("hub.log.2").exists()
        assert not logs.rotate(path, max_bytes=10**9, backups=2)
        text = path.read_text()
        assert "\0" not in text  # appended at the new end, not at the old offset (no hole)
    finally:
        os.killpg(writer.pid, signal.SIGKILL)
        writer.wait()


def test_following_goes_on_across_a_rotation(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text("old\n")
    lines = events.follow_lines(path, every=0.05, start=path.stat().st_size)  # from here, however late it starts
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(line for _, line in zip(range(3), lines, strict=False)))
    reader.start()
    with open(path, "a") as out:
        out.write("first\n")
    wait_until(lambda: seen == ["first"], 5, "the first line")
    path.rename(path.with_name("events.jsonl.1"))
    path.write_text("second\nthird\n")
    reader.join(5)
    assert seen == ["first", "second", "third"]
