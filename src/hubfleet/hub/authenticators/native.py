"""Sign-up with a password, approved by a hub admin (jupyterhub-nativeauthenticator)."""

from nativeauthenticator import NativeAuthenticator as _Native

from hubfleet.hub.authenticators import LoginRecorderMixin


class NativeAuthenticator(LoginRecorderMixin, _Native):
    """nativeauthenticator, recording logins."""
