"""Walking a folder tree without ever leaving it: symbolic links are reported as links and never followed, and
every file is opened relative to its folder's descriptor with O_NOFOLLOW, so a link swapped in while the walk runs
(a user racing the walk in their own home) is refused, not followed.

Run it as the tree's owner (see `hubfleet.hub.home_zip`): the kernel then decides what may be read, exactly as for
the owner.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, Literal

Kind = Literal["file", "folder", "link", "other"]

_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def _kind(mode: int) -> Kind:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "folder"
    if stat.S_ISLNK(mode):
        return "link"
    return "other"


@dataclass(frozen=True)
class TreeEntry:
    """One thing in the tree, as the walk found it (`lstat`: a link is a link)."""

    path: str
    """Relative to the tree's root, '/'-separated."""
    kind: Kind
    stat: os.stat_result
    name: str
    dir_fd: int
    """The descriptor of its folder: valid only until the walk moves on."""

    def open(self) -> BinaryIO:
        """The file for reading, if it is still the file the walk saw (OSError otherwise, e.g. a swapped-in link)."""
        fd = os.open(self.name, _OPEN_FLAGS, dir_fd=self.dir_fd)
        try:
            now = os.fstat(fd)
            if not stat.S_ISREG(now.st_mode) or (now.st_dev, now.st_ino) != (self.stat.st_dev, self.stat.st_ino):
                raise OSError(f"{self.path} changed while it was read")
            os.set_blocking(fd, True)
            return os.fdopen(fd, "rb", buffering=0)
        except BaseException:
            os.close(fd)
            raise

    def readlink(self) -> str:
        """A link's target, as text (never resolved)."""
        return os.readlink(self.name, dir_fd=self.dir_fd)


def walk(root: str | os.PathLike[str], on_error: Callable[[str, OSError], None]) -> Iterator[TreeEntry]:
    """Every file, folder, link and other thing below `root` (not `root` itself), folders before what they hold,
    names in order. A folder that cannot be read, or an entry that vanished, goes to `on_error` (relative path,
    error) and the walk goes on. `root` must be a folder, not a link to one (else OSError)."""
    top = os.fspath(root)
    if not stat.S_ISDIR(os.stat(top, follow_symlinks=False).st_mode):
        raise NotADirectoryError(f"{top} is not a folder")

    def failed(error: OSError) -> None:  # a folder that vanished or changed between our check and the walk's
        on_error(os.fsdecode(error.filename or "?"), error)

    for folder, dirnames, filenames, dir_fd in os.fwalk(top, onerror=failed, follow_symlinks=False):
        relative = os.path.relpath(folder, top)
        prefix = "" if relative == "." else relative.replace(os.sep, "/") + "/"
        readable_dirs = []
        for name in sorted(dirnames) + sorted(filenames):
            try:
                info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                if stat.S_ISDIR(info.st_mode):
                    os.close(os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd))
            except OSError as exc:
                on_error(prefix + name, exc)
                continue
            if stat.S_ISDIR(info.st_mode):
                readable_dirs.append(name)
            yield TreeEntry(path=prefix + name, kind=_kind(info.st_mode), stat=info, name=name, dir_fd=dir_fd)
        dirnames[:] = readable_dirs  # the walk goes into real folders only: never through a link


__all__ = ["Kind", "TreeEntry", "walk"]
