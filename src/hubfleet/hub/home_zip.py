"""The process that writes one user's home as a zip to its standard output (started by the hub's export handler,
`hubfleet.hub.home_export`).

It becomes the user (their uid and gid, no other groups) before it looks at a single file: the kernel decides what
it may read, exactly as for the user. It never follows a symbolic link (links are stored as links, their targets
as text) and never leaves the home (`hubfleet.system.trees`).

Protocol: first one JSON line on standard output, after counting the home without reading any file:
``{"files": N, "bytes": B}`` when the home fits the bounds — the archive follows — or ``{"status": 413,
"message": …}`` when it does not (nothing follows). Exit status 0 when the archive is complete; anything else (a
file that grew past the bound while read, a disk error) ends the archive where it was, and the handler breaks the
download off, so that a partial archive is never taken for a whole one.

    python -m hubfleet.hub.home_zip HOME --name NAME [--uid UID --gid GID] --max-bytes B --max-entries N
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from dataclasses import dataclass, field

from hubfleet.common.zipstream import ZipLimitError, ZipStream, member_name
from hubfleet.spec.units import human_size
from hubfleet.system.trees import TreeEntry, walk

SKIPPED_NOTE = "NOT-INCLUDED.txt"
"""Written beside the home's folder in the archive when something could not be included."""


@dataclass
class Count:
    """What the home holds: files and their bytes, all entries (files, folders, links)."""

    files: int = 0
    bytes: int = 0
    entries: int = 0
    skipped: list[str] = field(default_factory=list)

    def skip(self, path: str, error: OSError | str) -> None:
        reason = error if isinstance(error, str) else (error.strerror or str(error))
        self.skipped.append(f"{path}: {reason}")


def count(home: str) -> Count:
    """Walk the home without reading files."""
    found = Count()
    for entry in walk(home, found.skip):
        if entry.kind == "other":
            continue
        found.entries += 1
        if entry.kind == "file":
            found.files += 1
            found.bytes += entry.stat.st_size
    return found


def _add(archive: ZipStream, name: str, entry: TreeEntry, skipped: Count) -> None:
    path = member_name(name, entry.path)
    mtime, mode = entry.stat.st_mtime, entry.stat.st_mode
    if entry.kind == "folder":
        archive.add_folder(path, mtime=mtime, mode=mode)
    elif entry.kind == "link":
        archive.add_symlink(path, entry.readlink(), mtime=mtime)
    elif entry.kind == "file":
        try:
            source = entry.open()
        except OSError as exc:
            skipped.skip(entry.path, exc)
            return
        with source:
            archive.add_file(path, source, size=entry.stat.st_size, mtime=mtime, mode=mode)
    else:
        skipped.skip(entry.path, "not a file, folder or link (a socket, a pipe or a device)")


def write_zip(home: str, name: str, out: ZipStream) -> Count:
    """Write the home into `out`, under the folder `name`; what could not be included is listed in
    `SKIPPED_NOTE`."""
    skipped = Count()
    out.add_folder(name, mode=os.stat(home, follow_symlinks=False).st_mode)
    for entry in walk(home, skipped.skip):
        _add(out, name, entry, skipped)
    if skipped.skipped:
        note = "These were in your home but are not in this archive:\n\n" + "\n".join(skipped.skipped) + "\n"
        out.add_bytes(SKIPPED_NOTE, note.encode("utf-8", "replace"))
    return skipped


def become(uid: int, gid: int) -> None:
    """Drop root for good: the user's uid and gid, no supplementary groups."""
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    if os.getuid() != uid or os.geteuid() != uid:
        raise PermissionError("could not become the user")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hubfleet.hub.home_zip")
    parser.add_argument("home")
    parser.add_argument("--name", required=True, help="the folder the archive puts the home's files in")
    parser.add_argument("--uid", type=int)
    parser.add_argument("--gid", type=int)
    parser.add_argument("--max-bytes", type=int, required=True)
    parser.add_argument("--max-entries", type=int, required=True)
    args = parser.parse_args(argv)
    os.nice(10)  # the hub and users' servers first
    if args.uid is not None:
        become(args.uid, args.gid if args.gid is not None else args.uid)
    out = sys.stdout.buffer
    found = count(args.home)
    if found.bytes > args.max_bytes or found.entries + 2 > args.max_entries:
        message = (
            f"Your home holds {human_size(found.bytes)} in {found.files} files ({found.entries} files, folders and "
            f"links): one download may hold at most {human_size(args.max_bytes)} and {args.max_entries} entries. "
            "Delete or compress what you no longer need (in a terminal: du -sh ~/* | sort -h), or ask the hub's "
            "operators for an archive of your home."
        )
        out.write(json.dumps({"status": 413, "message": message}).encode() + b"\n")
        return 0
    out.write(json.dumps({"files": found.files, "bytes": found.bytes}).encode() + b"\n")
    out.flush()
    archive = ZipStream(out, max_bytes=args.max_bytes, max_entries=args.max_entries)
    try:
        write_zip(args.home, args.name, archive)
        archive.close()
    except (OSError, ZipLimitError, RuntimeError):
        archive.abandon()
        traceback.print_exc()
        return 1
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
