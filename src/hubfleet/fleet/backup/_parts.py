"""What a fleet or a hub consists of on this machine (state, homes, shared folders, Unix accounts), for snapshots."""

from __future__ import annotations

import grp
import pwd
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from hubfleet.fleet.backup._tree import Entry, SnapshotWriter, restore_tree, walk
from hubfleet.spec.checks import SCRATCH_FOLDER
from hubfleet.spec.models import Fleet
from hubfleet.system import accounts, homes

STATE_LEFT_OUT = (".pid", ".sock", ".log", ".out", "-wal", "-shm", "-journal", ".tmp")
"""State files a snapshot leaves out: they belong to running processes, not to the fleet's state."""

SHARED_LEFT_OUT = {SCRATCH_FOLDER, ".dask-clusters", ".server-config"}
"""Folders of a hub's shared root a snapshot leaves out (swept scratch, running clusters, generated config)."""


class Reporter(Protocol):
    """Progress of long work: phases with a size in bytes, and bytes done."""

    def phase(self, description: str, total: int) -> None: ...

    def advance(self, count: int) -> None: ...


def skip_state(relative: str) -> bool:
    return relative.endswith(STATE_LEFT_OUT) or relative == "backups"


def skip_shared(relative: str) -> bool:
    return relative.split("/", 1)[0] in SHARED_LEFT_OUT


def tree_bytes(root: Path, skip: Callable[[str], bool] = lambda _: False) -> int:
    return sum(info.st_size for _, info in walk(root, skip) if stat.S_ISREG(info.st_mode))


def hub_accounts(home_root: Path, hub: str) -> dict[str, dict]:
    """The hub's users' Unix accounts that have a home here: name → uid, gid, comment, home."""
    found = {}
    for name in homes.home_names(home_root, f"{hub}_"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        found[name] = {
            "uid": entry.pw_uid,
            "gid": entry.pw_gid,
            "comment": entry.pw_gecos,
            "home": entry.pw_dir,
            "hub": hub,
        }
    return found


def hub_groups(hub: str) -> dict[str, int]:
    """The hub's POSIX groups (of all its users, of its groups and courses): name → gid."""
    prefix, everyone = accounts.hub_group_prefix(hub), accounts.hub_groupname(hub)
    return {g.gr_name: g.gr_gid for g in grp.getgrall() if g.gr_name.startswith(prefix) or g.gr_name == everyone}


def hub_bytes(fleet: Fleet, hub: str) -> int:
    """Bytes of a hub's homes and shared folders (for progress)."""
    total = tree_bytes(fleet.paths.shared_root / hub, skip_shared)
    for name in hub_accounts(fleet.paths.home_root, hub):
        use = homes.home_use(fleet.paths.home_root / name)
        total += use.used if use.size is not None else tree_bytes(fleet.paths.home_root / name)
    return total


def add_hub(writer: SnapshotWriter, fleet: Fleet, hub: str, meta: dict) -> None:
    """The hub's homes (`homes/<account>`) and shared folders (`shared/<hub>`), and its accounts and groups."""
    found = hub_accounts(fleet.paths.home_root, hub)
    for name in found:
        with homes.readable(fleet.paths.home_root / name) as path:
            writer.add_tree(f"homes/{name}", path)
    writer.add_tree(f"shared/{hub}", fleet.paths.shared_root / hub, skip_shared)
    meta.setdefault("accounts", {}).update(found)
    meta.setdefault("groups", {}).update(hub_groups(hub))


IdMap = Callable[[int, int], tuple[int, int]]


def restore_accounts(meta: dict, hubs: set[str]) -> IdMap:
    """Create the recorded groups and accounts of `hubs` (old ids when free; existing ones are kept) and return
    the map from recorded owners to owners on this machine."""
    uids, gids = {}, {}
    for name, gid in meta.get("groups", {}).items():
        hub = name[3:] if name.startswith("hf-") else name.split("_", 1)[0]
        if hub in hubs:
            gids[gid] = accounts.ensure_group(name, gid)
    for hub in hubs:
        accounts.ensure_group(accounts.hub_groupname(hub))
    for name, record in meta.get("accounts", {}).items():
        if record["hub"] not in hubs:
            continue
        account = accounts.ensure_user(
            name,
            Path(record["home"]),
            comment=record["comment"],
            groups=[accounts.hub_groupname(record["hub"])],
            uid=record["uid"],
        )
        uids[record["uid"]], gids[record["gid"]] = account.uid, account.gid
    return lambda uid, gid: (uids.get(uid, uid), gids.get(gid, gid))


def restore_hub(
    folder: Path, entries: list[Entry], meta: dict, fleet: Fleet, hub: str, ids: IdMap, reporter: Reporter
) -> None:
    """Put a hub's homes (into quota images when the hub has a quota: in `fleet`, else when it was archived) and
    shared folders back."""
    quota = fleet.hubs[hub].storage.home_quota if hub in fleet.hubs else meta.get("home_quota")
    for name, record in meta.get("accounts", {}).items():
        if record["hub"] != hub:
            continue
        entry = pwd.getpwnam(name)
        account = accounts.Account(name, entry.pw_uid, entry.pw_gid, Path(entry.pw_dir))
        if quota is not None:
            homes.ensure_home(account, quota)
        restore_tree(folder, entries, f"homes/{name}", account.home, reporter.advance, ids)
    accounts.ensure_folder(fleet.paths.shared_root)
    restore_tree(folder, entries, f"shared/{hub}", fleet.paths.shared_root / hub, reporter.advance, ids)
