"""The fleet as a system service: the systemd unit that runs `hubfleet up` in the foreground and starts it again
after a crash or a reboot."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

UNIT_NAME = "hubfleet.service"
UNIT_PATH = Path("/etc/systemd/system") / UNIT_NAME
"""Where `hubfleet install-service` writes the unit by default."""

STOP_TIMEOUT = 300
"""Seconds systemd gives `hubfleet up` to stop every server and hub (it waits up to 180 s for them) before it kills
what is left."""

PASSED_ON = ("PATH", "HUBFLEET_CHP", "SLURM_CONF")
"""Environment variables of the installing shell the service keeps (Node for the proxies, a chosen proxy, Slurm)."""


def _quote(value: str) -> str:
    """A value as systemd reads it in `Environment=` and `ExecStart=` (double quotes, backslash escapes)."""
    if value and all(c.isalnum() or c in "/._-:=+,@" for c in value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def systemd_unit(
    fleet_file: Path,
    state_dir: Path,
    *,
    python: str = sys.executable,
    environment: dict[str, str] | None = None,
) -> str:
    """The unit's text: `hubfleet up FILE --state-dir DIR --no-live` in the foreground, restarted on failure.

    On stop, systemd sends SIGTERM to `hubfleet up` alone (`KillMode=mixed`): the supervisor stops user servers, hubs
    and proxies itself, in order; only what is still there after `STOP_TIMEOUT` is killed."""
    env = environment if environment is not None else dict(os.environ)
    argv = [python, "-m", "hubfleet", "up", str(fleet_file), "--state-dir", str(state_dir), "--no-live"]
    lines = [
        "# Written by `hubfleet install-service` (see hubfleet's docs/production-guide.md); write it again after",
        "# moving hubfleet or the fleet file.",
        "[Unit]",
        f"Description=hubfleet: the fleet of JupyterHubs of {fleet_file}",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=simple",
        "ExecStart=" + " ".join(_quote(arg) for arg in argv),
        f"WorkingDirectory={_quote(str(state_dir.parent))}",
        *(f"Environment={_quote(f'{name}={env[name]}')}" for name in PASSED_ON if env.get(name)),
        "Restart=on-failure",
        "RestartSec=5",
        "KillMode=mixed",
        f"TimeoutStopSec={STOP_TIMEOUT}",
        "LimitNOFILE=65536",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ]
    return "\n".join(lines)


def next_steps(unit_path: Path) -> list[str]:
    """The commands that start the installed service now and at every boot."""
    if unit_path != UNIT_PATH:
        return [
            f"cp {shlex.quote(str(unit_path))} {UNIT_PATH}",
            "systemctl daemon-reload",
            "systemctl enable --now hubfleet",
        ]
    return ["systemctl daemon-reload", "systemctl enable --now hubfleet"]
