"""Log in with GitHub (oauthenticator)."""

from oauthenticator.github import GitHubOAuthenticator as _GitHub

from hubfleet.hub.authenticators import LoginRecorderMixin


class GitHubAuthenticator(LoginRecorderMixin, _GitHub):
    """oauthenticator's GitHub login, recording logins."""
