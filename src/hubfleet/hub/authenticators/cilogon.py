"""Log in through CILogon (oauthenticator's CILogonOAuthenticator)."""

from oauthenticator.cilogon import CILogonOAuthenticator as _CILogon

from hubfleet.hub.authenticators import LoginRecorderMixin
from hubfleet.hub.authenticators.directory import ClaimGroupsMixin
from hubfleet.hub.home_export import ExportMixin


class CILogonAuthenticator(ExportMixin, LoginRecorderMixin, ClaimGroupsMixin, _CILogon):
    """CILogon login, recording logins, with directory groups from a claim (`isMemberOf`)."""
