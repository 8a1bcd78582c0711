"""The hubs' fork server (`python -m hubfleet.hub.zygote SOCKET`): JupyterHub imported once, a hub forked per start.

A hub that wakes, restarts or starts is forked from here (see `hubfleet.system.forkserver`), and so is its assignment
exchange service: the start skips the seconds JupyterHub's imports take, and the hubs share those pages of memory
with this process.
"""

from __future__ import annotations

import sys

from hubfleet.system.forkserver import serve
from hubfleet.system.startup import skip_slow_optional_imports


def _preload() -> None:
    skip_slow_optional_imports()
    import jupyterhub.app
    import jupyterhub.proxy  # noqa: F401

    import hubfleet.edu.exchange.service  # the exchange service of hubs with courses or LTI is forked too
    import hubfleet.hub.authenticators
    import hubfleet.hub.config
    import hubfleet.hub.proxy
    import hubfleet.hub.spawner  # noqa: F401


def main() -> None:
    serve(sys.argv[1], preload=_preload)


if __name__ == "__main__":
    main()
