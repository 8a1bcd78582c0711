"""The grading forkserver ("zygote"): a script run as root by the single-user environment's Python.

It is started by :mod:`hubfleet.edu.assignments.sandbox` with one end of a Unix socket pair as its argument, and
imports IPython (and common libraries) once. For each notebook to run, the grader sends a job (account, working
directory, cgroup, limits) together with a fresh socket; the zygote forks a single-use child, reports its pid, and
reports its wait status when it ends. The child enters the sandbox — its cgroup, new network / mount / IPC
namespaces (no network at all; private /tmp, /var/tmp, /dev/shm; folders to hide covered by empty read-only
mounts), resource limits, then the unprivileged account — and runs the cells the grader sends over its socket one
at a time in IPython's ``InteractiveShell`` (the cell semantics, tracebacks and error types of an IPython kernel),
sending back each cell's outputs as nbformat output dicts.

The zygote itself never sees cell sources or outputs: a child can only find its own submission in its memory.
Standard library and IPython only: this file must not import hubfleet (it runs in another environment).
Messages are frames of a 4-byte big-endian length and UTF-8 JSON.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import resource
import signal
import socket
import struct
import sys
import threading
import time

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REC = 0x4000
MS_PRIVATE = 0x40000
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
MAX_FRAME = 64 * 1024 * 1024
SETUP_FAILED = 70

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _prctl(option: int, value: int) -> None:
    _check(_libc.prctl(option, ctypes.c_ulong(value), 0, 0, 0), f"prctl({option})")


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    _check(
        _libc.mount(
            source.encode(),
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        ),
        f"mount {target}",
    )


def send(sock: socket.socket, message: dict, fds: list[int] | None = None) -> None:
    """One frame (and file descriptors to pass along); the grader uses this function too."""
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


def recv(sock: socket.socket, with_fds: bool = False) -> tuple[dict, list[int]]:
    fds: list[int] = []
    if with_fds:
        head, fds, _flags, _addr = socket.recv_fds(sock, 4, 4)
        if not head:
            raise EOFError("the other side closed the socket")
        head += _recv_exact(sock, 4 - len(head))
    else:
        head = _recv_exact(sock, 4)
    (size,) = struct.unpack(">I", head)
    if size > MAX_FRAME:
        raise ValueError(f"frame of {size} bytes is too large")
    return json.loads(_recv_exact(sock, size)), fds


# --------------------------------------------------------------------------------------------- the shell


class CellTimeoutError(BaseException):
    """Raised in a cell that ran out of time (a BaseException, so `except Exception` does not swallow it)."""


class Outputs:
    """The current cell's outputs, as nbformat v4 output dicts, with a cap on their total size."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.items: list[dict] = []
        self.size = 0
        self.truncated = False

    def add(self, output: dict, size: int) -> None:
        if self.truncated:
            return
        if self.size + size > self.limit:
            self.truncated = True
            self.items.append(
                {"output_type": "stream", "name": "stdout", "text": f"\n[output truncated at {self.limit} bytes]\n"}
            )
            return
        self.size += size
        self.items.append(output)

    def stream(self, name: str, text: str) -> None:
        last = self.items[-1] if self.items else None
        if last is not None and last.get("output_type") == "stream" and last.get("name") == name:
            if self.truncated or self.size + len(text) > self.limit:
                self.add({}, len(text))
                return
            last["text"] += text
            self.size += len(text)
        else:
            self.add({"output_type": "stream", "name": name, "text": text}, len(text))


class Stream:
    """sys.stdout / sys.stderr of a cell: text goes into the cell's outputs."""

    encoding = "utf-8"
    errors = "replace"

    def __init__(self, name: str, outputs: Outputs) -> None:
        self.name = name
        self.outputs = outputs

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        if text:
            self.outputs.stream(self.name, text)
        return len(text)

    def writelines(self, lines: list[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return 1 if self.name == "stdout" else 2

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False


def make_shell(outputs: Outputs):
    """An InteractiveShell that reports outputs like an IPython kernel (no prompts, no history file)."""
    from IPython.core.displayhook import DisplayHook
    from IPython.core.displaypub import DisplayPublisher
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets import Type
    from traitlets.config import Config

    def size_of(data: dict) -> int:
        return sum(len(v) if isinstance(v, str) else len(json.dumps(v, default=repr)) for v in data.values())

    class KernelLikeDisplayHook(DisplayHook):
        def start_displayhook(self) -> None:
            self.pending = None

        def write_output_prompt(self) -> None:
            pass

        def write_format_data(self, format_dict: dict, md_dict: dict | None = None) -> None:
            self.pending = {
                "output_type": "execute_result",
                "data": format_dict,
                "metadata": md_dict or {},
                "execution_count": self.prompt_count,
            }

        def finish_displayhook(self) -> None:
            sys.stdout.flush()
            if getattr(self, "pending", None) is not None:
                outputs.add(self.pending, size_of(self.pending["data"]))
            self.pending = None

    class KernelLikeDisplayPublisher(DisplayPublisher):
        def publish(self, data, metadata=None, source=None, *, transient=None, update=False, **kwargs) -> None:
            output = {"output_type": "display_data", "data": data, "metadata": metadata or {}}
            outputs.add(output, size_of(data))

        def clear_output(self, wait: bool = False) -> None:
            outputs.items.clear()
            outputs.size = 0

    class KernelLikeShell(InteractiveShell):
        displayhook_class = Type(KernelLikeDisplayHook)
        display_pub_class = Type(KernelLikeDisplayPublisher)

        def _showtraceback(self, etype, evalue, stb) -> None:
            text = "\n".join(stb)
            outputs.add(
                {"output_type": "error", "ename": etype.__name__, "evalue": str(evalue), "traceback": stb},
                len(text),
            )

        def enable_gui(self, gui=None) -> None:
            pass

    config = Config()
    config.HistoryManager.enabled = False
    config.HistoryManager.hist_file = ":memory:"
    shell = KernelLikeShell.instance(config=config)
    for colors in ("nocolor", "NoColor"):
        try:
            shell.colors = colors
            break
        except Exception:
            continue
    return shell


def run_cells(sock: socket.socket, shell, outputs: Outputs) -> None:
    """Run the cells the grader sends, one at a time, and send back each one's outputs and status."""
    state = {"in_cell": False}

    def on_alarm(signum: int, frame: object) -> None:
        if state["in_cell"]:
            raise CellTimeoutError("the cell exceeded its time limit")

    signal.signal(signal.SIGALRM, on_alarm)
    stdout, stderr = Stream("stdout", outputs), Stream("stderr", outputs)
    me = os.getpid()
    while True:
        request, _ = recv(sock)
        if "run" not in request:
            return
        outputs.items, outputs.size, outputs.truncated = [], 0, False
        sys.stdout, sys.stderr = stdout, stderr
        state["in_cell"] = True
        signal.setitimer(signal.ITIMER_REAL, float(request["timeout"]))
        try:
            result = shell.run_cell(request["run"], store_history=True)
            if os.getpid() != me:  # a process the cell forked came back here: it must not talk to the grader
                os._exit(0)
        except CellTimeoutError as exc:  # raised outside the user's code (e.g. while IPython compiles)
            result = None
            outputs.add({"output_type": "error", "ename": "CellTimeoutError", "evalue": str(exc), "traceback": []}, 0)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            state["in_cell"] = False
            sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
        error = None if result is None else (result.error_in_exec or result.error_before_exec)
        if result is None or isinstance(error, CellTimeoutError):
            status = "timeout"
        elif error is not None:
            status = "error"
        else:
            status = "ok"
        send(
            sock,
            {
                "outputs": outputs.items,
                "execution_count": shell.execution_count - 1,
                "status": status,
                "ename": type(error).__name__ if error is not None else None,
            },
        )


# --------------------------------------------------------------------------------------------- the child


def enter_sandbox(job: dict) -> None:
    """Join the cgroup, leave the network, get private temporary folders, hide folders, drop privileges."""
    os.setsid()
    for path in job["cgroup_procs"]:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)
    _check(_libc.unshare(CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWIPC), "unshare")
    _mount("none", "/", None, MS_REC | MS_PRIVATE, None)
    for path in job["hide"]:  # before the private folders, which may hold some of them
        _mount("tmpfs", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,mode=0555")
    for path in job["private_tmp"]:
        _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, f"size={job['tmp_bytes']},mode=1777")
    os.chdir(job["workdir"])
    for limit, value in (
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_FSIZE, job["file_bytes"]),
        (resource.RLIMIT_NPROC, job["pids"]),
        (resource.RLIMIT_NOFILE, 1024),
    ):
        resource.setrlimit(limit, (value, value))
    os.setgroups([])
    os.setgid(job["gid"])
    os.setuid(job["uid"])
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    os.environ.clear()
    os.environ.update(job["env"])
    sys.path.insert(0, "")


def child(job: dict, sock: socket.socket, shell, outputs: Outputs) -> None:
    """The single-use child: never returns (exits 0 when the grader says the notebook is done)."""
    code = 0
    try:
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.closerange(3, sock.fileno())
        os.closerange(sock.fileno() + 1, 65536)
        try:
            enter_sandbox(job)
        except BaseException as exc:
            send(sock, {"setup_error": f"{type(exc).__name__}: {exc}"})
            os._exit(SETUP_FAILED)
        send(sock, {"ready": True, "pid": os.getpid()})
        run_cells(sock, shell, outputs)
    except BaseException:
        code = 1
    os._exit(code)


# --------------------------------------------------------------------------------------------- the zygote


def reap(pid: int | None) -> int | None:
    """Reap exited children (orphans come to us: we are a subreaper); block for ``pid`` and return its status."""
    while True:
        try:
            found, status = os.waitpid(-1, 0 if pid is not None else os.WNOHANG)
        except ChildProcessError:
            return None
        if found == 0:
            return None
        if found == pid:
            return status


def warm_up(shell, outputs: Outputs) -> None:
    """Run a few cells once (IPython loads a lot lazily on the first cell and the first traceback), then reset."""
    sys.stdout, sys.stderr = Stream("stdout", outputs), Stream("stderr", outputs)
    for code in ("pass", "1", "def _warm_up():\n    raise ValueError('warm-up')\n_warm_up()", "print()"):
        shell.run_cell(code, store_history=True)
    sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    outputs.items.clear()
    shell.reset(new_session=True)
    sys.last_type = sys.last_value = sys.last_traceback = None
    if hasattr(sys, "last_exc"):
        sys.last_exc = None


def preload(modules: list[str]) -> list[str]:
    loaded = []
    for name in modules:
        try:
            __import__(name)
            loaded.append(name)
        except Exception:
            continue
    return loaded


def main() -> None:
    control = socket.socket(fileno=int(sys.argv[1]))
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != int(sys.argv[2]):
        sys.exit("the grader is gone")
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    started = time.perf_counter()
    import IPython

    loaded = preload(json.loads(sys.argv[3]))
    outputs = Outputs(0)
    shell = make_shell(outputs)
    warm_up(shell, outputs)
    gc.freeze()  # the children's garbage collector leaves the zygote's objects (and their shared pages) alone
    send(
        control,
        {
            "ready": True,
            "python": sys.version.split()[0],
            "ipython": IPython.__version__,
            "preloaded": loaded,
            "threads": threading.active_count(),
            "seconds": round(time.perf_counter() - started, 3),
        },
    )
    while True:
        reap(None)
        try:
            job, fds = recv(control, with_fds=True)
        except EOFError:
            return
        if len(fds) != 1:
            for fd in fds:
                os.close(fd)
            send(control, {"error": "a job needs exactly one socket"})
            continue
        sock = socket.socket(fileno=fds[0])
        outputs.limit = int(job["output_bytes"])
        pid = os.fork()
        if pid == 0:
            control.close()
            child(job, sock, shell, outputs)
        sock.close()
        send(control, {"pid": pid})
        send(control, {"exit": reap(pid)})


if __name__ == "__main__":
    main()
