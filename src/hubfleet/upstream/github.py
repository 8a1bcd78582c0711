"""hubfleet's GitHub client, on githubkit: GraphQL queries and conditional, paged REST reads, with GitHub's rate limits
waited out (up to `max_wait`), server errors retried with backoff, and every request counted.

The token is handed to githubkit's token auth and never put in a message, a log line or an exception.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
from githubkit import GitHub, TokenAuthStrategy
from githubkit.exception import (
    GitHubException,
    GraphQLFailed,
    RateLimitExceeded,
    RequestError,
    RequestFailed,
)
from githubkit.retry import RetryOption

from hubfleet.spec.organisation import GitHubSync

log = logging.getLogger(__name__)

RATE_LIMIT_RETRIES = 5
"""Rate-limit waits in a row for one request before the sync gives up on it."""


class GitHubError(Exception):
    """GitHub could not be read (the message says why and what to do; it never holds the token)."""


class RateLimitStop(GitHubError):
    """GitHub asked for a longer wait than `max_wait`: the sync stops, keeping what it fetched."""

    def __init__(self, wait: float):
        super().__init__(
            f"GitHub's rate limit asks for a wait of {wait:.0f} s, longer than max_wait: "
            "what was fetched is kept; run the sync again later and it resumes where it stopped"
        )
        self.wait = wait


class NotFound(GitHubError):
    """A user, organisation or repository GitHub does not know (or the token may not see)."""


def read_token(settings: GitHubSync) -> str:
    """The token from `token_file`, else from the environment variable `token_env` (GitHubError if neither)."""
    if settings.token_file is not None:
        try:
            token = settings.token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise GitHubError(f"cannot read the GitHub token file {settings.token_file}: {exc.strerror}") from None
        if not token:
            raise GitHubError(f"the GitHub token file {settings.token_file} is empty")
        return token
    token = os.environ.get(settings.token_env, "").strip()
    if not token:
        raise GitHubError(
            f"no GitHub token: set organisation.github.token_file in the fleet file, or ${settings.token_env}"
        )
    return token


@dataclass(frozen=True)
class Page:
    """One REST page: its status (200, or 304 when unchanged), JSON body, validator and the next page's URL."""

    status: int
    data: Any
    etag: str | None
    next_url: str | None


Waiting = Callable[[float, str], None]
"""Told before each wait: seconds, and why (shown as progress)."""


class GitHubClient:
    """GitHub's REST and GraphQL APIs, through githubkit, with our retry and wait policy."""

    def __init__(self, settings: GitHubSync, token: str, on_wait: Waiting | None = None):
        self.settings = settings
        self.requests = 0
        self.waited = 0.0
        self._on_wait = on_wait
        self._lock = threading.Lock()
        self._github = GitHub(
            TokenAuthStrategy(token),
            base_url=str(settings.api_url),
            user_agent="hubfleet-contributions",
            timeout=float(settings.timeout),
            http_cache=False,  # conditional requests are ours: their validators live in the fleet database
            auto_retry=self._retry,
            event_hooks={"request": [self._count]},
        )

    def __enter__(self) -> GitHubClient:
        self._github.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._github.__exit__(*exc)  # type: ignore[arg-type]

    def _count(self, _request: httpx.Request) -> None:
        with self._lock:
            self.requests += 1

    def _wait(self, seconds: float, why: str) -> RetryOption:
        with self._lock:
            self.waited += seconds
        log.warning("GitHub: %s, waiting %.1f s", why, seconds)
        if self._on_wait is not None:
            self._on_wait(seconds, why)
        return RetryOption(True, timedelta(seconds=seconds))

    def _retry(self, exc: GitHubException, count: int) -> RetryOption:
        """githubkit's retry decision: wait out rate limits, retry server errors and lost connections."""
        if isinstance(exc, RateLimitExceeded):
            wait = max(exc.retry_after.total_seconds(), 1.0)
            if wait > self.settings.max_wait or count >= RATE_LIMIT_RETRIES:
                return RetryOption(False)
            kind = "secondary rate limit" if "Secondary" in type(exc).__name__ else "rate limit"
            return self._wait(wait, f"{kind} (HTTP {exc.response.status_code})")
        server_error = isinstance(exc, RequestFailed) and exc.response.status_code >= 500
        if (server_error or type(exc) is RequestError or "Timeout" in type(exc).__name__) and count < (
            self.settings.retries
        ):
            what = f"HTTP {exc.response.status_code}" if isinstance(exc, RequestFailed) else "no answer"
            return self._wait(self.settings.retry_backoff * 2**count, f"{what}, retry {count + 1}")
        return RetryOption(False)

    def _translate(self, exc: GitHubException) -> GitHubError:
        if isinstance(exc, RateLimitExceeded):
            return RateLimitStop(exc.retry_after.total_seconds())
        if isinstance(exc, RequestFailed):
            status = exc.response.status_code
            if status == 401:
                return GitHubError("GitHub refused the token (HTTP 401): check that it is valid and not expired")
            if status == 404:
                return NotFound(f"GitHub has no {exc.request.url.path} (HTTP 404)")
            return GitHubError(f"GitHub answered HTTP {status} to {exc.request.method} {exc.request.url.path}")
        if isinstance(exc, GraphQLFailed):
            errors = exc.response.errors or []
            if errors and all(error.type == "NOT_FOUND" for error in errors):
                return NotFound("; ".join(error.message for error in errors))
            return GitHubError("GitHub GraphQL errors: " + "; ".join(error.message for error in errors))
        return GitHubError(f"cannot reach GitHub at {self.settings.api_url}: {type(exc).__name__}")

    def graphql(self, query: str, variables: dict[str, Any], missing: list[str] | None = None) -> dict[str, Any]:
        """The data of a GraphQL query. Things GitHub does not know (NOT_FOUND errors) raise NotFound, or, with a
        `missing` list, are appended to it as messages while the rest of the data is returned."""
        try:
            return self._github.graphql.request(query, variables)
        except GraphQLFailed as exc:
            errors = exc.response.errors or []
            data = exc.response.data
            if missing is not None and data is not None and all(error.type == "NOT_FOUND" for error in errors):
                missing.extend(error.message for error in errors)
                return data
            raise self._translate(exc) from None
        except GitHubException as exc:
            raise self._translate(exc) from None

    def get(self, url: str, params: dict[str, Any] | None = None, etag: str | None = None) -> Page:
        """A REST GET, conditional on `etag` (a 304 answer costs no rate limit), with its next page's URL."""
        headers = {"If-None-Match": etag} if etag else None
        try:
            response = self._github.request("GET", url, params=params, headers=headers)
        except GitHubException as exc:
            raise self._translate(exc) from None
        raw = response.raw_response
        next_url = raw.links.get("next", {}).get("url")
        if raw.status_code == 304:
            return Page(304, None, etag, None)
        return Page(raw.status_code, raw.json(), raw.headers.get("etag"), next_url)
