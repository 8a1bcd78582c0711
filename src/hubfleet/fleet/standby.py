"""Keeps one warm standby interpreter (see `hubfleet.hub.standby`) ready to replace a hub process that died."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger("hubfleet.standby")


class StandbyPool:
    """At most one ready standby process at a time, refilled in the background after each use."""

    def __init__(self, cwd: Path, log_path: Path):
        self.cwd = cwd
        self.log_path = log_path
        self._ready: asyncio.subprocess.Process | None = None
        self._filling: asyncio.Task | None = None
        self._closed = False

    def fill(self) -> None:
        """Start preparing a standby in the background (no-op if one is ready or on its way)."""
        if self._closed or self._ready is not None or (self._filling and not self._filling.done()):
            return
        self._filling = asyncio.create_task(self._start(), name="standby")

    async def _start(self) -> None:
        with open(self.log_path, "ab") as errors:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "hubfleet.hub.standby",
                cwd=self.cwd,
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
                log.warning("the standby process did not start; see %s", self.log_path)
            return
        self._ready = process

    async def take(
        self, argv: Sequence[str], *, cwd: Path, env: dict[str, str], log_path: Path
    ) -> asyncio.subprocess.Process | None:
        """Turn the ready standby into `argv` (which must be `python -m MODULE ARGS…`); None if none is ready."""
        process, self._ready = self._ready, None
        if process is None or process.returncode is not None or len(argv) < 3 or argv[1] != "-m":
            return None
        order = {"module": argv[2], "args": list(argv[3:]), "cwd": str(cwd), "env": env, "log": str(log_path)}
        assert process.stdin is not None
        process.stdin.write(json.dumps(order).encode() + b"\n")
        await process.stdin.drain()
        process.stdin.close()
        self.fill()
        return process

    async def close(self) -> None:
        """Stop the standby and stop refilling."""
        self._closed = True
        if self._filling is not None:
            self._filling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._filling
        if self._ready is not None:
            await _discard(self._ready)
            self._ready = None


async def _discard(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        if process.stdin is not None:
            process.stdin.close()  # the standby exits when its stdin closes
        try:
            await asyncio.wait_for(process.wait(), 5)
        except TimeoutError:
            process.kill()
            await process.wait()
