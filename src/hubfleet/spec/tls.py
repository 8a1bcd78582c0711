"""HTTPS at the front door (`front_door.tls`): certificate files the operator keeps, or certificates obtained and
renewed over ACME (Let's Encrypt or any ACME CA, HTTP-01)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AnyHttpUrl, Field, field_validator, model_validator

from hubfleet.spec.base import SpecModel
from hubfleet.spec.units import Seconds

LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"


class ACME(SpecModel):
    """Certificates obtained and renewed automatically over ACME, with HTTP-01 challenges answered on `http_port`
    (which must be reachable from the CA as port 80 of every name)."""

    directory: AnyHttpUrl = Field(
        AnyHttpUrl(LETS_ENCRYPT),
        description="the ACME directory URL (default: Let's Encrypt; its staging directory, a campus CA, … work too)",
    )
    email: str | None = Field(None, description="contact address the CA sends expiry warnings to")
    agree_tos: Literal[True] = Field(description="you agree to the CA's terms of service (must be `true`)")
    domains: list[str] = Field(
        default_factory=list,
        description="names the certificate is for (default: the host of `front_door.public_url`)",
    )
    renew_before: Seconds = Field(
        30 * 86400, description="renew when the certificate expires within this long (or after 2/3 of its life)"
    )
    ca_file: Path | None = Field(
        None, description="CA certificates to trust for the ACME directory's HTTPS (a campus CA; default: public CAs)"
    )

    @field_validator("domains")
    @classmethod
    def _names(cls, domains: list[str]) -> list[str]:
        for name in domains:
            if not name or "/" in name or ":" in name or " " in name:
                raise ValueError(f"{name!r} is not a host name")
        return domains


class TLS(SpecModel):
    """HTTPS at the front door: plain HTTP on `http_port` only redirects (and answers ACME challenges)."""

    cert_file: Path | None = Field(
        None,
        description="certificate chain (PEM), the server's certificate first; replace the file to renew it (read "
        "again within ten seconds, no restart)",
    )
    key_file: Path | None = Field(None, description="the certificate's private key (PEM)")
    acme: ACME | None = Field(None, description="obtain and renew the certificate over ACME instead of files")
    http_port: int = Field(
        80, ge=0, le=65535, description="plain-HTTP port: redirects to HTTPS and answers ACME challenges (0: none)"
    )
    hsts: Seconds = Field(
        365 * 86400, description="Strict-Transport-Security max-age browsers get (0: send no HSTS header)"
    )

    @model_validator(mode="after")
    def _one_source(self) -> TLS:
        files = self.cert_file is not None or self.key_file is not None
        if files and self.acme is not None:
            raise ValueError("give cert_file and key_file, or acme, not both")
        if not files and self.acme is None:
            raise ValueError("give cert_file and key_file, or acme")
        if files and (self.cert_file is None or self.key_file is None):
            raise ValueError("give both cert_file and key_file")
        if self.acme is not None and self.http_port == 0:
            raise ValueError("ACME's HTTP-01 challenges need http_port")
        return self
