"""A user downloads their whole home as a zip from the hub: ``GET /hubs/<hub>/hub/export/home.zip``.

The handler runs in the hub process, added by hubfleet's authenticators (`ExportMixin.get_handlers`: JupyterHub's
way for an authenticator to add pages), so it costs no process or port of its own. It writes nothing itself: a
short-lived process (`hubfleet.hub.home_zip`) becomes the user, walks the home without following any link and
writes the zip to a pipe, which the handler streams to the browser chunk by chunk — nothing is copied to disk or
held in memory.

- **Whose home**: the caller's own, always: no parameter names a user. Logged-in browsers (the hub's cookie) may;
  a token needs `access:servers!user=<name>` (whoever may use the user's server may read their home anyway), so an
  identify-only OAuth token of some service cannot. Another hub's cookies and tokens are not valid here.
- **Bounded**: at most `MAX_BYTES` of file content and `MAX_ENTRIES` files, folders and links; a larger home gets
  413 with what it holds and what to do, before anything is sent. One export per user at a time (409) and
  `MAX_RUNNING` per hub (503, retry later).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys
from collections.abc import AsyncIterator
from typing import Any

from jupyterhub.auth import Authenticator
from jupyterhub.handlers.base import BaseHandler
from jupyterhub.user import User
from tornado import web

from hubfleet.common.zipstream import CHUNK, send_zip
from hubfleet.system.homes import QuotaError

EXPORT_PATH = "/export/home.zip"
"""Below the hub's prefix (`/hubs/<hub>/hub`)."""

MAX_BYTES = 10 * 1024**3
"""File content one download may hold."""

MAX_ENTRIES = 200_000
"""Files, folders and links one download may hold."""

MAX_RUNNING = 4
"""Exports running at once on one hub (each is a process reading a disk)."""

_running: set[str] = set()


class HomeExportHandler(BaseHandler):
    """Streams the caller's home as a zip (see the module docstring)."""

    _accept_token_auth = True  # scripts too (`Authorization: token …`); the scope check below decides

    @web.authenticated
    async def get(self) -> None:
        user = self.current_user
        if not isinstance(user, User):
            raise web.HTTPError(403, "Only a hub user can download their home.")
        if not self.has_scope(f"access:servers!user={user.name}"):
            raise web.HTTPError(
                403, "This token may not read your files: log in, or use a token with access to your server."
            )
        if user.name in _running:
            raise web.HTTPError(409, "A download of your home is already running: wait for it to finish.")
        if len(_running) >= MAX_RUNNING:
            self.set_header("Retry-After", "30")
            raise web.HTTPError(503, "Too many homes are being downloaded right now: try again in a minute.")
        _running.add(user.name)
        try:
            await self._export(user)
        finally:
            _running.discard(user.name)

    async def _export(self, user: User) -> None:
        spawner: Any = user.spawner
        try:
            home, uid, gid = await asyncio.get_running_loop().run_in_executor(None, spawner.home_for_export)
        except FileNotFoundError:
            raise web.HTTPError(404, "You have no home folder on this hub yet: start your server once.") from None
        except QuotaError as exc:
            self.log.error("home of %s cannot be read for an export: %s", user.name, exc)
            raise web.HTTPError(503, "Your home folder cannot be read right now: ask the hub's admins.") from None
        command = [sys.executable, "-m", "hubfleet.hub.home_zip", str(home), "--name", user.name]
        if uid is not None:
            command += ["--uid", str(uid), "--gid", str(gid)]
        command += ["--max-bytes", str(MAX_BYTES), "--max-entries", str(MAX_ENTRIES)]
        process = await asyncio.create_subprocess_exec(
            *command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        errors = asyncio.ensure_future(process.stderr.read())  # type: ignore[union-attr]
        try:
            header = await self._header(user, process, errors)
            self.log.info("export of %s: %d files, %d bytes", user.name, header["files"], header["bytes"])
            filename = f"{spawner.hub_name}-{user.name}-home-{dt.datetime.now(dt.UTC):%Y-%m-%d}.zip"
            await send_zip(self, filename, _archive(process, errors), self.log)
        finally:
            if process.returncode is None:
                process.kill()  # ours, started above: the browser went away or the download broke off
            await process.wait()
            errors.cancel()

    async def _header(self, user: User, process: asyncio.subprocess.Process, errors: asyncio.Future) -> dict:
        """The archive process's first line: what the home holds, or why it is not sent (raised as HTTP error)."""
        first = await process.stdout.readline()  # type: ignore[union-attr]
        try:
            header = json.loads(first)
        except ValueError:
            await process.wait()
            self.log.error("export of %s failed before it began: %s", user.name, _tail(await errors))
            raise web.HTTPError(503, "Your home folder could not be read right now: ask the hub's admins.") from None
        if "status" in header:
            raise web.HTTPError(int(header["status"]), header["message"])
        return header


def _tail(stderr: bytes) -> str:
    return stderr[-2000:].decode(errors="replace").strip()


async def _archive(process: asyncio.subprocess.Process, errors: asyncio.Future) -> AsyncIterator[bytes]:
    """The archive's bytes as the process writes them; an error if it does not end well."""
    while chunk := await process.stdout.read(CHUNK):  # type: ignore[union-attr]
        yield chunk
    if await process.wait() != 0:
        raise RuntimeError(f"the archive process failed: {_tail(await errors)}")


class ExportMixin(Authenticator):
    """Adds the home download to the hub's pages (every hubfleet authenticator has it)."""

    def get_handlers(self, app: Any) -> list[tuple[str, Any]]:
        return [*super().get_handlers(app), (EXPORT_PATH, HomeExportHandler)]


__all__ = ["EXPORT_PATH", "MAX_BYTES", "MAX_ENTRIES", "ExportMixin", "HomeExportHandler"]
