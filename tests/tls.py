"""Certificates for HTTPS tests, made in the test: a private CA and server certificates it signs."""

from __future__ import annotations

import ipaddress
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hubfleet.fleet.https import certificate_builder, key_pem, new_key


@dataclass
class LocalCA:
    """A certificate authority of the test's own: its certificate file is what clients trust."""

    folder: Path
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def create(cls, folder: Path, name: str = "hubfleet test CA") -> LocalCA:
        folder.mkdir(parents=True, exist_ok=True)
        key = new_key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = (
            certificate_builder(subject, subject, key, days=30)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(key, hashes.SHA256())
        )
        ca = cls(folder, key, cert)
        ca.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return ca

    @property
    def cert_file(self) -> Path:
        return self.folder / "ca.pem"

    def context(self) -> ssl.SSLContext:
        """A TLS client context that trusts this CA only."""
        return ssl.create_default_context(cafile=str(self.cert_file))

    def issue(
        self, stem: str, names: tuple[str, ...] = ("localhost", "127.0.0.1"), days: int = 30
    ) -> tuple[Path, Path]:
        """A server certificate for `names` (host names or IP addresses): (chain file, key file)."""
        key = new_key()
        alt: list[x509.GeneralName] = []
        for name in names:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                alt.append(x509.DNSName(name))
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
        cert = (
            certificate_builder(subject, self.cert.subject, key, days)
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        chain, key_file = self.folder / f"{stem}.pem", self.folder / f"{stem}.key"
        chain.write_bytes(
            cert.public_bytes(serialization.Encoding.PEM) + self.cert.public_bytes(serialization.Encoding.PEM)
        )
        key_file.write_text(key_pem(key))
        key_file.chmod(0o600)
        return chain, key_file


def served_certificate(host: str, port: int, ca: Path) -> x509.Certificate:
    """The certificate a real TLS handshake with `host:port` gets, verified against `ca` (hostname included)."""
    context = ssl.create_default_context(cafile=str(ca))
    with (
        socket.create_connection((host, port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)
