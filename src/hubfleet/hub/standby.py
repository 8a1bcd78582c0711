"""A warm interpreter that becomes a hub process on demand (`python -m hubfleet.hub.standby`).

Starting a JupyterHub process spends seconds importing JupyterHub and its dependencies before it does anything.
The supervisor keeps one standby process that has done those imports already; when a hub dies, the standby is
told (one JSON line on stdin) which module to run, with which arguments, environment, working directory and log
file, and becomes that hub at once. The supervisor then starts the next standby.
"""

from __future__ import annotations

import json
import os
import runpy
import sys


def _preload() -> None:
    import jupyterhub.app  # noqa: F401  (the slow part)

    import hubfleet.hub.authenticators
    import hubfleet.hub.config
    import hubfleet.hub.spawner  # noqa: F401


def main() -> None:
    _preload()
    print("ready", flush=True)
    line = sys.stdin.readline()
    if not line:
        return  # the supervisor closed the standby without using it
    order = json.loads(line)
    log = os.open(order["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.chdir(order["cwd"])
    os.environ.update(order["env"])
    sys.argv = [order["module"], *order["args"]]
    runpy.run_module(order["module"], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
