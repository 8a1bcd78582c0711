"""One environment store for the environment tests: its package cache makes every build after the first warm."""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

BUILD_ACCOUNT = "ev-build"
"""The build account of the tests' fleets (a system account, left in place like any service's)."""


@pytest.fixture(scope="session")
def env_store() -> Iterator[Path]:
    """An empty store outside /tmp (every Unix user must reach the environments), removed at the end."""
    root = Path(f"/opt/hubfleet/envs-test-{secrets.token_hex(3)}")
    yield root
    shutil.rmtree(root, ignore_errors=True)
