"""Run a synthetic user through a hub's public URL: log in, start a server, run code, clean up."""

import asyncio
import time
from collections.abc import Awaitable
from dataclasses import asdict, dataclass
from typing import TypeVar

import httpx

from hubfleet.health.client import BODY_CHARS, HubError, HubUser, PasswordLogin, TokenLogin

_MAX_CLEANUP_RESERVE = 30.0

DASK_CODE = """\
import warnings
from dask_gateway import Gateway, GatewayWarning
import dask.array as da
warnings.simplefilter("error", GatewayWarning)  # a scale refused by the user's limits fails the check clearly
with Gateway().new_cluster() as cluster:
    cluster.scale(2)
    with cluster.get_client() as client:
        client.wait_for_workers(2, timeout=120)
        print(int(da.ones((1000, 1000), chunks=(250, 250)).sum().compute()))
"""
"""Run on hubs with Dask: a cluster with 2 workers computes a known sum, then shuts down."""

DASK_EXPECTED = "1000000"
_TOKEN_GRACE_SECONDS = 60  # a minted token outlives the check's timeout by this much, then expires

_T = TypeVar("_T")

__all__ = ["CheckReport", "CheckStep", "PasswordLogin", "TokenLogin", "run_check"]


@dataclass
class CheckStep:
    """Outcome and duration of one step of a check."""

    name: str
    ok: bool
    seconds: float
    detail: str = ""


@dataclass
class CheckReport:
    """Outcome of a synthetic check of one hub."""

    hub: str
    url: str
    ok: bool
    steps: list[CheckStep]
    total_seconds: float

    def to_dict(self) -> dict:
        """JSON-ready form of the report."""
        return asdict(self)


async def _done(action: Awaitable[None]) -> bool:
    await action
    return True


async def _expect_output(user: HubUser, kernel_id: str, code: str, expected: str, timeout: float) -> bool:
    got = (await user.execute(kernel_id, code, timeout)).strip()
    if got != expected.strip():
        raise HubError(f"expected {expected.strip()!r}, got {got[:BODY_CHARS]!r}")
    return True


class _Steps:
    """Runs steps under deadlines and records them, never raising."""

    def __init__(self, timeout: float, secret: str) -> None:
        self.steps: list[CheckStep] = []
        self.secrets = [secret]
        self._timeout = timeout

    def _redact(self, text: str) -> str:
        for secret in filter(None, self.secrets):
            text = text.replace(secret, "***")
        return text

    async def run(self, name: str, deadline: float, action: Awaitable[_T]) -> _T | None:
        """Await `action` until the loop-time `deadline`; record the step, return its result or None."""
        started = time.perf_counter()
        result, detail = None, ""
        try:
            async with asyncio.timeout_at(deadline):
                result = await action
        except TimeoutError:
            detail = f"timed out after {time.perf_counter() - started:.1f}s (check timeout {self._timeout:g}s)"
        except HubError as error:
            detail = str(error)
        except Exception as error:
            detail = type(error).__name__ + (f": {error}" if str(error) else "")
        self.steps.append(CheckStep(name, result is not None, time.perf_counter() - started, self._redact(detail)))
        return result


async def run_check(
    hub: str,
    hub_url: str,
    login: PasswordLogin | TokenLogin,
    *,
    timeout: float = 90.0,
    code: str = "print(6 * 7)",
    expected: str = "42",
    dask: bool = False,
) -> CheckReport:
    """Run a synthetic user through the hub at its public `hub_url` and report each timed step.

    With `dask`, the kernel also creates a Dask cluster through the hub's gateway, scales it to 2 workers,
    computes, and shuts it down (step `dask`).

    `timeout` bounds the whole check; up to a quarter of it (at most 30 s) is kept back so that the
    kernel and server are stopped even when an earlier step runs out of time. Never raises.
    """
    hub_url = hub_url.rstrip("/") + "/"
    started = time.perf_counter()
    deadline = asyncio.get_running_loop().time() + timeout
    work_deadline = deadline - min(_MAX_CLEANUP_RESERVE, timeout / 4)
    steps = _Steps(timeout, login.password if isinstance(login, PasswordLogin) else login.token)
    async with httpx.AsyncClient(timeout=timeout) as client:
        user = await steps.run(
            "login", work_deadline, HubUser.login(client, hub_url, login, int(timeout) + _TOKEN_GRACE_SECONDS)
        )
        if user is not None:
            steps.secrets.append(user.token)
            if await steps.run("start-server", work_deadline, _done(user.start_server())):
                kernel_id = await steps.run("start-kernel", work_deadline, user.start_kernel())
                if kernel_id is not None:
                    await steps.run("run-code", work_deadline, _expect_output(user, kernel_id, code, expected, timeout))
                    if dask:
                        await steps.run(
                            "dask", work_deadline, _expect_output(user, kernel_id, DASK_CODE, DASK_EXPECTED, timeout)
                        )
                    await steps.run("stop-kernel", deadline, _done(user.stop_kernel(kernel_id)))
            await steps.run("stop-server", deadline, _done(user.stop_server()))
    return CheckReport(
        hub=hub,
        url=hub_url,
        ok=all(step.ok for step in steps.steps),
        steps=steps.steps,
        total_seconds=time.perf_counter() - started,
    )
