"""What the fleet asks a Slurm cluster: its partitions, and the jobs of a hub's users (to cancel them on `down`).

The hub's users are the members of its POSIX group (`hf-<hub>`, see `hubfleet.system.accounts`): every account a
hub's spawner creates is in it, and nobody else is. Commands run as root (the supervisor) with `SLURM_CONF` set
to the hub's slurm.conf when one is known.
"""

from __future__ import annotations

import asyncio
import grp
import os
import shutil
import time
from pathlib import Path

from hubfleet.system import accounts

COMMAND_TIMEOUT = 30.0
CANCEL_TIMEOUT = 60.0
POLL_SECONDS = 0.2


class SlurmError(RuntimeError):
    """A Slurm command failed or is missing; the message says which and why."""


def _env(conf: Path | None) -> dict[str, str]:
    return {**os.environ, "SLURM_CONF": str(conf)} if conf is not None else dict(os.environ)


async def run(*argv: str, conf: Path | None = None, timeout: float = COMMAND_TIMEOUT) -> str:
    """Run Slurm client command `argv`; its stdout, or SlurmError with its stderr."""
    program = shutil.which(argv[0]) or shutil.which(argv[0], path="/usr/bin:/usr/local/bin:/opt/slurm/bin")
    if program is None:
        raise SlurmError(f"{argv[0]} not found: install the Slurm client commands (Debian: slurm-client)")
    process = await asyncio.create_subprocess_exec(
        program,
        *argv[1:],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
        env=_env(conf),
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise SlurmError(f"{' '.join(argv)} did not answer within {timeout:g} s") from None
    if process.returncode != 0:
        raise SlurmError(f"{' '.join(argv)} failed ({process.returncode}): {err.decode(errors='replace').strip()}")
    return out.decode(errors="replace")


async def partitions(conf: Path | None = None) -> set[str]:
    """The cluster's partition names (also a check that the controller answers)."""
    out = await run("sinfo", "--noheader", "--format=%R", conf=conf)
    return {line.strip() for line in out.splitlines() if line.strip()}


def hub_accounts(hub: str) -> list[str]:
    """The Unix accounts of `hub`'s users (members of its POSIX group)."""
    try:
        return sorted(grp.getgrnam(accounts.hub_groupname(hub)).gr_mem)
    except KeyError:
        return []


async def hub_jobs(hub: str, conf: Path | None = None) -> list[tuple[str, str, str]]:
    """Jobs of `hub`'s users that squeue shows (pending, running, completing): (job id, account, state)."""
    users = hub_accounts(hub)
    if not users:
        return []
    out = await run("squeue", "--noheader", "--format=%i %u %T", f"--users={','.join(users)}", conf=conf)
    jobs = []
    for line in out.splitlines():
        fields = line.split()
        if len(fields) == 3:
            jobs.append((fields[0], fields[1], fields[2]))
    return jobs


async def cancel_hub_jobs(hub: str, conf: Path | None = None, timeout: float = CANCEL_TIMEOUT) -> list[str]:
    """Cancel every job of `hub`'s users (scancel by user) and wait until squeue shows none; the ids cancelled.

    Raises SlurmError when jobs are still there after `timeout` seconds (a node that does not answer, say).
    """
    jobs = await hub_jobs(hub, conf)
    if not jobs:
        return []
    for user in sorted({user for _, user, _ in jobs}):
        await run("scancel", f"--user={user}", conf=conf)
    deadline = time.monotonic() + timeout
    while True:
        left = await hub_jobs(hub, conf)
        if not left:
            return [job_id for job_id, _, _ in jobs]
        if time.monotonic() > deadline:
            listed = ", ".join(f"{job_id} ({user}, {state})" for job_id, user, state in left)
            raise SlurmError(f"jobs of hub {hub} still in the queue {timeout:g} s after scancel: {listed}")
        await asyncio.sleep(POLL_SECONDS)
