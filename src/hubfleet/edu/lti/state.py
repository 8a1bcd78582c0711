"""Server-side memory of LTI logins: the `state` and `nonce` of logins started and not yet finished (single use,
with a TTL and a hard size bound), and the nonces already used (so that an id_token cannot be replayed).

Both are in the hub process's memory: a started login lives minutes, and a hub restart only means the few people
in the middle of a launch click again. Neither can grow without bound, whatever requests arrive.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class PendingLogin:
    """A login initiation the platform has not yet answered with an id_token."""

    state: str
    nonce: str
    issuer: str
    client_id: str
    target_link_uri: str
    created: float
    initiation: dict[str, str] = field(default_factory=dict)
    """The initiation's parameters (iss, login_hint, …): to start the login again in a new window."""


class LoginStore:
    """Pending logins by `state`: each taken at most once, gone after `ttl` seconds, at most `max_entries` (the oldest
    is dropped to make room)."""

    def __init__(self, ttl: float, max_entries: int, clock: Clock = time.monotonic) -> None:
        if max_entries < 1 or ttl <= 0:
            raise ValueError("a login store needs a positive TTL and room for at least one login")
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._pending: OrderedDict[str, PendingLogin] = OrderedDict()

    def __len__(self) -> int:
        return len(self._pending)

    def start(
        self, *, issuer: str, client_id: str, target_link_uri: str, initiation: dict[str, str] | None = None
    ) -> PendingLogin:
        """Record a new login with a fresh random `state` and `nonce`."""
        self._expire()
        while len(self._pending) >= self.max_entries:
            self._pending.popitem(last=False)
        login = PendingLogin(
            state=secrets.token_urlsafe(32),
            nonce=secrets.token_urlsafe(32),
            issuer=issuer,
            client_id=client_id,
            target_link_uri=target_link_uri,
            created=self._clock(),
            initiation=dict(initiation or {}),
        )
        self._pending[login.state] = login
        return login

    def take(self, state: str) -> PendingLogin | None:
        """The pending login of `state`, removed (a second take gets None); None if unknown or expired."""
        self._expire()
        return self._pending.pop(state, None)

    def _expire(self) -> None:
        deadline = self._clock() - self.ttl
        while self._pending:
            oldest = next(iter(self._pending.values()))
            if oldest.created > deadline:
                break
            self._pending.popitem(last=False)


class UsedNonces:
    """Nonces of id_tokens already accepted, remembered for `ttl` seconds (at most `max_entries`, oldest dropped).

    `ttl` should cover an id_token's lifetime plus the leeway: after that the token is refused as expired anyway.
    """

    def __init__(self, ttl: float, max_entries: int, clock: Clock = time.monotonic) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, nonce: object) -> bool:
        self._expire()
        return nonce in self._seen

    def add(self, nonce: str) -> bool:
        """Remember `nonce`; False if it was already there (a replay)."""
        self._expire()
        if nonce in self._seen:
            return False
        while len(self._seen) >= self.max_entries:
            self._seen.popitem(last=False)
        self._seen[nonce] = self._clock()
        return True

    def _expire(self) -> None:
        deadline = self._clock() - self.ttl
        while self._seen:
            nonce, seen = next(iter(self._seen.items()))
            if seen > deadline:
                break
            del self._seen[nonce]
