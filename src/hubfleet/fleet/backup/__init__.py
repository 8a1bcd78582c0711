"""Backups of a fleet and archives of one hub: everything that is not lost when the machine is.

A fleet backup (`hubfleet backup`) is a snapshot folder under the backup folder:

    <to>/snapshots/<UTC time>/   MANIFEST.json (+ .sha256), state/, homes/<account>/, shared/<hub>/, database/
    <to>/latest                  → the newest complete snapshot

- `state/` is the fleet's state directory: every hub's JupyterHub database, cookie secret, keys and tokens, the
  fleet database when it is SQLite (usage, gradebook, LTI identities, the passback outbox) — SQLite files through
  SQLite's online backup API, so the copy is consistent while the fleet runs. Logs, pid files and sockets are left
  out. A PostgreSQL fleet database goes to `database/fleet.pgdump` (`pg_dump`).
- `homes/<account>/` is each hub user's home (from its quota image when it has one, mounted read-only if no server
  runs), `shared/<hub>/` the hub's shared and course folders (scratch is left out: it is swept anyway).
- Unchanged files are hard links to the previous snapshot: each backup is complete, and costs only what changed.
- A backup is written to `<to>/.partial-<time>` and renamed into place once complete, so an interrupted backup
  leaves the previous ones as they were (and is removed by the next run).

`hubfleet restore` checks every checksum before it writes anything, then brings back the state directory, the
database, the Unix accounts (with their old uid/gid when free), homes (into their quota images) and shared folders.

A hub archive (`hubfleet hub archive`) is the same kind of snapshot, limited to one hub (its state folder, homes,
shared folders, and its rows of the fleet database as JSON), packed into one compressed file (tar + gzip).
"""

from hubfleet.fleet.backup._fleet import BackupReport, RestoreReport, backup_fleet, find_snapshot, restore_fleet
from hubfleet.fleet.backup._hub import (
    ArchiveReport,
    archive_hub,
    decommission_hub,
    fresh_archive,
    restore_hub,
    running_processes,
)
from hubfleet.fleet.backup._tree import SnapshotError

__all__ = [
    "ArchiveReport",
    "BackupReport",
    "RestoreReport",
    "SnapshotError",
    "archive_hub",
    "backup_fleet",
    "decommission_hub",
    "find_snapshot",
    "fresh_archive",
    "restore_fleet",
    "restore_hub",
    "running_processes",
]
