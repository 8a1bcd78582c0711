"""The fleet's event log: what happened to the fleet and its hubs, and why — one JSON object a line in
`<state>/events.jsonl`.

Code records an event with `record()`. Events are log records of the logger `hubfleet.events`: the supervisor
attaches the event log's handler (`attach`), which writes them as JSON lines (rotated by size), and they reach
supervisor.log too, as readable lines. A process without the handler (a CLI command) records nothing anywhere but its
own logging. `read` and `follow` give them back, for `hubfleet events`.
"""

from __future__ import annotations

import datetime as dt
import logging
import logging.handlers
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

LOGGER = "hubfleet.events"
EVENTS_FILE = "events.jsonl"
MAX_BYTES = 10 * 1024**2
"""The event log's size before it is rotated (`events.jsonl.1`, …)."""
BACKUPS = 3
"""Rotated event logs kept."""

_KEY = "hubfleet_event"

log = logging.getLogger(LOGGER)


class Event(BaseModel):
    """One line of the event log."""

    time: dt.datetime
    event: str
    """What happened, dotted: `fleet.started`, `hub.crashed`, `hub.woke`, `budget.alert`, …"""
    hub: str | None = None
    message: str
    """The same, in words (as supervisor.log has it)."""
    level: str = "INFO"
    details: dict[str, Any] = {}


def record(event: str, message: str, *, hub: str | None = None, level: int = logging.INFO, **details: Any) -> None:
    """Record `event` (with `message`, in words, and JSON-able `details`)."""
    log.log(level, message, extra={_KEY: {"event": event, "hub": hub, "details": details}})


class _JsonLines(logging.Formatter):
    def format(self, entry: logging.LogRecord) -> str:
        data = getattr(entry, _KEY)
        event = Event(
            time=dt.datetime.fromtimestamp(entry.created, dt.UTC),
            event=data["event"],
            hub=data["hub"],
            message=entry.getMessage(),
            level=entry.levelname,
            details=data["details"],
        )
        return event.model_dump_json(
            exclude_defaults=True, exclude={"level"} if entry.levelno == logging.INFO else None
        )


def attach(path: Path) -> logging.Handler:
    """Write every event recorded in this process to `path` (JSON lines, mode 0600, rotated by size)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.close(fd)
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8")
    handler.addFilter(lambda entry: hasattr(entry, _KEY))
    handler.setFormatter(_JsonLines())
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    return handler


def _parse(line: str) -> Event | None:
    try:
        return Event.model_validate_json(line)
    except ValueError:
        return None  # a line cut by a crash, or not ours


def _wanted(hub: str | None) -> Callable[[Event], bool]:
    return lambda event: hub is None or event.hub == hub


def read(path: Path, hub: str | None = None, until: int | None = None) -> list[Event]:
    """Every event kept (the rotated files' too, oldest first; in `path` up to byte `until`), of hub `hub` only if
    given."""
    wanted = _wanted(hub)
    found = []
    for file in rotated(path):
        try:
            data = file.read_bytes()
        except OSError:
            continue
        lines = (data[:until] if file == path and until is not None else data).decode("utf-8", "replace").splitlines()
        found += [event for event in map(_parse, lines) if event is not None and wanted(event)]
    return found


def rotated(path: Path, backups: int = BACKUPS) -> list[Path]:
    """`path` after its rotated copies, oldest first (`path.3`, `path.2`, `path.1`, `path`)."""
    return [path.with_name(f"{path.name}.{n}") for n in range(backups, 0, -1)] + [path]


def follow(path: Path, hub: str | None = None, every: float = 0.5, start: int | None = None) -> Iterator[Event]:
    """Events as they are recorded (from byte `start` of the file, default its end; across rotations), until the
    caller stops iterating."""
    wanted = _wanted(hub)
    for line in follow_lines(path, every, start):
        event = _parse(line)
        if event is not None and wanted(event):
            yield event


def size(path: Path) -> int:
    """The file's size now (0 if there is none): where to `follow` from so that nothing read before is missed."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def follow_lines(path: Path, every: float = 0.5, start: int | None = None) -> Iterator[str]:
    """Lines appended to `path` (from byte `start`, default its end), like `tail -F`: a file rotated away (renamed,
    or truncated in place) is followed by the new one, from its start."""
    handle = None
    inode = None
    at_end = True
    pending = b""
    try:
        while True:
            if handle is None:
                try:
                    handle = open(path, "rb")  # noqa: SIM115 - kept open while followed
                except FileNotFoundError:
                    at_end = False  # the file that comes is all new
                    time.sleep(every)
                    continue
                inode = os.fstat(handle.fileno()).st_ino
                if at_end:
                    handle.seek(0, os.SEEK_END)
                    if start is not None and start <= handle.tell():
                        handle.seek(start)
                at_end = False  # the next file (after a rotation) is read from its start
            chunk = handle.readline()
            if chunk:
                pending += chunk
                if pending.endswith(b"\n"):
                    yield pending.rstrip(b"\n").decode("utf-8", errors="replace")
                    pending = b""
                continue
            time.sleep(every)
            try:
                current = os.stat(path)
            except FileNotFoundError:
                continue
            if current.st_ino != inode or current.st_size < handle.tell():
                handle.close()
                handle, pending = None, b""
    finally:
        if handle is not None:
            handle.close()
