"""What tests need of the machine, decided in one place.

A test names what it needs with `@pytest.mark.needs("root", "cgroups", …)` (or calls `need(…)` from a fixture or
helper). When something is missing the test is skipped on a developer's machine — and **fails** when `CI` is set:
CI must never pass with part of the suite skipped.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path

import pytest

from hubfleet.system import cgroups

USER_ENV = Path(os.environ.get("HUBFLEET_TEST_USER_ENV", "/opt/hubfleet/user-env"))
CHROMIUM = Path("/usr/bin/chromium")
SLURM_TOOLS = (
    "slurmctld",
    "slurmd",
    "munged",
    "munge",
    "unmunge",
    "sbatch",
    "squeue",
    "scancel",
    "sinfo",
    "scontrol",
    "sudo",
)


def _has_tool(name: str) -> bool:
    return shutil.which(name) is not None or Path("/usr/sbin", name).exists()


def _proxy() -> bool:
    return (Path(sys.prefix) / "node_modules" / ".bin" / "configurable-http-proxy").exists()


REQUIREMENTS: dict[str, tuple[Callable[[], bool], str]] = {
    "root": (lambda: os.geteuid() == 0, "needs root (real Unix users, cgroups, mounts): run as root"),
    "cgroups": (lambda: cgroups.detect() is not None, "needs a writable cgroup hierarchy (v1 or v2)"),
    "acl": (lambda: shutil.which("setfacl") is not None, "needs setfacl: apt-get install acl"),
    "user_env": (
        lambda: (USER_ENV / "bin" / "jupyterhub-singleuser").exists(),
        f"needs the user environment at {USER_ENV}: run make setup",
    ),
    "proxy": (_proxy, "needs configurable-http-proxy in the virtualenv: run make setup"),
    "slurm": (
        lambda: all(_has_tool(tool) for tool in (*SLURM_TOOLS, "sudo")),
        "needs Slurm: apt-get install slurm-wlm munge sudo",
    ),
    "chromium": (lambda: CHROMIUM.exists(), f"needs Chromium at {CHROMIUM}: apt-get install chromium"),
    "pebble": (lambda: _has_tool("pebble"), "needs Pebble, a test ACME server: apt-get install pebble"),
    "slapd": (
        lambda: all(_has_tool(tool) for tool in ("slapd", "slapadd", "ldapsearch")),
        "needs OpenLDAP's server and tools: apt-get install slapd ldap-utils",
    ),
    "systemd-analyze": (
        lambda: _has_tool("systemd-analyze"),
        "needs systemd-analyze (checks service units): apt-get install systemd",
    ),
    "xfs": (
        lambda: all(_has_tool(tool) for tool in ("mkfs.xfs", "xfs_growfs", "xfs_db", "losetup")),
        "needs xfsprogs (home quotas): apt-get install xfsprogs",
    ),
}


@cache
def missing(name: str) -> str | None:
    """Why requirement `name` is not met on this machine (None: it is)."""
    check, why = REQUIREMENTS[name]
    return None if check() else why


def need(*names: str) -> None:
    """Skip the running test (fail it under CI) unless every requirement in `names` is met."""
    for name in names:
        why = missing(name)
        if why is not None:
            if os.environ.get("CI"):
                pytest.fail(f"CI must run every test: {why}", pytrace=False)
            pytest.skip(why)
