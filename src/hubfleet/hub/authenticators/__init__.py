"""hubfleet's authenticators: JupyterHub's and the community's, with a record of every login for usage reports and
the download of one's home (`hubfleet.hub.home_export`) among the hub's pages.

Each lives in its own module so that a hub imports only the one it uses (oauthenticator alone takes seconds).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from jupyterhub.auth import Authenticator
from jupyterhub.authenticators.shared import SharedPasswordAuthenticator as _SharedPassword
from traitlets import Unicode

from hubfleet.hub.home_export import ExportMixin


class LoginRecorderMixin(Authenticator):
    """Append one JSON line per successful login to `log_path` (who, when, how); never the credentials."""

    log_path = Unicode("", config=True, help="JSON-lines file logins are appended to ('' disables)")

    async def get_authenticated_user(self, handler: Any, data: Any) -> dict | None:
        user = await super().get_authenticated_user(handler, data)
        if user and self.log_path:
            record = {"time": time.time(), "user": user["name"], "authenticator": type(self).__name__}
            line = (json.dumps(record) + "\n").encode()
            fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
        return user


class SharedPasswordAuthenticator(ExportMixin, LoginRecorderMixin, _SharedPassword):
    """One password for everybody allowed in (demos and workshops)."""
