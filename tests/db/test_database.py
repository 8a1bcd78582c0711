"""The fleet database: transactional DDL on SQLite, and migrations that several processes may run at once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from hubfleet import db


def test_a_failed_transaction_leaves_no_table(tmp_path: Path) -> None:
    engine = db.connect(db.default_url(tmp_path))
    with pytest.raises(RuntimeError), engine.begin() as connection:
        connection.execute(text("CREATE TABLE half_done (id INTEGER PRIMARY KEY)"))
        raise RuntimeError("migration failed half-way")
    assert "half_done" not in inspect(engine).get_table_names()


def test_concurrent_migrations_all_succeed(tmp_path: Path) -> None:
    url = db.default_url(tmp_path)
    code = f"from hubfleet import db; db.open_database({url!r})"
    runs = [subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True) for _ in range(3)]
    errors = [run.communicate(timeout=120)[1] for run in runs]
    assert [run.returncode for run in runs] == [0, 0, 0], errors
    with db.connect(url).connect() as connection:
        heads = {row[0] for row in connection.execute(text("SELECT version_num FROM alembic_version"))}
    engine = db.connect(url)
    assert heads == set(ScriptDirectory.from_config(db.alembic_config(engine)).get_heads())  # every room's newest
