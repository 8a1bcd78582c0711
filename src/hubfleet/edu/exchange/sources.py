"""Where a release's source folder comes from when an instructor works in the browser: an upload (a zip of the
folder, or its files), or a folder inside the course's shared folder (`~/courses/<course>` of its staff).

The exchange service runs as root and the course folder is written by the course's staff: a folder there is read
without ever following a symbolic link (each step is opened relative to its parent with ``O_NOFOLLOW``), only
regular files with a single link are read (a hard link could name a file the instructor cannot read), and reading
stops at the upload limit. Hidden files and folders (``.ipynb_checkpoints``, ``.git``, the grading spec
``.hubfleet-grading.json``) and ``__pycache__`` are left out, as the assignment format ignores them.
"""

from __future__ import annotations

import io
import os
import posixpath
import stat
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from hubfleet.edu.exchange.store import MAX_FILES, ExchangeError, TooLarge, clean_path

ASSIGNMENT_FILE = "assignment.yaml"
NBGRADER_CONFIG = "nbgrader_config.py"
MAX_DEPTH = 4
"""How deep below the course folder assignment folders are looked for."""

_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def _skipped(name: str) -> bool:
    return name.startswith(".") or name == "__pycache__" or name == "__MACOSX"


def _without_common_folder(files: dict[str, bytes]) -> dict[str, bytes]:
    """`hw1/a.ipynb, hw1/assignment.yaml` → `a.ipynb, assignment.yaml` (a zip of the folder, not of its content)."""
    tops = {path.split("/", 1)[0] for path in files}
    if len(tops) == 1 and all("/" in path for path in files):
        return {path.split("/", 1)[1]: data for path, data in files.items()}
    return files


class _Budget:
    """Counts files and bytes read against the upload limits."""

    def __init__(self, max_bytes: int) -> None:
        self.left = max_bytes
        self.max_bytes = max_bytes
        self.files = 0

    def take(self, path: str, size: int) -> None:
        self.files += 1
        if self.files > MAX_FILES:
            raise TooLarge(f"more than {MAX_FILES} files")
        if size > self.left:
            raise TooLarge(f"the files are larger than the limit of {self.max_bytes} bytes (at {path})")
        self.left -= size


def files_from_upload(uploads: Iterable[tuple[str, bytes]], *, max_bytes: int) -> dict[str, bytes]:
    """A source folder from a browser upload: one ``.zip`` of the folder, or the folder's files (their names may
    carry relative paths, as a folder upload sends them). Paths are checked (nothing leaves the folder)."""
    uploads = [(name.replace("\\", "/"), data) for name, data in uploads if name]
    if not uploads:
        raise ExchangeError("choose the assignment's files, or a .zip of its folder")
    if len(uploads) == 1 and uploads[0][0].lower().endswith(".zip"):
        return _without_common_folder(_unzip(uploads[0][1], max_bytes))
    budget = _Budget(max_bytes)
    files: dict[str, bytes] = {}
    for name, data in uploads:
        path = clean_path(name)
        if any(_skipped(part) for part in path.split("/")):
            continue
        budget.take(path, len(data))
        files[path] = data
    return _without_common_folder(files)


def _unzip(data: bytes, max_bytes: int) -> dict[str, bytes]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise ExchangeError("the upload is not a readable .zip file") from None
    budget = _Budget(max_bytes)
    files: dict[str, bytes] = {}
    with archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            path = clean_path(info.filename)
            if any(_skipped(part) for part in path.split("/")):
                continue
            budget.take(path, info.file_size)
            try:
                with archive.open(info) as member:
                    content = member.read(info.file_size + 1)  # never more than it declared (counted)
            except (zipfile.BadZipFile, NotImplementedError, RuntimeError, OSError) as exc:
                raise ExchangeError(f"{path} in the .zip cannot be read: {exc}") from None
            if len(content) != info.file_size:
                raise ExchangeError(f"{path} in the .zip is not the size the archive says")
            files[path] = content
    return files


def assignment_folders(course_folder: Path) -> list[str]:
    """The folders below `course_folder` a release can start from (relative paths, sorted): those with an
    ``assignment.yaml``, and ``<course>/source/<name>`` of an nbgrader course folder (with ``nbgrader_config.py``).
    Symbolic links are not followed; a missing course folder has none."""
    found: list[str] = []
    root = str(course_folder)
    if not course_folder.is_dir() or course_folder.is_symlink():
        return found
    for current, folders, names in os.walk(root, followlinks=False):
        relative = os.path.relpath(current, root)
        depth = 0 if relative == "." else relative.count(os.sep) + 1
        folders[:] = sorted(f for f in folders if not _skipped(f)) if depth < MAX_DEPTH else []
        if relative == ".":
            continue
        parent = os.path.dirname(current)
        in_nbgrader_source = os.path.basename(parent) == "source" and os.path.isfile(
            os.path.join(os.path.dirname(parent), NBGRADER_CONFIG)
        )
        if ASSIGNMENT_FILE in names or in_nbgrader_source:
            found.append(relative.replace(os.sep, "/"))
    return sorted(found)


def read_course_folder(course_folder: Path, relative: str, *, max_bytes: int) -> dict[str, bytes]:
    """The files of the folder `relative` below `course_folder`, read safely (see the module's docstring), as
    paths relative to `course_folder`. For ``<course>/source/<name>`` of an nbgrader course, the course's
    ``nbgrader_config.py`` comes along (it decides how the student version is made)."""
    relative = clean_path(relative)
    budget = _Budget(max_bytes)
    files: dict[str, bytes] = {}
    parts = relative.split("/")
    try:
        root = os.open(course_folder, _DIRECTORY)
    except OSError as exc:
        raise ExchangeError(f"the course folder cannot be read: {exc.strerror}") from None
    try:
        folder = _open_folder(root, parts, relative)
        try:
            for path, content in _read_tree(folder, relative, budget):
                files[path] = content
        finally:
            os.close(folder)
        if len(parts) >= 3 and parts[-2] == "source":
            config = posixpath.join(*parts[:-2], NBGRADER_CONFIG)
            course = _open_folder(root, parts[:-2], relative)
            try:
                content = _read_file(course, NBGRADER_CONFIG, config, budget)
                if content is not None:
                    files[config] = content
            finally:
                os.close(course)
    finally:
        os.close(root)
    if not files:
        raise ExchangeError(f"{relative} holds no files")
    return files


def _open_folder(root: int, parts: list[str], shown: str) -> int:
    """The folder `parts` below the open folder `root`, each step without following a link."""
    current = os.dup(root)
    for part in parts:
        try:
            following = os.open(part, _DIRECTORY, dir_fd=current)
        except OSError:
            os.close(current)
            raise ExchangeError(f"{shown} is not a folder inside the course folder") from None
        os.close(current)
        current = following
    return current


def _read_tree(folder: int, prefix: str, budget: _Budget) -> Iterator[tuple[str, bytes]]:
    with os.scandir(folder) as listing:
        entries = sorted(listing, key=lambda entry: entry.name)
    for entry in entries:
        if _skipped(entry.name) or entry.is_symlink():
            continue
        path = f"{prefix}/{entry.name}"
        if entry.is_dir(follow_symlinks=False):
            try:
                inner = os.open(entry.name, _DIRECTORY, dir_fd=folder)
            except OSError:
                continue  # replaced by something else meanwhile
            try:
                yield from _read_tree(inner, path, budget)
            finally:
                os.close(inner)
        elif entry.is_file(follow_symlinks=False):
            content = _read_file(folder, entry.name, path, budget)
            if content is not None:
                yield path, content


def _read_file(folder: int, name: str, path: str, budget: _Budget) -> bytes | None:
    """A regular file with one link (None: not there, or not a regular file); ExchangeError for a hard link."""
    try:
        descriptor = os.open(name, _FILE, dir_fd=folder)
    except OSError:
        return None
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            return None
        if info.st_nlink > 1:
            raise ExchangeError(f"{path} is a hard link: copy the file instead")
        budget.take(path, info.st_size)
        chunks = []
        left = info.st_size + 1
        while left > 0:
            chunk = os.read(descriptor, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        content = b"".join(chunks)
        if len(content) > info.st_size:
            raise ExchangeError(f"{path} changed while it was read: try again")
        return content
    finally:
        os.close(descriptor)
