"""Pebble, Let's Encrypt's test ACME server (Debian's `pebble`), on loopback: it stands in for a public ACME CA,
which is out of this machine's reach. It validates HTTP-01 challenges on the port the test names."""

from __future__ import annotations

import contextlib
import json
import os
import ssl
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import free_port, wait_until
from tests.requirements import need
from tests.tls import LocalCA


@dataclass
class Pebble:
    directory: str
    management: str
    ca: LocalCA
    """The CA of Pebble's own HTTPS (what an ACME client must trust for the directory)."""

    def root(self) -> str:
        """The root (PEM) Pebble signs certificates with (made anew at every start)."""
        with urllib.request.urlopen(f"{self.management}/roots/0", context=self.ca.context(), timeout=10) as answer:
            return answer.read().decode()


@contextlib.contextmanager
def running_pebble(folder: Path, http_port: int) -> Iterator[Pebble]:
    """Pebble on 127.0.0.1, validating HTTP-01 at `localhost:<http_port>`; stopped on exit."""
    need("pebble")
    folder.mkdir(parents=True, exist_ok=True)
    ca = LocalCA.create(folder / "ca", "pebble test CA")
    cert, key = ca.issue("pebble")
    listen, management = free_port(), free_port()
    config = folder / "pebble.json"
    settings = {
        "listenAddress": f"127.0.0.1:{listen}",
        "managementListenAddress": f"127.0.0.1:{management}",
        "certificate": str(cert),
        "privateKey": str(key),
        "httpPort": http_port,
        "tlsPort": free_port(),
        "ocspResponderURL": "",
        "externalAccountBindingRequired": False,
    }
    config.write_text(json.dumps({"pebble": settings}))
    env = {**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0", "PEBBLE_AUTHZREUSE": "0"}
    with open(folder / "pebble.log", "wb") as log:
        process = subprocess.Popen(["pebble", "-config", str(config)], stdout=log, stderr=subprocess.STDOUT, env=env)
    pebble = Pebble(f"https://127.0.0.1:{listen}/dir", f"https://127.0.0.1:{management}", ca)
    try:
        wait_until(lambda: _answers(pebble.directory, ca.context()), 30, "pebble to answer", every=0.1)
        yield pebble
    finally:
        process.terminate()
        process.wait(10)


def _answers(url: str, context: ssl.SSLContext) -> bool:
    try:
        with urllib.request.urlopen(url, context=context, timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False
