"""HTTPS at the front door (`front_door.tls`): the certificate the proxy serves, kept current; the plain-HTTP side
that redirects to HTTPS and answers ACME's HTTP-01 challenges; the proxy process that serves both.

- **Given files** (`cert_file`, `key_file`): the proxy reads them; when they change on disk (a renewal by certbot or
  by hand) it reads them again within ten seconds, without a restart or a dropped connection.
- **ACME** (`acme:`): the certificate, its key and the ACME account live in `frontdoor/tls/` of the state
  directory. Issued over ACME with certbot's `acme` library (HTTP-01, any directory URL), checked every hour and
  renewed `renew_before` its end (or after two thirds of its life); until the first one is issued the proxy serves
  a self-signed stand-in, and failures are retried after 1, 5, 15, then every 60 minutes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from tornado import web

from hubfleet.common.files import write_private
from hubfleet.spec.models import FrontDoor
from hubfleet.spec.tls import ACME

log = logging.getLogger("hubfleet.https")

CHALLENGE_PATH = "/.well-known/acme-challenge/"

RETRY_AFTER_FAILURE = (60.0, 300.0, 900.0, 3600.0)
"""Seconds before the next try after 1, 2, 3, 4+ failed ACME orders in a row."""

CHECK_EVERY = 3600.0
"""Seconds between two looks at an ACME certificate that is fine."""

WATCH_EVERY = 10.0
"""Seconds between two looks at given certificate files."""


@dataclass(frozen=True)
class CertificateInfo:
    """What the proxy serves: its names and validity."""

    names: frozenset[str]
    not_before: dt.datetime
    not_after: dt.datetime
    self_signed: bool

    @classmethod
    def read(cls, path: Path) -> CertificateInfo | None:
        """The first certificate of the PEM file `path` (None: missing or unreadable)."""
        try:
            cert = x509.load_pem_x509_certificate(path.read_bytes())
        except (OSError, ValueError):
            return None
        try:
            names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            dns = {str(name) for name in names.get_values_for_type(x509.DNSName)}
            dns |= {str(ip) for ip in names.get_values_for_type(x509.IPAddress)}
        except x509.ExtensionNotFound:
            dns = set()
        return cls(frozenset(dns), cert.not_valid_before_utc, cert.not_valid_after_utc, cert.issuer == cert.subject)

    def renew_at(self, renew_before: float) -> dt.datetime:
        """When to renew: `renew_before` seconds before the end, or after two thirds of its life, whichever first."""
        by_margin = self.not_after - dt.timedelta(seconds=renew_before)
        by_life = self.not_before + (self.not_after - self.not_before) * 2 / 3
        return min(by_margin, by_life)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def certificate_builder(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey, days: int
) -> x509.CertificateBuilder:
    """A certificate of `subject` for `key`'s public key, by `issuer`, with a random serial number, valid from five
    minutes ago (clocks differ) for `days` days; extensions and the signature are the caller's."""
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
    )


def self_signed(names: list[str], days: int = 7) -> tuple[str, str]:
    """A stand-in certificate (PEM) and its key, served until the CA issued the real one."""
    key = new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0] if names else "hubfleet")])
    cert = (
        certificate_builder(subject, subject, key, days)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name) for name in names]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem(key)


class Challenges:
    """HTTP-01 answers the plain-HTTP side gives while an order is pending: token → key authorization."""

    def __init__(self) -> None:
        self._answers: dict[str, str] = {}

    def add(self, token: str, validation: str) -> None:
        self._answers[token] = validation

    def remove(self, token: str) -> None:
        self._answers.pop(token, None)

    def answer(self, token: str) -> str | None:
        return self._answers.get(token)


def issue(
    acme: ACME, names: list[str], account_dir: Path, answers: Challenges, timeout: float = 180.0
) -> tuple[str, str]:
    """Order a certificate for `names` from the ACME CA (blocking: run it in a thread); its chain and key (PEM).

    The account key and registration are kept in `account_dir` and used again for renewals."""
    import josepy
    from acme import challenges, client, crypto_util, messages

    key_file, registration_file = account_dir / "account_key.pem", account_dir / "account.json"
    if key_file.exists():
        account_key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    else:
        account_key = new_key()
        write_private(key_file, key_pem(account_key))
    jwk = josepy.JWKEC(key=account_key)
    verify: bool | str = str(acme.ca_file) if acme.ca_file is not None else True
    net = client.ClientNetwork(jwk, alg=josepy.ES256, user_agent="hubfleet", verify_ssl=verify)
    directory = client.ClientV2.get_directory(str(acme.directory), net)
    ca = client.ClientV2(directory, net=net)
    known = json.loads(registration_file.read_text()) if registration_file.exists() else {}
    if known.get("directory") == str(acme.directory):
        net.account = messages.RegistrationResource.from_json(known["registration"])
    else:
        registration = messages.NewRegistration.from_data(email=acme.email, terms_of_service_agreed=True)
        account = ca.new_account(registration)
        write_private(
            registration_file, json.dumps({"directory": str(acme.directory), "registration": account.to_json()})
        )
    cert_key = key_pem(new_key())
    order = ca.new_order(crypto_util.make_csr(cert_key.encode(), names))
    tokens = []
    try:
        for authorization in order.authorizations:
            if authorization.body.status == messages.STATUS_VALID:
                continue
            challenge = next((c for c in authorization.body.challenges if isinstance(c.chall, challenges.HTTP01)), None)
            if challenge is None:
                raise RuntimeError(f"the CA offers no HTTP-01 challenge for {authorization.body.identifier.value}")
            response, validation = challenge.response_and_validation(jwk)
            token = challenge.chall.encode("token")
            answers.add(token, validation)
            tokens.append(token)
            ca.answer_challenge(challenge, response)
        deadline = dt.datetime.now() + dt.timedelta(seconds=timeout)
        order = ca.poll_and_finalize(order, deadline=deadline)
    finally:
        for token in tokens:
            answers.remove(token)
    return order.fullchain_pem, cert_key


class CertificateKeeper:
    """Keeps the certificate the proxy serves current (given files, or ACME), and tells the proxy to read it again
    (`reload`) when it changed."""

    def __init__(self, door: Callable[[], FrontDoor], folder: Path, reload: Callable[[], None]):
        self._door = door
        self.folder = folder
        self.reload = reload
        self.challenges = Challenges()
        self._failures = 0
        self._seen: tuple[float, float] | None = None

    @property
    def door(self) -> FrontDoor:
        return self._door()

    @property
    def cert_file(self) -> Path:
        tls = self.door.tls
        assert tls is not None
        return tls.cert_file if tls.cert_file is not None else self.folder / "fullchain.pem"

    @property
    def key_file(self) -> Path:
        tls = self.door.tls
        assert tls is not None
        return tls.key_file if tls.key_file is not None else self.folder / "privkey.pem"

    @property
    def acme(self) -> ACME | None:
        tls = self.door.tls
        return tls.acme if tls is not None else None

    def prepare(self) -> None:
        """Before the proxy starts: with ACME and no certificate yet, a self-signed stand-in to serve meanwhile."""
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.acme is not None and CertificateInfo.read(self.cert_file) is None:
            names = self.door.certificate_names()
            log.warning("no certificate for %s yet: serving a self-signed one until the CA issues it", names)
            self._write(*self_signed(names))
        self._seen = self._stamp()

    def period(self) -> float:
        """Seconds until the next look."""
        if self.acme is None:
            return WATCH_EVERY
        if self._failures:
            return RETRY_AFTER_FAILURE[min(self._failures, len(RETRY_AFTER_FAILURE)) - 1]
        return CHECK_EVERY

    def due(self, now: dt.datetime | None = None) -> str | None:
        """Why the ACME certificate must be (re)issued now (None: it is fine)."""
        acme = self.acme
        assert acme is not None
        info = CertificateInfo.read(self.cert_file)
        names = set(self.door.certificate_names())
        now = now or dt.datetime.now(dt.UTC)
        if info is None:
            return "there is no certificate"
        if info.self_signed:
            return "the front door serves a self-signed stand-in"
        if not names <= info.names:
            return f"it is not for {', '.join(sorted(names - info.names))}"
        if now >= info.renew_at(acme.renew_before):
            return f"it expires on {info.not_after:%Y-%m-%d %H:%M} UTC"
        return None

    async def check(self) -> None:
        """One look: renew an ACME certificate that is due, or notice given files that changed."""
        if self.acme is None:
            stamp = self._stamp()
            if stamp != self._seen:
                self._seen = stamp
                log.info("the certificate files changed: the front door reads them again")
                self.reload()
            return
        why = self.due()
        if why is None:
            return
        names = self.door.certificate_names()
        log.info("requesting a certificate for %s from %s (%s)", ", ".join(names), self.acme.directory, why)
        try:
            chain, key = await asyncio.to_thread(issue, self.acme, names, self.folder, self.challenges)
        except Exception as exc:
            self._failures += 1
            log.error(
                "the ACME CA did not issue a certificate for %s: %s (next try in %.0f min)",
                names,
                exc,
                self.period() / 60,
            )
            return
        self._failures = 0
        self._write(chain, key)
        info = CertificateInfo.read(self.cert_file)
        log.info("new certificate for %s, valid until %s", ", ".join(names), info.not_after if info else "?")
        self.reload()

    def _write(self, chain: str, key: str) -> None:
        write_private(self.key_file, key)
        write_private(self.cert_file, chain)

    def _stamp(self) -> tuple[float, float] | None:
        try:
            return (self.cert_file.stat().st_mtime, self.key_file.stat().st_mtime)
        except OSError:
            return None


class ChallengeHandler(web.RequestHandler):
    """`/.well-known/acme-challenge/<token>` on the plain-HTTP side."""

    def initialize(self, challenges: Challenges) -> None:
        self.challenges = challenges

    def get(self, token: str) -> None:
        answer = self.challenges.answer(token)
        if answer is None:
            raise web.HTTPError(404)
        self.set_header("Content-Type", "text/plain")
        self.finish(answer)


class RedirectHandler(web.RequestHandler):
    """Everything else on the plain-HTTP side: the same path on the HTTPS front door (301, or 308 for requests
    with a body, which must be sent again as they were)."""

    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

    def initialize(self, door: Callable[[], FrontDoor]) -> None:
        self.door = door

    def _redirect(self, *_: str) -> None:
        status = 301 if self.request.method in ("GET", "HEAD") else 308
        self.redirect(self.door().url + self.request.uri, status=status)

    get = head = post = put = patch = delete = options = _redirect


def http_side(door: Callable[[], FrontDoor], challenges: Challenges) -> web.Application:
    """The front door's plain-HTTP port with TLS on: ACME answers and redirects, nothing else."""
    return web.Application(
        [
            (CHALLENGE_PATH + r"([A-Za-z0-9_-]+)", ChallengeHandler, {"challenges": challenges}),
            (r".*", RedirectHandler, {"door": door}),
        ]
    )
