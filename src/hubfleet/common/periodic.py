"""One way to run work every so often in an asyncio process: the supervisor's loops, the exchange's passback."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable


async def every(
    seconds: float | Callable[[], float],
    work: Callable[[], Awaitable[object]],
    *,
    log: logging.Logger,
    what: str,
    stop: asyncio.Event | None = None,
    first: bool = True,
) -> None:
    """Run `work` (now if `first`, else after one period), then again each period — measured from the start of one
    round to the next — until cancelled or `stop` is set. A round that fails is logged (as `what` failed) and the
    next one runs as usual: the loop outlives any one failure. `seconds` may be a callable, read each round."""
    stop = stop or asyncio.Event()
    period = seconds if callable(seconds) else (lambda: float(seconds))
    if not first:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=period())
    while not stop.is_set():
        started = time.monotonic()
        try:
            await work()
        except Exception:
            log.exception("%s failed", what)
        wait = max(0.0, period() - (time.monotonic() - started))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=wait)
