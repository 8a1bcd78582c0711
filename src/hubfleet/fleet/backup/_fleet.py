"""`hubfleet backup` and `hubfleet restore`: snapshots of a whole fleet (see the package's docstring)."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from hubfleet.common.state import FleetState, database_url
from hubfleet.fleet.backup._parts import (
    Reporter,
    add_hub,
    hub_bytes,
    restore_accounts,
    restore_hub,
    skip_state,
    tree_bytes,
)
from hubfleet.fleet.backup._tree import SnapshotError, SnapshotWriter, restore_tree, verify
from hubfleet.spec import Fleet, parse

SNAPSHOTS = "snapshots"
LATEST = "latest"
PARTIAL = ".partial-"
PG_DUMP = "database/fleet.pgdump"
FORMAT = 1


@dataclass(frozen=True)
class BackupReport:
    """What one backup wrote."""

    snapshot: Path
    files_copied: int
    files_linked: int
    bytes_total: int
    bytes_new: int
    """Disk space the snapshot takes beyond the previous one (new copies only)."""
    seconds: float


@dataclass(frozen=True)
class RestoreReport:
    """What a restore brought back."""

    snapshot: Path
    state_dir: Path
    hubs: list[str]
    accounts: int
    fleet_file: Path
    """Where the restored fleet file is (start the fleet with it)."""
    seconds: float


def _stamp() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")


def _is_postgres(url: str) -> bool:
    return url.startswith(("postgresql", "postgres"))


def _pg_url(url: str) -> str:
    """A SQLAlchemy URL as libpq's tools take it (no `+driver`)."""
    scheme, rest = url.split("://", 1)
    return f"postgresql://{rest}" if scheme.startswith("postgres") else url


def find_snapshot(path: Path) -> Path:
    """The snapshot `path` names: a snapshot folder, or a backup folder (its newest complete snapshot)."""
    if (path / LATEST).exists():
        return (path / LATEST).resolve()
    return path


def backup_fleet(fleet: Fleet, state_root: Path, to: Path, reporter: Reporter, keep: int = 7) -> BackupReport:
    """Snapshot the fleet running (or sleeping) from `state_root` into the backup folder `to`."""
    started = dt.datetime.now(dt.UTC)
    state = FleetState(state_root)
    if not state.exists:
        raise SnapshotError(f"no fleet state in {state_root}")
    (to / SNAPSHOTS).mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(to, 0o700)
    for stale in to.glob(f"{PARTIAL}*"):  # what an interrupted backup left: never a complete snapshot
        shutil.rmtree(stale)
    previous = (to / LATEST).resolve() if (to / LATEST).exists() else None
    hubs = sorted(set(fleet.hubs) | set(state.hub_names()))
    reporter.phase("measuring", 0)
    total = tree_bytes(state_root, skip_state) + sum(hub_bytes(fleet, hub) for hub in hubs)
    name = _stamp()
    partial = to / f"{PARTIAL}{name}"
    new_bytes = 0
    writer = SnapshotWriter(partial, previous, reporter.advance)
    reporter.phase("backing up", total)
    writer.add_tree("state", state_root, skip_state)
    meta: dict = {"format": FORMAT, "kind": "fleet", "fleet": fleet.name, "created": started.isoformat()}
    url = database_url(fleet, state_root)
    if _is_postgres(url):
        dump = partial / PG_DUMP
        dump.parent.mkdir(mode=0o700)
        _tool("pg_dump", "--format=custom", f"--file={dump}", _pg_url(url))
        writer.add_tree("database", dump.parent)
        meta["database"] = "postgresql"
    else:
        meta["database"] = "sqlite"
    for hub in hubs:
        add_hub(writer, fleet, hub, meta)
    meta["hubs"] = hubs
    writer.finish(meta)
    for entry in writer.entries:
        if entry.kind == "f" and os.stat(partial / entry.path).st_nlink == 1:
            new_bytes += entry.size
    final = to / SNAPSHOTS / name
    os.rename(partial, final)
    link = to / f".{LATEST}.tmp"
    link.unlink(missing_ok=True)
    link.symlink_to(Path(SNAPSHOTS) / name)
    os.replace(link, to / LATEST)
    _prune(to, keep)
    return BackupReport(
        snapshot=final,
        files_copied=writer.copied,
        files_linked=writer.linked,
        bytes_total=total,
        bytes_new=new_bytes,
        seconds=(dt.datetime.now(dt.UTC) - started).total_seconds(),
    )


def _prune(to: Path, keep: int) -> None:
    """Keep the newest `keep` snapshots (files they share with newer ones stay, as hard links)."""
    snapshots = sorted(p for p in (to / SNAPSHOTS).iterdir() if p.is_dir())
    for old in snapshots[: max(len(snapshots) - max(keep, 1), 0)]:
        shutil.rmtree(old)


def _tool(*args: str) -> None:
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SnapshotError(f"{args[0]} failed: {proc.stderr.strip()}")


def restore_fleet(snapshot: Path, state_root: Path | None, reporter: Reporter) -> RestoreReport:
    """Bring the fleet of `snapshot` back: state (into `state_root`, else the fleet file's), database, Unix
    accounts, homes and shared folders. The state directory must be new (or empty); checksums are verified first."""
    started = dt.datetime.now(dt.UTC)
    snapshot = find_snapshot(snapshot)
    sizes = sum(os.stat(p).st_size for p in snapshot.rglob("*") if p.is_file() and not p.is_symlink())
    reporter.phase("verifying", sizes)
    meta, entries = verify(snapshot, reporter.advance)
    if meta.get("kind") != "fleet":
        raise SnapshotError(f"{snapshot} is not a fleet backup (a hub archive? use `hubfleet hub restore`)")
    applied = json.loads((snapshot / "state" / "applied.json").read_text(encoding="utf-8"))
    fleet = parse(applied["text"], Path(applied["path"]))
    root = (state_root or fleet.state_dir or Path(".hubfleet")).resolve()
    if root.exists() and any(root.iterdir()):
        raise SnapshotError(f"{root} is not empty: restore into a new state directory (--state-dir)")
    hubs = set(meta["hubs"])
    reporter.phase("restoring", sum(e.size for e in entries if e.kind == "f"))
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    restore_tree(snapshot, entries, "state", root, reporter.advance)
    os.chmod(root, 0o700)
    if meta["database"] == "postgresql":
        url = database_url(fleet, root)
        _tool("pg_restore", "--clean", "--if-exists", "--no-owner", f"--dbname={_pg_url(url)}", str(snapshot / PG_DUMP))
    ids = restore_accounts(meta, hubs)
    for hub in sorted(hubs):
        restore_hub(snapshot, entries, meta, fleet, hub, ids, reporter)
    fleet_file = Path(applied["path"])
    if not fleet_file.exists():
        fleet_file = root / "restored-fleet.yaml"
        fleet_file.write_text(applied["text"], encoding="utf-8")
    return RestoreReport(
        snapshot=snapshot,
        state_dir=root,
        hubs=sorted(hubs),
        accounts=len(meta.get("accounts", {})),
        fleet_file=fleet_file,
        seconds=(dt.datetime.now(dt.UTC) - started).total_seconds(),
    )
