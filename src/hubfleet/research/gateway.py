"""A hub's Dask Gateway: dask-gateway-server configured from the hub's `dask:` spec, run as a JupyterHub service.

Runs inside the dask-gateway-server process (`dask_gateway_config.py` is its config file). Users are the hub's
JupyterHub users: a request needs a JupyterHub token of the hub that may access this service, so a user's
server token works and nothing else does. Schedulers and workers run as the user's own Unix account (the same
per-hub mapping as their server), inside one cgroup per user that enforces the user's core and memory limits.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from dask_gateway_server.auth import JupyterHubAuthenticator, unauthorized
from dask_gateway_server.backends.base import PublicException
from dask_gateway_server.backends.jobqueue.slurm import SlurmBackend
from dask_gateway_server.backends.local import LocalBackend
from dask_gateway_server.models import User
from dask_gateway_server.options import Float, Integer, Options, String

from hubfleet.common.environments import EnvStore
from hubfleet.research.settings import SERVICE_NAME, GatewaySettings
from hubfleet.spec.models import Dask, DaskLimits
from hubfleet.system import accounts, cgroups

PIDS_MAX = 4096
SCHEDULER_CORES = 1
SCHEDULER_MEMORY = 512 * 1024**2
GIB = 1024**3


def limits_for(dask: Dask, groups: list[str]) -> DaskLimits:
    """The user's limits: the most generous of their groups' limits, else the hub's default."""
    candidates = [dask.group_limits[g] for g in groups if g in dask.group_limits] or [dask.limits]
    return max(candidates, key=lambda limits: (limits.max_cores, limits.max_memory, limits.max_clusters))


def environment_commands(store: EnvStore | None, option: str) -> dict[str, list[str]]:
    """Scheduler and worker commands from the build an `environment` option (`build-<id>`) names: the environment
    the user's server runs from (its spawner sets the client's default). Empty: the gateway's default environment."""
    if not option:
        return {}
    build = option.removeprefix("build-")
    if store is None or not store.complete(build):
        raise ValueError(f"environment {option!r} does not exist on this hub's machine")
    dask_cli = str(store.prefix(build) / "bin" / "dask")
    return {"scheduler_cmd": [dask_cli, "scheduler"], "worker_cmd": [dask_cli, "worker"]}


def cluster_options(dask: Dask, store: EnvStore | None = None) -> Callable[[User], Options]:
    """The options users may set on new clusters (worker size, environment), with the user's limits applied."""

    def options_for(user: User) -> Options:
        limits = limits_for(dask, list(user.groups))

        def configure(options: Any, user: User) -> dict[str, Any]:
            return {
                **environment_commands(store, options.environment),
                "worker_cores": options.worker_cores,
                "worker_threads": options.worker_cores,
                "worker_memory": int(options.worker_memory * GIB),
                "cluster_max_cores": limits.max_cores,
                "cluster_max_memory": limits.max_memory,
                # Checked against the limits above when the cluster is made: set here, not only as config
                # defaults, or dask-gateway's 2 GiB default scheduler refuses users with less memory.
                "scheduler_cores": SCHEDULER_CORES,
                "scheduler_memory": SCHEDULER_MEMORY,
            }

        return Options(
            Integer("worker_cores", dask.worker_cores, min=1, max=dask.max_worker_cores, label="Worker cores"),
            Float(
                "worker_memory",
                dask.worker_memory / GIB,
                min=0.25,
                max=dask.max_worker_memory / GIB,
                label="Worker memory (GiB)",
            ),
            String("environment", "", label="Environment build (set by your server)"),
            handler=configure,
        )

    return options_for


class HubTokenAuthenticator(JupyterHubAuthenticator):
    """dask-gateway's JupyterHub authenticator, refusing unknown tokens with 401.

    JupyterHub 6 answers `GET /user` with an unknown token by 403, which upstream turns into a 500.
    """

    async def authenticate(self, request: Any) -> User:
        try:
            return await super().authenticate(request)
        except web.HTTPInternalServerError as exc:
            if exc.reason.startswith("Permission failure"):
                raise unauthorized("jupyterhub") from None
            raise


class HubUsersMixin:
    """Maps the gateway's users (the hub's JupyterHub names) to their Unix accounts, creating them if needed."""

    settings: GatewaySettings

    def unix_name(self, username: str) -> str:
        return accounts.unix_username(self.settings.hub, username)

    def _account(self, username: str) -> accounts.Account:
        name = self.unix_name(username)
        hub_group = accounts.hub_groupname(self.settings.hub)
        accounts.ensure_group(hub_group)
        return accounts.ensure_user(name, self.settings.home_root / name, comment=username, groups=[hub_group])

    async def start_cluster(self, user: User, cluster_options: dict) -> str:
        limits = limits_for(self.settings.dask, list(user.groups))
        active = await self.list_clusters(username=user.name)  # type: ignore[attr-defined]
        if len(active) >= limits.max_clusters:
            raise PublicException(
                f"you already run {len(active)} Dask cluster(s), your limit is {limits.max_clusters}: "
                "shut one down first (cluster.shutdown(), or Gateway().list_clusters())"
            )
        return await super().start_cluster(user, cluster_options)  # type: ignore[misc]


class HubfleetSlurmBackend(HubUsersMixin, SlurmBackend):
    """dask-gateway's Slurm backend: scheduler and workers are Slurm jobs submitted as the user's Unix account."""

    def get_staging_directory(self, cluster: Any) -> str:
        account = self._account(cluster.username)
        return str(account.home / ".dask-gateway" / cluster.name)

    async def do_as_user(self, user: str, action: str, **kwargs: Any) -> Any:
        return await super().do_as_user(self.unix_name(user), action, **kwargs)


class HubfleetLocalBackend(HubUsersMixin, LocalBackend):
    """dask-gateway's LocalBackend, as the hub's Unix users, within per-user limits.

    Also fixes upstream's `setup_working_directory`, which passes each character of the TLS file paths to chown
    (`paths.extend(path)`) and so makes `/` belong to the cluster's user when run as root.
    """

    def setup_working_directory(self, cluster: Any) -> str:
        account = self._account(cluster.username)
        workdir = self.settings.clusters_dir / cluster.name
        certs = Path(self.get_certs_directory(str(workdir)))
        logs = Path(self.get_logs_directory(str(workdir)))
        for path in (workdir, certs, logs):
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        cert_path, key_path = self._get_tls_paths(str(workdir))
        for path, data in ((cert_path, cluster.tls_cert), (key_path, cluster.tls_key)):
            with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
                out.write(data)
        for path in (workdir, certs, logs, Path(cert_path), Path(key_path)):
            os.chown(path, account.uid, account.gid)
        return str(workdir)

    def _user_cgroup(self, cluster: Any) -> cgroups.Cgroup | None:
        """The cgroup all of the user's Dask processes share: the kernel holds them to the user's limits."""
        driver = cgroups.detect()
        if driver is None:
            self.log.warning("no writable cgroup hierarchy: Dask limits of %s are not enforced", cluster.username)
            return None
        relpath = f"{self.settings.cgroup}/{self.unix_name(cluster.username)}-dask"
        memory, cores = cluster.config.get("cluster_max_memory"), cluster.config.get("cluster_max_cores")
        return driver.create(relpath, cgroups.Limits(memory_bytes=memory, cpu=cores, pids_max=PIDS_MAX))

    def make_preexec_fn(self, cluster: Any) -> Callable[[], None]:
        entry = pwd.getpwnam(self.unix_name(cluster.username))
        groups = os.getgrouplist(entry.pw_name, entry.pw_gid)
        workdir = cluster.state["workdir"]
        group = self._user_cgroup(cluster)
        join = cgroups.prepare_preexec(group) if group is not None else None

        def preexec() -> None:
            if join is not None:
                join()
            os.setgid(entry.pw_gid)
            os.setgroups(groups)
            os.setuid(entry.pw_uid)
            os.chdir(workdir)

        return preexec

    def get_env(self, cluster: Any) -> dict[str, str]:
        env = super().get_env(cluster)
        entry = pwd.getpwnam(self.unix_name(cluster.username))
        bin_dir = Path(cluster.config.worker_cmd[0]).parent  # the cluster's environment (see cluster_options)
        env.update({"USER": entry.pw_name, "HOME": entry.pw_dir, "PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin"})
        env.pop("VIRTUAL_ENV", None)
        return env


def configure(c: Any, settings: GatewaySettings) -> None:
    """Fill dask-gateway-server's config object `c` from `settings`."""
    HubUsersMixin.settings = settings
    bin_dir = settings.user_env / "bin"
    c.DaskGateway.address = settings.address
    if settings.backend == "slurm":
        c.DaskGateway.backend_class = HubfleetSlurmBackend
        # The launcher runs as the user (sudo), so it comes from the user environment; jobs need Slurm's config.
        c.SlurmBackend.dask_gateway_jobqueue_launcher = str(bin_dir / "dask-gateway-jobqueue-launcher")
        environment = {"PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin"}
        if os.environ.get("SLURM_CONF"):
            environment["SLURM_CONF"] = os.environ["SLURM_CONF"]
        c.ClusterConfig.environment = environment
        if settings.partition:
            c.SlurmClusterConfig.partition = settings.partition
    else:
        c.DaskGateway.backend_class = HubfleetLocalBackend
    c.DaskGateway.authenticator_class = HubTokenAuthenticator
    c.JupyterHubAuthenticator.jupyterhub_api_url = settings.hub_api_url
    c.JupyterHubAuthenticator.jupyterhub_api_token = settings.secret("gateway_token")
    c.JupyterHubAuthenticator.jupyterhub_service_name = SERVICE_NAME
    c.Proxy.address = settings.proxy_address
    c.Proxy.tcp_address = settings.tcp_address
    c.Proxy.prefix = settings.prefix
    c.DBBackendBase.db_url = f"sqlite:///{settings.state_dir / 'dask-gateway.sqlite'}"
    c.DBBackendBase.db_encrypt_keys = [settings.secret("gateway_db_key")]
    c.LocalBackend.clusters_directory = str(settings.clusters_dir)
    store = EnvStore(settings.environments_root) if settings.environments_root else None
    c.Backend.cluster_options = cluster_options(settings.dask, store)
    c.ClusterConfig.scheduler_cmd = [str(bin_dir / "dask"), "scheduler"]
    c.ClusterConfig.worker_cmd = [str(bin_dir / "dask"), "worker"]
    c.ClusterConfig.scheduler_cores = SCHEDULER_CORES
    c.ClusterConfig.scheduler_memory = SCHEDULER_MEMORY
    c.ClusterConfig.idle_timeout = float(settings.dask.idle_timeout)
