"""HTTPS at the front door with certificate files the operator gives (made here by a CA of the test's own): a real
TLS client verifies the chain and name, every answer carries HSTS, cookies are Secure, plain HTTP redirects, the
fleet's own loopback traffic (a sleeping hub's woken request, users' servers, `hubfleet check`) keeps working, and a
replaced certificate is served without a restart."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from pathlib import Path

import httpx
import pytest

from tests.browser import chromium
from tests.helpers import RunningFleet, free_port, running_fleet, unique_hub, wait_until
from tests.tls import LocalCA, served_certificate

PASSWORD = "https-test-2026"
HSTS = "max-age=31536000"


def hubs(awake: str, sleepy: str) -> str:
    return f"""
        {awake}:
          auth: {{type: shared-password, password: {PASSWORD}, allowed_users: [ada]}}
        {sleepy}:
          auth: {{type: shared-password, password: {PASSWORD}, allowed_users: [ada]}}
          sleep: {{after: 1h}}
        """


@pytest.mark.needs("root", "cgroups", "acl", "user_env", "proxy")
def test_https_front_door_with_given_certificates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ca = LocalCA.create(tmp_path / "ca")
    cert, key = ca.issue("front-door")
    http_port = free_port()
    awake, sleepy = unique_hub("cps"), unique_hub("cpz")
    door = f"tls: {{cert_file: {cert}, key_file: {key}, http_port: {http_port}}}"
    with running_fleet(tmp_path / "fleet", hubs(awake, sleepy), [awake, sleepy], PASSWORD, front_door=door) as fleet:
        assert fleet.url.startswith("https://")
        assert fleet.status()["front_door"] == fleet.url
        served = served_certificate("127.0.0.1", fleet.port, ca.cert_file)
        assert served.serial_number == _serial(cert)

        with httpx.Client(verify=ca.context(), follow_redirects=False, timeout=30) as client:
            front = client.get(fleet.url + "/")
            assert front.status_code == 200
            assert front.headers["strict-transport-security"] == HSTS
            login_page = client.get(fleet.hub_url(awake) + "hub/login")
            assert login_page.status_code == 200
            assert login_page.headers["strict-transport-security"] == HSTS

            # Plain HTTP: the same path on HTTPS (301; 308 keeps a POST a POST), and nothing is served over it.
            plain = f"http://127.0.0.1:{http_port}"
            moved = client.get(f"{plain}/hubs/{awake}/hub/login?next=%2Fx")
            assert moved.status_code == 301
            assert moved.headers["location"] == f"{fleet.url}/hubs/{awake}/hub/login?next=%2Fx"
            assert client.post(f"{plain}/hubs/{awake}/hub/login", data={"a": "b"}).status_code == 308
            with pytest.raises(httpx.HTTPError):
                httpx.get(f"http://127.0.0.1:{fleet.port}/", timeout=10)

            # A sleeping hub's API call is held while it wakes and forwarded over the proxy's loopback side.
            woken = client.get(fleet.hub_url(sleepy) + "hub/api/", headers={"Accept": "application/json"}, timeout=90)
            assert woken.status_code == 200, woken.text
            assert "version" in woken.json()

        # A user logs in over HTTPS: JupyterHub's cookies are Secure; the user's server and a kernel work.
        async def log_in() -> list[str]:
            async with httpx.AsyncClient(verify=ca.context(), timeout=60) as client:
                login = await client.get(fleet.hub_url(awake) + "hub/login")
                xsrf = client.cookies.get("_xsrf")
                response = await client.post(
                    fleet.hub_url(awake) + "hub/login",
                    data={"username": "ada", "password": PASSWORD, "_xsrf": xsrf or ""},
                    follow_redirects=False,
                )
                assert response.status_code == 302, response.text
                return [*login.headers.get_list("set-cookie"), *response.headers.get_list("set-cookie")]

        cookies = asyncio.run(log_in())
        assert len(cookies) >= 2 and all("Secure" in cookie for cookie in cookies), cookies

        # `hubfleet check` goes through the HTTPS front door (trusting the test's CA) and runs code in a kernel.
        monkeypatch.setenv("SSL_CERT_FILE", str(ca.cert_file))
        check = fleet.cli("check", awake, "--json", check=False, timeout=240)
        assert check.returncode == 0, check.stdout + check.stderr

        browser_logs_in(fleet, awake, cert)

        # A renewed certificate (the files replaced) is served within seconds, by the same proxy process.
        proxy_pid = (fleet.state_dir / "frontdoor" / "proxy.pid").read_text().strip()
        renewed_cert, renewed_key = ca.issue("renewed")
        key.write_bytes(renewed_key.read_bytes())
        cert.write_bytes(renewed_cert.read_bytes())
        renewed = _serial(renewed_cert)
        wait_until(
            lambda: served_certificate("127.0.0.1", fleet.port, ca.cert_file).serial_number == renewed,
            40,
            "the renewed certificate to be served",
            every=0.5,
        )
        assert (fleet.state_dir / "frontdoor" / "proxy.pid").read_text().strip() == proxy_pid


def _serial(chain: Path) -> int:
    from cryptography import x509

    return x509.load_pem_x509_certificate(chain.read_bytes()).serial_number


def test_tls_needs_readable_matching_files(tmp_path: Path) -> None:
    from hubfleet.spec import SpecError, parse

    ca = LocalCA.create(tmp_path)
    cert, _ = ca.issue("one")
    _, other_key = ca.issue("two")
    text = f"""
name: t
front_door: {{port: 443, tls: {{cert_file: {cert}, key_file: {other_key}}}}}
hubs:
  a: {{auth: {{type: shared-password, password: long-enough}}}}
"""
    with pytest.raises(SpecError) as failure:
        parse(text, tmp_path / "fleet.yaml")
    assert "are not a PEM certificate chain and its key" in str(failure.value)
    fleet = parse(text.replace(str(other_key), str(cert.with_suffix(".key"))), tmp_path / "fleet.yaml")
    assert fleet.front_door.url == "https://127.0.0.1"
    with pytest.raises(SpecError) as failure:
        parse(text.replace(str(other_key), str(tmp_path / "missing.key")), tmp_path / "fleet.yaml")
    assert "cannot read" in str(failure.value)


def spki_hash(chain: Path) -> str:
    """base64 SHA-256 of the certificate's public key, as Chromium's --ignore-certificate-errors-spki-list takes it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = x509.load_pem_x509_certificate(chain.read_bytes())
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def browser_logs_in(fleet: RunningFleet, hub: str, cert: Path) -> None:
    """Debian's Chromium (Playwright) trusts exactly the front door's key and logs in through the hub's form."""
    with chromium("https", f"--ignore-certificate-errors-spki-list={spki_hash(cert)}") as (browser, artifacts):
        page = browser.new_context().new_page()
        page.goto(fleet.hub_url(hub) + "hub/login")
        assert page.evaluate("window.isSecureContext") is True  # no plain-HTTP warning on the login page
        page.fill("#username_input", "ada")
        page.fill("#password_input", PASSWORD)
        page.click("#login_submit")
        page.wait_for_url("**/hubs/*/**", timeout=60_000)
        cookies = {cookie["name"]: cookie for cookie in page.context.cookies()}
        session = cookies["jupyterhub-session-id"]
        assert session["secure"] and session["httpOnly"]
        assert all(cookie["secure"] for cookie in cookies.values()), cookies
        page.screenshot(path=artifacts / "https-login.png")
