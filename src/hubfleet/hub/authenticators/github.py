"""Log in with GitHub (oauthenticator)."""

from oauthenticator.github import GitHubOAuthenticator as _GitHub

from hubfleet.hub.authenticators import LoginRecorderMixin
from hubfleet.hub.home_export import ExportMixin


class GitHubAuthenticator(ExportMixin, LoginRecorderMixin, _GitHub):
    """oauthenticator's GitHub login, recording logins."""
