"""A fork server: a warm interpreter that has imported the slow parts once and forks a ready process per request.

Starting a Python service (a JupyterHub, say) spends seconds importing before it does anything. A fork server does
those imports once, then, for each request on its Unix socket, forks a child that runs `python -m MODULE ARGS…`
with the request's working directory, environment and log file, in a session of its own. The children share the
imported pages with the server (copy-on-write), so each costs less memory, and a start skips the imports.

Protocol (one connection per child): the client sends one JSON line `{"module", "args", "cwd", "env", "log"}` (and,
for a server started as a user, `"user": {"uid", "gid", "groups"}`, `"cgroup_procs"` and `"umask"`); the server
answers `{"pid": N}` with a pidfd of the child attached (SCM_RIGHTS) — so the client holds a handle on that
very process, never a bare number that could be reused — and, when the child exits, `{"exit": CODE}`; then it
closes the connection. The server reaps its children; when its standard input closes (its owner is gone), it
stops taking requests and exits, leaving running children be.

`serve()` uses the standard library only, so that any Python can run this file as a script (`python forkserver.py
SOCKET --preload MODULE …`, e.g. a users' environment that has no hubfleet in it). `ForkServer` is the asyncio client.

A child started as a user is made that user before anything of the request runs: it leaves the server's session,
closes every file the server holds, joins its cgroup, takes the user's groups, gid and uid, and sets no-new-privileges
(it can never gain privileges again, e.g. through a setuid program); it cannot reach the server (its socket is the
server owner's, mode 0600, in a folder only that owner enters) nor any other user's process.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import json
import logging
import os
import runpy
import selectors
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("hubfleet.forkserver")

MAX_REQUEST = 1 << 20
"""Largest request line (environment included)."""

STARTING_WAIT = 15.0
"""Seconds a start waits for a fork server that is starting before it starts the plain way."""


# --- the server ------------------------------------------------------------------------------------------------------


PR_SET_NO_NEW_PRIVS = 38


def serve(socket_path: str, preload: Callable[[], None] = lambda: None) -> None:
    """Preload, listen on `socket_path` (mode 0600), say `ready` on stdout, and fork a child per request until
    standard input closes. After `ready`, standard output goes where standard error goes (the children that keep the
    server's output write there)."""
    preload()
    gc.collect()
    gc.freeze()  # imported objects stay in the shared pages: the children's reference counts do not copy them
    with contextlib.suppress(FileNotFoundError):
        os.unlink(socket_path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        listener.bind(socket_path)
    finally:
        os.umask(old_umask)
    listener.listen(64)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, "accept")
    selector.register(wake_r, selectors.EVENT_READ, "child")
    selector.register(sys.stdin, selectors.EVENT_READ, "owner")
    children: dict[int, socket.socket | None] = {}
    print("ready", flush=True)
    os.dup2(2, 1)
    while True:
        for key, _ in selector.select():
            if key.data == "accept":
                connection, _ = listener.accept()
                _start_child(connection, listener, children)
            elif key.data == "child":
                os.read(wake_r, 4096)
                _reap(children)
            elif not sys.stdin.readline():  # the owner closed our stdin: no more requests
                listener.close()
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(socket_path)
                return


def _read_request(connection: socket.socket) -> dict:
    connection.settimeout(10)
    data = b""
    while not data.endswith(b"\n"):
        chunk = connection.recv(65536)
        if not chunk or len(data) > MAX_REQUEST:
            raise ValueError("incomplete request")
        data += chunk
    request = json.loads(data)
    if not isinstance(request, dict) or not isinstance(request.get("module"), str):
        raise ValueError("a request names a module")
    return request


def _start_child(connection: socket.socket, listener: socket.socket, children: dict[int, socket.socket | None]) -> None:
    try:
        request = _read_request(connection)
    except (OSError, ValueError) as exc:
        with contextlib.suppress(OSError):
            connection.sendall(json.dumps({"error": str(exc)}).encode() + b"\n")
        connection.close()
        return
    pid = os.fork()
    if pid == 0:  # the child: becomes the requested program, never returns
        listener.close()
        connection.close()
        for other in children.values():
            if other is not None:
                other.close()
        _become(request)
    pidfd = os.pidfd_open(pid)
    try:
        socket.send_fds(connection, [json.dumps({"pid": pid}).encode() + b"\n"], [pidfd])
        children[pid] = connection
    except OSError:
        connection.close()  # the client left: the child runs on, and is reaped when it exits
        children[pid] = None
    finally:
        os.close(pidfd)


def _become_user(user: dict, cgroup_procs: list[str]) -> None:
    """Join the cgroups (still as root), then take the user's groups, gid and uid for good."""
    for path in cgroup_procs:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, b"0")  # 0: the writing process itself (cgroup v1 and v2)
        finally:
            os.close(fd)
    os.setgroups([int(g) for g in user.get("groups", [])])
    os.setgid(int(user["gid"]))
    os.setuid(int(user["uid"]))
    if os.getuid() == 0 or os.geteuid() == 0:
        raise PermissionError("the child still runs as root")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")


def _reap(children: dict[int, socket.socket | None]) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        connection = children.pop(pid, None)
        if connection is not None:
            with contextlib.suppress(OSError):
                connection.sendall(json.dumps({"exit": os.waitstatus_to_exitcode(status)}).encode() + b"\n")
            connection.close()


def _become(request: dict) -> None:
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        for number in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
            signal.signal(number, signal.SIG_DFL)
        os.setsid()
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))  # nothing of the server's reaches the child
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        if request.get("log"):
            output = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            os.dup2(output, 1)
            os.dup2(output, 2)
            os.close(output)
        if "umask" in request:
            os.umask(int(request["umask"]))
        if request.get("user"):
            _become_user(request["user"], request.get("cgroup_procs") or [])
        sys.stdin = open(0, closefd=False)  # noqa: SIM115 - the child's own standard streams
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
        os.chdir(request.get("cwd") or "/")
        os.environ.clear()
        os.environ.update(request.get("env") or {})
        gc.unfreeze()
        sys.argv = [request["module"], *request.get("args", [])]
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


# --- the client ------------------------------------------------------------------------------------------------------


@dataclass
class ForkedProcess:
    """A child of the fork server, held by its pidfd: signals reach this very process or nothing."""

    pid: int
    pidfd: int
    _exit: asyncio.StreamReader
    _writer: asyncio.StreamWriter
    returncode: int | None = None

    def alive(self) -> bool:
        """Whether the process still runs (its pidfd answers signal 0)."""
        if self.returncode is not None:
            return False
        try:
            signal.pidfd_send_signal(self.pidfd, 0)
        except ProcessLookupError:
            return False
        return True

    def send_signal(self, number: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(self.pidfd, number)

    def signal_group(self, number: int) -> None:
        """Signal the process's whole session (it leads one), if the process itself is still there."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, number)

    async def wait(self) -> int:
        """Its exit code (negative: killed by that signal)."""
        if self.returncode is None:
            line = await self._exit.readline()
            try:
                self.returncode = int(json.loads(line)["exit"])
            except (ValueError, KeyError, TypeError):
                self.returncode = await self._wait_pidfd()
            self._close()
        return self.returncode

    async def _wait_pidfd(self) -> int:
        """The fork server is gone: wait on the pidfd (readable once the process exits); the code is unknown."""
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        loop.add_reader(self.pidfd, lambda: done.done() or done.set_result(None))
        try:
            await done
        finally:
            loop.remove_reader(self.pidfd)
        return -1

    def _close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError):
            os.close(self.pidfd)


class ForkServer:
    """Runs a fork server (`python -m <server_module> <socket>`) and starts processes from it; restarts it when it
    died; `spawn` answers None while none is ready (the caller starts the process the plain way)."""

    def __init__(self, argv: Sequence[str], socket_path: Path, log_path: Path | None):
        self.argv = [*argv, str(socket_path)]
        """The server's command line, to which the socket's path is added."""
        self.socket_path = socket_path
        self.log_path = log_path
        self._process: asyncio.subprocess.Process | None = None
        self._starting: asyncio.Task | None = None
        self._closed = False
        self.forks = 0

    @property
    def ready(self) -> bool:
        return self._process is not None and self._process.returncode is None and self.socket_path.exists()

    def start(self) -> None:
        """Start the server in the background (no-op when it runs or is starting)."""
        if self._closed or self.ready or (self._starting is not None and not self._starting.done()):
            return
        self._starting = asyncio.create_task(self._start(), name="fork server")

    @classmethod
    def of_module(cls, module: str, socket_path: Path, log_path: Path | None) -> ForkServer:
        """A fork server that is `python -m module SOCKET` with this interpreter."""
        return cls([sys.executable, "-m", module], socket_path, log_path)

    async def _start(self) -> None:
        with contextlib.ExitStack() as stack:
            errors = stack.enter_context(open(self.log_path, "ab")) if self.log_path is not None else None
            process = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=errors,
                start_new_session=True,
            )
        assert process.stdout is not None
        line = await process.stdout.readline()
        if line.strip() != b"ready" or self._closed:
            await _discard(process)
            if not self._closed:
                log.warning("the fork server did not start; see %s", self.log_path)
            return
        self._process = process

    async def wait_ready(self, timeout: float) -> bool:
        """Wait (at most `timeout`) for the server to be ready."""
        self.start()
        if self._starting is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._starting), timeout)
        return self.ready

    async def spawn(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: dict[str, str],
        log_path: Path | None,
        user: tuple[int, int, list[int]] | None = None,
        cgroup_procs: Sequence[str] = (),
        umask: int | None = None,
    ) -> ForkedProcess | None:
        """Start `argv` (which must be `python -m MODULE ARGS…`) as a fork; None when no server is ready (one that
        is starting is waited for: it is ready sooner than a plain start would be)."""
        if len(argv) < 3 or argv[1] != "-m" or not await self.wait_ready(STARTING_WAIT):
            return None
        request: dict[str, object] = {"module": argv[2], "args": list(argv[3:]), "cwd": str(cwd), "env": env}
        if log_path is not None:
            request["log"] = str(log_path)
        if user is not None:
            uid, gid, groups = user
            request |= {"user": {"uid": uid, "gid": gid, "groups": groups}, "cgroup_procs": list(cgroup_procs)}
        if umask is not None:
            request["umask"] = umask
        try:
            sock, answer, fds = await asyncio.to_thread(self._ask, request)
        except OSError as exc:
            log.warning("the fork server did not answer (%s): starting the plain way", exc)
            self.start()
            return None
        if "pid" not in answer or not fds:
            for fd in fds:
                os.close(fd)
            sock.close()
            log.warning("the fork server refused a start: %s", answer.get("error", answer))
            return None
        reader, writer = await asyncio.open_unix_connection(sock=sock)
        self.forks += 1
        return ForkedProcess(pid=int(answer["pid"]), pidfd=fds[0], _exit=reader, _writer=writer)

    def _ask(self, request: dict) -> tuple[socket.socket, dict, list[int]]:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(10)
            sock.connect(str(self.socket_path))
            sock.sendall(json.dumps(request).encode() + b"\n")
            message, fds, _, _ = socket.recv_fds(sock, 4096, 1)
            sock.settimeout(None)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock, json.loads(message or b"{}"), fds

    async def renew(self, timeout: float) -> bool:
        """Start a new server in place of the running one (which stops; its children run on), so that what is
        forked from now on runs the code installed now; whether the new one is ready within `timeout`."""
        if self._starting is not None:
            self._starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._starting
            self._starting = None
        if self._process is not None:
            await _discard(self._process)
            self._process = None
        return await self.wait_ready(timeout)

    async def close(self) -> None:
        """Stop the server (its children run on) and stop restarting it."""
        self._closed = True
        if self._starting is not None:
            self._starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._starting
        if self._process is not None:
            await _discard(self._process)
            self._process = None


async def _discard(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        if process.stdin is not None:
            process.stdin.close()  # the server exits when its stdin closes
        try:
            await asyncio.wait_for(process.wait(), 5)
        except TimeoutError:
            process.kill()
            await process.wait()


def main(argv: Sequence[str] | None = None) -> None:
    """`python forkserver.py SOCKET [--preload MODULE …] [--absent MODULE …]`: serve with those modules imported
    (and those marked absent: see `hubfleet.system.startup`)."""
    import argparse

    parser = argparse.ArgumentParser(description="a fork server")
    parser.add_argument("socket")
    parser.add_argument("--preload", action="append", default=[], help="a module to import before forking")
    parser.add_argument("--absent", action="append", default=[], help="a module to make absent (ImportError)")
    args = parser.parse_args(argv)

    def preload() -> None:
        import importlib

        for name in args.absent:
            sys.modules.setdefault(name, None)  # type: ignore[assignment]
        for name in args.preload:
            try:
                importlib.import_module(name)
            except ImportError as exc:  # an optional part this environment lacks: forks import what they need
                print(f"fork server: not preloaded: {name} ({exc})", file=sys.stderr, flush=True)

    serve(args.socket, preload)


if __name__ == "__main__":
    main()
