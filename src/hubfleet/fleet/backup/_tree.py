"""Snapshots of folder trees: copy trees into a snapshot folder with a manifest of checksums, hard-linking files
that did not change since the previous snapshot; verify a snapshot; put trees back.

Files in a snapshot belong to root (0600, folders 0700): owners, modes, times, symlinks and POSIX ACLs are kept in
the manifest and given back on restore. A file is "unchanged" when size, mtime, ctime and inode match the previous
snapshot's entry for the same path; it is then a hard link to the previous snapshot's copy, so a snapshot costs only
what changed. Snapshot files are never written after they are made, so linking never changes an older snapshot.
SQLite databases are copied with SQLite's online backup API (a consistent copy while they are written).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import sqlite3
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

CHUNK = 1024 * 1024
ACL_XATTRS = ("system.posix_acl_access", "system.posix_acl_default")
MANIFEST = "MANIFEST.json"
MANIFEST_SUM = "MANIFEST.sha256"
SQLITE_MAGIC = b"SQLite format 3\x00"

Progress = Callable[[int], None]
"""Called with the bytes just handled."""


class SnapshotError(RuntimeError):
    """A snapshot is damaged, or a tree could not be copied; the message says which file."""


@dataclass
class Entry:
    """One path of a snapshot: a file (`f`), folder (`d`) or symlink (`l`)."""

    path: str
    kind: str
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    size: int = 0
    sha256: str = ""
    target: str = ""
    acls: dict[str, str] = field(default_factory=dict)
    stamp: list[int] = field(default_factory=list)
    """inode, ctime_ns of the source when copied (to recognize it unchanged next time)."""

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v or k in ("mode", "uid", "gid", "mtime_ns")}

    @classmethod
    def from_json(cls, data: dict) -> Entry:
        return cls(**data)


def sha256_file(path: Path, progress: Progress | None = None) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        while chunk := source.read(CHUNK):
            digest.update(chunk)
            if progress:
                progress(len(chunk))
    return digest.hexdigest()


def _acls(path: str) -> dict[str, str]:
    found = {}
    for name in ACL_XATTRS:
        with contextlib.suppress(OSError):
            found[name] = base64.b64encode(os.getxattr(path, name, follow_symlinks=False)).decode()
    return found


def _is_sqlite(path: str) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(16) == SQLITE_MAGIC
    except OSError:
        return False


def walk(root: Path, skip: Callable[[str], bool] = lambda _: False) -> Iterator[tuple[str, os.stat_result]]:
    """(path relative to `root`, lstat) of `root` and everything below it, never following a symlink; sockets,
    pipes and devices are left out, and so is every relative path for which `skip` is true (with its content)."""
    pending = [""]
    while pending:
        relative = pending.pop()
        full = os.path.join(root, relative) if relative else str(root)
        try:
            info = os.lstat(full)
        except FileNotFoundError:
            continue
        if not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode) or stat.S_ISLNK(info.st_mode)):
            continue
        yield relative, info
        if stat.S_ISDIR(info.st_mode):
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                for name in sorted(os.listdir(full), reverse=True):
                    child = os.path.join(relative, name) if relative else name
                    if not skip(child):
                        pending.append(child)


class SnapshotWriter:
    """Writes one snapshot folder: trees under names (`state`, `homes/<account>`, …), then the manifest."""

    def __init__(self, folder: Path, previous: Path | None, progress: Progress):
        self.folder = folder
        self.previous = previous
        self.progress = progress
        self.entries: list[Entry] = []
        self.linked = 0
        self.copied = 0
        self._before: dict[str, Entry] = {}
        if previous is not None:
            self._before = {e.path: e for e in read_manifest(previous)[1] if e.kind == "f"}
        folder.mkdir(mode=0o700, parents=True)

    def add_tree(self, name: str, root: Path, skip: Callable[[str], bool] = lambda _: False) -> None:
        """Copy the tree at `root` as `name` (nothing when `root` does not exist)."""
        for relative, info in walk(root, skip):
            path = f"{name}/{relative}" if relative else name
            full = os.path.join(root, relative) if relative else str(root)
            entry = Entry(path, "d", stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid, info.st_mtime_ns)
            target = self.folder / path
            if stat.S_ISDIR(info.st_mode):
                target.mkdir(mode=0o700, parents=True, exist_ok=True)
                entry.acls = _acls(full)
            elif stat.S_ISLNK(info.st_mode):
                entry.kind, entry.target = "l", os.readlink(full)
            else:
                entry.kind, entry.size, entry.acls = "f", info.st_size, _acls(full)
                entry.stamp = [info.st_ino, info.st_ctime_ns]
                target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                entry.sha256 = self._file(path, full, info, target)
            self.entries.append(entry)

    def _file(self, path: str, full: str, info: os.stat_result, target: Path) -> str:
        before = self._before.get(path)
        if (
            before is not None
            and self.previous is not None
            and (before.size, before.mtime_ns, before.stamp) == (info.st_size, info.st_mtime_ns, entry_stamp(info))
        ):
            with contextlib.suppress(OSError):
                os.link(self.previous / path, target)
                self.linked += 1
                self.progress(info.st_size)
                return before.sha256
        self.copied += 1
        if _is_sqlite(full):
            return self._sqlite(full, target)
        digest = hashlib.sha256()
        try:
            source = os.open(full, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise SnapshotError(f"cannot read {full}: {exc.strerror}") from exc
        with os.fdopen(source, "rb") as reader, open(_create(target), "wb") as writer:
            while chunk := reader.read(CHUNK):
                digest.update(chunk)
                writer.write(chunk)
                self.progress(len(chunk))
        return digest.hexdigest()

    def _sqlite(self, full: str, target: Path) -> str:
        """A consistent copy of a live SQLite database (its -wal and -shm files are not needed)."""
        _create(target)
        source = sqlite3.connect(f"file:{full}?mode=ro", uri=True, timeout=30)
        try:
            copy = sqlite3.connect(target)
            try:
                source.backup(copy)
            finally:
                copy.close()
        finally:
            source.close()
        return sha256_file(target, self.progress)

    def finish(self, meta: dict) -> None:
        """Write the manifest and its checksum, and sync everything to disk."""
        manifest = self.folder / MANIFEST
        text = json.dumps({**meta, "entries": [e.to_json() for e in self.entries]}, separators=(",", ":"))
        manifest.write_text(text, encoding="utf-8")
        (self.folder / MANIFEST_SUM).write_text(hashlib.sha256(text.encode()).hexdigest() + "\n")
        os.sync()


def entry_stamp(info: os.stat_result) -> list[int]:
    return [info.st_ino, info.st_ctime_ns]


def _create(path: Path) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    os.close(fd)
    return path


def read_manifest(folder: Path) -> tuple[dict, list[Entry]]:
    """The snapshot's metadata and entries, after checking the manifest's own checksum."""
    try:
        text = (folder / MANIFEST).read_text(encoding="utf-8")
        expected = (folder / MANIFEST_SUM).read_text().strip()
    except OSError as exc:
        raise SnapshotError(f"{folder} is not a complete snapshot: {exc.strerror}: {exc.filename}") from None
    if hashlib.sha256(text.encode()).hexdigest() != expected:
        raise SnapshotError(f"the manifest of {folder} does not match its checksum: the snapshot is damaged")
    data = json.loads(text)
    return data, [Entry.from_json(e) for e in data.pop("entries")]


def verify(folder: Path, progress: Progress) -> tuple[dict, list[Entry]]:
    """Check every file of a snapshot against its manifest; SnapshotError names the first that differs."""
    meta, entries = read_manifest(folder)
    for entry in entries:
        if entry.kind == "f":
            path = folder / entry.path
            try:
                actual = sha256_file(path, progress)
            except OSError as exc:
                raise SnapshotError(f"{path}: {exc.strerror}") from None
            if actual != entry.sha256:
                raise SnapshotError(f"{path} does not match its checksum: the snapshot is damaged")
    return meta, entries


def restore_tree(
    folder: Path,
    entries: list[Entry],
    name: str,
    root: Path,
    progress: Progress,
    ids: Callable[[int, int], tuple[int, int]] = lambda uid, gid: (uid, gid),
) -> int:
    """Put tree `name` of a snapshot back at `root` (files there with the same names are replaced); `ids` maps
    the recorded owner to the owner on this machine. Returns the number of entries written."""
    prefix = name + "/"
    mine = [e for e in entries if e.path == name or e.path.startswith(prefix)]
    folders = []
    for entry in mine:
        target = root / entry.path[len(prefix) :] if entry.path != name else root
        uid, gid = ids(entry.uid, entry.gid)
        if entry.kind == "d":
            target.mkdir(mode=0o700, parents=True, exist_ok=True)
            folders.append((entry, target, uid, gid))
            continue
        if target.is_symlink() or target.exists():
            if target.is_dir() and not target.is_symlink():
                raise SnapshotError(f"{target} is a folder where the snapshot has a file")
            target.unlink()
        if entry.kind == "l":
            os.symlink(entry.target, target)
            os.chown(target, uid, gid, follow_symlinks=False)
            continue
        tmp = target.with_name(f".{target.name}.restoring")
        with open(folder / entry.path, "rb") as reader, open(tmp, "wb") as writer:
            while chunk := reader.read(CHUNK):
                writer.write(chunk)
                progress(len(chunk))
        _give_back(tmp, entry, uid, gid)
        os.replace(tmp, target)
    for entry, target, uid, gid in reversed(folders):  # deepest first, so that their times stay
        _give_back(target, entry, uid, gid)
    return len(mine)


def _give_back(path: Path, entry: Entry, uid: int, gid: int) -> None:
    os.chown(path, uid, gid)
    os.chmod(path, entry.mode)
    for xattr, value in entry.acls.items():
        with contextlib.suppress(OSError):
            os.setxattr(path, xattr, base64.b64decode(value))
    os.utime(path, ns=(entry.mtime_ns, entry.mtime_ns))
