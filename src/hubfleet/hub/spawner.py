"""hubfleet's spawners: profiles and shared folders for every hub; real Unix users and cgroup limits when root.

`IsolatedSpawner` is the normal one-machine spawner: each hub user is a real Unix account (mapped per hub), with
a 0700 home, membership of the POSIX groups of their hub groups, and a cgroup enforcing the chosen profile's
memory and CPU limits. `SameUserSpawner` is the fallback when hubfleet does not run as root: every server runs
as the hub's own user, with no isolation at all.
"""

from __future__ import annotations

import asyncio
import html
import os
import pwd
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jupyterhub.spawner import LocalProcessSpawner, SimpleLocalProcessSpawner, set_user_setuid
from traitlets import Dict, List, Unicode, default
from traitlets.config import Configurable

from hubfleet.spec.checks import EVERYONE
from hubfleet.spec.models import Profile, SharedFolder
from hubfleet.system import accounts, cgroups

PIDS_MAX = 4096
"""Processes and threads one server may hold at once (stops fork bombs from taking the machine)."""

SHARED_LINKS_DIR = "shared"

READY_POLL_SECONDS = 0.1
"""Folder in each home holding links to the hub's shared folders the user may see."""


class HubfleetSpawnerMixin(Configurable):
    """What every hubfleet spawner does: profiles (with a choice form), the user environment, shared folders."""

    hub_name = Unicode(config=True, help="the hub's name in the fleet")
    env_prefix = Unicode(config=True, help="Python environment user servers run from")
    home_root = Unicode("/home", config=True, help="parent directory of users' home directories")
    shared_root = Unicode(config=True, help="directory holding this hub's shared folders")
    profiles = List(Dict(), config=True, help="resource profiles (hubfleet.spec.Profile as dicts)")
    shared_folders = List(Dict(), config=True, help="shared folders (hubfleet.spec.SharedFolder as dicts)")

    user: Any
    user_options: dict
    log: Any

    def _group_names(self) -> set[str]:
        return {group.name for group in self.user.groups}

    def allowed_profiles(self) -> list[Profile]:
        """The profiles this user may choose (admins may choose any)."""
        groups = self._group_names()
        profiles = [Profile.model_validate(p) for p in self.profiles]
        if self.user.admin:
            return profiles
        return [p for p in profiles if not p.groups or groups.intersection(p.groups)]

    def chosen_profile(self, options: dict | None = None) -> Profile:
        """The profile a start uses: the user's choice (in `options`, else `user_options`), else the default."""
        allowed = self.allowed_profiles()
        if not allowed:
            raise RuntimeError("none of this hub's profiles is open to you: ask a hub admin to add you to a group")
        wanted = ((self.user_options if options is None else options) or {}).get("profile")
        if wanted is None:
            return next((p for p in allowed if p.default), allowed[0])
        for profile in allowed:
            if profile.name == wanted:
                return profile
        raise RuntimeError(f"profile {wanted!r} does not exist or is not open to you")

    def _options_form(self, spawner: Any) -> str:
        allowed = self.allowed_profiles()
        if len(allowed) < 2:
            return ""
        default = next((p for p in allowed if p.default), allowed[0]).name
        rows = []
        for profile in allowed:
            checked = " checked" if profile.name == default else ""
            label = html.escape(profile.display_name or profile.name)
            description = html.escape(profile.description)
            rows.append(
                f'<label class="list-group-item"><input type="radio" name="profile" value="{html.escape(profile.name)}"'
                f"{checked}> <strong>{label}</strong> <small>{description}</small></label>"
            )
        return '<div class="list-group">' + "".join(rows) + "</div>"

    def options_from_form(self, formdata: dict[str, list[str]]) -> dict[str, str]:
        """The chosen profile's name."""
        choice = formdata.get("profile", [""])[0]
        return {"profile": choice} if choice else {}

    def visible_folders(self) -> list[SharedFolder]:
        """Shared folders this user may read (through any of their groups)."""
        groups = self._group_names() | {EVERYONE}
        folders = [SharedFolder.model_validate(f) for f in self.shared_folders]
        return [f for f in folders if groups.intersection(f.access)]

    def _check_user_options(self, spawner: Any, user_options: dict) -> None:
        """JupyterHub's apply_user_options hook: an unknown or forbidden profile is refused (HTTP 400)."""
        self.chosen_profile(user_options)

    async def wait_until_ready(self, ip: str, port: int) -> None:
        """Return as soon as the new server listens (JupyterHub's own check backs off to seconds between tries).

        The probe is a bare TCP connect every 0.1 s: cheap for the hub even with many servers starting at once. A
        server that exits during start-up fails the spawn at once, with its exit code, instead of after a timeout.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.http_timeout
        while loop.time() < deadline:
            code = self.proc.poll() if getattr(self, "proc", None) is not None else None
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
        self.cmd = [str(Path(self.env_prefix) / "bin" / "jupyterhub-singleuser")]
        self.log.info(
            "Starting %s with profile %s (%s CPU, %s bytes)", self.user.name, profile.name, profile.cpu, profile.memory
        )
        return profile

    def _add_env(self, env: dict[str, str]) -> dict[str, str]:
        env["PATH"] = f"{self.env_prefix}/bin:/usr/local/bin:/usr/bin:/bin"
        env["HUBFLEET_HUB"] = self.hub_name
        return env

    @property
    def unix_name(self) -> str:
        """The Unix account this hub user maps to."""
        return accounts.unix_username(self.hub_name, self.user.name)

    def _prepare_account(self) -> None:
        """Create the Unix account, set its hub groups and link the shared folders it may see."""
        home = Path(self.home_root) / self.unix_name
        hub_group = accounts.hub_groupname(self.hub_name)
        accounts.ensure_group(hub_group)
        account = accounts.ensure_user(
            self.unix_name, home, comment=f"{self.user.name} on hub {self.hub_name}", groups=[hub_group]
        )
        wanted = {accounts.unix_groupname(self.hub_name, g) for g in self._group_names()}
        for group in wanted:
            accounts.ensure_group(group)
        accounts.set_managed_groups(self.unix_name, wanted, accounts.hub_group_prefix(self.hub_name))
        self._link_shared_folders(account)

    def _link_shared_folders(self, account: accounts.Account) -> None:
        links = account.home / SHARED_LINKS_DIR
        visible = {f.name for f in self.visible_folders()}
        if not visible and not links.exists():
            return
        links.mkdir(mode=0o755, exist_ok=True)
        os.chown(links, account.uid, account.gid)
        for entry in links.iterdir():
            if entry.is_symlink() and entry.name not in visible:
                entry.unlink()
        for name in visible:
            link = links / name
            if not link.is_symlink():
                link.symlink_to(Path(self.shared_root) / name)
                os.lchown(link, account.uid, account.gid)


class IsolatedSpawner(HubfleetSpawnerMixin, LocalProcessSpawner):
    """Each server runs as the user's own Unix account, inside a cgroup with the profile's limits."""

    cgroup_relpath = Unicode("", help="the server's cgroup, relative to the hierarchy's root")

    @default("options_form")
    def _default_options_form(self) -> Callable[[Any], str]:
        return self._options_form

    @default("apply_user_options")
    def _default_apply_user_options(self) -> Callable[[Any, dict], None]:
        return self._check_user_options

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

    async def start(self) -> Any:
        profile = self._apply_profile()
        await asyncio.get_running_loop().run_in_executor(None, self._prepare_account)
        driver = cgroups.detect()
        self._cgroup = None
        if driver is None:
            self.log.warning("No writable cgroup hierarchy: %s's limits are not enforced", self.user.name)
        else:
            relpath = f"hubfleet/{self.hub_name}/{self.unix_name}"
            if self.name:
                relpath += f"-{self.name}"
            limits = cgroups.Limits(memory_bytes=profile.memory, cpu=profile.cpu, pids_max=PIDS_MAX)
            self._cgroup = driver.create(relpath, limits)
            self.cgroup_relpath = relpath
        ip, port = await super().start()
        await self.wait_until_ready(ip, port)
        return ip, port

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
        return self._add_env(env)

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

    @default("options_form")
    def _default_options_form(self) -> Callable[[Any], str]:
        return self._options_form

    @default("apply_user_options")
    def _default_apply_user_options(self) -> Callable[[Any, dict], None]:
        return self._check_user_options

    @default("home_dir")
    def _default_home_dir(self) -> str:
        return str(Path(self.homes_dir) / self.user.name)

    async def start(self) -> Any:
        self._apply_profile()
        self.log.warning("Server of %s runs as the hub's own user: users are not isolated", self.user.name)
        ip, port = await super().start()
        await self.wait_until_ready(ip, port)
        return ip, port

    def user_env(self, env: dict[str, str]) -> dict[str, str]:
        return self._add_env(super().user_env(env))
