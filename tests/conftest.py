"""The suite's one place for what tests need of the machine (see tests/requirements.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.requirements import REQUIREMENTS, need
from tests.slurm import SlurmCluster, slurm_cluster_in_env


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"needs(*requirements): what the test needs of the machine, any of {', '.join(REQUIREMENTS)}"
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers("needs"):
        need(*mark.args)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for mark in item.iter_markers("needs"):
            unknown = set(mark.args) - set(REQUIREMENTS)
            if unknown:
                raise pytest.UsageError(f"{item.nodeid}: unknown requirement(s) {sorted(unknown)}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> object:
    """Under CI a skip of any kind (a `pytest.skip` anywhere, an `importorskip`) is a failure."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped under CI, which must run every test: {report.longrepr}"


@pytest.fixture(scope="module")
def slurm() -> Iterator[SlurmCluster]:
    """A real Slurm cluster for the module's tests, `SLURM_CONF` exported while it runs (tests/slurm.py)."""
    with slurm_cluster_in_env() as running:
        yield running
