"""The fleet's log files: which process writes where, reading them back (`hubfleet logs`), and keeping them small.

Processes write their output to files they hold open for appending, so a log is rotated by copying it to `.1` (the
older ones shifted to `.2`, …) and truncating it in place — what logrotate calls copytruncate: the writer goes on at
the start of the emptied file. The few lines written between the copy and the truncation are lost. supervisor.log
and events.jsonl are the supervisor's own, rotated by its logging handlers (renamed, never truncated)."""

from __future__ import annotations

import logging
import logging.handlers
import os
import shutil
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal

from hubfleet.common.events import rotated
from hubfleet.common.state import FleetState
from hubfleet.spec.models import Logs

ROTATE_EVERY = float(os.environ.get("HUBFLEET_ROTATE_EVERY") or 60.0)
"""Seconds between two looks at the logs' sizes (`$HUBFLEET_ROTATE_EVERY`, for tests)."""

Process = Literal["hub", "proxy", "gateway", "exchange"]
PROCESSES: tuple[Process, ...] = ("hub", "proxy", "gateway", "exchange")

_HUB_LOGS = {"hub": "hub.log", "gateway": "dask-gateway.log", "exchange": "exchange.log"}


def log_of(state: FleetState, hub: str, process: Process) -> Path:
    """The log of one of hub `hub`'s processes; `proxy` is the front door's (the fleet's one proxy)."""
    if process == "proxy":
        return state.frontdoor_dir / "proxy.log"
    return state.hub(hub).root / _HUB_LOGS[process]


def mentions(hub: str, process: Process) -> str | None:
    """What a line of `process`'s log must contain to be about hub `hub` (None: every line is)."""
    return f"/hubs/{hub}/" if process == "proxy" else None


def tail(path: Path, lines: int, contains: str | None = None, until: int | None = None) -> list[str]:
    """The last `lines` lines of `path` (up to byte `until`; and of its rotated copy, when it holds fewer), with
    `contains` only."""
    kept: deque[str] = deque(maxlen=lines)
    for file in rotated(path, 1):
        try:
            with open(file, "rb") as handle:
                data = handle.read(until) if file == path and until is not None else handle.read()
        except FileNotFoundError:
            continue
        text = data.decode("utf-8", errors="replace")
        kept.extend(line for line in text.splitlines() if contains is None or contains in line)
    return list(kept)


def rotated_logs(state: FleetState) -> Iterator[Path]:
    """Every log the fleet's processes write by appending (not supervisor.log nor events.jsonl)."""
    yield state.root / "supervisor.out"
    yield state.root / "zygote.log"
    yield from state.frontdoor_dir.glob("*.log")
    for name in state.hub_names():
        yield from state.hub(name).root.glob("*.log")


def rotate(path: Path, max_bytes: int, backups: int) -> bool:
    """Rotate `path` if it is larger than `max_bytes` (copy to `.1`, truncate); whether it was."""
    try:
        if path.stat().st_size <= max_bytes:
            return False
    except FileNotFoundError:
        return False
    for number in range(backups - 1, 0, -1):
        older = path.with_name(f"{path.name}.{number}")
        if older.exists():
            older.replace(path.with_name(f"{path.name}.{number + 1}"))
    copy = path.with_name(f"{path.name}.1")
    shutil.copyfile(path, copy)
    os.chmod(copy, 0o600)
    os.truncate(path, 0)
    return True


def rotate_all(state: FleetState, limits: Logs) -> list[Path]:
    """Rotate every log of the fleet larger than the fleet file's `logs.max_size`; the ones rotated."""
    return [path for path in rotated_logs(state) if rotate(path, limits.max_size, limits.keep)]


def handler(path: Path, limits: Logs) -> logging.handlers.RotatingFileHandler:
    """A logging handler writing to `path`, rotated (renamed) as `limits` say."""
    return logging.handlers.RotatingFileHandler(
        path, maxBytes=limits.max_size, backupCount=limits.keep, encoding="utf-8"
    )


def resize(handlers: Iterable[logging.Handler], limits: Logs) -> None:
    """Make the rotating ones of `handlers` follow `limits` (after an apply changed them)."""
    for each in handlers:
        if isinstance(each, logging.handlers.RotatingFileHandler):
            each.maxBytes, each.backupCount = limits.max_size, limits.keep
