"""The front door's proxy process: configurable-http-proxy's own proxy (its routing table, REST API and websocket
handling), started from CHP's library by `door_proxy.mjs` instead of from its command line, over HTTP or HTTPS.

The script adds what the command line does not offer: a 400 for a request path that is not valid percent-encoding
(CHP's route lookup answers those with 500), and with HTTPS a plain-HTTP side on loopback, Strict-Transport-Security
and the certificate read again on SIGHUP (see `hubfleet.fleet.https`).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from hubfleet.fleet.https import CertificateKeeper
from hubfleet.spec.models import FrontDoor

SETTINGS_ENV = "HUBFLEET_DOOR_PROXY"

SCRIPT = Path(__file__).parent / "door_proxy.mjs"
"""The front door's configurable-http-proxy (see the script's header)."""


def chp_package(command: str) -> Path:
    """configurable-http-proxy's package folder, from its command (`…/configurable-http-proxy/bin/…`)."""
    package = Path(os.path.realpath(command)).parents[1]
    if not (package / "lib" / "configproxy.js").is_file():
        raise RuntimeError(
            f"{command} is not configurable-http-proxy's own command (no lib/configproxy.js beside it): the front "
            "door needs the package as npm installs it (make setup)"
        )
    return package


def argv() -> list[str]:
    """The command of the front door's proxy: Node.js running the script (CHP's package comes in `settings`)."""
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node not found on the PATH: the front door's proxy runs on Node.js (make setup)")
    return [node, str(SCRIPT)]


def settings(
    chp_command: str,
    door: FrontDoor,
    api_port: int,
    default: str,
    keeper: CertificateKeeper | None = None,
    internal_port: int | None = None,
) -> str:
    """`SETTINGS_ENV` for the script (JSON; no secrets): HTTPS when `keeper` holds the certificate, with a plain
    HTTP side on loopback at `internal_port`."""
    document: dict[str, object] = {
        "chp": str(chp_package(chp_command)),
        "ip": door.host,
        "port": door.port,
        "apiPort": api_port,
        "defaultTarget": default,
        "logLevel": "warn",
    }
    if keeper is not None:
        assert door.tls is not None and internal_port is not None
        document |= {
            "internalPort": internal_port,
            "cert": str(keeper.cert_file),
            "key": str(keeper.key_file),
            "hsts": door.tls.hsts,
        }
    return json.dumps(document)
