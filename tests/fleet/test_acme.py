"""ACME at the front door against a real ACME server on loopback (Pebble, Let's Encrypt's test CA: it stands in for
Let's Encrypt, which is out of reach): HTTP-01 challenges answered on the front door's plain-HTTP port, the
certificate issued, served and renewed with the same account."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import ssl
from pathlib import Path

import pytest
from cryptography import x509

from hubfleet.fleet import https
from hubfleet.spec.models import FrontDoor
from tests.helpers import free_port, running_fleet, unique_hub, wait_until
from tests.pebble import running_pebble
from tests.tls import served_certificate

PASSWORD = "acme-test-2026"


def _pebble_trust(root_pem: str, folder: Path) -> Path:
    path = folder / "pebble-root.pem"
    path.write_text(root_pem)
    return path


@pytest.mark.needs("root", "cgroups", "acl", "user_env", "proxy", "pebble")
def test_the_front_door_gets_its_certificate_over_acme(tmp_path: Path) -> None:
    http_port = free_port()
    hub = unique_hub("cpa")
    with running_pebble(tmp_path / "pebble", http_port) as pebble:
        trust = pebble.ca.cert_file
        acme = f"{{directory: '{pebble.directory}', agree_tos: true, domains: [localhost], ca_file: {trust}}}"
        door = f"tls: {{acme: {acme}, http_port: {http_port}}}"
        hubs = f"{hub}:\n  auth: {{type: shared-password, password: {PASSWORD}}}\n"
        with running_fleet(tmp_path / "fleet", hubs, [hub], PASSWORD, front_door=door) as fleet:
            root = _pebble_trust(pebble.root(), tmp_path)
            # Served by the running proxy once issued (a self-signed stand-in until then).
            served = wait_until(lambda: _issued(fleet.port, root), 90, "the ACME certificate to be served", every=0.5)
            assert (
                x509.DNSName("localhost")
                in served.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            )
            stored = fleet.state_dir / "frontdoor" / "tls"
            assert (stored / "privkey.pem").stat().st_mode & 0o777 == 0o600
            assert json.loads((stored / "account.json").read_text())["directory"] == pebble.directory
            log = (fleet.state_dir / "supervisor.log").read_text()
            assert "new certificate for localhost" in log


def _issued(port: int, root: Path) -> x509.Certificate | None:
    try:
        return served_certificate("localhost", port, root)
    except (ssl.SSLError, OSError):
        return None


@pytest.mark.needs("pebble")
def test_a_certificate_due_for_renewal_is_renewed_with_the_same_account(tmp_path: Path) -> None:
    """The certificate keeper alone (no fleet), with its plain-HTTP side answering Pebble's challenges."""
    http_port = free_port()
    with running_pebble(tmp_path / "pebble", http_port) as pebble:
        door = FrontDoor.model_validate(
            {
                "port": free_port(),
                "tls": {
                    "http_port": http_port,
                    "acme": {
                        "directory": pebble.directory,
                        "agree_tos": True,
                        "domains": ["localhost"],
                        "ca_file": str(pebble.ca.cert_file),
                    },
                },
            }
        )
        current = {"door": door}
        reloads: list[int] = []
        keeper = https.CertificateKeeper(lambda: current["door"], tmp_path / "tls", lambda: reloads.append(1))

        async def scenario() -> None:
            server = https.http_side(lambda: current["door"], keeper.challenges).listen(http_port, "127.0.0.1")
            try:
                keeper.prepare()
                assert keeper.due() == "the front door serves a self-signed stand-in"
                await keeper.check()
                first = https.CertificateInfo.read(keeper.cert_file)
                assert first is not None and not first.self_signed and "localhost" in first.names
                assert keeper.due() is None
                account = (tmp_path / "tls" / "account.json").read_text()
                first_chain = keeper.cert_file.read_text()
                # Within renew_before of its end: renewed, with the account made the first time.
                life = (first.not_after - dt.datetime.now(dt.UTC)).total_seconds()
                acme = door.tls.acme.model_copy(update={"renew_before": int(life) + 3600})
                current["door"] = door.model_copy(update={"tls": door.tls.model_copy(update={"acme": acme})})
                assert keeper.due().startswith("it expires on")
                await keeper.check()
                second = https.CertificateInfo.read(keeper.cert_file)
                assert second is not None and second.not_before >= first.not_before
                assert keeper.cert_file.read_text() != first_chain
                assert (tmp_path / "tls" / "account.json").read_text() == account
                assert len(reloads) == 2
            finally:
                server.stop()

        asyncio.run(scenario())
