"""Fixtures: one peer LMS and one tiny tool per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.lms.minitool import MiniTool
from tests.lms.peer import PeerLMS


@pytest.fixture(scope="module")
def lms() -> Iterator[PeerLMS]:
    with PeerLMS(label="canvas", client_id="hubfleet-1", deployment_id="dep-1") as peer:
        yield peer


@pytest.fixture(scope="module")
def tool(lms: PeerLMS) -> Iterator[MiniTool]:
    with MiniTool(lms) as mini:
        yield mini
