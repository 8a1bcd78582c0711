"""Frames between the grader, the forkserver and the sandboxed child: a 4-byte big-endian length and UTF-8 JSON,
optionally with file descriptors passed alongside (SCM_RIGHTS). Standard library only: both sides import it."""

from __future__ import annotations

import json
import socket
import struct

MAX_FRAME = 64 * 1024 * 1024


def send(sock: socket.socket, message: dict, fds: list[int] | None = None) -> None:
    """One frame (and file descriptors to pass along with its first bytes)."""
    data = json.dumps(message, default=repr).encode()
    frame = struct.pack(">I", len(data)) + data
    if fds:
        socket.send_fds(sock, [frame[:4]], fds)
        sock.sendall(frame[4:])
    else:
        sock.sendall(frame)


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = []
    while size:
        chunk = sock.recv(min(size, 1 << 20))
        if not chunk:
            raise EOFError("the other side closed the socket")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def recv(sock: socket.socket, with_fds: bool = False, max_fds: int = 8) -> tuple[dict, list[int]]:
    """One frame (blocking) and the file descriptors that came with it."""
    fds: list[int] = []
    if with_fds:
        head, fds, _flags, _addr = socket.recv_fds(sock, 4, max_fds)
        if not head:
            raise EOFError("the other side closed the socket")
        head += _recv_exact(sock, 4 - len(head))
    else:
        head = _recv_exact(sock, 4)
    (size,) = struct.unpack(">I", head)
    if size > MAX_FRAME:
        raise ValueError(f"frame of {size} bytes is too large")
    message = json.loads(_recv_exact(sock, size))
    if not isinstance(message, dict):
        raise ValueError("a frame must hold a JSON object")
    return message, fds
