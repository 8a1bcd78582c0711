"""The grading forkserver ("zygote") and the processes it forks, one per notebook to grade.

The grader starts the forkserver with one end of a Unix socket pair; it imports IPython (and common libraries)
once, warms the shell up, records the clean state (:mod:`.hygiene`) and answers "ready". For each notebook the
grader sends a job (account, working folder, limits …) with a fresh socket and the cgroup's ``cgroup.procs``
descriptors; the forkserver forks a single-use child into a new PID namespace, reports its pid and, later, its
wait status. The forkserver itself never sees cell sources or outputs.

In its namespace the child is PID 1 (:func:`init`): it enters the sandbox (:mod:`.jail`) and forks the worker
(:func:`worker`), which runs the cells the grader sends over the socket one at a time and answers each with its
outputs and status. PID 1 runs no student code: it only reaps, and ends with the worker's status (which ends every
process left in the namespace). Before a test cell the grader asks the worker to prepare: the worker puts the clean
state back and stops every other process of the namespace; if threads of the submission still run, it forks and
the single-threaded copy goes on (the old process ends, its threads with it). Messages: :mod:`.protocol`.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import json
import os
import signal
import socket
import sys
import threading
import time
from typing import Any

from _child import jail
from _child.hygiene import CleanState
from _child.protocol import recv, send
from _child.shell import CellRunner, CellTimeoutError, Outputs, Stream, TestGate, make_shell, warm_up

SETUP_FAILED = 70
HANDOVER = 71
"""Exit status of a worker that forked a single-threaded copy of itself to go on with."""


def read_only_locations() -> tuple[str, ...]:
    """Where Python and its packages live (mounted read-only in the sandbox), as path prefixes."""
    found = {"/usr/"}
    for path in (sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.path.realpath(sys.executable))):
        real = os.path.realpath(path).rstrip("/") + "/"
        if not real.startswith("/usr/"):
            found.add(real)
    return tuple(sorted(found))


# --------------------------------------------------------------------------------------------- the worker


def _exit_code(status: int) -> int:
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1


def run_cells(sock: socket.socket, runner: CellRunner, outputs: Outputs, handover: int) -> None:
    """Answer the grader's requests until it says the notebook is done."""
    state = {"in_cell": False}

    def on_alarm(signum: int, frame: object) -> None:
        if state["in_cell"]:
            raise CellTimeoutError("the cell exceeded its time limit")

    signal.signal(signal.SIGALRM, on_alarm)
    runner.own_signals = lambda: {signal.SIGALRM: on_alarm}
    stdout, stderr = Stream("stdout", outputs), Stream("stderr", outputs)
    me = os.getpid()
    prepared = False
    gc.disable()  # between cells no garbage collection: no finaliser of the submission runs in this loop
    while True:
        request, _ = recv(sock)
        if "prepare" in request:  # the sandbox was not quiet after the last cell: clean up before a test cell
            threads = runner.prepare_test()
            _no_async(sock)
            if threads > 1:  # go on in a single-threaded copy; this process (and its threads) ends
                copy = os.fork()
                if copy:
                    os.write(handover, f"{copy}\n".encode())
                    os._exit(HANDOVER)
                me = os.getpid()
                runner.clean.after_fork()
            prepared = True
            send(sock, {"ready": True})
            continue
        if "run" not in request:
            return
        kind = request.get("kind")
        if kind == "test" and not prepared:
            runner.prepare_test()
        prepared = False
        outputs.reset()
        sys.stdout, sys.stderr = stdout, stderr
        state["in_cell"] = True
        gc.enable()
        signal.setitimer(signal.ITIMER_REAL, float(request["timeout"]))
        try:
            if kind == "test":
                status, ename = runner.run_test(request["run"])
            else:
                status, ename = runner.run_cell(request["run"], instructor=kind == "instructor")
            if os.getpid() != me:  # a process the cell forked came back here: it must not talk to the grader
                os._exit(0)
        except CellTimeoutError as exc:  # raised outside the cell's code (e.g. while IPython compiles it)
            status, ename = "timeout", "CellTimeoutError"
            outputs.add({"output_type": "error", "ename": ename, "evalue": str(exc), "traceback": []}, 0)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            gc.disable()
            state["in_cell"] = False
            sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
        quiet = runner.clean.settle(runner.own_signals())
        _no_async(sock)
        reply = {"outputs": outputs.items, "execution_count": runner.shell.execution_count - 1, "status": status}
        send(sock, {**reply, "ename": ename, "quiet": quiet})


def _no_async(sock: socket.socket) -> None:
    """No signal on the grader's socket when data arrives (the submission may have asked for one)."""
    with contextlib.suppress(OSError):
        flags = fcntl.fcntl(sock.fileno(), fcntl.F_GETFL)
        if flags & os.O_ASYNC:
            fcntl.fcntl(sock.fileno(), fcntl.F_SETFL, flags & ~os.O_ASYNC)


def worker(job: dict, sock: socket.socket, handover: int, runner: CellRunner, outputs: Outputs) -> None:
    """The process that runs the notebook's cells (PID 2 of the namespace). Never returns."""
    code = 0
    try:
        os.environ.clear()
        os.environ.update(job["env"])
        jail.prctl(jail.PR_SET_DUMPABLE, 1)
        # The working folder is importable (helper modules handed out with the assignment), after the standard
        # library: a file the submission writes cannot stand in for a standard module.
        stdlib = [p for p in sys.path if p and "-packages" not in p]
        sys.path[:] = [*stdlib, "", *[p for p in sys.path if p and p not in stdlib]]
        runner.clean.path[:] = list(sys.path)
        runner.clean.after_fork()
        send(sock, {"ready": True, "pid": os.getpid()})
        run_cells(sock, runner, outputs, handover)
    except BaseException:
        code = 1
    os._exit(code)


def init(job: dict, sock: socket.socket, procs: list[int], runner: CellRunner, read_only: tuple[str, ...]) -> None:
    """PID 1 of the notebook's namespace: enter the sandbox, fork the worker, reap. Never returns."""
    try:
        try:
            jail.enter(job, sock, procs, read_only)
            jail.prctl(jail.PR_SET_DUMPABLE, 0)
        except BaseException as exc:
            send(sock, {"setup_error": f"{type(exc).__name__}: {exc}"})
            os._exit(SETUP_FAILED)
        read_end, write_end = os.pipe()
        worker_pid = os.fork()
        if worker_pid == 0:
            os.close(read_end)
            worker(job, sock, write_end, runner, runner.outputs)
        os.close(write_end)
        sock.close()
        while True:
            pid, status = os.waitpid(-1, 0)
            if pid != worker_pid:
                continue
            if os.WIFEXITED(status) and os.WEXITSTATUS(status) == HANDOVER:
                told = os.read(read_end, 4096).split()
                if told and told[-1].isdigit():
                    worker_pid = int(told[-1])
                    continue
            os._exit(_exit_code(status))
    except BaseException:
        os._exit(1)


# --------------------------------------------------------------------------------------------- the forkserver


def reap(pid: int | None) -> int | None:
    """Reap exited children; block for ``pid`` and return its wait status."""
    while True:
        try:
            found, status = os.waitpid(-1, 0 if pid is not None else os.WNOHANG)
        except ChildProcessError:
            return None
        if found == 0:
            return None
        if found == pid:
            return status


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
    jail.prctl(jail.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != int(sys.argv[2]):
        sys.exit("the grader is gone")
    started = time.perf_counter()
    import IPython

    loaded = preload(json.loads(sys.argv[3]))
    read_only = read_only_locations()
    outputs = Outputs(0)
    shell = make_shell(outputs)
    warm_up(shell, outputs)
    gate = TestGate()
    clean = CleanState(shell, read_only, gate.functions_touched)
    namespaces = jail.PidNamespaces()
    gc.freeze()  # the children's garbage collector leaves the forkserver's objects (and their shared pages) alone
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
        if not fds:
            send(control, {"error": "a job needs its socket"})
            continue
        sock, procs = socket.socket(fileno=fds[0]), fds[1:]
        outputs.limit = int(job["output_bytes"])
        runner = _runner(shell, outputs, clean, gate, job)
        namespaces.next_child_in_new_namespace()
        pid = os.fork()
        if pid == 0:
            control.close()
            init(job, sock, procs, runner, read_only)
        sock.close()
        for fd in procs:
            os.close(fd)
        send(control, {"pid": pid})
        send(control, {"exit": reap(pid)})


def _runner(shell: Any, outputs: Outputs, clean: CleanState, gate: TestGate, job: dict) -> CellRunner:
    return CellRunner(
        shell,
        outputs,
        clean,
        gate,
        expected_names=frozenset(job.get("expected_names", ())),
        user_module=shell.user_module.__name__,
        own_signals=dict,
    )
