"""The tool's own RSA key pair: made on first start, kept in the hub's state directory (mode 0600), published as a
JWKS. Platforms verify the tool's signed client-credentials assertions (NRPS, AGS) with it."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from joserfc.jwk import RSAKey

TOOL_KEY_FILE = "lti-tool-key.pem"
"""The tool's private key file, in the hub's state directory (the hub makes it; services of the hub sign with it)."""

KEY_BITS = 2048
ALGORITHM = "RS256"


@dataclass(frozen=True)
class ToolKey:
    """The tool's signing key; `kid` is the key's RFC 7638 thumbprint, stable for as long as the key file is."""

    private: RSAKey
    kid: str

    @classmethod
    def load_or_create(cls, path: Path) -> ToolKey:
        """The key in `path` (PEM), generated and written there (0600, atomically) if the file does not exist."""
        path = Path(path)
        try:
            pem = path.read_bytes()
        except FileNotFoundError:
            pem = _create(path)
        key = RSAKey.import_key(pem, {"use": "sig", "alg": ALGORITHM})
        return cls(private=key, kid=key.thumbprint())

    def public_jwk(self) -> dict[str, Any]:
        """The public half as a JWK, with `kid`, `use` and `alg`."""
        return {**self.private.as_dict(private=False), "kid": self.kid, "use": "sig", "alg": ALGORITHM}

    def jwks(self) -> dict[str, Any]:
        """The public JWKS document (`{"keys": [...]}`) to publish."""
        return {"keys": [self.public_jwk()]}


def _create(path: Path) -> bytes:
    """A new private key in `path`; if another process made one first, theirs wins (and is returned)."""
    pem = RSAKey.generate_key(KEY_BITS, private=True).as_pem(private=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
        os.link(tmp, path)  # fails if the key appeared meanwhile: never replace a key platforms already know
    except FileExistsError:
        return path.read_bytes()
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return pem
