"""Turn a hub's `HubSettings` into JupyterHub configuration (traitlets), pointing at hubfleet's hub-side classes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hubfleet.common.settings import (
    CONSOLE_SERVICE_NAME,
    CULLER_SERVICE_NAME,
    LOOPBACK,
    SERVICE_NAME,
    HubSettings,
)
from hubfleet.edu.courses import group_properties, members_by_role, staff_role
from hubfleet.edu.exchange.settings import ACCESS_SCOPE as EXCHANGE_ACCESS
from hubfleet.edu.exchange.settings import SERVICE_NAME as EXCHANGE_SERVICE
from hubfleet.edu.exchange.student import URL_ENV as EXCHANGE_URL_ENV
from hubfleet.hub.home_export import EXPORT_PATH
from hubfleet.research.settings import SERVICE_NAME as GATEWAY_SERVICE
from hubfleet.spec.auth import CILogonIdP
from hubfleet.spec.edu import COURSE_ROLES, group_name
from hubfleet.system import accounts
from hubfleet.usage.quota import QuotaHook

AUTHENTICATORS = {
    "shared-password": "hubfleet.hub.authenticators.SharedPasswordAuthenticator",
    "native": "hubfleet.hub.authenticators.native.NativeAuthenticator",
    "github": "hubfleet.hub.authenticators.github.GitHubAuthenticator",
    "oidc": "hubfleet.hub.authenticators.oidc.OIDCAuthenticator",
    "cilogon": "hubfleet.hub.authenticators.cilogon.CILogonAuthenticator",
    "ldap": "hubfleet.hub.authenticators.ldap.LDAPAuthenticator",
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

EXCHANGE_SCOPES = ["list:users", "read:users", "read:servers", "list:groups", "read:groups"]
"""What the assignment exchange reads for its course pages: the courses' members, their servers and activity."""

EXCHANGE_ROSTER_SCOPES = ["admin:users", "groups"]
"""What it needs on hubs with LTI, to sync a course's roster from the LMS ("sync now"): create users, change
group members."""


def configure(c: Any, settings: HubSettings) -> None:
    """Fill JupyterHub's config object `c` from `settings`."""
    state = settings.state_dir
    c.JupyterHub.public_url = settings.public_url
    address = settings.address
    c.JupyterHub.bind_url = address.through_proxy("")  # the fleet's proxy, below the hub's prefix (sets base_url)
    c.JupyterHub.hub_bind_url = address.hub_url
    c.JupyterHub.hub_connect_url = address.hub_url
    c.JupyterHub.db_url = f"sqlite:///{state / 'jupyterhub.sqlite'}"
    c.JupyterHub.cookie_secret_file = str(state / "jupyterhub_cookie_secret")
    # Requests come through the front door's proxy, which appends the client's address to X-Forwarded-For (and a
    # request forwarded after a wake passes it once more, from loopback): the client is the last address not ours.
    c.JupyterHub.trusted_downstream_ips = [LOOPBACK]
    if settings.public_url.startswith("https://"):  # JupyterHub's login cookies follow public_url; its XSRF cookie not
        c.JupyterHub.tornado_settings = {"cookie_options": {"secure": True}}
    c.JupyterHub.pid_file = str(state / "jupyterhub.pid")
    # User servers outlive a hub restart; `hubfleet down` stops them through the API.
    c.JupyterHub.cleanup_servers = False
    c.JupyterHub.cleanup_proxy = False
    c.JupyterHub.template_vars = {
        "announcement_login": f"Welcome to {settings.title}",
        "announcement_home": f'Your files: <a href="{settings.base_url}hub{EXPORT_PATH}">download your home folder '
        "as a zip</a>",
    }

    # One proxy for the whole fleet, kept alive by the supervisor; the hub sees and changes only its own routes.
    c.JupyterHub.proxy_class = "hubfleet.hub.proxy.FleetProxy"
    c.ConfigurableHTTPProxy.should_start = False
    c.ConfigurableHTTPProxy.api_url = settings.proxy.api_url
    c.ConfigurableHTTPProxy.auth_token = settings.secret("proxy_token")

    _configure_auth(c, settings)
    if settings.lti is not None:
        _configure_lti(c, settings)

    c.JupyterHub.spawner_class = SPAWNERS[settings.isolation]
    c.Spawner.default_url = "/lab"
    c.Spawner.ip = LOOPBACK
    c.Spawner.http_timeout = 60
    c.Spawner.start_timeout = 120
    c.Spawner.pre_spawn_hook = QuotaHook(state)  # refuses new servers while the hard quota says so
    c.HubfleetSpawnerMixin.hub_name = settings.hub
    c.HubfleetSpawnerMixin.env_prefix = str(settings.user_env)
    c.HubfleetSpawnerMixin.environments = dict(settings.environments)
    c.HubfleetSpawnerMixin.environments_root = str(settings.environments_root or "")
    c.HubfleetSpawnerMixin.home_root = str(settings.home_root)
    c.HubfleetSpawnerMixin.shared_root = str(settings.shared_root / settings.hub)
    c.HubfleetSpawnerMixin.profiles = list(settings.profiles)  # typed: validated once, when the settings were read
    c.HubfleetSpawnerMixin.shared_folders = list(settings.shared_folders)
    c.HubfleetSpawnerMixin.scratch_root = str(settings.scratch_root or "")
    c.HubfleetSpawnerMixin.home_quota = settings.home_quota
    c.SameUserSpawner.homes_dir = str(state / "homes")
    c.IsolatedSpawner.fork_servers_dir = str(state / "servers")  # servers forked from a warm interpreter
    c.IsolatedSpawner.hub_cgroup = settings.cgroup
    if settings.isolation == "slurm":
        _configure_slurm(c, settings)

    groups: dict[str, dict] = {name: {"users": members} for name, members in settings.groups.items()}
    services = [{"name": SERVICE_NAME, "api_token": settings.secret("service_token")}]
    roles = [{"name": "hubfleet-fleet", "scopes": FLEET_SERVICE_SCOPES, "services": [SERVICE_NAME]}]
    _configure_courses(settings, groups, roles)
    c.JupyterHub.load_groups = groups
    if settings.culling.enabled:
        services.append({"name": CULLER_SERVICE_NAME, "api_token": settings.secret("culler_token")})
        roles.append({"name": "hubfleet-culler", "scopes": CULLER_SCOPES, "services": [CULLER_SERVICE_NAME]})
    if settings.gateway is not None:
        _configure_gateway(c, settings, services, roles)
    if settings.exchange is not None:
        _configure_exchange(c, settings, services, roles)
    if settings.console_redirect_uri is not None:
        _configure_console(settings, settings.console_redirect_uri, services, roles)
    if settings.home_quota is not None and settings.isolation != "same-user":
        _configure_home_quota(c, settings)
    c.JupyterHub.services = services
    c.JupyterHub.load_roles = roles


def _configure_courses(settings: HubSettings, groups: dict[str, dict], roles: list[dict]) -> None:
    """Each course of the fleet file: its three groups (members and properties) and its staff role.

    `load_groups` only adds members: people added at run time (CLI, LMS) stay; `hubfleet apply` removes those the
    fleet file no longer names through the API.
    """
    for course in settings.courses:
        members = members_by_role(course)
        for role in COURSE_ROLES:
            groups[group_name(course.name, role)] = {
                "users": members[role],
                "properties": group_properties(course, role),
            }
        roles.append(staff_role(course.name))


def _configure_console(settings: HubSettings, redirect_uri: str, services: list[dict], roles: list[dict]) -> None:
    """The fleet console as an OAuth client: it learns who logs in (name, admin) and nothing more (no roles, the
    default identify-only scopes); the operator runs it, so users are not asked to confirm. Every user may log in to
    it (the console itself decides what they see, and tells the others why not): the user role gets its access
    scope, merged with what other services already added."""
    services.append(
        {
            "name": CONSOLE_SERVICE_NAME,
            "oauth_client_id": f"service-{CONSOLE_SERVICE_NAME}",
            "oauth_redirect_uri": redirect_uri,
            "oauth_no_confirm": True,
            "api_token": settings.secret("console_oauth_secret"),
            "display": False,
        }
    )
    _grant_every_user(roles, f"access:services!service={CONSOLE_SERVICE_NAME}")


def _grant_every_user(roles: list[dict], scope: str) -> None:
    """Add `scope` to JupyterHub's default user role (created here with `self` if no service added it yet)."""
    user_role = next((role for role in roles if role["name"] == "user"), None)
    if user_role is None:
        roles.append({"name": "user", "scopes": ["self", scope]})
    else:
        user_role["scopes"] = [*user_role["scopes"], scope]


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


def _configure_exchange(c: Any, settings: HubSettings, services: list[dict], roles: list[dict]) -> None:
    """The hub's assignment exchange: a service every user reaches, from a browser (OAuth, no confirmation page:
    the operator runs it) or from their server with its token; servers find it through `$HUBFLEET_EXCHANGE_URL`.
    Merges with what other services already set (the user role, server token scopes, server environment)."""
    exchange = settings.exchange
    assert exchange is not None
    services.append(
        {
            "name": EXCHANGE_SERVICE,
            "url": exchange.url,
            "api_token": settings.secret("exchange_token"),
            "oauth_no_confirm": True,
            "display": True,
        }
    )
    scopes = EXCHANGE_SCOPES + (EXCHANGE_ROSTER_SCOPES if settings.lti is not None else [])
    roles.append({"name": "hubfleet-exchange", "scopes": scopes, "services": [EXCHANGE_SERVICE]})
    _grant_every_user(roles, EXCHANGE_ACCESS)
    scopes = c.Spawner.server_token_scopes if "server_token_scopes" in c.Spawner else SERVER_TOKEN_SCOPES
    c.Spawner.server_token_scopes = [*scopes, EXCHANGE_ACCESS]
    environment = c.Spawner.environment if "environment" in c.Spawner else {}
    c.Spawner.environment = {**environment, EXCHANGE_URL_ENV: exchange.address}


USER_SERVER_CONFIG = Path(__file__).parent / "user_server" / "jupyter_server_config.py"
"""The jupyter_server configuration users' servers load on hubs with home quotas (a clear "home full" error)."""


def _configure_home_quota(c: Any, settings: HubSettings) -> None:
    """Users' servers load `USER_SERVER_CONFIG`: copied (root's, readable by all) beside the hub's shared folders,
    since the hub's own environment may not be readable by users. Merges with the server environment set so far."""
    folder = settings.shared_root / settings.hub / ".server-config"
    accounts.ensure_folder(folder)
    text = USER_SERVER_CONFIG.read_text(encoding="utf-8")
    target = folder / USER_SERVER_CONFIG.name
    if not target.exists() or target.read_text(encoding="utf-8") != text:
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.chmod(0o644)
        tmp.replace(target)
    environment = c.Spawner.environment if "environment" in c.Spawner else {}
    c.Spawner.environment = {**environment, "JUPYTER_CONFIG_PATH": str(folder)}


def _configure_slurm(c: Any, settings: HubSettings) -> None:
    """Servers as Slurm jobs (batchspawner); importing the spawner now also installs its port API handler."""
    import hubfleet.hub.slurm  # noqa: F401 - before JupyterHub builds its handlers

    c.SlurmSpawner.start_timeout = SLURM_START_TIMEOUT
    if settings.slurm is not None and settings.slurm.conf is not None:
        c.SlurmSpawner.slurm_conf = str(settings.slurm.conf)


def _configure_auth(c: Any, settings: HubSettings) -> None:
    c.JupyterHub.authenticator_class = AUTHENTICATORS[settings.auth_type]
    c.Authenticator.admin_users = set(settings.admins)
    c.Authenticator.allowed_users = settings.named_users()
    c.Authenticator.allow_all = settings.allow_all
    # Users the fleet adds later through the API (hubfleet apply) may log in without a restart.
    c.Authenticator.allow_existing_users = True
    c.LoginRecorderMixin.log_path = str(settings.state_dir / "logins.jsonl")
    options = settings.auth_options
    if settings.auth_type == "shared-password":
        c.SharedPasswordAuthenticator.user_password = settings.secret("shared_password")
        if "admin_password" in settings.secrets:  # JupyterHub's admins log in with their own password
            c.SharedPasswordAuthenticator.admin_password = settings.secret("admin_password")
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
    elif settings.auth_type in ("oidc", "cilogon"):
        _configure_oauth_sign_on(c, settings)
    elif settings.auth_type == "ldap":
        _configure_ldap(c, settings)
    if settings.directory is not None:
        directory = settings.directory
        c.DirectoryGroupsMixin.group_map = directory.mapped()
        c.DirectoryGroupsMixin.directory_allowed_groups = set(directory.allowed_groups)
        c.DirectoryGroupsMixin.directory_admin_groups = set(directory.admin_groups)


def _configure_oauth_sign_on(c: Any, settings: HubSettings) -> None:
    """OpenID Connect (any provider, endpoints discovered) or CILogon: the hub is an OAuth client of the provider."""
    options = settings.auth_options
    c.OAuthenticator.client_id = str(options["client_id"])
    c.OAuthenticator.client_secret = settings.secret("client_secret")
    c.OAuthenticator.oauth_callback_url = f"{settings.public_url}hub/oauth_callback"
    c.OAuthenticator.scope = list(options["scopes"])  # type: ignore[arg-type]
    c.ClaimGroupsMixin.groups_claim = str(options["groups_claim"])
    if settings.auth_type == "oidc":
        c.OIDCAuthenticator.issuer = str(options["issuer"])
        c.OIDCAuthenticator.login_service = str(options["display_name"])
        c.OIDCAuthenticator.username_claim = str(options["username_claim"])
    else:
        c.CILogonAuthenticator.cilogon_host = str(options["host"])
        c.CILogonAuthenticator.allowed_idps = {
            entity: _cilogon_idp(idp) for entity, idp in settings.cilogon_idps.items()
        }


def _cilogon_idp(idp: CILogonIdP) -> dict[str, Any]:
    """One identity provider as CILogonOAuthenticator's `allowed_idps` takes it."""
    derivation: dict[str, str] = {"username_claim": idp.username_claim}
    if idp.strip_domain:
        derivation |= {"action": "strip_idp_domain", "domain": idp.strip_domain}
    entry: dict[str, Any] = {"username_derivation": derivation, "allow_all": idp.allow_all}
    if idp.allowed_domains:
        entry["allowed_domains"] = list(idp.allowed_domains)
    return entry


def _configure_ldap(c: Any, settings: HubSettings) -> None:
    """LDAP / Active Directory: bind as the person (from a DN template, or a DN looked up first); the group DNs the
    hub names are the ones looked up at each login."""
    options = settings.auth_options
    c.LDAPAuthenticator.server_address = str(options["server"])
    if options.get("port"):
        c.LDAPAuthenticator.server_port = int(options["port"])  # type: ignore[arg-type]
    c.LDAPAuthenticator.tls_strategy = {"starttls": "before_bind", "ldaps": "on_connect", "insecure": "insecure"}[
        str(options["tls"])
    ]
    if options.get("ca_file"):
        c.LDAPAuthenticator.tls_kwargs = {"ca_certs_file": str(options["ca_file"])}
    templates = list(options.get("bind_dn_template") or [])  # type: ignore[arg-type]
    if templates:
        c.LDAPAuthenticator.bind_dn_template = templates
    else:
        c.LDAPAuthenticator.lookup_dn = True
        c.LDAPAuthenticator.user_search_base = str(options["user_search_base"])
        c.LDAPAuthenticator.user_attribute = str(options["user_attribute"])
        c.LDAPAuthenticator.lookup_dn_user_dn_attribute = str(options["user_attribute"])
        if options.get("bind_dn"):
            c.LDAPAuthenticator.lookup_dn_search_user = str(options["bind_dn"])
            c.LDAPAuthenticator.lookup_dn_search_password = settings.secret("bind_password")
    directory = settings.directory
    if directory is not None:
        named = [*directory.mapped(), *directory.allowed_groups, *directory.admin_groups]
        c.LDAPAuthenticator.allowed_groups = list(dict.fromkeys(named)) or None
    # Groups are groupOfNames / groupOfUniqueNames (OpenLDAP, Active Directory): ldapauthenticator's default also asks
    # for posixGroup's memberUid, which servers without the NIS schema refuse.
    c.LDAPAuthenticator.group_search_filter = "(|(member={userdn})(uniqueMember={userdn}))"
    c.LDAPAuthenticator.group_attributes = ["member", "uniqueMember"]


def _configure_lti(c: Any, settings: HubSettings) -> None:
    """LTI 1.3 on top of the hub's own login: its authenticator class gains the LTI endpoints (`with_lti`), and
    launch data goes to JupyterHub's encrypted auth_state."""
    from traitlets.utils.importstring import import_item

    from hubfleet.edu.lti.keys import TOOL_KEY_FILE
    from hubfleet.hub.authenticators.lti import TEMPLATES, with_lti  # only LTI hubs pay for the import

    assert settings.lti is not None
    c.JupyterHub.authenticator_class = with_lti(import_item(AUTHENTICATORS[settings.auth_type]))
    c.LTI13Authenticator.lti = settings.lti
    c.LTI13Authenticator.hub_name = settings.hub
    c.LTI13Authenticator.hub_public_url = settings.public_url
    c.LTI13Authenticator.key_file = str(settings.state_dir / TOOL_KEY_FILE)
    c.LTI13Authenticator.database_url = settings.database_url
    c.LTI13Authenticator.shared_root = str(settings.shared_root)  # the deep linking picker lists course folders
    # The fleet file's own people keep their names: an LMS person whose rule gives one of them gets a number.
    c.LTI13Authenticator.reserved_usernames = settings.named_users()
    c.Authenticator.enable_auth_state = True
    c.CryptKeeper.keys = [settings.secret("auth_state_key")]
    templates = c.JupyterHub.template_paths if "template_paths" in c.JupyterHub else []
    c.JupyterHub.template_paths = [*templates, str(TEMPLATES)]
