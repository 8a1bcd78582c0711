"""Log in with an LDAP or Active Directory account (jupyterhub-ldapauthenticator)."""

from __future__ import annotations

from typing import Any

from ldapauthenticator import LDAPAuthenticator as _LDAP

from hubfleet.hub.authenticators import LoginRecorderMixin
from hubfleet.hub.authenticators.directory import DirectoryGroupsMixin
from hubfleet.hub.home_export import ExportMixin


class LDAPAuthenticator(ExportMixin, LoginRecorderMixin, DirectoryGroupsMixin, _LDAP):
    """LDAP login, recording logins; directory groups are the LDAP group DNs (of those the hub names) the person is a
    member of."""

    def directory_groups(self, auth_model: dict[str, Any]) -> set[str]:
        return set((auth_model.get("auth_state") or {}).get("ldap_groups") or [])
