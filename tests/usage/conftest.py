"""Fixtures of the usage tests: a fresh ledger migrated with the usage branch, small fleets, a process in a real
cgroup."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy.orm import Session, sessionmaker

from hubfleet import db
from hubfleet.spec import Fleet, parse
from hubfleet.system import cgroups


@pytest.fixture
def sessions(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    """A new fleet database with the usage ledger's tables (the `usage` migration branch)."""
    engine = db.connect(db.default_url(tmp_path))
    command.upgrade(db.alembic_config(engine), "usage@head")
    yield sessionmaker(engine, expire_on_commit=False)
    engine.dispose()


def make_fleet(hubs: str, usage: str = "") -> Fleet:
    """A fleet (not started) with `hubs` (YAML under `hubs:`, unindented) and an optional `usage:` block."""
    indented = "\n".join("  " + line for line in hubs.strip().splitlines())
    return parse(f"name: t\n{usage}\nhubs:\n{indented}\n")


@contextlib.contextmanager
def process_in_cgroup(
    driver: cgroups.CgroupDriver, relpath: str, limits: cgroups.Limits, code: str
) -> Iterator[cgroups.Cgroup]:
    """A new cgroup `relpath` with `limits`, running a Python process of `code`; both gone afterwards."""
    group = driver.create(relpath, limits)
    process = subprocess.Popen([sys.executable, "-c", code], preexec_fn=cgroups.prepare_preexec(group))
    try:
        yield group
    finally:
        process.kill()
        process.wait()
        group.remove()
        for path in group.paths:
            os.rmdir(os.path.dirname(path))
