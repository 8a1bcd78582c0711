"""From a hub's spec to what its JupyterHub process and this machine need: settings, secrets, groups, folders."""

from __future__ import annotations

import logging
import os

from hubfleet.fleet.state import HubState
from hubfleet.hub.settings import HubPorts, HubSettings
from hubfleet.spec.checks import EVERYONE
from hubfleet.spec.models import Fleet, GitHubAuth, Hub, NativeAuth, SharedPasswordAuth
from hubfleet.system import accounts

log = logging.getLogger("hubfleet.local")


def isolation_mode() -> str:
    """'unix-users' when running as root (real isolation), else 'same-user'."""
    return "unix-users" if os.geteuid() == 0 else "same-user"


def base_url(hub: Hub) -> str:
    """The URL prefix of a hub behind the front door."""
    return f"/hubs/{hub.name}/"


def render_settings(fleet: Fleet, hub: Hub, state: HubState, ports: HubPorts) -> HubSettings:
    """The hub process's settings; secrets go to files in the hub's state directory."""
    secrets = {
        "proxy_token": state.secret("proxy_token"),
        "service_token": state.secret("service_token"),
        "culler_token": state.secret("culler_token"),
    }
    auth = hub.auth
    options: dict[str, str | int | bool | list[str]] = {}
    if isinstance(auth, SharedPasswordAuth):
        secrets["shared_password"] = state.store_secret("shared_password", auth.shared_password())
    elif isinstance(auth, NativeAuth):
        options = {"open_signup": auth.open_signup, "minimum_password_length": auth.minimum_password_length}
    elif isinstance(auth, GitHubAuth):
        secrets["client_secret"] = state.store_secret("client_secret", auth.secret())
        options = {"client_id": auth.client_id, "allowed_organizations": list(auth.allowed_organizations)}
    prefix = base_url(hub)
    return HubSettings(
        fleet=fleet.name,
        hub=hub.name,
        title=hub.title,
        base_url=prefix,
        public_url=fleet.front_door.url + prefix,
        ports=ports,
        state_dir=state.root,
        user_env=fleet.paths.user_env,
        home_root=fleet.paths.home_root,
        shared_root=fleet.paths.shared_root,
        isolation=isolation_mode(),  # type: ignore[arg-type]
        auth_type=auth.type,
        auth_options=options,
        admins=list(auth.admins),
        allowed_users=list(auth.allowed_users),
        allow_all=auth.allow_all,
        groups={name: list(members) for name, members in hub.groups.items()},
        profiles=list(hub.profiles),
        shared_folders=list(hub.storage.shared),
        culling=hub.culling,
        secrets=secrets,
    )


def prepare_machine(fleet: Fleet, hub: Hub) -> None:
    """POSIX groups of the hub and its groups, and its shared folders with their ACLs (root only)."""
    if isolation_mode() != "unix-users":
        for folder in hub.storage.shared:
            try:
                (fleet.paths.shared_root / hub.name / folder.name).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                log.warning("cannot create shared folder %s of hub %s: %s", folder.name, hub.name, exc)
        return
    hub_group = accounts.hub_groupname(hub.name)
    accounts.ensure_group(hub_group)
    for group in hub.groups:
        accounts.ensure_group(accounts.unix_groupname(hub.name, group))
    for folder in hub.storage.shared:
        access = {
            hub_group if group == EVERYONE else accounts.unix_groupname(hub.name, group): mode
            for group, mode in folder.access.items()
        }
        accounts.ensure_shared_folder(fleet.paths.shared_root / hub.name / folder.name, access)
