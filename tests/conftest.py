"""The suite's one place for what tests need of the machine (see tests/requirements.py) and for how its modules are
shared between pytest-xdist workers."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.requirements import REQUIREMENTS, need
from tests.slurm import SlurmCluster, slurm_cluster_in_env

if os.environ.get("PYTEST_XDIST_WORKER"):
    # A pytest-xdist worker starts with COLUMNS=80 and LINES=24 in its environment; a run in one process has neither,
    # and the CLI's consoles take their width from COLUMNS when first imported.
    for variable in ("COLUMNS", "LINES"):
        os.environ.pop(variable, None)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"needs(*requirements): what the test needs of the machine, any of {', '.join(REQUIREMENTS)}"
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers("needs"):
        need(*mark.args)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for mark in item.iter_markers("needs"):
            unknown = set(mark.args) - set(REQUIREMENTS)
            if unknown:
                raise pytest.UsageError(f"{item.nodeid}: unknown requirement(s) {sorted(unknown)}")
    _group_for_workers(items)


SHARED: dict[str, str] = {
    "slurm": "one munged serves the machine",
    "env_store": "its package cache makes every build after the first warm",
}
"""Fixtures whose modules must run on one worker, and why."""


def _group_for_workers(items: list[pytest.Item]) -> None:
    """Groups for pytest-xdist's `--dist loadgroup` (`make test` runs two workers): a module's tests stay on one
    worker (they share module-scoped fleets), and so do all modules that use one of the SHARED fixtures; those
    groups go first, the longest chains of work one worker must do alone. Without xdist the marks do nothing."""
    modules: dict[str, list[pytest.Item]] = {}
    for item in items:
        modules.setdefault(item.nodeid.split("::")[0], []).append(item)
    for module, members in modules.items():
        used = {name for member in members for name in getattr(member, "fixturenames", ())}
        group = next((name for name in SHARED if name in used), module)
        for member in members:
            member.add_marker(pytest.mark.xdist_group(group))
    items.sort(key=lambda item: item.get_closest_marker("xdist_group").args[0] not in SHARED)


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
