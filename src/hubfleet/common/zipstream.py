"""Zip archives written front to back into a stream (a pipe, an HTTP response), bounded in size.

Nothing is held in memory but one chunk and the archive's directory (a few hundred bytes per entry), nothing is
written to disk: Python's `zipfile` writes each entry's sizes after its data (data descriptors) when the output
cannot seek. `ZipStream` counts the content it is given and refuses to go beyond `max_bytes` or `max_entries`
(:class:`ZipLimitError`), so a caller that checked the sizes beforehand is still bounded when files grow meanwhile.

`ChunkPipe` carries the bytes of an archive written in a worker thread to an asyncio task (a tornado handler), a
few chunks at a time: the writer waits while the reader is behind, and stops when the reader went away.

Used by a user's export of their home (hub side) and by a course's export (the exchange, `hubfleet assignment
export`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import threading
import time
import zipfile
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import quote

if TYPE_CHECKING:
    from tornado.web import RequestHandler

CHUNK = 256 * 1024
"""Bytes read from a source, and handed to the reader of a `ChunkPipe`, at a time."""

ZIP64_FROM = 1024**3
"""Entries at least this large get ZIP64 headers from the start (a file may grow while it is read)."""


class ZipLimitError(Exception):
    """The archive would hold more than it may; the message says how much."""


def member_name(*parts: str) -> str:
    """A path inside an archive from `parts`, each made one safe component: no '/', no '..', nothing empty."""
    safe = []
    for part in parts:
        for piece in part.split("/"):
            if piece in ("", "."):
                continue
            cleaned = piece.replace("\\", "_").replace("\0", "_")
            safe.append("_" if cleaned == ".." else cleaned)
    if not safe:
        raise ValueError("an archive member needs a name")
    return "/".join(safe)


def _date_time(mtime: float | None) -> tuple[int, int, int, int, int, int]:
    """A zip timestamp (local time, 1980…2107) for `mtime` (None: now)."""
    fields = time.localtime(time.time() if mtime is None else mtime)[:6]
    if fields[0] < 1980:
        return (1980, 1, 1, 0, 0, 0)
    if fields[0] > 2107:
        return (2107, 12, 31, 23, 59, 58)
    return fields  # type: ignore[return-value]


def _encodable(name: str) -> str:
    """`name` with what cannot be UTF-8 (file names that are not: surrogate escapes) replaced."""
    return os.fsencode(name).decode("utf-8", "replace")


class _Gate:
    """Forwards writes to `out` until shut (an archive given up on writes nothing more, its directory included)."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.open = True

    def write(self, data: bytes) -> int:
        return self.out.write(data) if self.open else len(data)

    def flush(self) -> None:
        if self.open:
            self.out.flush()


class ZipStream:
    """A zip archive written into `out` entry by entry, front to back; `close()` writes its directory, `abandon()`
    stops writing (the output then ends mid-archive: a reader sees a damaged download, never a short one)."""

    def __init__(self, out: BinaryIO, *, max_bytes: int, max_entries: int, compresslevel: int = 1) -> None:
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.content_bytes = 0
        """Bytes of content added so far (before compression)."""
        self.entries = 0
        self._out = _Gate(out)
        self._zip = zipfile.ZipFile(
            self._out,  # type: ignore[arg-type]
            "w",
            compression=zipfile.ZIP_DEFLATED,
            compresslevel=compresslevel,
        )

    def _info(self, name: str, mtime: float | None, mode: int) -> zipfile.ZipInfo:
        if self.entries >= self.max_entries:
            raise ZipLimitError(f"more than {self.max_entries} files and folders")
        self.entries += 1
        info = zipfile.ZipInfo(_encodable(name), date_time=_date_time(mtime))
        info.external_attr = (mode & 0xFFFF) << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        return info

    def _count(self, size: int) -> None:
        if self.content_bytes + size > self.max_bytes:
            raise ZipLimitError(f"more than {self.max_bytes} bytes")
        self.content_bytes += size

    def add_bytes(self, name: str, data: bytes, *, mtime: float | None = None, mode: int = 0o644) -> None:
        """A file with `data`."""
        info = self._info(name, mtime, stat.S_IFREG | (mode & 0o7777))
        self._count(len(data))
        self._zip.writestr(info, data)

    def add_file(self, name: str, source: BinaryIO, *, size: int, mtime: float | None, mode: int) -> None:
        """A file read from `source` until its end, in chunks (`size`: what it held when looked at)."""
        info = self._info(name, mtime, stat.S_IFREG | (mode & 0o7777))
        info.file_size = size
        with self._zip.open(info, "w", force_zip64=size >= ZIP64_FROM) as entry:
            while chunk := source.read(CHUNK):
                self._count(len(chunk))
                entry.write(chunk)

    def add_folder(self, name: str, *, mtime: float | None = None, mode: int = 0o755) -> None:
        """An (empty) folder: keeps folders that hold nothing."""
        info = self._info(name.rstrip("/") + "/", mtime, stat.S_IFDIR | (mode & 0o7777))
        info.external_attr |= 0x10  # MS-DOS directory flag
        info.compress_type = zipfile.ZIP_STORED
        self._zip.writestr(info, b"")

    def add_symlink(self, name: str, target: str, *, mtime: float | None = None) -> None:
        """A symbolic link (its target is stored as text; nothing is read through it)."""
        info = self._info(name, mtime, stat.S_IFLNK | 0o777)
        info.compress_type = zipfile.ZIP_STORED
        self._zip.writestr(info, _encodable(target).encode())

    def close(self) -> None:
        self._zip.close()

    def abandon(self) -> None:
        """Write nothing more."""
        self._out.open = False
        self._zip.close()


class PipeClosed(Exception):
    """The reader of a `ChunkPipe` went away: stop writing."""


class ChunkPipe:
    """A file-like `write()` end for a worker thread, and an async iterator of chunks for an asyncio task.

    At most `depth` chunks of `CHUNK` bytes wait between the two: the writer blocks while the reader is behind. A
    reader that stops (`cancel()`) makes the writer's next write raise `PipeClosed`.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, depth: int = 4) -> None:
        self._loop = loop
        self._ready: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue()
        self._room = threading.Semaphore(depth)
        self._buffer = bytearray()
        self._cancelled = False
        self._depth = depth

    # ---- the writer's end (a worker thread)

    def _send(self, item: bytes | BaseException | None) -> None:
        if item is not None and not isinstance(item, BaseException):
            self._room.acquire()
        if self._cancelled:
            raise PipeClosed
        self._loop.call_soon_threadsafe(self._ready.put_nowait, item)

    def write(self, data: bytes) -> int:
        self._buffer += data
        while len(self._buffer) >= CHUNK:
            self._send(bytes(self._buffer[:CHUNK]))
            del self._buffer[:CHUNK]
        return len(data)

    def flush(self) -> None:
        return None

    def finish(self, error: BaseException | None = None) -> None:
        """The end of the archive (or `error`, which the reader then raises); nothing when the reader went away."""
        try:
            if error is None and self._buffer:
                self._send(bytes(self._buffer))
                self._buffer.clear()
            self._send(error)
        except PipeClosed:
            return

    # ---- the reader's end (an asyncio task)

    def cancel(self) -> None:
        """The reader stops: a waiting writer wakes up and gets `PipeClosed`."""
        self._cancelled = True
        for _ in range(self._depth + 1):
            self._room.release()

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            item = await self._ready.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            self._room.release()
            yield item


async def stream_zip(
    build: Callable[[ZipStream], None],
    *,
    max_bytes: int,
    max_entries: int,
    run: Callable[[Callable[[], None]], asyncio.Future],
) -> AsyncIterator[bytes]:
    """The bytes of the archive `build` writes (in a thread started by `run`), chunk by chunk.

    Errors of `build` (a `ZipLimitError`, a database error) are raised by the iteration, after the chunks before
    them; leaving the iteration early stops `build` at its next write.
    """
    pipe = ChunkPipe(asyncio.get_running_loop())

    def produce() -> None:
        archive = ZipStream(pipe, max_bytes=max_bytes, max_entries=max_entries)  # type: ignore[arg-type]
        try:
            build(archive)
            archive.close()
        except BaseException as exc:  # handed to the reader, which raises it (it went away: PipeClosed)
            archive.abandon()
            if not isinstance(exc, PipeClosed):
                pipe.finish(exc)
            return
        pipe.finish()

    done = run(produce)
    try:
        async for chunk in pipe.chunks():
            yield chunk
    finally:
        pipe.cancel()
        await done


def attachment(filename: str) -> str:
    """A Content-Disposition header for a download named `filename` (any characters: RFC 6266 and 5987)."""
    plain = "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "_" for c in filename)
    return f"attachment; filename=\"{plain}\"; filename*=UTF-8''{quote(filename, safe='')}"


async def send_zip(handler: RequestHandler, filename: str, chunks: AsyncIterator[bytes], log: logging.Logger) -> None:
    """Answer `handler`'s request with a zip download of `chunks`, sent as they come.

    An error before the first chunk is raised (the handler answers it as usual); after it, the connection is
    broken off without the final chunk, so that the browser reports a failed download instead of keeping a short
    file. A browser that went away ends the iteration (and so the writing).
    """
    from tornado.iostream import StreamClosedError  # only the servers need tornado

    handler.set_header("Content-Type", "application/zip")
    handler.set_header("Content-Disposition", attachment(filename))
    handler.set_header("Cache-Control", "no-store")
    handler.set_header("X-Content-Type-Options", "nosniff")
    sent = False
    try:
        async for chunk in chunks:
            handler.write(chunk)
            await handler.flush()
            sent = True
    except StreamClosedError:
        log.info("download %s: the browser went away", filename)
        return
    except Exception:
        if not sent:
            raise
        log.exception("download %s broke off", filename)
        if handler.request.connection is not None:
            handler.request.connection.close()  # type: ignore[attr-defined]
        return
    handler.finish()


__all__ = [
    "CHUNK",
    "ChunkPipe",
    "PipeClosed",
    "ZipLimitError",
    "ZipStream",
    "attachment",
    "member_name",
    "send_zip",
    "stream_zip",
]
