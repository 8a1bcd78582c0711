"""jupyter_server configuration for users' servers on hubs with home quotas (found through $JUPYTER_CONFIG_PATH).

A save that fails because the home is full (ENOSPC: the quota is a file system of its own) answers HTTP 507 with a
message JupyterLab shows in its "File Save Error" dialog — how full the home is and what to do — instead of a
generic "Unexpected error while saving file". The user's own configuration (~/.jupyter) still wins. Runs in the
user environment: it imports only jupyter_server, tornado and the standard library.
"""

import errno
import os

from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager
from tornado import web

FULL = (errno.ENOSPC, errno.EDQUOT)


def _gib(count: int) -> str:
    return f"{count / 1024**3:.2f} GiB"


def _full(exc: BaseException | None) -> bool:
    """Whether a full disk is behind `exc` (atomic writing may hide it behind a later error while cleaning up)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in FULL:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


class HomeQuotaContentsManager(AsyncLargeFileManager):
    """JupyterLab's contents manager, saying clearly when the home is full."""

    async def save(self, model: dict, path: str = "") -> dict:
        try:
            return await super().save(model, path)
        except web.HTTPError as exc:
            if not _full(exc):
                raise
            info = os.statvfs(self.root_dir)
            size, free = info.f_blocks * info.f_frsize, info.f_bavail * info.f_frsize
            raise web.HTTPError(
                507,
                f"Your home folder is full ({_gib(size - free)} of {_gib(size)} used), so {path} was not saved. "
                "Delete files you no longer need (in a terminal: du -sh ~/* | sort -h), then save again.",
            ) from exc


c = get_config()  # type: ignore[name-defined]  # noqa: F821 - provided by traitlets when it loads this file
c.ServerApp.contents_manager_class = HomeQuotaContentsManager
