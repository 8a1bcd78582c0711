"""Fixtures of the course tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from hubfleet.db import default_url, open_database


@pytest.fixture
def sessions(tmp_path: Path) -> sessionmaker[Session]:
    """A fresh fleet database (SQLite in the test's folder, migrated)."""
    return open_database(default_url(tmp_path))
