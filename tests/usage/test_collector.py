"""The collector's gap rule on a real cgroup: a reading counts only after a recent one, and covers just that time."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from hubfleet.system import cgroups
from hubfleet.usage.collector import Collector, _Server, max_gap
from hubfleet.usage.tables import SERVER
from tests.helpers import wait_until
from tests.usage.conftest import make_fleet, process_in_cgroup


def test_the_gap_bound() -> None:
    assert max_gap(60) == 90 and max_gap(2) == 7


@pytest.mark.needs("root", "cgroups")
def test_readings_across_a_gap_count_nothing(tmp_path: Path) -> None:
    fleet = make_fleet(
        "h:\n  auth: {type: shared-password, password: secret-password}\n", "usage: {metering: {interval: 2}}"
    )
    driver = cgroups.detect()
    assert driver is not None
    relpath = f"hubfleet-usage-test-{os.getpid()}/h_alice"
    with process_in_cgroup(driver, relpath, cgroups.Limits(memory_bytes=2**30, cpu=0.5), "while True: pass") as group:
        collector = Collector(lambda: fleet, list, f"sqlite:///{tmp_path / 'ledger.sqlite'}", driver=driver)
        server = _Server("h", "alice", SERVER, relpath, None)
        wait_until(lambda: group.cpu_seconds() >= 0.2, 30, "the burner to run")
        then = time.time()
        first = collector._read(fleet, server, then, max_gap(2))
        assert first is not None and first.seconds == 0 and first.cpu_seconds == 0, "a first reading is a baseline"
        time.sleep(1.5)
        now = time.time()
        second = collector._read(fleet, server, now, max_gap(2))
        assert second is not None and second.seconds == pytest.approx(now - then), "it covers the time since the last"
        assert 0 < second.cpu_seconds <= 0.5 * second.seconds * 1.1, "counted, and the CPU quota holds it to 0.5"
        assert second.cpu_request == 0.5 and second.memory_request == 2**30, "the request is the cgroup's limits"
        time.sleep(1.0)
        late = collector._read(fleet, server, time.time() + max_gap(2), max_gap(2))  # as if the collector had stopped
        assert late is not None and late.seconds == 0 and late.cpu_seconds == 0, "CPU across a gap is discarded"
