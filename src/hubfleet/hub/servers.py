"""Single-user servers forked from a warm interpreter: one fork server per user environment, run by the hub as root.

A server start spends most of its CPU importing jupyter_server, JupyterLab and the server extensions (about 3 s on
this kind of machine, half of it in one optional module, see `hubfleet.system.startup`). A fork server of the
environment has done those imports once; each start forks it, and the child becomes the user — their cgroup,
groups, gid and uid, no new privileges, their umask, environment and home (see `hubfleet.system.forkserver`) —
before it runs `jupyterhub-singleuser`. The servers share the imported pages with the fork server.

The fork server is this file's sibling `system/forkserver.py`, run by the environment's own Python as a script (the
environment has no hubfleet in it). Its socket is in a folder of the hub's state directory that only root enters:
no server can reach it. When it is not there (starting, crashed), a start waits a little for it and otherwise
starts the plain way; a crashed fork server is started again by the next start. It exits when the hub does (its
standard input closes); servers it forked keep running, as servers do across hub restarts.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import hubfleet.system.forkserver as forkserver_module
from hubfleet.system.forkserver import ForkServer
from hubfleet.system.startup import SLOW_OPTIONAL_MODULES

SERVER_MODULE = "jupyterhub.singleuser"
"""What a forked child runs: `jupyterhub-singleuser`."""

PLAIN_START_ENV = ("JUPYTERHUB_SINGLEUSER_APP", "JUPYTERHUB_SINGLEUSER_EXTENSION")
"""`jupyterhub.singleuser` chooses its kind of app from these when it is imported (by the fork server, without
them): a server asked to start another kind starts the plain way."""

PRELOAD = (
    "jupyterhub.singleuser",
    "jupyter_server.serverapp",
    "jupyterlab",
    "jupyterlab.labapp",
    "jupyterlab_server",
    "jupyter_server_terminals",
    "jupyter_lsp",
    "notebook_shim",
    "nbgitpuller",
)
"""Modules every server start imports: imported once by the fork server (those an environment lacks are skipped)."""


def current_umask() -> int:
    """This process's umask (reading it means setting it: it is set back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class ServerForkServers:
    """The fork servers of one hub, one per environment its servers start from (started on first use)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._servers: dict[str, ForkServer] = {}

    def of(self, prefix: str) -> ForkServer:
        """The fork server of the environment at `prefix`."""
        server = self._servers.get(prefix)
        if server is None:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.folder, 0o700)
            name = hashlib.sha256(prefix.encode()).hexdigest()[:16]
            argv = [str(Path(prefix) / "bin" / "python"), "-I", forkserver_module.__file__]
            argv += [f"--preload={module}" for module in PRELOAD]
            argv += [f"--absent={module}" for module in SLOW_OPTIONAL_MODULES]
            server = ForkServer(argv, self.folder / f"{name}.sock", None)
            self._servers[prefix] = server
        server.start()
        return server
