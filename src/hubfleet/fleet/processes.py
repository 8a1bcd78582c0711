"""Child processes the supervisor keeps alive: started, watched, restarted when they die, stopped cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import httpx

from hubfleet.common import events
from hubfleet.system import pidfiles
from hubfleet.system.forkserver import ForkedProcess, ForkServer

log = logging.getLogger("hubfleet.processes")

Probe = Callable[[], Awaitable[bool]]

RESTART_DELAYS = (0.0, 0.5, 1.0, 2.0, 5.0)
"""Seconds to wait before each successive restart of a process that keeps dying (then stays at the last)."""


CHP_ENV = "HUBFLEET_CHP"


def find_proxy_command() -> str:
    """configurable-http-proxy: `$HUBFLEET_CHP`, the one npm installed into this environment, or on PATH."""
    candidates = [os.environ.get(CHP_ENV), str(Path(sys.prefix) / "node_modules" / ".bin" / "configurable-http-proxy")]
    candidates.append(shutil.which("configurable-http-proxy"))
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError(
        "configurable-http-proxy not found: run `make setup` (npm install --prefix .venv configurable-http-proxy)"
        f" or set ${CHP_ENV}"
    )


async def http_ok(url: str, headers: dict[str, str] | None = None) -> bool:
    """A readiness probe: whether GET `url` answers 200 within two seconds."""
    async with httpx.AsyncClient(timeout=2.0) as client:
        response = await client.get(url, headers=headers)
    return response.status_code == 200


class ProcessFailed(RuntimeError):
    """A managed process exited or never became ready."""


class ManagedProcess:
    """One long-running child: its command, environment and log file, and the watch that restarts it."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        cwd: Path,
        log_path: Path,
        env: dict[str, str] | None = None,
        ready: Probe | None = None,
        pid_file: Path | None = None,
        forkserver: ForkServer | None = None,
    ):
        self.name = name
        self.argv = list(argv)
        self.cwd = cwd
        self.log_path = log_path
        self.env = env
        self.ready_probe = ready
        self.pid_file = pid_file
        self.forkserver = forkserver
        """Where the process is forked from when it can be (else it is started the plain way)."""
        self.restarts = 0
        self.started_at: float | None = None
        self._process: asyncio.subprocess.Process | ForkedProcess | None = None
        self._watch: asyncio.Task | None = None
        self._stopping = False
        self.on_restart: Callable[[ManagedProcess], Awaitable[None]] | None = None

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None and process.returncode is None else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    async def start(self, timeout: float = 60.0) -> None:
        """Start the process, wait until it is ready, then keep it alive until `stop`."""
        self._stopping = False
        await self._spawn()
        await self.wait_ready(timeout)
        self._watch = asyncio.create_task(self._keep_alive(), name=f"watch {self.name}")

    async def _spawn(self) -> None:
        env = {**os.environ, **(self.env or {})}
        if self.forkserver is not None:
            forked = await self.forkserver.spawn(self.argv, cwd=self.cwd, env=env, log_path=self.log_path)
            if forked is not None:
                self._started(forked)
                return
        with open(self.log_path, "ab") as log_file:
            process = await asyncio.create_subprocess_exec(
                *self.argv,
                cwd=self.cwd,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # our signals are ours: Ctrl-C on the supervisor does not reach it
            )
        self._started(process)

    def _started(self, process: asyncio.subprocess.Process | ForkedProcess) -> None:
        self._process = process
        self.started_at = time.time()
        if self.pid_file is not None:
            pidfiles.write(self.pid_file, self._process.pid)
        log.debug("started %s (pid %s)", self.name, self._process.pid)

    async def wait_ready(self, timeout: float) -> None:
        """Wait until the readiness probe answers (or the process dies, or `timeout` passes)."""
        if self.ready_probe is None:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            process = self._process
            if process is None or process.returncode is not None:
                raise ProcessFailed(f"{self.name} exited during start-up; see {self.log_path}")
            with contextlib.suppress(Exception):
                if await self.ready_probe():
                    return
            await asyncio.sleep(0.1)
        raise ProcessFailed(f"{self.name} was not ready after {timeout:.0f} s; see {self.log_path}")

    async def _keep_alive(self) -> None:
        failures = 0
        while not self._stopping:
            process = self._process
            assert process is not None
            code = await process.wait()
            if self._stopping:
                return
            uptime = time.time() - (self.started_at or time.time())
            failures = 0 if uptime > 60 else failures + 1
            delay = RESTART_DELAYS[min(failures, len(RESTART_DELAYS)) - 1] if failures else 0.0
            hub, what = self._who()
            events.record(
                "process.crashed",
                f"{self.name} {exit_reason(code)} after {uptime:.0f} s; restarting in {delay:.1f} s",
                hub=hub,
                level=logging.WARNING,
                process=what,
                code=code,
                uptime=round(uptime, 1),
                restart_in=delay,
                log=str(self.log_path),
            )
            await asyncio.sleep(delay)
            if self._stopping:
                return
            self.restarts += 1
            try:
                await self._spawn()
                await self.wait_ready(60.0)
                if self.on_restart is not None:
                    await self.on_restart(self)
            except Exception as exc:  # keep watching: the next exit triggers the next try
                message = f"restarting {self.name} failed: {exc}"
                events.record("process.restart_failed", message, hub=hub, level=logging.ERROR, process=what)
            else:
                events.record("process.restarted", f"{self.name} restarted (pid {self.pid})", hub=hub, process=what)

    def _who(self) -> tuple[str | None, str]:
        """The hub this process belongs to (None: the fleet's own) and which of its processes it is."""
        hub, _, what = self.name.rpartition("/")
        return hub or None, what

    def send_signal(self, number: int) -> None:
        """Send signal `number` to the process, if it runs (our own child, by its pidfd or unreaped pid)."""
        process = self._process
        if process is not None and process.returncode is None:
            _signal_session(process, number)

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop the process (SIGTERM, then SIGKILL after `timeout`) and its watch."""
        self._stopping = True
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
        process = self._process
        if process is not None and process.returncode is None:
            await terminate(process, timeout)
        if self.pid_file is not None:
            self.pid_file.unlink(missing_ok=True)


def exit_reason(code: int | None) -> str:
    """Why a process ended, in words, from its exit code (negative: the signal that killed it)."""
    if code is None:
        return "exited (code unknown)"
    if code >= 0:
        return f"exited with code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    # The fleet signals a process only to stop it, and then does not restart it: this came from elsewhere.
    return f"was killed by {name} from outside the fleet (another process, or the kernel: e.g. out of memory)"


def _signal_session(process: asyncio.subprocess.Process | ForkedProcess, number: int) -> None:
    if isinstance(process, ForkedProcess):
        process.signal_group(number)  # only while that very process (its pidfd) is alive
    elif process.returncode is None:  # our own child, not yet reaped: its pid is still its own
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, number)


async def terminate(process: asyncio.subprocess.Process | ForkedProcess, timeout: float) -> None:
    """SIGTERM the process's session, SIGKILL it if it is still there after `timeout`."""
    _signal_session(process, signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), timeout)
    except TimeoutError:
        _signal_session(process, signal.SIGKILL)
        await process.wait()


class Cleanup(enum.Enum):
    """What `kill_pid_file` found."""

    STOPPED = "stopped"
    """The process the file recorded was running, and was stopped."""
    STALE = "stale"
    """The file named no process of ours (it had exited, or its pid now belongs to another process): removed."""
    ABSENT = "absent"
    """There was no pid file."""


def kill_pid_file(pid_file: Path, timeout: float = 10.0) -> Cleanup:
    """Stop a process known only by its pid file (when its supervisor is gone) — only if it is provably the process
    that was started (`hubfleet.system.pidfiles`); a stale file is removed and nothing is signalled."""
    if not pid_file.exists():
        return Cleanup.ABSENT
    record = pidfiles.running(pid_file)
    if record is None:
        pid_file.unlink(missing_ok=True)
        return Cleanup.STALE
    signal_process(record, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while record.alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    signal_process(record, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    return Cleanup.STOPPED


def signal_process(record: pidfiles.ProcessRecord, number: int) -> None:
    """Signal the recorded process's group (when it leads its own, as the fleet's processes do), else the process
    alone; nothing unless it is that very process, still running."""
    if not record.alive():
        return
    with contextlib.suppress(ProcessLookupError):
        if os.getpgid(record.pid) == record.pid:
            os.killpg(record.pid, number)
        else:
            os.kill(record.pid, number)
