"""Campus directory groups on a hub: who may come in (`allowed_groups`, and every mapped group), who administers
(`admin_groups`), and which hub groups people are in (`group_map`) — read at every login from the identity provider's
claims or the LDAP server, whatever authenticator brings them (`directory_groups`).

Only the hub groups that `group_map` names follow the directory: membership of every other group (the fleet file's,
a course's members added by an LMS or the CLI) is left as it is. JupyterHub's own `manage_groups` would make the
authenticator the owner of every group (and refuses the fleet file's `load_groups`), so the mapped groups are synced
here, through JupyterHub's `User.sync_groups`.
"""

from __future__ import annotations

from inspect import isawaitable
from typing import Any

from jupyterhub.auth import Authenticator
from traitlets import Dict, List, Unicode
from traitlets import Set as SetTrait


class DirectoryGroupsMixin(Authenticator):
    """Directory groups → login, admin and hub groups (see the module's docstring). Members of any group named here
    may log in."""

    group_map = Dict(key_trait=Unicode(), value_trait=List(Unicode()), config=True, help="directory group → hub groups")
    directory_allowed_groups = SetTrait(Unicode(), config=True, help="directory groups whose members may log in")
    directory_admin_groups = SetTrait(Unicode(), config=True, help="directory groups whose members are admins")

    def directory_groups(self, auth_model: dict[str, Any]) -> set[str]:
        """The person's directory groups, from what the authenticator returned."""
        raise NotImplementedError

    def mapped_groups(self, directory: set[str]) -> set[str]:
        """The hub groups someone in `directory` groups belongs in."""
        return {hub for group in directory for hub in self.group_map.get(group, [])}

    async def check_allowed(self, username: str, auth_model: dict[str, Any] | None) -> bool:
        allowed = super().check_allowed(username, auth_model)
        if isawaitable(allowed):
            allowed = await allowed
        if allowed:
            return True
        directory = self.directory_groups(auth_model or {})
        return bool(directory & (set(self.group_map) | self.directory_allowed_groups | self.directory_admin_groups))

    async def get_authenticated_user(self, handler: Any, data: Any) -> dict | None:
        model = await super().get_authenticated_user(handler, data)
        if model is None:
            return None
        directory = self.directory_groups(model)
        if self.directory_admin_groups:
            model["admin"] = bool(directory & self.directory_admin_groups) or model["name"] in self.admin_users
        if self.group_map and handler is not None:
            await self._sync_mapped_groups(handler, model["name"], self.mapped_groups(directory))
        return model

    async def _sync_mapped_groups(self, handler: Any, name: str, mapped: set[str]) -> None:
        user = handler.find_user(name)
        if user is None:  # first login: the user JupyterHub is about to create, made now to hold the groups
            user = handler.user_from_username(name)
            added = self.add_user(user)
            if isawaitable(added):
                await added
        managed = {hub for hubs in self.group_map.values() for hub in hubs}
        current = {group.name for group in user.groups}
        wanted = (current - managed) | mapped
        if wanted != current:
            user.sync_groups(sorted(wanted))


def claim(claims: dict[str, Any], dotted: str) -> Any:
    """`claims[a][b]` for `dotted` = `a.b` (None when a part is missing)."""
    value: Any = claims
    for part in dotted.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


class ClaimGroupsMixin(DirectoryGroupsMixin):
    """Directory groups from a claim of the identity provider (OpenID Connect, CILogon)."""

    groups_claim = Unicode("groups", config=True, help="the claim listing the person's groups (dotted for nested)")

    def directory_groups(self, auth_model: dict[str, Any]) -> set[str]:
        claims = (auth_model.get("auth_state") or {}).get(self.user_auth_state_key) or {}  # type: ignore[attr-defined]
        value = claim(claims, self.groups_claim)
        if isinstance(value, str):
            return {value}
        return {str(group) for group in value} if isinstance(value, list) else set()
