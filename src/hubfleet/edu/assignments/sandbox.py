"""Sandboxes that run one submission's notebook each: a pool of forkservers, one per grading worker.

A :class:`Sandbox` is one worker's slot: an unprivileged Unix account of its own (``hf-grade-N``, held with a lock
file so that two graders never share one) and a forkserver (:mod:`._child.server`) started as root with the
single-user environment's Python, which has already imported IPython and common libraries (numpy, ...). For each
notebook the slot

1. creates a cgroup with the memory, pids and CPU limits (:mod:`hubfleet.system.cgroups`);
2. asks the forkserver for a single-use child in a PID namespace of its own, which joins the cgroup and builds the
   sandbox (:mod:`._child.jail`): no network at all, a minimal root file system (``/usr`` and the Python
   environment read-only, an empty ``/tmp``, a ``/proc`` that shows its own processes only) in which the working
   folder — a copy of the submission's files only, owned by the slot's account — is the only host folder, then
   resource limits and the slot's account;
3. sends it the cells in order, each with its time limit (an alarm in the child; if the code ignores it, the whole
   cgroup is killed shortly after) within the notebook's time limit. A student or instructor cell is queued one
   ahead of the one running (so the child never waits for the grader to be scheduled); a test cell never is: the
   child first puts the clean state back (:mod:`._child.hygiene`), then gets the test cell and runs it in a way
   the submission cannot fake (:mod:`._child.shell`);
4. kills everything left in the cgroup and removes it.

Nothing a child does survives it: each child is forked from the clean forkserver, so a global or a patched module
of one submission is invisible to the next. A crash (segfault, ``os._exit``, the OOM killer) ends only that child:
the cell that was running reports an error, the cells after it are "not run". Needs root.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import os
import re
import secrets
import shutil
import signal
import socket
import stat
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from hubfleet.edu.assignments._child.protocol import send as _send
from hubfleet.system import accounts, cgroups

__all__ = [
    "DEFAULT_PYTHON",
    "DEFAULT_WORK_ROOT",
    "Cell",
    "CellKind",
    "CellRun",
    "NotebookRun",
    "Sandbox",
    "SandboxError",
    "SandboxLimits",
]

DEFAULT_PYTHON = Path("/opt/hubfleet/user-env/bin/python")
DEFAULT_WORK_ROOT = Path("/var/lib/hubfleet/grading")
DEFAULT_PRELOAD = ("numpy", "pandas", "scipy", "matplotlib.pyplot")
ACCOUNT_PREFIX = "hf-grade-"
MAX_ACCOUNTS = 256
LOCK_DIR = Path("/run/hubfleet-grading")
CGROUP_ROOT = "hubfleet/grading"
ZYGOTE = Path(__file__).with_name("_child") / "forkserver.py"
INSIDE = "/assignment"
"""Where a notebook's process sees its working folder (its home and current directory)."""
MAX_FRAME = 64 * 1024 * 1024
ZYGOTE_START_TIMEOUT = 120.0
REPLY_GRACE = 2.0  # how long after a cell's own time limit the child may take to report the timeout
CONTROL_TIMEOUT = 15.0
_INDEXES = itertools.count()
"""Sandboxes of one process are numbered (working folders and cgroups are named after the number)."""


class SandboxError(RuntimeError):
    """A sandbox could not be set up (not root, no user environment, the forkserver died, ...)."""


@dataclass(frozen=True)
class SandboxLimits:
    """What one notebook run may use. nbgrader's own default cell timeout is 30 s."""

    memory_bytes: int = 1024**3
    pids: int = 128
    cpu: float | None = 1.0
    cell_seconds: float = 30.0
    notebook_seconds: float = 300.0
    output_bytes: int = 2 * 1024**2
    """cap on one cell's recorded outputs"""
    file_bytes: int = 512 * 1024**2
    """largest file the code may write"""
    tmp_bytes: int = 256 * 1024**2
    """size of each private temporary folder"""

    def __post_init__(self) -> None:
        for name in ("memory_bytes", "pids", "output_bytes", "file_bytes", "tmp_bytes"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.cell_seconds <= 0 or self.notebook_seconds <= 0:
            raise ValueError("time limits must be positive")


CellState = Literal["ok", "error", "timeout", "not-run"]
CellKind = Literal["student", "instructor", "test"]
Cell = tuple[str, CellKind]
"""A code cell to run: its source, and whose it is (a test cell runs in a way the submission cannot fake)."""


@dataclass
class CellRun:
    """One code cell as it ran: its nbformat outputs and how it ended."""

    outputs: list[dict[str, Any]] = field(default_factory=list)
    execution_count: int | None = None
    state: CellState = "not-run"
    ename: str | None = None


@dataclass
class _Child:
    """A running sandboxed child: its socket, and (once it ended) its wait status and whether it ran out of memory."""

    sock: socket.socket
    ended_cleanly: bool = False
    status: int | None = None
    oom: bool = False


@dataclass
class NotebookRun:
    """A notebook's run: one :class:`CellRun` per source sent, and why the run ended early (``None`` if it did not)."""

    cells: list[CellRun]
    failure: str | None = None
    seconds: float = 0.0


# --------------------------------------------------------------------------------------------- frames


class _ProtocolError(Exception):
    """The other side closed the socket, sent garbage, or was too slow."""


def _recv_exact(sock: socket.socket, size: int, deadline: float) -> bytes:
    chunks = []
    while size:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(min(size, 1 << 20))
        except TimeoutError:
            raise
        except OSError as exc:
            raise _ProtocolError(f"connection lost: {exc}") from None
        if not chunk:
            raise _ProtocolError("connection closed")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _recv(sock: socket.socket, deadline: float) -> dict[str, Any]:
    """One frame; ``TimeoutError`` after ``deadline`` (monotonic), :class:`_ProtocolError` for anything broken."""
    (size,) = struct.unpack(">I", _recv_exact(sock, 4, deadline))
    if size > MAX_FRAME:
        raise _ProtocolError(f"a message of {size} bytes")
    try:
        message = json.loads(_recv_exact(sock, size, deadline))
    except (ValueError, UnicodeDecodeError) as exc:
        raise _ProtocolError(f"not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise _ProtocolError("not a JSON object")
    return message


# --------------------------------------------------------------------------------------------- accounts


def _acquire_account(home_root: Path) -> tuple[accounts.Account, int]:
    """The first pool account no other grader holds, created if needed, with its lock file's descriptor."""
    LOCK_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    for index in range(MAX_ACCOUNTS):
        name = f"{ACCOUNT_PREFIX}{index}"
        fd = os.open(LOCK_DIR / f"{name}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        try:
            account = accounts.ensure_user(name, home_root / name, comment="hubfleet grading sandbox")
            _kill_processes_of(account.uid)
        except BaseException:
            os.close(fd)
            raise
        return account, fd
    raise SandboxError(f"all {MAX_ACCOUNTS} grading accounts are in use")


def _kill_processes_of(uid: int) -> None:
    """SIGKILL every process running as ``uid`` (leftovers of a grader that was killed)."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if entry.stat().st_uid == uid:
                os.kill(int(entry.name), signal.SIGKILL)


def remove_stale_cgroups(driver: cgroups.CgroupDriver | None) -> None:
    """Remove the grading cgroups of graders that are no longer running."""
    if driver is None:
        return
    if isinstance(driver, cgroups.CgroupV1):
        top = Path(driver.mountpoints["memory"]) / CGROUP_ROOT
    elif isinstance(driver, cgroups.CgroupV2):
        top = Path(driver.mountpoint) / CGROUP_ROOT
    else:
        return
    if not top.is_dir():
        return
    for entry in top.iterdir():
        if entry.name.isdigit() and not Path(f"/proc/{entry.name}").exists():
            group = driver.open(f"{CGROUP_ROOT}/{entry.name}")
            if group is not None:
                with contextlib.suppress(cgroups.CgroupError, OSError):
                    group.remove()


def remove_own_cgroups(driver: cgroups.CgroupDriver | None) -> None:
    """Remove this grader's parent cgroup (each notebook's own cgroup is removed when its run ends)."""
    group = driver.open(f"{CGROUP_ROOT}/{os.getpid()}") if driver is not None else None
    if group is not None:
        with contextlib.suppress(cgroups.CgroupError, OSError):
            group.remove()


# --------------------------------------------------------------------------------------------- files


def _remove_stale_workdirs(work_root: Path) -> None:
    """Delete the working folders a grader that is no longer running left behind (it was killed mid-batch)."""
    for entry in work_root.iterdir():
        owner = re.match(r"w(\d+)-", entry.name)
        if owner and entry.is_dir() and not Path(f"/proc/{owner.group(1)}").exists():
            shutil.rmtree(entry, ignore_errors=True)


def _copy_tree(source: Path, target: Path, uid: int, gid: int) -> None:
    """Copy regular files, folders and symlinks (as links) from ``source``; everything ends up owned by uid:gid."""

    def skip_special(directory: str, names: list[str]) -> list[str]:
        skipped = []
        for name in names:
            mode = os.lstat(os.path.join(directory, name)).st_mode
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode)):
                skipped.append(name)
        return skipped

    shutil.copytree(source, target, symlinks=True, ignore=skip_special, dirs_exist_ok=True)
    for dirpath, dirnames, filenames in os.walk(target):
        os.lchown(dirpath, uid, gid)
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), uid, gid)


def _put_file(root: Path, relative: str, source: Path, uid: int, gid: int) -> None:
    """Copy ``source`` to ``root/relative``, replacing whatever is there (a symbolic link or a folder of the same
    name included: nothing is written outside ``root``)."""
    *folders, name = Path(relative).parts
    here = root
    for part in folders:
        here = here / part
        if here.is_symlink() or (here.exists() and not here.is_dir()):
            here.unlink()
        if not here.exists():
            here.mkdir(mode=0o755)
            os.chown(here, uid, gid)
    target = here / name
    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.is_dir():
        shutil.rmtree(target)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    with os.fdopen(fd, "wb") as out, open(source, "rb") as data:
        shutil.copyfileobj(data, out)
    os.chown(target, uid, gid)


def _describe_exit(status: int | None, oom: bool, memory_bytes: int) -> str:
    """What ended a notebook's process, from the wait status of its namespace's init."""
    if oom:
        return f"killed: out of memory (limit {memory_bytes // 2**20} MiB)"
    if status is None:
        return "the notebook's process ended (status unknown)"
    number = os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status) - 128
    if number > 0:  # the namespace's init ends with 128 + the signal that killed the notebook's process
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        return f"the notebook's process was killed by {name}"
    return f"the notebook's process exited with status {os.WEXITSTATUS(status)}"


# --------------------------------------------------------------------------------------------- the slot


class Sandbox:
    """One grading worker's slot: its account, its forkserver and its working folders. Use from one thread.

    The forkserver is killed when the thread that started the slot ends (Linux's parent-death signal follows the
    thread), so open, use and close a slot in the same thread — :func:`~.grader.grade_batch` does.
    """

    def __init__(
        self,
        *,
        limits: SandboxLimits,
        python: Path = DEFAULT_PYTHON,
        work_root: Path = DEFAULT_WORK_ROOT,
        preload: Sequence[str] = DEFAULT_PRELOAD,
        driver: cgroups.CgroupDriver | None = None,
    ) -> None:
        if os.geteuid() != 0:
            raise SandboxError("grading in sandboxes needs root (it switches to unprivileged accounts)")
        if not os.access(python, os.X_OK):
            raise SandboxError(f"{python}: no Python to run student code with (the single-user environment)")
        self.index = next(_INDEXES)
        self.limits = limits
        self.python = python
        self.work_root = work_root
        self.driver = driver
        self.preload = list(preload)
        self._seq = 0
        self._zygote: subprocess.Popen[bytes] | None = None
        self._control: socket.socket | None = None
        self._thread = threading.get_ident()
        self.info: dict[str, Any] = {}
        for directory in (work_root, work_root / "home", work_root / "roots"):
            directory.mkdir(parents=True, exist_ok=True)
            os.chown(directory, 0, 0)
            directory.chmod(0o711)
        self.account, self._lock_fd = _acquire_account(work_root / "home")
        self.root = work_root / "roots" / self.account.name
        self.root.mkdir(mode=0o700, exist_ok=True)
        _remove_stale_workdirs(work_root)
        try:
            self._start_zygote()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ forkserver

    def _base_env(self) -> dict[str, str]:
        return {
            "PATH": f"{self.python.parent}:/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "MPLBACKEND": "module://matplotlib_inline.backend_inline",
            "MPLCONFIGDIR": "/tmp/matplotlib",
            "OPENBLAS_NUM_THREADS": "1",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
        }

    def _start_zygote(self) -> None:
        ipython_dir = self.work_root / ".ipython"
        ipython_dir.mkdir(mode=0o700, exist_ok=True)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        log_path = self.work_root / f"zygote-{self.account.name}.log"
        log = os.fdopen(os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab")
        try:
            env = {**self._base_env(), "HOME": str(ipython_dir), "IPYTHONDIR": str(ipython_dir)}
            argv = [str(self.python), "-I", "-B", str(ZYGOTE), str(theirs.fileno()), str(os.getpid())]
            self._zygote = subprocess.Popen(
                [*argv, json.dumps(self.preload)],
                pass_fds=(theirs.fileno(),),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                cwd="/",
            )
        finally:
            theirs.close()
            log.close()
        self._control = ours
        try:
            self.info = _recv(ours, time.monotonic() + ZYGOTE_START_TIMEOUT)
        except (TimeoutError, _ProtocolError) as exc:
            self._stop_zygote()
            raise SandboxError(
                f"the grading forkserver did not start ({exc}); see {self.work_root}/zygote-*.log"
            ) from None

    def _stop_zygote(self) -> None:
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._zygote is not None:
            with contextlib.suppress(ProcessLookupError):
                self._zygote.kill()
            self._zygote.wait()
            self._zygote = None

    def close(self) -> None:
        """Stop the forkserver and release the account."""
        self._stop_zygote()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ working folders

    def new_workdir(self, files: Path | None, data: Sequence[tuple[str, Path]] = ()) -> Path:
        """A fresh working folder (0700, owned by the slot's account) holding a copy of ``files``' contents, with
        ``data`` (relative path, file) put over whatever the copy has at those paths."""
        self._seq += 1
        workdir = self.work_root / f"w{os.getpid()}-{self.index}-{self._seq}-{secrets.token_hex(8)}"
        workdir.mkdir(mode=0o700)
        if files is not None:
            _copy_tree(files, workdir, self.account.uid, self.account.gid)
        for relative, source in data:
            _put_file(workdir, relative, source, self.account.uid, self.account.gid)
        os.chown(workdir, self.account.uid, self.account.gid)
        workdir.chmod(0o700)
        return workdir

    def release_workdir(self, workdir: Path, keep_as: Path | None = None) -> None:
        """Take the folder away from the account: move it to ``keep_as`` (root-owned) or delete it."""
        if keep_as is None:
            shutil.rmtree(workdir, ignore_errors=True)
            return
        os.chown(workdir, 0, 0)
        workdir.chmod(0o700)
        for dirpath, dirnames, filenames in os.walk(workdir):
            for name in dirnames + filenames:
                os.lchown(os.path.join(dirpath, name), 0, 0)
        shutil.rmtree(keep_as, ignore_errors=True)
        keep_as.parent.mkdir(parents=True, exist_ok=True)
        os.replace(workdir, keep_as)

    # ------------------------------------------------------------------ running

    def _job(self, workdir: Path, expected_names: Sequence[str]) -> dict[str, Any]:
        limits = self.limits
        env = {
            **self._base_env(),
            "HOME": INSIDE,
            "USER": self.account.name,
            "LOGNAME": self.account.name,
            "TMPDIR": "/tmp",
        }
        return {
            "account": self.account.name,
            "uid": self.account.uid,
            "gid": self.account.gid,
            "workdir": str(workdir),
            "inside": INSIDE,
            "root": str(self.root),
            "tmp_bytes": limits.tmp_bytes,
            "file_bytes": limits.file_bytes,
            "pids": limits.pids,
            "output_bytes": limits.output_bytes,
            "env": env,
            "expected_names": sorted(expected_names),
        }

    def _new_cgroup(self) -> cgroups.Cgroup | None:
        if self.driver is None:
            return None
        relpath = f"{CGROUP_ROOT}/{os.getpid()}/s{self.index}-{self._seq}"
        group = self.driver.open(relpath)
        if group is not None:
            group.remove()
        limits = cgroups.Limits(memory_bytes=self.limits.memory_bytes, cpu=self.limits.cpu, pids_max=self.limits.pids)
        return self.driver.create(relpath, limits)

    @contextlib.contextmanager
    def _child(self, workdir: Path, expected_names: Sequence[str]) -> Iterator[_Child]:
        """A fresh sandboxed child working in ``workdir``, its cgroup, and its socket (after its hello); on the way
        out everything of it is killed and its cgroup removed (``child.status`` and ``child.oom`` say how it
        ended)."""
        if threading.get_ident() != self._thread:
            raise SandboxError("a Sandbox must be used by the thread that opened it")
        if self._zygote is None or self._zygote.poll() is not None:
            self._stop_zygote()
            self._start_zygote()
        group = self._new_cgroup()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        procs = [os.open(path, os.O_WRONLY | os.O_CLOEXEC) for path in (group.procs_files() if group else [])]
        try:
            assert self._control is not None
            _send(self._control, self._job(workdir, expected_names), [theirs.fileno(), *procs])
            theirs.close()
            for fd in procs:
                os.close(fd)
            procs = []
            reply = self._control_reply(CONTROL_TIMEOUT)
            pid = reply.get("pid")
            if not isinstance(pid, int):
                raise SandboxError(f"the forkserver refused the job: {reply.get('error', reply)}")
            child = _Child(ours)
            try:
                try:
                    hello = _recv(ours, time.monotonic() + CONTROL_TIMEOUT)
                except (TimeoutError, _ProtocolError) as exc:
                    raise SandboxError(f"the sandbox did not start: {exc}") from None
                if "setup_error" in hello:
                    raise SandboxError(f"the sandbox could not be set up: {hello['setup_error']}")
                yield child
            finally:
                child.status = self._finish(pid, group, wait_first=child.ended_cleanly)
            child.oom = group is not None and group.oom_kills() > 0
        finally:
            ours.close()
            theirs.close()
            for fd in procs:
                os.close(fd)
            if group is not None:
                with contextlib.suppress(cgroups.CgroupError, OSError):
                    group.remove()

    def run(self, workdir: Path, cells: Sequence[Cell], expected_names: Sequence[str] = ()) -> NotebookRun:
        """Run the code ``cells`` in order in a fresh sandboxed child working in ``workdir``.

        ``expected_names``: names the assignment's own notebook defines (classes a submission is meant to write,
        builtins it may shadow)."""
        started = time.monotonic()
        run = NotebookRun(cells=[CellRun() for _ in cells])
        with self._child(workdir, expected_names) as child:
            died = self._talk(child.sock, cells, run, started)
            # a child that said it is done, or whose process died, reports its status at once; a stuck one is killed
            child.ended_cleanly = died or run.failure is None
        if died:
            run.failure = _describe_exit(child.status, child.oom, self.limits.memory_bytes)
            for cell in run.cells:
                if cell.ename == "DeadKernelError":
                    cell.outputs.append(_error_output("DeadKernelError", run.failure))
        run.seconds = round(time.monotonic() - started, 3)
        return run

    @contextlib.contextmanager
    def session(self, workdir: Path) -> Iterator[Callable[[str], CellRun]]:
        """A sandboxed child that runs cells sent one at a time (``run(source)`` waits for each one's outputs);
        a cell that runs out of time or kills the child raises :class:`SandboxError`."""
        with self._child(workdir, ()) as child:

            def run(source: str) -> CellRun:
                cell = CellRun()
                try:
                    _send(child.sock, {"run": source, "kind": "student", "timeout": self.limits.cell_seconds})
                    reply = _recv(child.sock, time.monotonic() + self.limits.cell_seconds + REPLY_GRACE)
                except (TimeoutError, _ProtocolError, OSError) as exc:
                    raise SandboxError(f"the cell did not finish: {type(exc).__name__} {exc}") from None
                outputs = reply.get("outputs")
                cell.outputs = [o for o in outputs if isinstance(o, dict)] if isinstance(outputs, list) else []
                state = reply.get("status")
                cell.state = state if state in ("ok", "error", "timeout") else "error"
                ename = reply.get("ename")
                cell.ename = ename if isinstance(ename, str) else None
                return cell

            yield run
            with contextlib.suppress(OSError):
                _send(child.sock, {"end": True})
            child.ended_cleanly = True

    def _control_reply(self, timeout: float) -> dict[str, Any]:
        """The forkserver's next message; a silent or broken forkserver is stopped (restarted by the next run)."""
        assert self._control is not None
        try:
            return _recv(self._control, time.monotonic() + timeout)
        except (TimeoutError, _ProtocolError) as exc:
            self._stop_zygote()
            raise SandboxError(f"the grading forkserver stopped answering: {exc}") from None

    def _talk(self, sock: socket.socket, cells: Sequence[Cell], run: NotebookRun, started: float) -> bool:
        """Exchange cells with the child; sets ``run.failure`` when it stops early; True if the child died."""
        limits = self.limits
        notebook_deadline = started + limits.notebook_seconds
        sent = 0
        quiet = True  # nothing of the submission can run until the next cell (the child said so after each cell)

        def send_cell(index: int) -> None:
            nonlocal sent
            remaining = notebook_deadline - time.monotonic()
            if remaining > 0:
                source, kind = cells[index]
                message = {"run": source, "kind": kind, "timeout": min(limits.cell_seconds, remaining)}
                with contextlib.suppress(OSError):  # a dead child shows up in the next _recv
                    _send(sock, message)
            sent = index + 1

        for index, cell in enumerate(run.cells):
            remaining = notebook_deadline - time.monotonic()
            if remaining <= 0:
                run.failure = f"the notebook exceeded its time limit of {limits.notebook_seconds:g} s"
                return False
            timeout = min(limits.cell_seconds, remaining)
            what = "cell" if timeout == limits.cell_seconds else "notebook"
            try:
                if cells[index][1] == "test":  # never queued ahead; a child that was not quiet cleans up first
                    if not quiet:
                        with contextlib.suppress(OSError):
                            _send(sock, {"prepare": True})
                        ready = _recv(sock, time.monotonic() + timeout + REPLY_GRACE)
                        if not ready.get("ready"):
                            raise _ProtocolError(f"expected the child to be ready, got {sorted(ready)}")
                    send_cell(index)
                elif sent <= index:
                    send_cell(index)
                if sent == index + 1 and sent < len(cells) and cells[sent][1] != "test":
                    send_cell(sent)  # one queued ahead, so that the child goes on without waiting for us
                reply = _recv(sock, time.monotonic() + timeout + REPLY_GRACE)
            except TimeoutError:
                cell.state = "timeout"
                cell.outputs.append(_error_output("CellTimeoutError", f"the {what} exceeded its time limit"))
                run.failure = f"the {what} exceeded its time limit of {timeout:g} s; its process was killed"
                return False
            except _ProtocolError:
                cell.state, cell.ename = "error", "DeadKernelError"
                return True
            outputs = reply.get("outputs")
            cell.outputs = [o for o in outputs if isinstance(o, dict)] if isinstance(outputs, list) else []
            count = reply.get("execution_count")
            cell.execution_count = count if isinstance(count, int) else None
            state = reply.get("status")
            cell.state = state if state in ("ok", "error", "timeout") else "error"
            ename = reply.get("ename")
            cell.ename = ename if isinstance(ename, str) else None
            quiet = reply.get("quiet") is True
        with contextlib.suppress(OSError):
            _send(sock, {"end": True})
        return False

    def _finish(self, pid: int, group: cgroups.Cgroup | None, *, wait_first: bool) -> int | None:
        """Kill whatever is left of the run; the child's wait status, as the forkserver reports it."""
        status: dict[str, Any] | None = None
        if wait_first and self._control is not None:  # a child told "end" exits by itself at once
            with contextlib.suppress(TimeoutError, _ProtocolError):
                status = _recv(self._control, time.monotonic() + 1.0)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        if group is not None:
            group.kill_all()
        if status is None:
            status = self._control_reply(CONTROL_TIMEOUT)
        value = status.get("exit")
        return value if isinstance(value, int) else None


def _error_output(ename: str, evalue: str) -> dict[str, Any]:
    return {"output_type": "error", "ename": ename, "evalue": evalue, "traceback": [f"{ename}: {evalue}"]}
