"""Sign-up with a password, approved by a hub admin (jupyterhub-nativeauthenticator).

nativeauthenticator 1.3.0 predates JupyterHub 6: its login handler still times logins with `self.statsd` (removed
in JupyterHub 6) and its `_render` does not take the `sync` argument JupyterHub 6 passes when rendering an error.
`LoginHandler` below bridges both; nothing else of the package is changed.
"""

from __future__ import annotations

from typing import Any

from nativeauthenticator import NativeAuthenticator as _Native
from nativeauthenticator.handlers import LoginHandler as _NativeLoginHandler

from hubfleet.hub.authenticators import LoginRecorderMixin
from hubfleet.hub.home_export import ExportMixin


class _NoTimer:
    """Stands in for the statsd client JupyterHub 6 no longer has."""

    def timer(self, name: str) -> _NoTimer:
        return self

    def start(self) -> _NoTimer:
        return self

    def stop(self, send: bool = True) -> None:
        return None


class LoginHandler(_NativeLoginHandler):
    """nativeauthenticator's login page, working with JupyterHub 6."""

    statsd = _NoTimer()

    def _render(self, login_error: str | None = None, username: str | None = None, **_: Any) -> Any:
        return super()._render(login_error=login_error, username=username)


class NativeAuthenticator(ExportMixin, LoginRecorderMixin, _Native):
    """nativeauthenticator, recording logins."""

    def get_handlers(self, app: Any) -> list[tuple[str, Any]]:
        handlers = super().get_handlers(app)
        return [(path, LoginHandler if handler is _NativeLoginHandler else handler) for path, handler in handlers]
