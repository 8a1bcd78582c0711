"""One hub's way out and back: `hubfleet hub archive|decommission|restore` (see the package's docstring)."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

from hubfleet import db
from hubfleet.common.state import database_url, hub_cgroup
from hubfleet.fleet.backup._parts import (
    Reporter,
    add_hub,
    hub_bytes,
    restore_accounts,
    skip_state,
    tree_bytes,
)
from hubfleet.fleet.backup._parts import restore_hub as restore_hub_files
from hubfleet.fleet.backup._rows import delete_rows, export_rows, import_rows
from hubfleet.fleet.backup._tree import SnapshotError, SnapshotWriter, restore_tree, sha256_file, verify
from hubfleet.spec.models import Fleet
from hubfleet.system import accounts, cgroups, homes, pidfiles

ARCHIVED_FILE = "archived.json"
"""In the hub's state folder: the hub's last archive (path, checksum, time), for `decommission`."""

ROWS_FILE = "database/rows.json"
FORMAT = 1


@dataclass(frozen=True)
class ArchiveReport:
    """One hub archive."""

    hub: str
    path: Path
    sha256: str
    bytes: int
    """The archive's size on disk (compressed)."""
    bytes_in: int
    """Bytes of files that went into it."""
    files: int
    seconds: float


def _hub_state(state_root: Path, hub: str) -> Path:
    return state_root / "hubs" / hub


def running_processes(state_root: Path, hub: str) -> list[str]:
    """The hub's processes that still run, by the pid files the fleet wrote (`hubfleet.system.pidfiles`)."""
    return [path.stem for path in sorted(_hub_state(state_root, hub).glob("*.pid")) if pidfiles.running(path)]


def _check_stopped(state_root: Path, hub: str) -> None:
    alive = running_processes(state_root, hub)
    if alive:
        raise SnapshotError(f"hub {hub} is running ({', '.join(alive)}): stop it first")


def archive_hub(
    fleet: Fleet, state_root: Path, hub: str, to: Path, reporter: Reporter, spec: str | None = None
) -> ArchiveReport:
    """Write `<to>/<hub>-<time>.tar.gz` (and its `.sha256`): the stopped hub's state folder, homes, shared folders
    and rows of the fleet database, with a manifest of checksums. `spec` is the hub's part of the fleet file."""
    started = dt.datetime.now(dt.UTC)
    hub_state = _hub_state(state_root, hub)
    if not hub_state.is_dir():
        raise SnapshotError(f"no hub {hub!r} in the fleet state at {state_root}")
    _check_stopped(state_root, hub)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    to.mkdir(mode=0o700, parents=True, exist_ok=True)
    work = to / f".{hub}-{stamp}.partial"
    shutil.rmtree(work, ignore_errors=True)
    snapshot = work / f"{hub}-{stamp}"
    reporter.phase(f"archiving hub {hub}", tree_bytes(hub_state, skip_state) + hub_bytes(fleet, hub))
    writer = SnapshotWriter(snapshot, None, reporter.advance)
    writer.add_tree("state", hub_state, lambda relative: skip_state(relative) or relative == ARCHIVED_FILE)
    rows = work / "database"
    rows.mkdir()
    (rows / Path(ROWS_FILE).name).write_text(export_rows(db.open_database(database_url(fleet, state_root)), hub))
    writer.add_tree("database", rows)
    meta = {"format": FORMAT, "kind": "hub", "hub": hub, "fleet": fleet.name, "created": started.isoformat()}
    meta["spec"] = spec
    # Its homes go back into quota images of this size, even when the fleet it is restored into lacks the hub.
    meta["home_quota"] = fleet.hubs[hub].storage.home_quota if hub in fleet.hubs else None
    add_hub(writer, fleet, hub, meta)
    writer.finish(meta)
    path = to / f"{hub}-{stamp}.tar.gz"
    partial = path.with_name(path.name + ".partial")
    with tarfile.open(partial, "w:gz", compresslevel=6) as tar:
        tar.add(snapshot, arcname=snapshot.name)
    digest = sha256_file(partial)
    path.with_name(path.name + ".sha256").write_text(f"{digest}  {path.name}\n")
    os.replace(partial, path)
    shutil.rmtree(work)
    record = {"path": str(path), "sha256": digest, "created": started.isoformat()}
    (hub_state / ARCHIVED_FILE).write_text(json.dumps(record))
    return ArchiveReport(
        hub=hub,
        path=path,
        sha256=digest,
        bytes=path.stat().st_size,
        bytes_in=sum(e.size for e in writer.entries),
        files=sum(1 for e in writer.entries if e.kind == "f"),
        seconds=(dt.datetime.now(dt.UTC) - started).total_seconds(),
    )


def fresh_archive(state_root: Path, hub: str) -> Path:
    """The hub's last archive, if it is complete, matches its checksum and nothing of the hub changed since (the
    hub's database); else SnapshotError saying why."""
    hub_state = _hub_state(state_root, hub)
    try:
        record = json.loads((hub_state / ARCHIVED_FILE).read_text())
    except (OSError, ValueError):
        raise SnapshotError(f"hub {hub} has no archive: run `hubfleet hub archive {hub}` first") from None
    path = Path(record["path"])
    if not path.exists():
        raise SnapshotError(f"the archive of hub {hub} is gone ({path}): archive it again")
    if sha256_file(path) != record["sha256"]:
        raise SnapshotError(f"the archive of hub {hub} ({path}) does not match its checksum: archive it again")
    created = dt.datetime.fromisoformat(record["created"]).timestamp()
    for changed in (hub_state / "jupyterhub.sqlite", hub_state / "logins.jsonl"):
        if changed.exists() and changed.stat().st_mtime > created + 1:
            raise SnapshotError(f"hub {hub} changed after its archive ({changed.name}): archive it again")
    return path


def decommission_hub(fleet: Fleet, state_root: Path, hub: str, *, force: bool = False) -> dict[str, int]:
    """Remove a stopped hub from this machine: its homes (images included), Unix accounts and groups, cgroups,
    shared folders, rows of the fleet database and state folder. Refused without a fresh archive unless `force`."""
    _check_stopped(state_root, hub)
    if not force:
        fresh_archive(state_root, hub)
    removed = {"homes": len(homes.release_homes(fleet.paths.home_root, f"{hub}_"))}
    removed["accounts"] = len(accounts.remove_hub_accounts(hub))
    driver = cgroups.detect()
    group = driver.open(hub_cgroup(fleet.name, state_root, hub)) if driver else None
    if group is not None:
        group.remove()
    shared = fleet.paths.shared_root / hub
    removed["shared"] = int(shared.exists())
    shutil.rmtree(shared, ignore_errors=True)
    removed["rows"] = delete_rows(db.open_database(database_url(fleet, state_root)), hub)
    shutil.rmtree(_hub_state(state_root, hub), ignore_errors=True)
    return removed


def restore_hub(fleet: Fleet, state_root: Path, archive: Path, reporter: Reporter) -> tuple[str, str | None]:
    """Bring an archived hub back onto this machine, checksums verified first; (hub name, its part of the fleet
    file as archived). The hub must not be here (decommissioned, or a new machine)."""
    sidecar = archive.with_name(archive.name + ".sha256")
    if sidecar.exists() and sha256_file(archive) != sidecar.read_text().split()[0]:
        raise SnapshotError(f"{archive} does not match its checksum ({sidecar.name}): it is damaged")
    work = state_root / f".restoring-{archive.name}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(mode=0o700, parents=True)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(work, filter="data")
        (snapshot,) = [p for p in work.iterdir() if p.is_dir()]
        reporter.phase("verifying", sum(p.stat().st_size for p in snapshot.rglob("*") if p.is_file()))
        meta, entries = verify(snapshot, reporter.advance)
        if meta.get("kind") != "hub":
            raise SnapshotError(f"{archive} is not a hub archive")
        hub = meta["hub"]
        hub_state = _hub_state(state_root, hub)
        if hub_state.exists():
            raise SnapshotError(f"hub {hub} is already here ({hub_state}): decommission it first")
        reporter.phase(f"restoring hub {hub}", sum(e.size for e in entries if e.kind == "f"))
        import_rows(db.open_database(database_url(fleet, state_root)), (snapshot / ROWS_FILE).read_text())
        restore_tree(snapshot, entries, "state", hub_state, reporter.advance)
        ids = restore_accounts(meta, {hub})
        restore_hub_files(snapshot, entries, meta, fleet, hub, ids, reporter)
        return hub, meta.get("spec")
    finally:
        shutil.rmtree(work, ignore_errors=True)
