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
from typing import Any, BinaryIO

from pydantic import BaseModel

LOGGER = "hubfleet.events"
EVENTS_FILE = "events.jsonl"

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


def attach(path: Path, max_bytes: int, backups: int) -> logging.Handler:
    """Write every event recorded in this process to `path` (JSON lines, mode 0600), rotated (`events.jsonl.1`, …)
    beyond `max_bytes`, `backups` rotated copies kept."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.close(fd)
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
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


def rotated(path: Path, backups: int | None = None) -> list[Path]:
    """`path` after its rotated copies, oldest first (`path.3`, `path.2`, `path.1`, `path`): the first `backups`
    of them, or (None) every one there is."""
    if backups is None:
        backups = 0
        while path.with_name(f"{path.name}.{backups + 1}").exists():
            backups += 1
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


class Tail:
    """What is appended to a file, read on demand, like `tail -F`: a file rotated away (renamed, or truncated in
    place) is followed by the new one, from its start."""

    def __init__(self, path: Path, start: int | None = None):
        """Follow `path` from byte `start` (default: its end now)."""
        self.path = path
        self._start = start
        self._handle: BinaryIO | None = None
        self._inode: int | None = None
        self._pending = b""
        self._at_end = True

    def _open(self) -> bool:
        try:
            self._handle = open(self.path, "rb")  # noqa: SIM115 - kept open while followed (closed by `close`)
        except FileNotFoundError:
            self._at_end = False  # the file that comes is all new
            return False
        self._inode = os.fstat(self._handle.fileno()).st_ino
        if self._at_end:
            self._handle.seek(0, os.SEEK_END)
            if self._start is not None and self._start <= self._handle.tell():
                self._handle.seek(self._start)
        self._at_end = False  # the next file (after a rotation) is read from its start
        return True

    def lines(self) -> list[str]:
        """The complete lines appended since the last call."""
        if self._handle is None and not self._open():
            return []
        assert self._handle is not None
        found = []
        for chunk in iter(self._handle.readline, b""):
            self._pending += chunk
            if self._pending.endswith(b"\n"):
                found.append(self._pending.rstrip(b"\n").decode("utf-8", errors="replace"))
                self._pending = b""
        try:
            current = os.stat(self.path)
        except FileNotFoundError:
            return found
        if current.st_ino != self._inode or current.st_size < self._handle.tell():
            self.close()
            self._pending = b""
        return found

    def events(self, hub: str | None = None) -> list[Event]:
        """The events among the new lines (of hub `hub` only, if given)."""
        wanted = _wanted(hub)
        return [event for event in map(_parse, self.lines()) if event is not None and wanted(event)]

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def follow_lines(path: Path, every: float = 0.5, start: int | None = None) -> Iterator[str]:
    """Lines appended to `path` (from byte `start`, default its end) as they come (`Tail`), until the caller stops
    iterating."""
    tail = Tail(path, start)
    try:
        while True:
            yield from tail.lines()
            time.sleep(every)
    finally:
        tail.close()
