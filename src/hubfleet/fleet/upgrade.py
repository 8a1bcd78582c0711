"""`hubfleet upgrade`: bring the fleet database to the installed hubfleet's schema, safely.

The database is copied first (SQLite, with SQLite's online backup: consistent while hubs write), then every room's
migrations run in one transaction. A migration that fails leaves nothing of itself (the transaction), and the copy
is restored on top all the same, so the database is exactly as it was before. Restarting the hubs one at a time
(users' servers kept) is the supervisor's (`hubfleet.fleet.control`)."""

from __future__ import annotations

import datetime as dt
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from hubfleet import db

BACKUPS = "backups"
"""The state directory's folder for database copies made before an upgrade."""


class UpgradeRefused(RuntimeError):
    """The database could not be brought to the installed schema; it was left (or put back) as it was."""


@dataclass(frozen=True)
class Migration:
    """What `migrate` did."""

    before: frozenset[str]
    """Revisions (one per room) the database was at."""
    after: frozenset[str]
    """Revisions it is at now."""
    backup: Path | None
    """The copy made first (None: not SQLite — PostgreSQL's transactional DDL is the safety net)."""

    @property
    def changed(self) -> bool:
        return self.before != self.after


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite database URL (None for other databases)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def revisions(engine: Engine) -> frozenset[str]:
    """The migration revisions the database is at (empty: a new database)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return frozenset(MigrationContext.configure(connection).get_current_heads())


def _copy(source: Path, target: Path) -> None:
    """SQLite's online backup of `source` into `target` (page by page, consistent while others write)."""
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


def backup(url: str, state_root: Path, now: dt.datetime | None = None) -> Path | None:
    """A copy of the fleet database in `<state>/backups/` (None: not SQLite)."""
    path = sqlite_path(url)
    if path is None or not path.exists():
        return None
    folder = state_root / BACKUPS
    folder.mkdir(mode=0o700, exist_ok=True)
    stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%SZ")
    target = folder / f"{path.stem}-before-upgrade-{stamp}.sqlite"
    _copy(path, target)
    target.chmod(0o600)
    return target


def restore(copy: Path, url: str) -> None:
    """Put the copy back as the fleet database (through SQLite, so that processes holding it open stay right)."""
    path = sqlite_path(url)
    assert path is not None
    _copy(copy, path)


def migrate(url: str, state_root: Path) -> Migration:
    """Copy, then migrate; on a failed migration restore the copy and raise UpgradeRefused."""
    engine = db.connect(url)
    try:
        before = revisions(engine)
        copy = backup(url, state_root)
        try:
            db.migrate(engine)
        except Exception as exc:
            engine.dispose()
            if copy is not None:
                restore(copy, url)
            kept = f"the database was restored from {copy}" if copy else "the failed migration's transaction left it"
            raise UpgradeRefused(f"a migration failed ({type(exc).__name__}: {exc}); {kept} as it was") from exc
        return Migration(before, revisions(engine), copy)
    finally:
        engine.dispose()
