"""Progress on long work: `up --detach`, `check` and `down` show hub by hub what is done — a live progress bar on a
terminal (a real pseudo-terminal here), plain lines when the output goes to a pipe or a file."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import shutil
import struct
import subprocess
import sys
import termios
from pathlib import Path

from hubfleet.system import accounts
from tests.helpers import fleet_yaml, hubfleet, port_block, processes_mentioning, unique_hub
from tests.requirements import need

HUBS = [unique_hub("sv"), unique_hub("sv")]
PASSWORD = "progress-test-pw"


def in_terminal(*args: str, timeout: float = 300) -> tuple[int, str]:
    """Run `hubfleet ARGS` on a pseudo-terminal (120 columns) and return its exit code and everything it wrote."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {key: value for key, value in os.environ.items() if key != "COLUMNS"}
    process = subprocess.Popen(
        [sys.executable, "-m", "hubfleet", *args],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env={**env, "TERM": "xterm-256color"},
        start_new_session=True,
    )
    os.close(terminal)
    output = b""
    try:
        while True:
            ready, _, _ = select.select([controller], [], [], timeout)
            if not ready:
                raise AssertionError(f"hubfleet {' '.join(args)} wrote nothing for {timeout} s:\n{output.decode()}")
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the terminal closed: the command is done
                break
            if not chunk:
                break
            output += chunk
    finally:
        os.close(controller)
    return process.wait(timeout), output.decode(errors="replace")


def test_long_commands_show_progress_hub_by_hub(tmp_path: Path) -> None:
    need("root", "cgroups", "acl", "user_env", "proxy")
    block = port_block()
    shared = Path(f"/srv/hubfleet-test-{HUBS[0]}")
    hubs = "".join(
        f"{hub}:\n  auth: {{type: shared-password, password: {PASSWORD}, allowed_users: [ann]}}\n" for hub in HUBS
    )
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(fleet_yaml("progress", block[1] + 1, block, shared, hubs))
    state = ["--state-dir", str(tmp_path / "state")]
    try:
        code, shown = in_terminal("up", str(fleet), "--detach", *state)
        assert code == 0, shown
        assert "Starting the fleet in the background" in shown  # the live bar, redrawn in place
        assert "\x1b[" in shown
        plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown)  # colours and cursor moves out
        for hub in HUBS:
            assert f"✓ hub {hub} started (local)" in plain

        checked = hubfleet("check", *state)  # to a pipe: plain lines, no bar, no colours
        assert "\x1b[" not in checked.stdout and "Checking hubs" not in checked.stdout
        lines = [line for line in checked.stdout.splitlines() if line.startswith("✓ hub")]
        assert [line.split(":")[0] for line in lines] == [f"✓ hub {hub}" for hub in HUBS]
        assert all(": pass in " in line for line in lines)

        stopped = hubfleet("down", *state)
        assert "\x1b[" not in stopped.stdout
        for hub in HUBS:
            assert f"✓ hub {hub} stopped: the fleet stops" in stopped.stdout
        assert stopped.stdout.rstrip().endswith("Fleet stopped.")
    finally:
        hubfleet("down", *state, check=False)
        for hub in HUBS:
            accounts.remove_hub_accounts(hub)
        shutil.rmtree(shared, ignore_errors=True)
    assert processes_mentioning(str(tmp_path / "state")) == []
