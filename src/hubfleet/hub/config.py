"""Turn a hub's `HubSettings` into JupyterHub configuration (traitlets), pointing at hubfleet's hub-side classes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hubfleet.hub.settings import CHECK_USER, CULLER_SERVICE_NAME, SERVICE_NAME, HubSettings
from hubfleet.research.settings import SERVICE_NAME as GATEWAY_SERVICE

AUTHENTICATORS = {
    "shared-password": "hubfleet.hub.authenticators.SharedPasswordAuthenticator",
    "native": "hubfleet.hub.authenticators.native.NativeAuthenticator",
    "github": "hubfleet.hub.authenticators.github.GitHubAuthenticator",
}

SPAWNERS = {
    "unix-users": "hubfleet.hub.spawner.IsolatedSpawner",
    "same-user": "hubfleet.hub.spawner.SameUserSpawner",
    "slurm": "hubfleet.hub.slurm.SlurmSpawner",
}

SLURM_START_TIMEOUT = 300
"""Seconds a Slurm server may take to start, time waiting in the queue included."""

FLEET_SERVICE_SCOPES = [
    "admin:users",
    "admin:groups",
    "admin:servers",
    "tokens",
    "read:hub",
    "list:users",
    "read:users",
    "read:servers",
    "read:metrics",
]
"""What the fleet may do on each hub: manage users, groups and servers, mint the health-check token."""

CULLER_SCOPES = ["list:users", "read:users:activity", "read:servers", "delete:servers"]


def configure(c: Any, settings: HubSettings) -> None:
    """Fill JupyterHub's config object `c` from `settings`."""
    state = settings.state_dir
    c.JupyterHub.public_url = settings.public_url
    c.JupyterHub.bind_url = f"http://127.0.0.1:{settings.ports.proxy}{settings.base_url}"  # also sets base_url
    c.JupyterHub.hub_bind_url = f"http://127.0.0.1:{settings.ports.hub}"
    c.JupyterHub.hub_connect_url = f"http://127.0.0.1:{settings.ports.hub}"
    c.JupyterHub.db_url = f"sqlite:///{state / 'jupyterhub.sqlite'}"
    c.JupyterHub.cookie_secret_file = str(state / "jupyterhub_cookie_secret")
    c.JupyterHub.pid_file = str(state / "jupyterhub.pid")
    # User servers outlive a hub restart; `hubfleet down` stops them through the API.
    c.JupyterHub.cleanup_servers = False
    c.JupyterHub.cleanup_proxy = False
    c.JupyterHub.template_vars = {"announcement_login": f"Welcome to {settings.title}"}

    # The proxy is started and kept alive by the fleet supervisor, not by the hub.
    c.JupyterHub.proxy_class = "configurable-http-proxy"
    c.ConfigurableHTTPProxy.should_start = False
    c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{settings.ports.proxy_api}"
    c.ConfigurableHTTPProxy.auth_token = settings.secret("proxy_token")

    _configure_auth(c, settings)

    c.JupyterHub.spawner_class = SPAWNERS[settings.isolation]
    c.Spawner.default_url = "/lab"
    c.Spawner.ip = "127.0.0.1"
    c.Spawner.http_timeout = 60
    c.Spawner.start_timeout = 120
    c.HubfleetSpawnerMixin.hub_name = settings.hub
    c.HubfleetSpawnerMixin.env_prefix = str(settings.user_env)
    c.HubfleetSpawnerMixin.home_root = str(settings.home_root)
    c.HubfleetSpawnerMixin.shared_root = str(settings.shared_root / settings.hub)
    c.HubfleetSpawnerMixin.profiles = [p.model_dump(mode="json") for p in settings.profiles]
    c.HubfleetSpawnerMixin.shared_folders = [f.model_dump(mode="json") for f in settings.shared_folders]
    c.HubfleetSpawnerMixin.scratch_root = str(settings.scratch_root or "")
    c.SameUserSpawner.homes_dir = str(state / "homes")
    if settings.isolation == "slurm":
        _configure_slurm(c, settings)

    c.JupyterHub.load_groups = {name: {"users": members} for name, members in settings.groups.items()}
    services = [{"name": SERVICE_NAME, "api_token": settings.secret("service_token")}]
    roles = [{"name": "hubfleet-fleet", "scopes": FLEET_SERVICE_SCOPES, "services": [SERVICE_NAME]}]
    if settings.culling.enabled:
        services.append({"name": CULLER_SERVICE_NAME, "api_token": settings.secret("culler_token")})
        roles.append({"name": "hubfleet-culler", "scopes": CULLER_SCOPES, "services": [CULLER_SERVICE_NAME]})
    if settings.gateway is not None:
        _configure_gateway(c, settings, services, roles)
    c.JupyterHub.services = services
    c.JupyterHub.load_roles = roles


SERVER_TOKEN_SCOPES = ["users:activity!user", "access:servers!server", "read:users:groups!user"]


def _configure_gateway(c: Any, settings: HubSettings, services: list[dict], roles: list[dict]) -> None:
    """The hub's Dask Gateway as a service every user may use, found by `Gateway()` in every server."""
    gateway = settings.gateway
    assert gateway is not None
    services.append({"name": GATEWAY_SERVICE, "url": gateway.url, "api_token": settings.secret("gateway_token")})
    access = f"access:services!service={GATEWAY_SERVICE}"
    roles.append({"name": "user", "scopes": ["self", access]})
    # The server's own token (JUPYTERHUB_API_TOKEN) is what the gateway client presents: it must carry the
    # access scope, and the user's groups (group limits) must be readable with it.
    c.Spawner.server_token_scopes = [*SERVER_TOKEN_SCOPES, access]
    c.Spawner.environment = {
        "DASK_GATEWAY__ADDRESS": gateway.address,
        "DASK_GATEWAY__PROXY_ADDRESS": gateway.proxy_address,
        "DASK_GATEWAY__PUBLIC_ADDRESS": gateway.public_address,
        "DASK_GATEWAY__AUTH__TYPE": "jupyterhub",
    }


def _configure_slurm(c: Any, settings: HubSettings) -> None:
    """Servers as Slurm jobs (batchspawner); importing the spawner now also installs its port API handler."""
    import hubfleet.hub.slurm  # noqa: F401 - before JupyterHub builds its handlers

    c.SlurmSpawner.start_timeout = SLURM_START_TIMEOUT
    if settings.slurm is not None and settings.slurm.conf is not None:
        c.SlurmSpawner.slurm_conf = str(settings.slurm.conf)


def _configure_auth(c: Any, settings: HubSettings) -> None:
    c.JupyterHub.authenticator_class = AUTHENTICATORS[settings.auth_type]
    c.Authenticator.admin_users = set(settings.admins)
    members = {user for users in settings.groups.values() for user in users}
    c.Authenticator.allowed_users = set(settings.allowed_users) | members | set(settings.admins) | {CHECK_USER}
    c.Authenticator.allow_all = settings.allow_all
    # Users the fleet adds later through the API (hubfleet apply) may log in without a restart.
    c.Authenticator.allow_existing_users = True
    c.LoginRecorderMixin.log_path = str(settings.state_dir / "logins.jsonl")
    options = settings.auth_options
    if settings.auth_type == "shared-password":
        c.SharedPasswordAuthenticator.user_password = settings.secret("shared_password")
    elif settings.auth_type == "native":
        # nativeauthenticator's own approval is the gate: approved sign-ups (and pre-authorized allowed_users and
        # admins) may log in, so JupyterHub's allow list must not refuse them.
        c.Authenticator.allow_all = True
        c.NativeAuthenticator.open_signup = bool(options.get("open_signup", False))
        c.NativeAuthenticator.minimum_password_length = int(options.get("minimum_password_length", 8))
        c.NativeAuthenticator.check_common_password = True
        import nativeauthenticator  # only hubs that use it pay for the import

        c.JupyterHub.template_paths = [str(Path(nativeauthenticator.__file__).parent / "templates")]
    elif settings.auth_type == "github":
        c.GitHubOAuthenticator.client_id = str(options["client_id"])
        c.GitHubOAuthenticator.client_secret = settings.secret("client_secret")
        c.GitHubOAuthenticator.oauth_callback_url = f"{settings.public_url}hub/oauth_callback"
        c.GitHubOAuthenticator.allowed_organizations = set(options.get("allowed_organizations", []))
