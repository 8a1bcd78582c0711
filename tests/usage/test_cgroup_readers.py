"""The cgroup readers the collector uses: working-set memory and limits, on v1 (this machine) and v2 (a fake tree)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hubfleet.system import cgroups
from tests.helpers import wait_until
from tests.usage.conftest import process_in_cgroup


def test_v2_readers(tmp_path: Path) -> None:
    group = tmp_path / "hubfleet" / "h" / "h_alice"
    group.mkdir(parents=True)
    (group / "memory.current").write_text("500000000\n")
    (group / "memory.stat").write_text("anon 400000000\ninactive_file 100000000\nactive_file 0\n")
    (group / "memory.max").write_text("1073741824\n")
    (group / "cpu.max").write_text("150000 100000\n")
    (group / "cpu.stat").write_text("usage_usec 2500000\nuser_usec 2000000\n")
    opened = cgroups.CgroupV2(str(tmp_path)).open("hubfleet/h/h_alice")
    assert opened is not None
    assert opened.memory_working_set_bytes() == 400_000_000
    assert opened.cpu_seconds() == 2.5
    assert opened.limits() == cgroups.Limits(memory_bytes=2**30, cpu=1.5)
    (group / "memory.max").write_text("max\n")
    (group / "cpu.max").write_text("max 100000\n")
    assert opened.limits() == cgroups.Limits()


@pytest.mark.needs("root", "cgroups")
def test_real_cgroup_readers() -> None:
    driver = cgroups.detect()
    assert driver is not None
    relpath = f"hubfleet-usage-test-{os.getpid()}/g"
    code = (
        "import time; x = b'x' * (100 * 2**20); t = time.process_time()\n"
        "while time.process_time() - t < 0.5: pass\ntime.sleep(30)"
    )
    with process_in_cgroup(driver, relpath, cgroups.Limits(memory_bytes=512 * 2**20, cpu=1.0), code) as group:
        wait_until(lambda: group.cpu_seconds() >= 0.5, 20, "half a CPU-second burned")
        assert group.limits() == cgroups.Limits(memory_bytes=512 * 2**20, cpu=1.0)
        assert group.cpu_seconds() >= 0.5
        assert 100 * 2**20 <= group.memory_working_set_bytes() <= group.memory_bytes()
