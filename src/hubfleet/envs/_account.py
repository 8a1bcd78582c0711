"""Running a build's steps as the unprivileged build account: its own uid, a clean environment, nothing of root's."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from hubfleet.system import accounts

PASSED_THROUGH = (
    "LANG",
    "LC_ALL",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
)
"""What a build step inherits from the caller: locale, TLS roots and proxies (how the machine reaches its index);
never tokens, settings files or anything else of the fleet's."""

STEP_TIMEOUT = 1800
"""Seconds one step may take before it is stopped (a build that hangs must not hold the build lock forever)."""


class StepFailed(RuntimeError):
    """A build step exited with an error; `output` is what it printed."""

    def __init__(self, argv: Sequence[str], code: int, output: str):
        super().__init__(f"{Path(argv[0]).name} exited with code {code}")
        self.output = output


@dataclass(frozen=True)
class BuildAccount:
    """The system account builds run as: no login, no password, its home the package cache."""

    name: str
    uid: int
    gid: int
    home: Path

    @classmethod
    def ensure(cls, name: str, home: Path) -> BuildAccount:
        """The account, created as a system account when missing (needs root)."""
        accounts.ensure_system_user(name, home)
        entry = pwd.getpwnam(name)
        return cls(name, entry.pw_uid, entry.pw_gid, home)

    def environment(self, extra: dict[str, str]) -> dict[str, str]:
        env = {key: os.environ[key] for key in PASSED_THROUGH if key in os.environ}
        env.update({"HOME": str(self.home), "USER": self.name, "PATH": "/usr/local/bin:/usr/bin:/bin"})
        env.update(extra)
        return env

    def run(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: dict[str, str],
        output: Callable[[str], None],
        as_root: bool = False,
    ) -> str:
        """Run `argv` as the build account (or, for the operator's Debian packages, as root), each line of its
        output to `output`; returns the output, raises `StepFailed` on a non-zero exit or after `STEP_TIMEOUT`."""
        identity = {} if as_root else {"user": self.uid, "group": self.gid, "extra_groups": []}
        lines: list[str] = []
        process = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=self.environment(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            umask=0o022,
            start_new_session=True,
            **identity,
        )
        # Our own child's process group (start_new_session): nothing else is in it.
        watchdog = threading.Timer(STEP_TIMEOUT, _kill_group, (process.pid,))
        watchdog.start()
        assert process.stdout is not None
        try:
            with process:
                for line in process.stdout:
                    lines.append(line)
                    output(line.rstrip("\n"))
                code = process.wait()
        finally:
            watchdog.cancel()
        if code != 0:
            raise StepFailed(argv, code, "".join(lines))
        return "".join(lines)

    def own(self, path: Path) -> None:
        """Give `path` (a fresh tree root made) to the build account, never following a symlink."""
        os.chown(path, self.uid, self.gid, follow_symlinks=False)
        if path.is_dir() and not path.is_symlink():
            for folder, dirs, files in os.walk(path):
                for name in dirs + files:
                    os.chown(Path(folder) / name, self.uid, self.gid, follow_symlinks=False)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def tool(name: str) -> str:
    """A system tool's path (a clear error when missing)."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if found is None:
        raise FileNotFoundError(f"{name} not found on this machine")
    return found
