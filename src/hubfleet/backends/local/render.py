"""From a hub's spec to what its JupyterHub process and this machine need: settings, secrets, groups, folders."""

from __future__ import annotations

import base64
import logging
import os
from functools import partial
from pathlib import Path

from hubfleet.common.settings import (
    LOOPBACK,
    EnvironmentChoice,
    ExchangeLink,
    GatewayLink,
    HubAddress,
    HubPorts,
    HubSettings,
    ProxyLink,
    loopback_url,
)
from hubfleet.common.state import HubState, database_url, hub_cgroup
from hubfleet.console.urls import oauth_callback as console_callback
from hubfleet.edu.courses import course_folder_path, fleet_file_groups, folder_access
from hubfleet.edu.exchange.settings import SERVICE_NAME as EXCHANGE_SERVICE
from hubfleet.edu.exchange.settings import ExchangeSettings
from hubfleet.research.settings import SERVICE_NAME as GATEWAY_SERVICE
from hubfleet.research.settings import GatewaySettings
from hubfleet.spec.auth import (
    Auth,
    CILogonAuth,
    DirectoryGroups,
    GitHubAuth,
    LDAPAuth,
    NativeAuth,
    OIDCAuth,
    SharedPasswordAuth,
    secret_value,
)
from hubfleet.spec.checks import EVERYONE, SCRATCH_FOLDER
from hubfleet.spec.models import Fleet, Hub
from hubfleet.system import accounts
from hubfleet.usage.storage import grow_homes

log = logging.getLogger("hubfleet.local")


def isolation_mode() -> str:
    """'unix-users' when running as root (real isolation), else 'same-user'."""
    return "unix-users" if os.geteuid() == 0 else "same-user"


def base_url(hub: Hub) -> str:
    """The URL prefix of a hub behind the front door."""
    return f"/hubs/{hub.name}/"


def scratch_root(fleet: Fleet, hub: Hub) -> Path | None:
    """The parent of the hub's per-user scratch folders, if the hub has scratch."""
    if hub.storage.scratch is None:
        return None
    return fleet.paths.shared_root / hub.name / SCRATCH_FOLDER


def cgroup_of(fleet: Fleet, hub: Hub, state: HubState) -> str:
    """The hub's cgroup (its state directory is `<fleet state>/hubs/<hub>`)."""
    return hub_cgroup(fleet.name, state.root.parents[1], hub.name)


def hub_address(hub: Hub, ports: HubPorts, proxy: ProxyLink) -> HubAddress:
    """Where the hub's processes are reached on this machine."""
    return HubAddress(base_url=base_url(hub), ports=ports, proxy=proxy)


def gateway_link(fleet: Fleet, hub: Hub, address: HubAddress) -> GatewayLink | None:
    """Where the hub's Dask Gateway listens, if the hub has one."""
    ports = address.ports
    if hub.dask is None or not hub.dask.enabled or ports.gateway is None or ports.gateway_tcp is None:
        return None
    path = address.service_path(GATEWAY_SERVICE)
    return GatewayLink(
        url=loopback_url(ports.gateway),
        address=address.through_proxy(f"services/{GATEWAY_SERVICE}"),
        proxy_address=loopback_url(ports.gateway_tcp, scheme="gateway"),
        public_address=f"{fleet.front_door.url}{path}",
    )


def render_gateway_settings(fleet: Fleet, hub: Hub, state: HubState, address: HubAddress) -> GatewaySettings:
    """The Dask Gateway process's settings (the hub must have `dask:` enabled)."""
    ports = address.ports
    assert hub.dask is not None and ports.gateway_api is not None
    gateway_dir = state.root / "dask-gateway"
    gateway_dir.mkdir(mode=0o700, exist_ok=True)
    prefix = address.service_path(GATEWAY_SERVICE)
    return GatewaySettings(
        hub=hub.name,
        cgroup=cgroup_of(fleet, hub, state),
        hub_api_url=address.hub_api_url,
        prefix=prefix,
        public_url=f"{fleet.front_door.url}{prefix}",
        address=f"{LOOPBACK}:{ports.gateway_api}",
        proxy_address=f"{LOOPBACK}:{ports.gateway}",
        tcp_address=f"{LOOPBACK}:{ports.gateway_tcp}",
        state_dir=gateway_dir,
        clusters_dir=fleet.paths.shared_root / hub.name / ".dask-clusters",
        user_env=fleet.paths.user_env,
        environments_root=fleet.paths.environments,
        home_root=fleet.paths.home_root,
        dask=hub.dask,
        backend=hub.backend,
        partition=hub.default_profile().partition,
        secrets={
            "gateway_token": state.secret("gateway_token"),
            "gateway_db_key": state.secret("gateway_db_key", fernet_key),
        },
    )


def wants_exchange(hub: Hub) -> bool:
    """Whether the hub runs an assignment exchange: it has courses, or LTI launches that may create them."""
    return bool(hub.courses) or hub.lti is not None


def exchange_link(hub: Hub, address: HubAddress) -> ExchangeLink | None:
    """Where the hub's assignment exchange listens, if the hub has one."""
    if not wants_exchange(hub) or address.ports.exchange is None:
        return None
    return ExchangeLink(
        url=loopback_url(address.ports.exchange),
        address=address.through_proxy(f"services/{EXCHANGE_SERVICE}/"),
    )


def render_exchange_settings(fleet: Fleet, hub: Hub, state: HubState, address: HubAddress) -> ExchangeSettings:
    """The exchange service process's settings (the hub must want an exchange)."""
    ports = address.ports
    assert ports.exchange is not None
    tool_key_file = None
    if hub.lti is not None:
        from hubfleet.edu.lti.keys import TOOL_KEY_FILE  # the hub makes the key; passback signs with it

        tool_key_file = state.root / TOOL_KEY_FILE
    return ExchangeSettings(
        hub=hub.name,
        address=f"{LOOPBACK}:{ports.exchange}",
        prefix=f"{address.service_path(EXCHANGE_SERVICE)}/",
        hub_api_url=address.hub_api_url,
        hub_prefix=f"{base_url(hub)}hub/",
        database_url=database_url(fleet, state.root.parents[1]),
        lti_platforms=list(hub.lti.platforms) if hub.lti else [],
        tool_key_file=tool_key_file,
        secrets={
            "exchange_token": state.secret("exchange_token"),
            "exchange_cookie_secret": state.secret("exchange_cookie_secret"),
        },
    )


def fernet_key() -> str:
    """A key for the gateway's encrypted database fields (Fernet: 32 random bytes, URL-safe base64)."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def render_settings(fleet: Fleet, hub: Hub, state: HubState, address: HubAddress) -> HubSettings:
    """The hub process's settings; secrets go to files in the hub's state directory."""
    secrets = {
        "proxy_token": state.secret("proxy_token"),
        "service_token": state.secret("service_token"),
        "culler_token": state.secret("culler_token"),
        "console_oauth_secret": state.secret("console_oauth_secret"),
    }
    gateway = gateway_link(fleet, hub, address)
    if gateway is not None:
        secrets["gateway_token"] = state.secret("gateway_token")
    exchange = exchange_link(hub, address)
    if exchange is not None:
        secrets["exchange_token"] = state.secret("exchange_token")
    if hub.lti is not None:  # LTI launch data is kept in JupyterHub's (encrypted) auth_state
        secrets["auth_state_key"] = state.secret("auth_state_key")
    auth = hub.auth
    options: dict[str, str | int | bool | list[str] | None] = {}
    if isinstance(auth, SharedPasswordAuth):
        secrets["shared_password"] = state.store_secret("shared_password", auth.shared_password())
        if auth.admin_password is not None:
            secrets["admin_password"] = state.store_secret("admin_password", auth.admin_password.get_secret_value())
    elif isinstance(auth, NativeAuth):
        options = {"open_signup": auth.open_signup, "minimum_password_length": auth.minimum_password_length}
    elif isinstance(auth, GitHubAuth):
        secrets["client_secret"] = state.store_secret("client_secret", auth.secret())
        options = {"client_id": auth.client_id, "allowed_organizations": list(auth.allowed_organizations)}
    elif isinstance(auth, OIDCAuth):
        secrets["client_secret"] = state.store_secret("client_secret", auth.secret())
        options = {
            "client_id": auth.client_id,
            "issuer": str(auth.issuer).rstrip("/"),
            "display_name": auth.display_name,
            "scopes": list(auth.scopes),
            "username_claim": auth.username_claim,
            "groups_claim": auth.groups_claim,
        }
    elif isinstance(auth, CILogonAuth):
        secrets["client_secret"] = state.store_secret("client_secret", auth.secret())
        options = {
            "client_id": auth.client_id,
            "scopes": list(auth.scopes),
            "groups_claim": auth.groups_claim,
            "host": auth.host,
        }
    elif isinstance(auth, LDAPAuth):
        if auth.bind_password_file is not None:
            secrets["bind_password"] = state.store_secret("bind_password", secret_value(None, auth.bind_password_file))
        options = {
            "server": auth.server,
            "port": auth.port,
            "tls": auth.tls,
            "ca_file": str(auth.ca_file) if auth.ca_file else None,
            "bind_dn_template": list(auth.bind_dn_template),
            "user_search_base": auth.user_search_base,
            "user_attribute": auth.user_attribute,
            "bind_dn": auth.bind_dn,
        }
    prefix = base_url(hub)
    return HubSettings(
        fleet=fleet.name,
        hub=hub.name,
        title=hub.title,
        base_url=prefix,
        public_url=fleet.front_door.url + prefix,
        ports=address.ports,
        proxy=address.proxy,
        state_dir=state.root,
        cgroup=cgroup_of(fleet, hub, state),
        user_env=fleet.paths.user_env,
        **environment_settings(fleet, hub),
        home_root=fleet.paths.home_root,
        shared_root=fleet.paths.shared_root,
        isolation=isolation_mode(),  # type: ignore[arg-type]
        auth_type=auth.type,
        auth_options=options,
        directory=directory_groups(auth),
        cilogon_idps=dict(auth.allowed_idps) if isinstance(auth, CILogonAuth) else {},
        admins=list(auth.admins),
        allowed_users=list(auth.allowed_users),
        allow_all=auth.allow_all,
        groups={name: list(members) for name, members in hub.groups.items()},
        profiles=list(hub.profiles),
        shared_folders=list(hub.storage.shared),
        courses=list(hub.courses),
        scratch_root=scratch_root(fleet, hub),
        home_quota=hub.storage.home_quota,
        culling=hub.culling,
        gateway=gateway,
        exchange=exchange,
        database_url=database_url(fleet, state.root.parents[1]),
        console_redirect_uri=console_callback(hub.name),
        lti=hub.lti,
        secrets=secrets,
    )


def directory_groups(auth: Auth) -> DirectoryGroups | None:
    """What the campus directory's groups decide on the hub (None: not a directory login)."""
    if not isinstance(auth, DirectoryGroups):
        return None
    return DirectoryGroups.model_validate(auth.model_dump(include=set(DirectoryGroups.model_fields)))


def environment_settings(fleet: Fleet, hub: Hub) -> dict:
    """The environments the hub's profiles may name, and the store they are built in (hubfleet.envs)."""
    refs = fleet.environments_of(hub)
    if not refs:
        return {}
    choices = {
        name: EnvironmentChoice(key=ref.key, title=ref.spec.display_name or name, description=ref.spec.description)
        for name, ref in refs.items()
    }
    return {"environments_root": fleet.paths.environments, "environments": choices}


def prepare_machine(fleet: Fleet, hub: Hub) -> None:
    """POSIX groups of the hub, its groups and its courses' groups, its shared and course folders with their ACLs,
    and the parent of its per-user scratch folders (root:root 0755, so that users can reach their own folder and
    nothing else)."""
    scratch = scratch_root(fleet, hub)
    course_folders = {
        course.name: course_folder_path(fleet.paths.shared_root, hub.name, course.name)
        for course in hub.courses
        if course.folder
    }
    if isolation_mode() != "unix-users":
        folders = [fleet.paths.shared_root / hub.name / folder.name for folder in hub.storage.shared]
        folders += course_folders.values()
        for folder in [*folders, *([scratch] if scratch else [])]:
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                log.warning("cannot create folder %s of hub %s: %s", folder, hub.name, exc)
        return
    if scratch is not None:
        accounts.ensure_folder(scratch)
    grow_homes(fleet.paths.home_root, hub.name, hub.storage.home_quota)
    hub_group = accounts.hub_groupname(hub.name)
    accounts.ensure_group(hub_group)
    for group in [*hub.groups, *fleet_file_groups(hub.courses)]:
        accounts.ensure_group(accounts.unix_groupname(hub.name, group))
    for folder in hub.storage.shared:
        access = {
            hub_group if group == EVERYONE else accounts.unix_groupname(hub.name, group): mode
            for group, mode in folder.access.items()
        }
        accounts.ensure_shared_folder(fleet.paths.shared_root / hub.name / folder.name, access)
    for course, path in course_folders.items():
        accounts.ensure_shared_folder(path, folder_access(partial(accounts.unix_groupname, hub.name), course))
