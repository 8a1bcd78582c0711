"""Pid files that name one process for sure, not just a number.

A pid alone is not a process: once that process has exited, or after a reboot, the same number can belong to
anybody's process. A hubfleet pid file therefore records, on one line, the pid, the process's start time (clock ticks
after boot, field 22 of /proc/<pid>/stat) and the boot it started in (/proc/sys/kernel/random/boot_id). The process
is taken to be the one recorded only if all three match; anything else is a stale file, never a process to signal.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def boot_id() -> str:
    """This boot's id (a new random one at every boot)."""
    return BOOT_ID.read_text(encoding="ascii").strip()


def start_ticks(pid: int) -> int | None:
    """When process `pid` started (clock ticks after boot), or None if there is no such process (or it has exited
    and only waits to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    # "pid (comm) state ppid …": comm may hold spaces and parentheses; the fields after its last ')' start at 3.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[22 - 3])


@dataclass(frozen=True)
class ProcessRecord:
    """One process, as a pid file names it."""

    pid: int
    start: int
    """Clock ticks after boot when it started."""
    boot: str
    """The boot it started in."""

    @classmethod
    def of(cls, pid: int) -> ProcessRecord | None:
        """The running process `pid`, if there is one."""
        start = start_ticks(pid)
        return None if start is None else cls(pid, start, boot_id())

    def line(self) -> str:
        return f"{self.pid} {self.start} {self.boot}\n"

    @classmethod
    def parse(cls, text: str) -> ProcessRecord | None:
        """The record in a pid file's text; None for anything else (also a bare pid: it proves nothing)."""
        parts = text.split()
        if len(parts) != 3:
            return None
        try:
            return cls(int(parts[0]), int(parts[1]), parts[2])
        except ValueError:
            return None

    def alive(self) -> bool:
        """Whether the very process recorded still runs (same pid, same start, same boot)."""
        return ProcessRecord.of(self.pid) == self


def write(path: Path, pid: int) -> bool:
    """Record process `pid` in `path`; False (and no file) if it has already exited."""
    record = ProcessRecord.of(pid)
    if record is None:
        path.unlink(missing_ok=True)
        return False
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(record.line(), encoding="ascii")
    tmp.replace(path)
    return True


def read(path: Path) -> ProcessRecord | None:
    """The record in pid file `path` (None: no file, or not a record hubfleet wrote)."""
    try:
        return ProcessRecord.parse(path.read_text(encoding="ascii", errors="replace"))
    except OSError:
        return None


def running(path: Path) -> ProcessRecord | None:
    """The process pid file `path` records, if that very process still runs."""
    record = read(path)
    return record if record is not None and record.alive() else None


def stale(path: Path) -> bool:
    """Whether `path` exists but names no process that runs (a dead one, somebody else's, or an unreadable file)."""
    return path.exists() and running(path) is None
