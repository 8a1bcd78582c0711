"""Platforms' public key sets (JWKS), fetched over HTTP and cached per URL.

A key set is fetched again when a token names a `kid` it does not hold (the platform rotated its key), but at most
once per `min_refresh` seconds per URL: a flood of launches with made-up kids costs the LMS one request, not one
each. The cache holds at most `max_sets` key sets (least recently used dropped) of at most `max_keys` keys each.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from joserfc.errors import JoseError
from joserfc.jwk import RSAKey

MAX_DOCUMENT_BYTES = 256 * 1024
FETCH_TIMEOUT = 10.0


class KeyLookupError(Exception):
    """No key could be found for a token (unknown kid after a refresh, or the key set could not be fetched)."""

    def __init__(self, message: str, *, unavailable: bool = False) -> None:
        super().__init__(message)
        self.unavailable = unavailable
        """True when the platform's key set could not be fetched at all (not the token's fault)."""


@dataclass
class _KeySet:
    keys: dict[str, RSAKey]
    fetched: float


class PlatformKeys:
    """RSA signing keys of LTI platforms by (jwks_url, kid)."""

    def __init__(
        self,
        client: httpx.AsyncClient | None = None,
        *,
        min_refresh: float = 10.0,
        max_age: float = 3600.0,
        max_sets: int = 64,
        max_keys: int = 32,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self.min_refresh = min_refresh
        self.max_age = max_age
        self.max_sets = max_sets
        self.max_keys = max_keys
        self._clock = clock
        self._sets: OrderedDict[str, _KeySet] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}
        self.fetches = 0
        """Key sets fetched so far (for tests and the bench)."""

    async def key(self, jwks_url: str, kid: str) -> RSAKey:
        """The key `kid` of the platform whose JWKS is at `jwks_url` (fetching or refreshing the set if needed)."""
        cached = self._fresh(jwks_url)
        if cached is not None and kid in cached.keys:
            self._sets.move_to_end(jwks_url)
            return cached.keys[kid]
        lock = self._locks.setdefault(jwks_url, asyncio.Lock())
        async with lock:
            current = self._sets.get(jwks_url)
            if current is not None and kid in current.keys and self._fresh(jwks_url) is not None:
                return current.keys[kid]
            if current is None or self._clock() - current.fetched >= self.min_refresh:
                current = await self._fetch(jwks_url, stale=current)
        if kid not in current.keys:
            raise KeyLookupError(f"the platform's key set has no key {kid[:64]!r}")
        return current.keys[kid]

    def _fresh(self, jwks_url: str) -> _KeySet | None:
        cached = self._sets.get(jwks_url)
        if cached is None or self._clock() - cached.fetched > self.max_age:
            return None
        return cached

    async def _fetch(self, jwks_url: str, stale: _KeySet | None) -> _KeySet:
        self.fetches += 1
        try:
            keys = await self._download(jwks_url)
        except (httpx.HTTPError, ValueError) as exc:
            if stale is not None:  # keep verifying with the keys we have; try again after min_refresh
                stale.fetched = self._clock()
                return stale
            raise KeyLookupError(f"the platform's key set could not be fetched: {exc}", unavailable=True) from exc
        entry = _KeySet(keys, self._clock())
        self._sets[jwks_url] = entry
        self._sets.move_to_end(jwks_url)
        while len(self._sets) > self.max_sets:
            dropped, _ = self._sets.popitem(last=False)
            self._locks.pop(dropped, None)
        return entry

    async def _download(self, jwks_url: str) -> dict[str, RSAKey]:
        client = self._client or httpx.AsyncClient(timeout=FETCH_TIMEOUT)
        try:
            async with client.stream("GET", jwks_url, headers={"Accept": "application/json"}) as response:
                response.raise_for_status()
                body = b""
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_DOCUMENT_BYTES:
                        raise ValueError("key set document too large")
        finally:
            if self._client is None:
                await client.aclose()
        return parse_jwks(body, self.max_keys)


def parse_jwks(body: bytes | str, max_keys: int = 32) -> dict[str, RSAKey]:
    """kid → RSA signing key of a JWKS document (keys without kid, of another type or use are skipped)."""
    document = json.loads(body)
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ValueError("not a JWKS document (no 'keys' list)")
    keys: dict[str, RSAKey] = {}
    for entry in entries:
        if len(keys) >= max_keys:
            break
        if not isinstance(entry, dict) or entry.get("kty") != "RSA" or not isinstance(entry.get("kid"), str):
            continue
        if entry.get("use", "sig") != "sig" or entry.get("alg", "RS256") != "RS256":
            continue
        try:
            keys[entry["kid"]] = RSAKey.import_key(entry)
        except (JoseError, ValueError, TypeError):
            continue
    return keys
