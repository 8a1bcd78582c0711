"""A real git server for tests: `git daemon` serving bare repositories read-only on 127.0.0.1 (git:// protocol)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from tests.helpers import free_port

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Instructor",
    "GIT_AUTHOR_EMAIL": "instructor@uni.example",
    "GIT_COMMITTER_NAME": "Instructor",
    "GIT_COMMITTER_EMAIL": "instructor@uni.example",
    "GIT_CONFIG_GLOBAL": "/dev/null",
}


def git(*args: str, cwd: Path) -> str:
    result = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, env={**os.environ, **GIT_ENV}, check=True
    )
    return result.stdout


class CourseRepository:
    """A bare repository served by the daemon, and the instructor's working copy that pushes to it."""

    def __init__(self, root: Path, name: str) -> None:
        self.bare = root / "served" / f"{name}.git"
        self.work = root / "work" / name
        self.bare.parent.mkdir(parents=True, exist_ok=True)
        self.work.mkdir(parents=True)
        git("init", "-q", "--bare", "-b", "main", str(self.bare), cwd=root)
        git("init", "-q", "-b", "main", cwd=self.work)
        git("remote", "add", "origin", str(self.bare), cwd=self.work)

    def commit(self, files: dict[str, str], message: str) -> None:
        """Write `files` (path → text) in the working copy, commit and push them."""
        for path, text in files.items():
            target = self.work / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        git("add", "-A", cwd=self.work)
        git("commit", "-q", "-m", message, cwd=self.work)
        git("push", "-q", "origin", "main", cwd=self.work)


@contextlib.contextmanager
def git_daemon(root: Path) -> Iterator[str]:
    """`git daemon` serving the bare repositories under `root/served`; yields its base URL (git://127.0.0.1:PORT/)."""
    served = root / "served"
    served.mkdir(parents=True, exist_ok=True)
    port = free_port()
    daemon = subprocess.Popen(
        [
            "git",
            "daemon",
            "--reuseaddr",
            "--export-all",
            "--informative-errors",
            "--listen=127.0.0.1",
            f"--port={port}",
            f"--base-path={served}",
            str(served),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"git daemon did not start on port {port}")
            time.sleep(0.05)
        yield f"git://127.0.0.1:{port}/"
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)  # ours: started above, in a session of its own
        daemon.wait(10)
