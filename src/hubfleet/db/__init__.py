"""The fleet database: one SQLAlchemy engine for every room's tables (SQLite by default, PostgreSQL by URL).

Each room (usage, edu, …) declares its tables on the shared `Base`, names its table module as an entry point of the
group `hubfleet.tables` (pyproject.toml; this package imports no room), and ships its own Alembic migration branch
in `hubfleet/db/migrations/versions/` (files `<room>_NNNN_*.py`, `branch_labels=("<room>",)`); `migrate()` brings
every branch to its head.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

if TYPE_CHECKING:
    from alembic.config import Config

DATABASE_FILE = "fleet.sqlite"

TABLES_GROUP = "hubfleet.tables"
"""The entry-point group naming every room's table module."""


class Base(DeclarativeBase):
    """The declarative base of every table in the fleet database."""


def load_tables() -> None:
    """Import every room's table module, so that `Base.metadata` knows all tables (Alembic autogenerate, tests)."""
    for entry in entry_points(group=TABLES_GROUP):
        importlib.import_module(entry.value)


def default_url(state_dir: Path) -> str:
    """The fleet database in a state directory (SQLite)."""
    return f"sqlite:///{Path(state_dir).resolve() / DATABASE_FILE}"


def connect(url: str) -> Engine:
    """An engine for `url`. SQLite gets WAL journaling, foreign keys and a busy timeout (several processes write),
    and real transactions around DDL too (pysqlite would commit each DDL statement on its own), so that a failed
    migration leaves nothing behind."""
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves (below)
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection) -> None:  # type: ignore[no-untyped-def]
        # Every transaction takes the write lock at its start (waiting up to the busy timeout): a transaction that
        # read first and writes later could otherwise fail at once with "database is locked" when another process
        # wrote in between, and two processes migrating at once would both create the tables.
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def alembic_config(engine: Engine) -> Config:
    """Alembic's configuration for the fleet database's migrations (no alembic.ini needed)."""
    from alembic.config import Config  # Alembic is imported by the processes that migrate only

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    config.attributes["engine"] = engine
    return config


def migrate(engine: Engine) -> None:
    """Bring every room's tables to their newest version."""
    from alembic import command

    command.upgrade(alembic_config(engine), "heads")


def open_database(url: str) -> sessionmaker[Session]:
    """Connect, migrate, and return a session factory."""
    engine = connect(url)
    migrate(engine)
    return sessionmaker(engine, expire_on_commit=False)
