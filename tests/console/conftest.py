"""One real fleet for every console test (see shared.py)."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator

import pytest

from hubfleet.db import default_url
from tests.console.shared import CONSOLE, HUBS, MONTH, PASSWORD, A, B, ConsoleFleet, record_contributions, record_usage
from tests.helpers import running_fleet


@pytest.fixture(scope="package")
def console_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleFleet]:
    """The fleet, up; then its console operators and organisation applied live (`hubfleet apply`), this month's
    usage and upstream work."""
    with running_fleet(tmp_path_factory.mktemp("console"), HUBS, [A, B], PASSWORD) as fleet:
        fleet.write(fleet.file.read_text() + textwrap.dedent(CONSOLE))
        fleet.cli("apply", str(fleet.file))
        record_usage(default_url(fleet.state_dir))
        record_contributions(default_url(fleet.state_dir), str(fleet.file))
        yield ConsoleFleet(fleet=fleet, month=MONTH)
