"""hubfleet's spawners: profiles and shared folders for every hub; real Unix users and cgroup limits when root.

`IsolatedSpawner` is the normal one-machine spawner: each hub user is a real Unix account (mapped per hub), with
a 0700 home, membership of the POSIX groups of their hub groups, and a cgroup enforcing the chosen profile's
memory and CPU limits. `SameUserSpawner` is the fallback when hubfleet does not run as root: every server runs
as the hub's own user, with no isolation at all. `hubfleet.hub.slurm.SlurmSpawner` (hubs with `backend: slurm`)
prepares the same Unix accounts through the mixin and runs each server as a Slurm job.
"""

from __future__ import annotations

import asyncio
import errno
import html
import os
import pwd
import stat
import sys
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path
from typing import Any

from jupyterhub.spawner import LocalProcessSpawner, SimpleLocalProcessSpawner, set_user_setuid
from jupyterhub.utils import random_port
from traitlets import Dict, Instance, Integer, List, Unicode, default
from traitlets.config import Configurable

from hubfleet.common.environments import EnvStore
from hubfleet.common.settings import LOOPBACK, EnvironmentChoice
from hubfleet.edu.courses import course_folder_path, folder_access
from hubfleet.hub.servers import PLAIN_START_ENV, SERVER_MODULE, ServerForkServers, current_umask
from hubfleet.spec.checks import EVERYONE, SCRATCH_FOLDER
from hubfleet.spec.edu import COURSE_ROLES, COURSES_FOLDER, course_groups, parse_group
from hubfleet.spec.models import Profile, SharedFolder
from hubfleet.system import accounts, cgroups, homes
from hubfleet.system.forkserver import ForkedProcess

PIDS_MAX = 4096
"""Processes and threads one server may hold at once (stops fork bombs from taking the machine)."""

SHARED_LINKS_DIR = "shared"
"""Folder in each home holding links to the hub's shared folders the user may see."""

SCRATCH_LINK = "scratch"
"""Link in each home to the user's scratch folder (hubs with `storage.scratch`)."""

SCRATCH_ENV = "SCRATCH_DIR"
"""Environment variable naming the user's scratch folder in their server."""

READY_POLL_SECONDS = 0.1

KERNEL_TRANSPORT_ARG = "--KernelManager.transport=ipc"
"""Kernels and their server talk over Unix sockets, not TCP: jupyter_client picks free TCP ports and only then does
the kernel bind them, so kernels started at once (a class arriving) could race for a port and fail; socket files in
the user's own runtime folder (`accounts.runtime_dir`) cannot clash. The folder's short path keeps the sockets' paths
under the 107-byte limit of Unix sockets, which a runtime folder in a home would pass with long user names."""

DASK_ENVIRONMENT_ENV = "DASK_GATEWAY__CLUSTER__OPTIONS__ENVIRONMENT"
"""The Dask Gateway client's default `environment` option: `build-<id>` of the build the server runs from, so that
the gateway starts the user's schedulers and workers from the same one (client and workers match). The prefix keeps
dask's config from reading an id of digits as a number."""


def _open_dir(path: Path | str, dir_fd: int | None = None) -> int:
    """Open directory `path` (relative to `dir_fd`), refusing a symlink at its last component."""
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)


def place_link(dir_fd: int, name: str, target: Path, uid: int, gid: int) -> bool:
    """Make `name` in directory `dir_fd` a symlink to `target` owned by `uid:gid`; never follows a link.

    An existing link to elsewhere is replaced. Returns False, changing nothing, when `name` is something else
    than a link (the user's own file or folder).
    """
    try:
        current: str | None = os.readlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        current = None
    except OSError as exc:
        if exc.errno == errno.EINVAL:  # not a symlink
            return False
        raise
    if current == str(target):
        return True
    if current is not None:
        os.unlink(name, dir_fd=dir_fd)
    os.symlink(target, name, dir_fd=dir_fd)
    os.chown(name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)
    return True


def remove_link(dir_fd: int, name: str, target: Path) -> None:
    """Remove `name` in directory `dir_fd` if it is a symlink to `target`."""
    try:
        if os.readlink(name, dir_fd=dir_fd) == str(target):
            os.unlink(name, dir_fd=dir_fd)
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise


def link_shared_folders(
    home: Path, uid: int, gid: int, targets: dict[str, Path], links_dir: str = SHARED_LINKS_DIR
) -> list[str]:
    """`~/<links_dir>/<name>` → target for each folder in `targets`; other links there are removed.

    Works through directory descriptors and never follows a symlink: the home belongs to the user, who may have
    replaced `~/shared` or anything in it with a link to elsewhere (an OSError then, nothing outside the home is
    touched). Returns the names that are in the way as something else than a link (left alone).
    """
    home_fd = _open_dir(home)
    try:
        try:
            links_fd = _open_dir(links_dir, dir_fd=home_fd)
        except FileNotFoundError:
            if not targets:
                return []
            os.mkdir(links_dir, 0o755, dir_fd=home_fd)
            links_fd = _open_dir(links_dir, dir_fd=home_fd)
        try:
            os.fchown(links_fd, uid, gid)
            for name in os.listdir(links_fd):
                mode = os.stat(name, dir_fd=links_fd, follow_symlinks=False).st_mode
                if name not in targets and stat.S_ISLNK(mode):
                    os.unlink(name, dir_fd=links_fd)
            return [name for name, target in targets.items() if not place_link(links_fd, name, target, uid, gid)]
        finally:
            os.close(links_fd)
    finally:
        os.close(home_fd)


def link_in_home(home: Path, uid: int, gid: int, name: str, target: Path | None, stale: Path) -> bool:
    """`~/<name>` → `target` (never following a link); with `target` None, remove a `~/<name>` link to `stale`.

    Returns False when `~/<name>` is the user's own file or folder (left alone).
    """
    home_fd = _open_dir(home)
    try:
        if target is None:
            remove_link(home_fd, name, stale)
            return True
        return place_link(home_fd, name, target, uid, gid)
    finally:
        os.close(home_fd)


class HubfleetSpawnerMixin(Configurable):
    """What every hubfleet spawner does: profiles (with a choice form), the user environment, shared folders, and
    (for the spawners that use real accounts) the user's Unix account with its hub groups."""

    hub_name = Unicode(config=True, help="the hub's name in the fleet")
    env_prefix = Unicode(config=True, help="Python environment of profiles that name no environment")
    environments = Dict(
        value_trait=Instance(EnvironmentChoice),
        config=True,
        help="name → environment profiles may name (hubfleet.common.settings.EnvironmentChoice)",
    )
    environments_root = Unicode("", config=True, help="the environment store (hubfleet.common.environments)")
    server_prefix = Unicode("", help="the environment the server starts from (chosen at each start)")
    server_build = Unicode("", help="its build id ('' for `env_prefix`)")
    home_root = Unicode("/home", config=True, help="parent directory of users' home directories")
    shared_root = Unicode(config=True, help="directory holding this hub's shared folders")
    profiles = List(Instance(Profile), config=True, help="resource profiles (hubfleet.spec.models.Profile)")
    shared_folders = List(
        Instance(SharedFolder), config=True, help="shared folders (hubfleet.spec.models.SharedFolder)"
    )
    scratch_root = Unicode("", config=True, help="parent of this hub's per-user scratch folders ('': no scratch)")
    home_quota = Integer(None, allow_none=True, config=True, help="bytes each home may hold (None: no limit)")

    user: Any
    user_options: dict
    log: Any

    @default("options_form")
    def _default_options_form(self) -> Callable[[Any], str]:
        return self._options_form

    @default("apply_user_options")
    def _default_apply_user_options(self) -> Callable[[Any, dict], None]:
        return self._check_user_options

    def _group_names(self) -> set[str]:
        return {group.name for group in self.user.groups}

    def user_courses(self) -> dict[str, tuple[str, dict]]:
        """Course → (this user's role in it, the course's properties), from the user's JupyterHub groups.

        A group counts when its name is a course's group (`parse_group`) and its properties name that course (as
        the fleet file's and run-time courses' groups do). With several roles in one course, the most privileged.
        """
        found: dict[str, tuple[str, dict]] = {}
        for group in self.user.groups:
            parsed = parse_group(group.name)
            properties = dict(group.properties or {})
            if parsed is None or properties.get("course") != parsed[0]:
                continue
            course, role = parsed
            if course not in found or COURSE_ROLES.index(role) < COURSE_ROLES.index(found[course][0]):
                found[course] = (role, properties)
        return dict(sorted(found.items()))

    def course_profiles(self) -> list[str]:
        """Names of the profiles this user's courses give them, in the order of the courses' names."""
        names = (properties.get("profile") for _, properties in self.user_courses().values())
        return list(dict.fromkeys(name for name in names if name))

    def allowed_profiles(self) -> list[Profile]:
        """The profiles this user may choose (admins may choose any): open ones, their groups', their courses'."""
        groups = self._group_names()
        from_courses = set(self.course_profiles())
        profiles = list(self.profiles)
        if self.user.admin:
            return profiles
        return [p for p in profiles if not p.groups or groups.intersection(p.groups) or p.name in from_courses]

    def default_profile(self, allowed: list[Profile]) -> Profile:
        """Among `allowed`, the profile used without a choice: the first course's profile, else the default."""
        by_name = {p.name: p for p in allowed}
        for name in self.course_profiles():
            if name in by_name:
                return by_name[name]
        return next((p for p in allowed if p.default), allowed[0])

    def chosen_profile(self, options: dict | None = None) -> Profile:
        """The profile a start uses: the user's choice (in `options`, else `user_options`), else the default."""
        allowed = self.allowed_profiles()
        if not allowed:
            raise RuntimeError("none of this hub's profiles is open to you: ask a hub admin to add you to a group")
        wanted = ((self.user_options if options is None else options) or {}).get("profile")
        if wanted is None:
            return self.default_profile(allowed)
        for profile in allowed:
            if profile.name == wanted:
                return profile
        raise RuntimeError(f"profile {wanted!r} does not exist or is not open to you")

    def chosen_environment(self, profile: Profile, options: dict | None = None) -> str | None:
        """The environment a start of `profile` uses: the user's choice among the profile's, else its first (None:
        the profile names none, its servers run from `env_prefix`)."""
        names = profile.environments
        wanted = ((self.user_options if options is None else options) or {}).get("environment")
        if wanted is None or not names:
            return names[0] if names else None
        if wanted not in names:
            raise RuntimeError(f"environment {wanted!r} is not one of profile {profile.name!r}'s")
        return wanted

    def _options_form(self, spawner: Any) -> str:
        allowed = self.allowed_profiles()
        if len(allowed) < 2 and not any(len(p.environments) > 1 for p in allowed):
            return ""
        default = self.default_profile(allowed).name
        rows = []
        for profile in allowed:
            checked = " checked" if profile.name == default else ""
            label = html.escape(profile.display_name or profile.name)
            description = html.escape(profile.description)
            rows.append(
                f'<label class="list-group-item"><input type="radio" name="profile" value="{html.escape(profile.name)}"'
                f"{checked}> <strong>{label}</strong> <small>{description}</small>"
                f"{self._environment_choice(profile)}</label>"
            )
        return '<div class="list-group">' + "".join(rows) + "</div>"

    def _environment_choice(self, profile: Profile) -> str:
        """The profile's environment under its name: a line for one, a choice (preselected first) for several."""
        choices = [(name, self.environments.get(name)) for name in profile.environments]
        titles = [(name, html.escape(choice.title if choice else name)) for name, choice in choices]
        if len(titles) == 1:
            return f'<div><small>Environment: <span class="hubfleet-environment">{titles[0][1]}</span></small></div>'
        if not titles:
            return ""
        options = "".join(f'<option value="{html.escape(name)}">{title}</option>' for name, title in titles)
        field = f"environment-{html.escape(profile.name)}"
        return (
            f'<div><label><small>Environment</small> <select name="{field}" class="form-select-sm">{options}'
            "</select></label></div>"
        )

    def options_from_form(self, formdata: dict[str, list[str]]) -> dict[str, str]:
        """The chosen profile's name, and the environment chosen for it (when it offers several)."""
        choice = formdata.get("profile", [""])[0]
        if not choice:
            return {}
        environment = formdata.get(f"environment-{choice}", [""])[0]
        return {"profile": choice, "environment": environment} if environment else {"profile": choice}

    def visible_folders(self) -> list[SharedFolder]:
        """Shared folders this user may read (through any of their groups)."""
        groups = self._group_names() | {EVERYONE}
        return [f for f in self.shared_folders if groups.intersection(f.access)]

    def _check_user_options(self, spawner: Any, user_options: dict) -> None:
        """JupyterHub's apply_user_options hook: an unknown or forbidden profile or environment is refused (400)."""
        self.chosen_environment(self.chosen_profile(user_options), user_options)

    def _exited(self) -> int | None:
        """The exit code of a server that died during its start, if it did."""
        proc = getattr(self, "proc", None)
        return proc.poll() if proc is not None else None

    async def wait_until_ready(self, ip: str, port: int) -> None:
        """Return as soon as the new server listens (JupyterHub's own check backs off to seconds between tries).

        The probe is a bare TCP connect every 0.1 s: cheap for the hub even with many servers starting at once. A
        server that exits during start-up fails the spawn at once, with its exit code, instead of after a timeout.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.http_timeout
        while loop.time() < deadline:
            code = self._exited()
            if code is not None:
                raise RuntimeError(f"the server exited with code {code} while starting; see the hub log")
            try:
                _, writer = await asyncio.open_connection(ip, port)
            except OSError:
                await asyncio.sleep(READY_POLL_SECONDS)
                continue
            writer.close()
            return

    def _apply_profile(self) -> Profile:
        profile = self.chosen_profile()
        self.mem_limit = profile.memory
        self.cpu_limit = profile.cpu
        self.server_prefix, self.server_build = self._environment_of(profile)
        self.cmd = [str(Path(self.server_prefix) / "bin" / "jupyterhub-singleuser")]
        self.log.info(
            "Starting %s with profile %s (%s CPU, %s bytes) from %s",
            self.user.name,
            profile.name,
            profile.cpu,
            profile.memory,
            self.server_prefix,
        )
        return profile

    def _environment_of(self, profile: Profile) -> tuple[str, str]:
        """(prefix, build id) the server starts from: the active version of the chosen environment, read now (a
        new version or a rollback reaches the next start; running servers keep theirs), else `env_prefix`."""
        name = self.chosen_environment(profile)
        if name is None:
            return self.env_prefix, ""
        choice = self.environments.get(name)
        found = EnvStore(Path(self.environments_root)).active_prefix(choice.key) if choice is not None else None
        if found is None:
            raise RuntimeError(f"environment {name!r} is not built yet: ask the hub's operator (`hubfleet env build`)")
        version, prefix = found
        self.log.info("%s: environment %s v%s (build %s)", self.user.name, choice.key, version.number, version.build)
        return str(prefix), version.build

    def _add_env(self, env: dict[str, str]) -> dict[str, str]:
        env["PATH"] = f"{self.server_prefix or self.env_prefix}/bin:/usr/local/bin:/usr/bin:/bin"
        if self.server_build:
            env[DASK_ENVIRONMENT_ENV] = f"build-{self.server_build}"
        env["HUBFLEET_HUB"] = self.hub_name
        if self.scratch_dir is not None:
            env[SCRATCH_ENV] = str(self.scratch_dir)
        return env

    @property
    def unix_name(self) -> str:
        """The Unix account this hub user maps to."""
        return accounts.unix_username(self.hub_name, self.user.name)

    @property
    def scratch_dir(self) -> Path | None:
        """This user's scratch folder (None: the hub has no scratch)."""
        return Path(self.scratch_root) / self.unix_name if self.scratch_root else None

    def _link_scratch(self, home: Path, uid: int, gid: int) -> None:
        """`~/scratch` → the user's scratch folder; without scratch, remove a link left from when the hub had it."""
        stale = Path(self.shared_root) / SCRATCH_FOLDER / self.unix_name
        try:
            if not link_in_home(home, uid, gid, SCRATCH_LINK, self.scratch_dir, stale):
                self.log.warning(
                    "~/%s of %s is not a link: not linking the scratch folder (still in $%s)",
                    SCRATCH_LINK,
                    self.user.name,
                    SCRATCH_ENV,
                )
        except OSError as exc:
            self.log.warning("cannot link ~/%s for %s: %s", SCRATCH_LINK, self.user.name, exc)

    def _prepare_account(self) -> accounts.Account:
        """Create the Unix account, set its hub groups, link the shared folders it may see, and make its scratch
        folder (the user's own, 0700, in a root-owned parent) with its `~/scratch` link; returns the account."""
        home = Path(self.home_root) / self.unix_name
        hub_group = accounts.hub_groupname(self.hub_name)
        accounts.ensure_group(hub_group)
        account = accounts.ensure_user(
            self.unix_name, home, comment=f"{self.user.name} on hub {self.hub_name}", groups=[hub_group]
        )
        self._limit_home(account)
        wanted = {accounts.unix_groupname(self.hub_name, g) for g in self._group_names()}
        for group in wanted:
            accounts.ensure_group(group)
        accounts.set_managed_groups(self.unix_name, wanted, accounts.hub_group_prefix(self.hub_name))
        self._link_shared_folders(account)
        self._prepare_course_folders(account)
        scratch = self.scratch_dir
        if scratch is not None:
            accounts.ensure_folder(scratch.parent)
            accounts.ensure_folder(scratch, account.uid, account.gid, 0o700)
        self._link_scratch(account.home, account.uid, account.gid)
        return account

    def _limit_home(self, account: accounts.Account) -> None:
        """The home as a file system of the quota's size (an existing home moves in first); see system.homes. A home
        that kept its image after the quota was removed is mounted as it is."""
        if self.home_quota is None and not homes.image_path(account.home).exists():
            return
        use = homes.ensure_home(account, self.home_quota)
        if self.home_quota is not None and use.size is not None and use.size > self.home_quota * 1.01:
            self.log.warning(
                "home of %s holds %d bytes, more than its lowered quota: it keeps %d bytes until it holds less",
                self.user.name,
                use.used,
                use.size,
            )

    def home_for_export(self) -> tuple[Path, int | None, int | None]:
        """This user's home as it is now, for a download of their files: (folder, uid, gid). A home kept in a quota
        image that is not mounted (a machine just rebooted) is mounted first, as its next server start would.
        FileNotFoundError when the user has no home on this machine yet."""
        try:
            entry = pwd.getpwnam(self.unix_name)
        except KeyError:
            raise FileNotFoundError(f"{self.unix_name} has no Unix account yet") from None
        home = Path(self.home_root) / self.unix_name
        if homes.image_path(home).exists():
            homes.ensure_home(accounts.Account(self.unix_name, entry.pw_uid, entry.pw_gid, home), None)
        if not home.is_dir() or home.is_symlink():
            raise FileNotFoundError(f"{home} is not a folder")
        return home, entry.pw_uid, entry.pw_gid

    def _prepare_course_folders(self, account: accounts.Account) -> None:
        """The folder of each of the user's courses that has one (made here too for courses created at run time,
        with its ACL: students read, staff write), linked as `~/courses/<course>`; links to other courses go."""
        unix_group = partial(accounts.unix_groupname, self.hub_name)
        targets = {}
        for course, (_, properties) in self.user_courses().items():
            if not properties.get("folder", True):
                continue
            path = course_folder_path(Path(self.shared_root).parent, self.hub_name, course)
            try:
                for group in course_groups(course).values():
                    accounts.ensure_group(unix_group(group))
                accounts.ensure_shared_folder(path, folder_access(unix_group, course))
            except accounts.AccountsError as exc:
                self.log.error("course folder %s of %s not available: %s", path, self.user.name, exc)
                continue
            targets[course] = path
        try:
            in_the_way = link_shared_folders(account.home, account.uid, account.gid, targets, COURSES_FOLDER)
        except OSError as exc:
            self.log.warning("cannot link the course folders of %s in ~/%s: %s", self.user.name, COURSES_FOLDER, exc)
            return
        for name in in_the_way:
            self.log.warning("~/%s/%s of %s is not a link: left alone", COURSES_FOLDER, name, self.user.name)

    def _link_shared_folders(self, account: accounts.Account) -> None:
        targets = {f.name: Path(self.shared_root) / f.name for f in self.visible_folders()}
        try:
            in_the_way = link_shared_folders(account.home, account.uid, account.gid, targets)
        except OSError as exc:
            self.log.warning("cannot link the shared folders of %s in ~/%s: %s", self.user.name, SHARED_LINKS_DIR, exc)
            return
        for name in in_the_way:
            self.log.warning("~/%s/%s of %s is not a link: left alone", SHARED_LINKS_DIR, name, self.user.name)


class StartSteps:
    """The steps of one server start, as JupyterHub's progress events: said once, read by any number of pages."""

    def __init__(self) -> None:
        self.said: list[dict] = []
        self.finished = False
        self._changed = asyncio.Event()

    def say(self, progress: int, message: str) -> None:
        self.said.append({"progress": progress, "message": message})
        self._changed.set()

    def done(self) -> None:
        self.finished = True
        self._changed.set()

    async def events(self) -> AsyncIterator[dict]:
        sent = 0
        while True:
            while sent < len(self.said):
                yield self.said[sent]
                sent += 1
            if self.finished:
                return
            self._changed.clear()
            await self._changed.wait()


_FORK_SERVERS: dict[str, ServerForkServers] = {}
"""The hub's server fork servers, by folder (one set per hub process)."""


class IsolatedSpawner(HubfleetSpawnerMixin, LocalProcessSpawner):
    """Each server runs as the user's own Unix account, inside a cgroup with the profile's limits; it is forked from
    a warm fork server of its environment when one is there (`hubfleet.hub.servers`), else started the plain way."""

    cgroup_relpath = Unicode("", help="the server's cgroup, relative to the hierarchy's root")
    hub_cgroup = Unicode(config=True, help="the hub's cgroup (its servers' groups are below it)")
    fork_servers_dir = Unicode(
        "", config=True, help="folder of the fork servers servers are started from ('': every start is plain)"
    )
    _forked: ForkedProcess | None = None
    _steps = StartSteps()

    def load_state(self, state: dict) -> None:
        super().load_state(state)
        self.cgroup_relpath = state.get("cgroup", "")

    def get_state(self) -> dict:
        state = super().get_state()
        if self.cgroup_relpath:
            state["cgroup"] = self.cgroup_relpath
        return state

    def clear_state(self) -> None:
        super().clear_state()
        self.cgroup_relpath = ""
        self._forked = None

    async def start(self) -> Any:
        self._steps = StartSteps()
        profile = self._apply_profile()
        self._steps.say(10, f"Preparing your account and folders (profile {profile.display_name or profile.name})")
        await asyncio.get_running_loop().run_in_executor(None, self._prepare_account)
        driver = cgroups.detect()
        self._cgroup = None
        if driver is None:
            self.log.warning("No writable cgroup hierarchy: %s's limits are not enforced", self.user.name)
        else:
            relpath = f"{self.hub_cgroup}/{self.unix_name}"
            if self.name:
                relpath += f"-{self.name}"
            limits = cgroups.Limits(memory_bytes=profile.memory, cpu=profile.cpu, pids_max=PIDS_MAX)
            self._cgroup = driver.create(relpath, limits)
            self.cgroup_relpath = relpath
        self._steps.say(40, "Starting your server")
        ip, port = await self._start_forked() or await super().start()
        self._steps.say(70, "Waiting for your server to answer")
        try:
            await self.wait_until_ready(ip, port)
        finally:
            self._steps.done()
        return ip, port

    async def progress(self) -> AsyncIterator[dict]:
        """JupyterHub's progress events of the start under way (shown on the spawn page)."""
        async for event in self._steps.events():
            yield event

    async def _start_forked(self) -> tuple[str, int] | None:
        """Fork the server from its environment's fork server, as the user; None: start it the plain way."""
        if not self.fork_servers_dir:
            return None
        if self.port == 0:
            self.port = random_port()
        env = self.get_env()  # after the port: the server learns it from $JUPYTERHUB_SERVICE_URL
        if any(name in env for name in PLAIN_START_ENV):
            return None
        servers = _FORK_SERVERS.setdefault(self.fork_servers_dir, ServerForkServers(Path(self.fork_servers_dir)))
        entry = pwd.getpwnam(self.unix_name)
        cgroup = getattr(self, "_cgroup", None)
        process = await servers.of(self.server_prefix or self.env_prefix).spawn(
            [sys.executable, "-m", SERVER_MODULE, *self.get_args()],
            cwd=Path(entry.pw_dir),
            env=env,
            log_path=None,
            user=(entry.pw_uid, entry.pw_gid, os.getgrouplist(self.unix_name, entry.pw_gid)),
            cgroup_procs=cgroup.procs_files() if cgroup is not None else (),
            umask=current_umask(),
        )
        if process is None:
            return None
        self.proc, self.pid, self._forked = None, process.pid, process
        self._reaping = asyncio.ensure_future(process.wait())  # its exit status, when it ends
        self.log.info(
            "Forked %s's server (pid %d) from the fork server of %s",
            self.user.name,
            process.pid,
            self.server_prefix or self.env_prefix,
        )
        self._steps.say(50, "Your server is starting, forked from a warm interpreter")
        return (self.ip or LOOPBACK, self.port)

    def _exited(self) -> int | None:
        code = super()._exited()
        if code is None and self._forked is not None and not self._forked.alive():
            return self._forked.returncode if self._forked.returncode is not None else -1
        return None

    async def _signal(self, sig: int) -> bool:
        """Signal the server: a forked one through its pidfd (that very process, or nothing)."""
        forked = self._forked
        if forked is not None and forked.pid == self.pid:
            if not forked.alive():
                return False
            forked.send_signal(sig)
            return True
        return await super()._signal(sig)

    def make_preexec_fn(self, name: str) -> Callable[[], None]:
        become_user = set_user_setuid(self.unix_name)
        cgroup = getattr(self, "_cgroup", None)
        join_cgroup = cgroups.prepare_preexec(cgroup) if cgroup is not None else None

        def preexec() -> None:
            if join_cgroup is not None:
                join_cgroup()
            become_user()

        return preexec

    def user_env(self, env: dict[str, str]) -> dict[str, str]:
        entry = pwd.getpwnam(self.unix_name)
        env["USER"] = self.unix_name
        env["HOME"] = entry.pw_dir
        env["SHELL"] = entry.pw_shell or "/bin/bash"
        env["JUPYTER_RUNTIME_DIR"] = str(accounts.runtime_dir(entry.pw_uid))
        return self._add_env(env)

    def get_args(self) -> list[str]:
        return [*super().get_args(), KERNEL_TRANSPORT_ARG]

    def _prepare_account(self) -> accounts.Account:
        account = super()._prepare_account()
        accounts.ensure_folder(accounts.runtime_dir(account.uid), account.uid, account.gid, 0o700)
        return account

    async def stop(self, now: bool = False) -> None:
        relpath = self.cgroup_relpath
        await super().stop(now=now)
        if relpath:
            driver = cgroups.detect()
            group = driver.open(relpath) if driver else None
            if group is not None:
                # Kernels and anything else the server left behind go with it.
                await asyncio.get_running_loop().run_in_executor(None, group.remove)


class SameUserSpawner(HubfleetSpawnerMixin, SimpleLocalProcessSpawner):
    """Fallback without root: every server runs as the hub's own user. Users are NOT isolated from each other."""

    homes_dir = Unicode(config=True, help="parent directory of the per-user working directories")

    @default("home_dir")
    def _default_home_dir(self) -> str:
        return str(Path(self.homes_dir) / self.user.name)

    async def start(self) -> Any:
        self._apply_profile()
        self.log.warning("Server of %s runs as the hub's own user: users are not isolated", self.user.name)
        if self.home_quota is not None:
            self.log.warning("Home quota of %s NOT enforced: home quotas need root", self.user.name)
        await asyncio.get_running_loop().run_in_executor(None, self._prepare_folders)
        ip, port = await super().start()
        await self.wait_until_ready(ip, port)
        return ip, port

    def home_for_export(self) -> tuple[Path, int | None, int | None]:
        """The user's working directory; no uid to become (every server runs as the hub's own user)."""
        home = Path(self.home_dir)
        if not home.is_dir() or home.is_symlink():
            raise FileNotFoundError(f"{home} is not a folder")
        return home, None, None

    def _prepare_folders(self) -> None:
        """The working directory, and the scratch folder with its link (no accounts, no ownership: one user)."""
        home = Path(self.home_dir)
        home.mkdir(mode=0o755, parents=True, exist_ok=True)
        scratch = self.scratch_dir
        if scratch is not None:
            scratch.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._link_scratch(home, os.getuid(), os.getgid())

    def user_env(self, env: dict[str, str]) -> dict[str, str]:
        return self._add_env(super().user_env(env))
