"""Checks that span several fields of a fleet file (references between sections, collisions)."""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from hubfleet.spec.auth import DIRECTORY_AUTH, SECRET_FILE_FIELDS, secret_value
from hubfleet.spec.edu import COURSES_FOLDER, course_groups
from hubfleet.spec.environments import Builds, Environment, debian_allowed, default_python, python_interpreters
from hubfleet.spec.models import Fleet, FrontDoor, Hub, PortRange

Finding = tuple[tuple[str | int, ...], str, str]
"""(location in the fleet data, message, hint)."""

EVERYONE = "everyone"
"""The pseudo-group of every user of a hub, usable in shared-folder access."""

COURSE_MEMBER_LISTS = ("instructors", "tas", "students")
"""The fields of a course that name its members."""

SCRATCH_FOLDER = "scratch"
"""The folder of a hub's per-user scratch folders, beside its shared folders: no shared folder may take its name."""


def cross_check(fleet: Fleet, base_dir: Path) -> Iterator[Finding]:
    """Every cross-reference problem of a structurally valid fleet."""
    needed = front_door_ports(fleet.front_door) + sum(ports_needed(hub) for hub in fleet.hubs.values())
    yield from _check_ports(fleet.front_door, fleet.internal_ports, needed)
    yield from _check_tls(fleet.front_door, base_dir)
    for name, env in fleet.environments.items():
        yield from _check_environment(env, ("environments", name), base_dir, fleet.builds)
    for name, hub in fleet.hubs.items():
        yield from _check_hub(hub, ("hubs", name), base_dir, set(fleet.environments))
        for env_name, env in hub.environments.items():
            yield from _check_environment(env, ("hubs", name, "environments", env_name), base_dir, fleet.builds)
    for hub in fleet.organisation.staff.hub_hours:
        if hub not in fleet.hubs:
            yield (
                ("organisation", "staff", "hub_hours", hub),
                f"there is no hub '{hub}' in this fleet",
                f"hubs: {', '.join(fleet.hubs)}",
            )


def cross_check_parts(data: dict[str, Any], base_dir: Path) -> Iterator[Finding]:
    """The cross checks of the parts of a structurally invalid fleet that are valid on their own.

    `data` is the fleet file's data with `defaults:` merged into each hub. Parts that do not validate are
    skipped: their structural problems are reported already.
    """
    hubs = data.get("hubs")
    try:
        door = FrontDoor.model_validate(data.get("front_door", {}))
        ports = PortRange.model_validate(data.get("internal_ports", {}))
    except ValidationError:
        pass
    else:
        yield from _check_ports(
            door, ports, front_door_ports(door) + (HUB_PORTS * len(hubs) if isinstance(hubs, dict) else 0)
        )
        yield from _check_tls(door, base_dir)
    try:
        builds = Builds.model_validate(data.get("builds", {}))
    except ValidationError:
        builds = None
    environments = data.get("environments")
    fleet_envs = set(environments) if isinstance(environments, dict) else set()
    for name, env_data in environments.items() if isinstance(environments, dict) else ():
        try:
            env = Environment.model_validate(env_data)
        except ValidationError:
            continue
        if builds is not None:
            yield from _check_environment(env, ("environments", name), base_dir, builds)
    if isinstance(hubs, dict):
        for name, hub_data in hubs.items():
            try:
                hub = Hub.model_validate(hub_data)
            except ValidationError:
                continue
            yield from _check_hub(hub, ("hubs", name), base_dir, fleet_envs)
            for env_name, env in hub.environments.items() if builds is not None else ():
                yield from _check_environment(env, ("hubs", name, "environments", env_name), base_dir, builds)


HUB_PORTS = 1
"""Internal ports of every hub: its hub API (every hub routes through the front door's one proxy)."""

FRONT_DOOR_PORTS = 3
"""Internal ports of the front door: its own app, its proxy's API, the hubs' route API (and with TLS, one more: the
proxy's plain-HTTP side on loopback, for the fleet's own traffic)."""


def front_door_ports(door: FrontDoor) -> int:
    """Internal ports the front door takes."""
    return FRONT_DOOR_PORTS + (1 if door.tls is not None else 0)


def ports_needed(hub: Hub) -> int:
    """Internal ports the hub takes: its own, 3 for a Dask Gateway (HTTP, TCP, API), 1 for an assignment exchange."""
    gateway = 3 if hub.dask is not None and hub.dask.enabled else 0
    exchange = 1 if hub.courses or hub.lti is not None else 0
    return HUB_PORTS + gateway + exchange


def _check_ports(door: FrontDoor, ports: PortRange, needed: int) -> Iterator[Finding]:
    if ports.start <= door.port <= ports.end:
        yield (
            ("front_door", "port"),
            f"port {door.port} is inside internal_ports ({ports.start}-{ports.end})",
            "move the front door or the internal port range",
        )
    if door.tls is not None and door.tls.http_port and ports.start <= door.tls.http_port <= ports.end:
        yield (
            ("front_door", "tls", "http_port"),
            f"port {door.tls.http_port} is inside internal_ports ({ports.start}-{ports.end})",
            "move the HTTP port or the internal port range",
        )
    if ports.end - ports.start + 1 < needed:
        yield (
            ("internal_ports",),
            f"too few internal ports: the fleet needs {needed} (3 for the front door, 4 with TLS, 1 per hub, 3 more "
            "for Dask, 1 more for courses or LTI)",
            "widen the range",
        )


def _check_tls(door: FrontDoor, base_dir: Path) -> Iterator[Finding]:
    """Certificate files are readable, PEM, and the key belongs to the certificate; an ACME CA file is readable."""
    tls = door.tls
    if tls is None:
        return
    if tls.cert_file is not None and tls.key_file is not None:
        cert, key = (path if path.is_absolute() else base_dir / path for path in (tls.cert_file, tls.key_file))
        for field, path in (("cert_file", cert), ("key_file", key)):
            if not (path.is_file() and os.access(path, os.R_OK)):
                yield ("front_door", "tls", field), f"cannot read {path}", "create the file or fix the path"
                return
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
        except (ssl.SSLError, ValueError) as exc:
            yield (
                ("front_door", "tls", "cert_file"),
                f"{cert} and {key} are not a PEM certificate chain and its key ({exc})",
                "the certificate file holds the server's certificate first, then the chain; the key file its key",
            )
    if tls.acme is not None and tls.acme.ca_file is not None:
        path = tls.acme.ca_file if tls.acme.ca_file.is_absolute() else base_dir / tls.acme.ca_file
        if not (path.is_file() and os.access(path, os.R_OK)):
            yield ("front_door", "tls", "acme", "ca_file"), f"cannot read {path}", "create the file or fix the path"


def _check_environment(
    env: Environment, at: tuple[str | int, ...], base_dir: Path, builds: Builds
) -> Iterator[Finding]:
    """The Python version is on this machine, the files are readable, the Debian packages are allowed."""
    pythons = python_interpreters()
    if env.python is not None and env.python not in pythons:
        available = ", ".join(sorted(pythons)) or "none"
        yield (
            (*at, "python"),
            f"Python {env.python} is not on this machine (available: {available})",
            f"install python{env.python} (e.g. with apt-get), or leave `python` out for {default_python() or '?'}",
        )
    for field in ("requirements_file", "lock_file"):
        value = getattr(env, field)
        if value is not None:
            resolved = value if value.is_absolute() else base_dir / value
            if not (resolved.is_file() and os.access(resolved, os.R_OK)):
                yield (*at, field), f"cannot read {resolved}", "create the file or fix the path"
    for index, path in enumerate(env.local_paths()):
        if not path.exists():
            yield (*at, "packages", index), f"{path} does not exist", "fix the path of the local package"
    for index, package in enumerate(env.debian_packages):
        if not debian_allowed(package, builds.debian_packages):
            yield (
                (*at, "debian_packages", index),
                f"the Debian package {package} is not allowed on this fleet",
                "the operator allows Debian packages in `builds.debian_packages` (names or patterns like r-cran-*)",
            )


def _check_hub(hub: Hub, at: tuple[str, ...], base_dir: Path, fleet_envs: set[str]) -> Iterator[Finding]:
    """One hub: its groups, courses, user names, profiles, shared folders and sign-on settings."""
    course_group_names = {group for course in hub.courses for group in course_groups(course.name).values()}
    known_groups = set(hub.groups) | course_group_names
    yield from _check_groups(hub, at, course_group_names)
    yield from _check_courses(hub, at)
    yield from _check_user_names(hub, at)
    yield from _check_profiles(hub, at, known_groups, fleet_envs | set(hub.environments))
    yield from _check_shared_folders(hub, at, known_groups)
    yield from _check_auth(hub, at, base_dir, known_groups)


def _check_groups(hub: Hub, at: tuple[str, ...], course_group_names: set[str]) -> Iterator[Finding]:
    """No hub group takes a reserved name or the name of a course's group."""
    for group in hub.groups:
        if group == EVERYONE:
            yield (
                (*at, "groups", group),
                f"'{EVERYONE}' is reserved for all users of the hub",
                "rename the group",
            )
        if group in course_group_names:
            yield (
                (*at, "groups", group),
                f"group '{group}' is also a group of one of the hub's courses",
                "rename the group, or list its members in the course",
            )


def _check_user_names(hub: Hub, at: tuple[str, ...]) -> Iterator[Finding]:
    """Every user name the hub lists (admins, allowed users, group and course members) is lower-case."""
    course_lists = (
        (getattr(course, field), (*at, "courses", index, field))
        for index, course in enumerate(hub.courses)
        for field in COURSE_MEMBER_LISTS
    )
    for user_list, where in (
        (hub.auth.admins, (*at, "auth", "admins")),
        (hub.auth.allowed_users, (*at, "auth", "allowed_users")),
        *((members, (*at, "groups", group)) for group, members in hub.groups.items()),
        *course_lists,
    ):
        for index, user in enumerate(user_list):
            if user != user.lower():
                yield (
                    (*where, index),
                    f"user name '{user}' has upper-case letters",
                    f"JupyterHub lower-cases user names: write '{user.lower()}'",
                )


def _check_profiles(hub: Hub, at: tuple[str, ...], known_groups: set[str], environments: set[str]) -> Iterator[Finding]:
    """At least one profile, one default, names unique; the groups and environments they name exist."""
    seen_profiles: set[str] = set()
    defaults = 0
    for index, profile in enumerate(hub.profiles):
        if profile.name in seen_profiles:
            yield (*at, "profiles", index, "name"), f"profile '{profile.name}' is defined twice", ""
        seen_profiles.add(profile.name)
        defaults += profile.default
        for g_index, group in enumerate(profile.groups):
            if group not in known_groups:
                yield _unknown_group((*at, "profiles", index, "groups", g_index), group, known_groups)
        for e_index, name in enumerate(profile.environments):
            if name not in environments:
                loc = (*at, "profiles", index, "environment")
                yield (
                    (*loc, e_index) if isinstance(profile.environment, list) else loc,
                    f"profile '{profile.name}' names environment '{name}', which neither the hub nor the fleet has",
                    f"environments here: {', '.join(sorted(environments)) or 'none'} (define it in `environments:`)",
                )
    if defaults > 1:
        yield (*at, "profiles"), "more than one profile has default: true", "keep one default profile"
    if not hub.profiles:
        yield (
            (*at, "profiles"),
            "a hub needs at least one profile",
            "remove 'profiles:' to get the default one",
        )


def _check_shared_folders(hub: Hub, at: tuple[str, ...], known_groups: set[str]) -> Iterator[Finding]:
    """Shared folders: unique names, none reserved, access only for groups that exist."""
    seen_folders: set[str] = set()
    for index, folder in enumerate(hub.storage.shared):
        if folder.name in seen_folders:
            yield (
                (*at, "storage", "shared", index, "name"),
                f"shared folder '{folder.name}' is defined twice",
                "",
            )
        seen_folders.add(folder.name)
        if folder.name == SCRATCH_FOLDER:
            yield (
                (*at, "storage", "shared", index, "name"),
                f"'{SCRATCH_FOLDER}' is reserved for the per-user scratch folders",
                "rename the shared folder (per-user scratch is `storage.scratch`)",
            )
        if folder.name == COURSES_FOLDER:
            yield (
                (*at, "storage", "shared", index, "name"),
                f"'{COURSES_FOLDER}' is reserved for the course folders",
                "rename the shared folder (a course's folder is its `folder: true`)",
            )
        for group in folder.access:
            if group != EVERYONE and group not in known_groups:
                loc = (*at, "storage", "shared", index, "access", group)
                yield _unknown_group(loc, group, known_groups)


def _check_auth(hub: Hub, at: tuple[str, ...], base_dir: Path, known_groups: set[str]) -> Iterator[Finding]:
    """A directory's group map names groups that exist; the secret and CA files are readable, a shared password
    long enough for JupyterHub."""
    if isinstance(hub.auth, DIRECTORY_AUTH):
        for directory_group, targets in hub.auth.mapped().items():
            for target in targets:
                if target not in known_groups:
                    loc = (*at, "auth", "group_map", directory_group)
                    yield _unknown_group(loc, target, known_groups)
    for field in (*SECRET_FILE_FIELDS, "ca_file"):
        value = getattr(hub.auth, field, None)
        if value is not None:
            resolved = value if value.is_absolute() else base_dir / value
            if not (resolved.is_file() and os.access(resolved, os.R_OK)):
                yield (*at, "auth", field), f"cannot read {resolved}", "create the file or fix the path"
            elif field == "password_file" and len(secret_value(None, resolved)) < 8:
                yield (
                    (*at, "auth", field),
                    f"the shared password in {resolved} is shorter than 8 characters",
                    "JupyterHub refuses shorter shared passwords",
                )


def _check_courses(hub: Hub, at: tuple[str, ...]) -> Iterator[Finding]:
    """A course's profile exists on the hub; nobody has two roles in one course; content comes with LTI launches."""
    profiles = {profile.name for profile in hub.profiles}
    for index, course in enumerate(hub.courses):
        if course.content is not None and hub.lti is None:
            yield (
                (*at, "courses", index, "content"),
                f"course '{course.name}' has content, which is pulled when students launch it from an LMS, but the"
                " hub has no lti: section",
                "add the hub's `lti:` registration, or share the content as a git-pull link (see the instructor guide)",
            )
        if course.profile is not None and course.profile not in profiles:
            yield (
                (*at, "courses", index, "profile"),
                f"course '{course.name}' uses profile '{course.profile}', which the hub does not have",
                f"profiles of this hub: {', '.join(sorted(profiles)) or 'none'}",
            )
        seen: dict[str, str] = {}
        for field in COURSE_MEMBER_LISTS:
            for m_index, user in enumerate(getattr(course, field)):
                if user in seen:
                    yield (
                        (*at, "courses", index, field, m_index),
                        f"'{user}' is listed in both {seen[user]} and {field} of course '{course.name}'",
                        "give each member one role per course",
                    )
                else:
                    seen[user] = field


def _unknown_group(loc: tuple[str | int, ...], group: str, groups: set[str]) -> Finding:
    known = ", ".join(sorted(groups | {EVERYONE})) or "none"
    return loc, f"unknown group '{group}'", f"groups of this hub: {known}"
