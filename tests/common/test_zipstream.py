"""Zip archives written front to back (hubfleet.common.zipstream): valid when streamed into a pipe, bounded, and
stopped when the reader goes away."""

from __future__ import annotations

import asyncio
import io
import os
import stat
import zipfile
from concurrent.futures import ThreadPoolExecutor

import pytest

from hubfleet.common.zipstream import CHUNK, ZipLimitError, ZipStream, member_name, stream_zip


class Unseekable(io.RawIOBase):
    """A pipe-like output: no tell, no seek."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.data += data
        return len(data)


def test_an_archive_written_into_a_pipe_is_a_valid_zip() -> None:
    out = Unseekable()
    archive = ZipStream(out, max_bytes=10**7, max_entries=10)  # type: ignore[arg-type]
    archive.add_folder("alice", mode=0o700)
    archive.add_bytes("alice/a.txt", b"hello", mtime=0)  # before 1980: kept as 1980
    archive.add_file("alice/big.bin", io.BytesIO(b"x" * (3 * CHUNK + 5)), size=3 * CHUNK + 5, mtime=None, mode=0o600)
    archive.add_symlink("alice/link", "/etc/shadow")
    archive.close()
    opened = zipfile.ZipFile(io.BytesIO(bytes(out.data)))
    assert opened.testzip() is None
    assert opened.read("alice/a.txt") == b"hello" and len(opened.read("alice/big.bin")) == 3 * CHUNK + 5
    link = opened.getinfo("alice/link")
    assert stat.S_ISLNK(link.external_attr >> 16) and opened.read("alice/link") == b"/etc/shadow"
    assert opened.getinfo("alice/").is_dir()


def test_content_beyond_the_bound_is_refused() -> None:
    archive = ZipStream(Unseekable(), max_bytes=100, max_entries=3)  # type: ignore[arg-type]
    archive.add_bytes("a", b"x" * 60)
    with pytest.raises(ZipLimitError):
        archive.add_file("b", io.BytesIO(b"y" * 60), size=10, mtime=None, mode=0o644)  # grew since it was counted
    with pytest.raises(ZipLimitError):
        for name in "cdef":
            archive.add_bytes(name, b"")


@pytest.mark.parametrize(("parts", "name"), [(("c", "../x", "a/b"), "c/_/x/a/b"), (("/abs", "./y"), "abs/y")])
def test_member_names_stay_inside_the_archive(parts: tuple[str, ...], name: str) -> None:
    assert member_name(*parts) == name


def test_stream_zip_hands_chunks_over_and_stops_the_writer_when_the_reader_leaves() -> None:
    written: list[int] = []

    def build(archive: ZipStream) -> None:
        for index in range(100):
            archive.add_bytes(f"f{index}", os.urandom(64 * 1024))  # incompressible: 6.4 MiB in all
            written.append(index)

    async def read(stop_after: int | None) -> bytes:
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(1) as pool:
            received = bytearray()
            chunks = stream_zip(build, max_bytes=10**9, max_entries=1000, run=lambda f: loop.run_in_executor(pool, f))
            async for chunk in chunks:
                received += chunk
                if stop_after is not None and len(received) >= stop_after:
                    await chunks.aclose()
                    break
            return bytes(received)

    whole = asyncio.run(read(None))
    assert len(zipfile.ZipFile(io.BytesIO(whole)).namelist()) == 100
    written.clear()
    asyncio.run(read(CHUNK))
    assert len(written) < 100  # the writer stopped soon after the reader left


def test_an_error_of_the_writer_reaches_the_reader() -> None:
    def build(archive: ZipStream) -> None:
        archive.add_bytes("a", b"x" * 200)

    async def read() -> None:
        loop = asyncio.get_running_loop()
        async for _ in stream_zip(build, max_bytes=100, max_entries=10, run=lambda f: loop.run_in_executor(None, f)):
            pass

    with pytest.raises(ZipLimitError):
        asyncio.run(read())
