"""Server-side memory of LTI logins: the `state` and `nonce` of logins started and not yet finished (single use,
with a TTL and a hard size bound), and the nonces already used (so that an id_token cannot be replayed).

Both are in the hub process's memory: a started login lives minutes, and a hub restart only means the few people
in the middle of a launch click again. Neither can grow without bound, whatever requests arrive.

Login initiations are anonymous (anyone can start one with a platform's public `iss` and `client_id`), so they are
kept fair: `InitiationLimits` rate-limits them per client address and per platform, and when the store is full it
drops the oldest login *of the address holding the most*, so that a flood only ever evicts its own logins, never a
real student's started from elsewhere.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Clock = Callable[[], float]
V = TypeVar("V")


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
    client: str = ""
    """The client address that started it."""


class LoginStore:
    """Pending logins by `state`: each taken at most once, gone after `ttl` seconds, at most `max_entries` (to make
    room, the oldest login of the client address holding the most is dropped)."""

    def __init__(self, ttl: float, max_entries: int, clock: Clock = time.monotonic) -> None:
        if max_entries < 1 or ttl <= 0:
            raise ValueError("a login store needs a positive TTL and room for at least one login")
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._pending: OrderedDict[str, PendingLogin] = OrderedDict()
        self._by_owner: dict[str, OrderedDict[str, None]] = {}
        """client address → its pending states, oldest first."""

    def __len__(self) -> int:
        return len(self._pending)

    def start(
        self,
        *,
        issuer: str,
        client_id: str,
        target_link_uri: str,
        initiation: dict[str, str] | None = None,
        client: str = "",
    ) -> PendingLogin:
        """Record a new login with a fresh random `state` and `nonce`, started by client address `client`."""
        self._expire()
        while len(self._pending) >= self.max_entries:
            greediest = max(self._by_owner, key=lambda owner: len(self._by_owner[owner]))
            self._forget(next(iter(self._by_owner[greediest])))
        login = PendingLogin(
            state=secrets.token_urlsafe(32),
            nonce=secrets.token_urlsafe(32),
            issuer=issuer,
            client_id=client_id,
            target_link_uri=target_link_uri,
            created=self._clock(),
            initiation=dict(initiation or {}),
            client=client,
        )
        self._pending[login.state] = login
        self._by_owner.setdefault(client, OrderedDict())[login.state] = None
        return login

    def take(self, state: str) -> PendingLogin | None:
        """The pending login of `state`, removed (a second take gets None); None if unknown or expired."""
        self._expire()
        return self._forget(state)

    def _forget(self, state: str) -> PendingLogin | None:
        login = self._pending.pop(state, None)
        if login is not None:
            mine = self._by_owner[login.client]
            del mine[state]
            if not mine:
                del self._by_owner[login.client]
        return login

    def _expire(self) -> None:
        deadline = self._clock() - self.ttl
        while self._pending:
            oldest = next(iter(self._pending.values()))
            if oldest.created > deadline:
                break
            self._forget(oldest.state)


class Expiring(Generic[V]):
    """Values by key, oldest first: each forgotten `ttl` seconds after it was added, at most `max_entries` (the
    oldest dropped to make room). What has expired is forgotten before every look-up."""

    def __init__(self, ttl: float, max_entries: int, clock: Clock = time.monotonic) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, V]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        self._expire()
        return key in self._entries

    def add(self, key: str, value: V) -> None:
        self._expire()
        self._entries.pop(key, None)
        while len(self._entries) >= self.max_entries:
            self._entries.popitem(last=False)
        self._entries[key] = (self._clock(), value)

    def get(self, key: str) -> V | None:
        self._expire()
        entry = self._entries.get(key)
        return None if entry is None else entry[1]

    def pop(self, key: str) -> V | None:
        self._expire()
        entry = self._entries.pop(key, None)
        return None if entry is None else entry[1]

    def _expire(self) -> None:
        deadline = self._clock() - self.ttl
        while self._entries:
            key, (added, _) = next(iter(self._entries.items()))
            if added > deadline:
                break
            del self._entries[key]


class UsedNonces:
    """Nonces of id_tokens already accepted, remembered for `ttl` seconds (at most `max_entries`, oldest dropped).

    `ttl` should cover an id_token's lifetime plus the leeway: after that the token is refused as expired anyway.
    """

    def __init__(self, ttl: float, max_entries: int, clock: Clock = time.monotonic) -> None:
        self._seen: Expiring[None] = Expiring(ttl, max_entries, clock)

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, nonce: object) -> bool:
        return nonce in self._seen

    def add(self, nonce: str) -> bool:
        """Remember `nonce`; False if it was already there (a replay)."""
        if nonce in self._seen:
            return False
        self._seen.add(nonce, None)
        return True


class TokenBucket:
    """`rate` per minute, in bursts of up to `rate` at once."""

    def __init__(self, rate: int, now: float) -> None:
        self.capacity = float(rate)
        self.per_second = rate / 60.0
        self.tokens = float(rate)
        self.stamp = now

    def take(self, now: float) -> bool:
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.per_second)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def full(self, now: float) -> bool:
        return self.tokens + (now - self.stamp) * self.per_second >= self.capacity


@dataclass(slots=True)
class Burst:
    """Initiations refused to one key (an address or a platform) since the first refusal of the current burst."""

    started: float
    refused: int = 0


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether an initiation may go on, and the one log line (if any) this request brings."""

    allowed: bool
    log: str | None = None
    retry_after: int = 0


class InitiationLimits:
    """Login initiations per client address and per platform, as token buckets; refusals are counted per burst, so
    that a flood costs one log line when it starts and one when it ends, not one per request. Memory is bounded:
    idle buckets (full again) are dropped, and at most `max_keys` addresses are tracked (the idlest dropped first)."""

    def __init__(
        self, per_address: int, per_platform: int, clock: Clock = time.monotonic, max_keys: int = 100_000
    ) -> None:
        self.per_address = per_address
        self.per_platform = per_platform
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[tuple[str, str], TokenBucket] = OrderedDict()
        self._bursts: dict[tuple[str, str], Burst] = {}

    def check(self, address: str, platform: str) -> Verdict:
        """May `address` start a login with `platform` now? (Counts it if so.)"""
        now = self._clock()
        ended = self._end_bursts(now)
        for key, rate in ((("address", address), self.per_address), (("platform", platform), self.per_platform)):
            bucket = self._bucket(key, rate, now)
            if not bucket.take(now):
                burst = self._bursts.get(key)
                first = burst is None
                if first:
                    burst = self._bursts[key] = Burst(started=now)
                burst.refused += 1
                line = f"LTI login initiations from {key[0]} {key[1]} over {rate}/min: refusing them" if first else None
                return Verdict(False, line or ended, retry_after=max(1, int(60 / rate) + 1))
        return Verdict(True, ended)

    def _bucket(self, key: tuple[str, str], rate: int, now: float) -> TokenBucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            while len(self._buckets) >= self.max_keys:
                self._buckets.popitem(last=False)
            bucket = self._buckets[key] = TokenBucket(rate, now)
        else:
            self._buckets.move_to_end(key)
        return bucket

    def _end_bursts(self, now: float) -> str | None:
        """Close bursts whose key has room again (one summary line for all of them), drop idle buckets."""
        done = [key for key in self._bursts if key not in self._buckets or self._buckets[key].full(now)]
        lines = []
        for key in done:
            burst = self._bursts.pop(key)
            lines.append(f"{burst.refused} from {key[0]} {key[1]} in {now - burst.started:.0f} s")
        while self._buckets:
            key, bucket = next(iter(self._buckets.items()))
            if not bucket.full(now) or key in self._bursts:
                break
            del self._buckets[key]
        return f"LTI login initiations refused over the limit: {'; '.join(lines)}" if lines else None
