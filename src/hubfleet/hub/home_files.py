"""The process that puts an assignment's files into a new folder of one user's home (started by the hub's
assignment landing, `hubfleet.hub.authenticators.lti`): what `hubfleet-assignment fetch` does in the user's
server, done for them when they open an assignment's link from the LMS.

It becomes the user (their uid and gid, no other groups) before it touches anything: the kernel decides what it may
write, exactly as for the user (their home quota included). It never follows a symbolic link, and never writes into
a folder that exists already: the files go into a hidden folder first, which is renamed into place at the end, so
the student's work is never overwritten and a fetch that failed half-way leaves no half-fetched folder.

Protocol: the files as JSON on standard input, `{"files": {"relative/path": "<base64>"}}`; one JSON line on standard
output: `{"created": true, "files": N}`, `{"created": false}` (the folder exists: nothing written), or
`{"status": 507, "message": …}` (the home is full).

    python -m hubfleet.hub.home_files HOME FOLDER [--uid UID --gid GID] < files.json
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import errno
import json
import os
import shutil
import sys
from posixpath import normpath

from hubfleet.hub.home_zip import become

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _parts(path: str) -> list[str]:
    """The names of a relative path that stays inside its folder (ValueError otherwise)."""
    normal = normpath(path)
    parts = normal.split("/")
    if not path or normal.startswith("/") or ".." in parts or normal == "." or "\0" in path:
        raise ValueError(f"{path!r} leaves its folder")
    return parts


def _open_folder(parent_fd: int, name: str, create: bool) -> int:
    """The folder `name` in `parent_fd` (made, mode 0755, if `create` and missing); never through a link."""
    if create:
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, 0o755, dir_fd=parent_fd)
    return os.open(name, DIR_FLAGS, dir_fd=parent_fd)


def _write(root_fd: int, path: str, data: bytes) -> None:
    *folders, name = _parts(path)
    fds = [root_fd]
    try:
        for folder in folders:
            fds.append(_open_folder(fds[-1], folder, create=True))
        fd = os.open(name, FILE_FLAGS, 0o644, dir_fd=fds[-1])
        with os.fdopen(fd, "wb") as out:
            out.write(data)
    finally:
        for fd in fds[1:]:
            os.close(fd)


def put_files(home: str, folder: str, files: dict[str, bytes]) -> dict:
    """Write `files` into `home`/`folder` unless that exists (see the module docstring); the answer to print."""
    *parents, name = _parts(folder)
    fds = [os.open(home, DIR_FLAGS)]
    try:
        for parent in parents:
            fds.append(_open_folder(fds[-1], parent, create=True))
        parent_fd = fds[-1]
        try:
            os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
            return {"created": False}
        except FileNotFoundError:
            pass
        staging = f".{name}.fetching-{os.getpid()}"
        os.mkdir(staging, 0o755, dir_fd=parent_fd)
        try:
            staging_fd = os.open(staging, DIR_FLAGS, dir_fd=parent_fd)
            try:
                for path, data in sorted(files.items()):
                    _write(staging_fd, path, data)
            finally:
                os.close(staging_fd)
            os.rename(staging, name, src_dir_fd=parent_fd, dst_dir_fd=parent_fd)
        except OSError as exc:
            _remove(parent_fd, staging)
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                return {"created": False}
            raise
        return {"created": True, "files": len(files)}
    finally:
        for fd in fds:
            os.close(fd)


def _remove(parent_fd: int, name: str) -> None:
    """Remove the staging folder (ours: made by this process, below a folder opened without following links)."""
    with contextlib.suppress(OSError):
        shutil.rmtree(name, dir_fd=parent_fd)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hubfleet.hub.home_files")
    parser.add_argument("home")
    parser.add_argument("folder", help="the new folder, relative to the home (e.g. ds101/hw1)")
    parser.add_argument("--uid", type=int)
    parser.add_argument("--gid", type=int)
    args = parser.parse_args(argv)
    if args.uid is not None:
        become(args.uid, args.gid if args.gid is not None else args.uid)
    document = json.load(sys.stdin)
    files = {path: base64.b64decode(text) for path, text in document["files"].items()}
    try:
        answer = put_files(args.home, args.folder, files)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        answer = {
            "status": 507,
            "message": "Your home folder is full: delete files you no longer need, then open the link again.",
        }
    print(json.dumps(answer), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
