"""Unix accounts, groups and shared folders for hub users.

Every hub user is a real Unix user, and every hub group a POSIX group. Names are scoped by hub, so ``alice`` on
hub ``research`` and ``alice`` on hub ``college`` are two accounts. Hub names match ``[a-z][a-z0-9-]{0,19}``
(DNS-safe, never an ``_``). The mapping, with ``H`` the hub name and ``MAX = 32``:

* user ``U`` -> ``H_U`` when ``U`` matches ``[a-z0-9][a-z0-9-]*`` and the result fits ``MAX``,
  else ``H__<slug>-<hash>`` (``H__<hash>`` when no slug fits);
* hub group ``G`` -> ``H_g_G`` under the same condition, else ``H_g__<slug>-<hash>``;
* the group of all users of hub ``H`` -> ``hf-H``.

``hash`` is the first 8 hex digits of sha256 of the UTF-8 name; ``slug`` is the name folded to ASCII lowercase,
with runs of other characters turned into ``-``, cut to what fits ``MAX``. Why this is injective and the three
kinds never collide: every user and hub-group name has an ``_``, and the text before its first ``_`` is the hub
(hub names have none). Call the rest ``R``: a plain user's ``R`` has no ``_``, a hashed user's ``R`` starts with
``_``, a hub group's ``R`` starts with ``g_`` (so it has an ``_`` and does not start with one). ``hf-H`` has no
``_`` at all. Within each kind, plain names are the original name itself and cannot equal hashed ones (``__``
against a single ``_``); hashed names are distinct unless 32 bits of sha256 collide for two names of the same hub
and kind sharing the same slug. User-private groups (``useradd --user-group``) carry their user's name, so they
are covered too, and no user-private group or ``hf-H`` group starts with :func:`hub_group_prefix`.

Everything that changes the system shells out to the shadow tools (``useradd``, ``groupadd``, ``gpasswd``, …) and
to ``setfacl``, and needs root. Hub processes may call these functions concurrently: hubfleet's changes to users
and groups are serialized by a lock file in ``/run`` (the tools' own locks are not enough, see
:func:`_accounts_lock`), and a tool that finds ``/etc/passwd`` or ``/etc/group`` locked by someone else is retried.
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import hashlib
import os
import pwd
import random
import re
import shutil
import subprocess
import time
import unicodedata
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = [
    "Account",
    "AccountsError",
    "ensure_folder",
    "ensure_group",
    "ensure_shared_folder",
    "ensure_system_user",
    "ensure_user",
    "hub_group_prefix",
    "hub_groupname",
    "is_root",
    "remove_group",
    "remove_hub_accounts",
    "remove_user",
    "set_managed_groups",
    "unix_groupname",
    "unix_username",
]

MAX_NAME = 32
HASH_LEN = 8
HUB_RE = re.compile(r"[a-z][a-z0-9-]{0,19}")
PLAIN_RE = re.compile(r"[a-z0-9][a-z0-9-]*")
UNIX_NAME_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")

LOCK_RETRIES = 8
# Serializes hubfleet's changes to the user and group databases (in /run, which only root can write).
ACCOUNTS_LOCK = Path("/run/hubfleet-accounts.lock")
# Where the shadow tools live when the caller's PATH has no sbin directories (e.g. a hub started by systemd).
RUNTIME_ROOT = Path("/run/hubfleet/runtime")
"""Each account's Jupyter runtime folder is `<uid>` below it (`runtime_dir`): root-owned parents, the account's own
0700 folder, on the local tmpfs (emptied at boot)."""

TOOL_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
TOOL_PACKAGES = {"setfacl": "acl", "getfacl": "acl"}


class AccountsError(RuntimeError):
    """A user, group or folder could not be set up; the message includes the failing tool's stderr."""


@dataclass(frozen=True)
class Account:
    """A Unix account as found in the passwd database."""

    name: str
    uid: int
    gid: int
    home: Path


def _check_hub(hub: str) -> None:
    if not HUB_RE.fullmatch(hub):
        raise ValueError(f"invalid hub name {hub!r}: expected [a-z][a-z0-9-]*, at most 20 characters")


def _check_unix_name(name: str) -> None:
    if not UNIX_NAME_RE.fullmatch(name):
        raise ValueError(f"invalid Unix user or group name {name!r}")


def _scoped(prefix: str, name: str) -> str:
    """``prefix + name`` when that is plain and fits, else ``prefix + "_" + slug-hash`` (see module docstring)."""
    if PLAIN_RE.fullmatch(name) and len(prefix) + len(name) <= MAX_NAME:
        return prefix + name
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:HASH_LEN]
    room = MAX_NAME - len(prefix) - 1 - HASH_LEN - 1  # the "_" marker, then "-" between slug and hash
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name).strip("-")[: max(room, 0)].rstrip("-")
    return f"{prefix}_{slug}-{digest}" if slug else f"{prefix}_{digest}"


def unix_username(hub: str, user: str) -> str:
    """The Unix account name of hub user ``user``: ``{hub}_{user}`` or ``{hub}__{slug}-{hash}``.

    Plain form when ``user`` matches ``[a-z0-9][a-z0-9-]*`` and the result has at most 32 characters; anything
    else (uppercase, dots, ``@``, ``_``, non-ASCII, too long) gets the hashed form. See the module docstring for
    why different (hub, user) pairs never share a name.
    """
    _check_hub(hub)
    return _scoped(f"{hub}_", user)


def hub_group_prefix(hub: str) -> str:
    """``{hub}_g_``: the prefix of every :func:`unix_groupname` of ``hub`` and of nothing else.

    Pass it to :func:`set_managed_groups`; no Unix user name, user-private group or :func:`hub_groupname` starts
    with it.
    """
    _check_hub(hub)
    return f"{hub}_g_"


def unix_groupname(hub: str, group: str) -> str:
    """The POSIX group of hub group ``group``: ``{hub}_g_{group}`` or ``{hub}_g__{slug}-{hash}``.

    Same rule as :func:`unix_username` under the prefix :func:`hub_group_prefix`. A user name's part after
    ``{hub}_`` either has no ``_`` or starts with one, while a group's starts with ``g_``, so groups never take a
    user's name (nor that of the user's private group).
    """
    return _scoped(hub_group_prefix(hub), group)


def hub_groupname(hub: str) -> str:
    """``hf-{hub}``: the POSIX group every user of ``hub`` is in.

    It is the only kind of name without an ``_``, so it cannot equal any user or hub group name, and it does not
    start with :func:`hub_group_prefix` (so :func:`set_managed_groups` leaves it alone).
    """
    _check_hub(hub)
    return f"hf-{hub}"


def is_root() -> bool:
    """Whether this process runs as root, which every function changing accounts or folders needs."""
    return os.geteuid() == 0


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=TOOL_PATH)
    if found is None:
        package = TOOL_PACKAGES.get(name, "passwd")
        raise AccountsError(f"{name} not found; install the {package!r} package")
    return found


def _run(*args: str, pass_fds: Collection[int] = ()) -> None:
    """Run a system tool, retrying while it reports a held passwd/group lock.

    A non-zero exit code raises :class:`AccountsError` with the tool's stderr.
    """
    cmd = [_tool(args[0]), *args[1:]]
    env = {"PATH": TOOL_PATH, "LC_ALL": "C"}
    for attempt in range(LOCK_RETRIES):
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, pass_fds=tuple(pass_fds), check=False)
        if proc.returncode == 0:
            return
        locked = "cannot lock" in proc.stderr or (args[0] == "useradd" and proc.returncode == 10)
        if not locked or attempt == LOCK_RETRIES - 1:
            break
        time.sleep(min(0.05 * 2**attempt, 2.0) * random.uniform(0.5, 1.5))
    raise AccountsError(f"{' '.join(args)} failed with exit code {proc.returncode}: {proc.stderr.strip()}")


@contextlib.contextmanager
def _accounts_lock() -> Iterator[None]:
    """Hold hubfleet's lock while looking up and changing users and groups.

    The shadow tools' own locks do not make check-then-change safe: two concurrent ``useradd`` of one name both
    succeed (the second replaces the first account, with a new uid), and concurrent ``gpasswd --add`` on one
    group lose each other's members. Tools run by others outside hubfleet are not covered.
    """
    fd = os.open(ACCOUNTS_LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _passwd_entry(name: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def _group_entry(name: str) -> grp.struct_group | None:
    try:
        return grp.getgrnam(name)
    except KeyError:
        return None


def _open_dir(path: Path) -> int:
    """Create directory ``path`` if missing and open it, not following a symlink at its last component.

    A new directory starts as 0700, so it is never open to others before the caller sets owner and mode.
    """
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise AccountsError(f"{path} is not a directory (or is a symlink): {exc.strerror}") from exc


def _make_dir(path: Path, uid: int, gid: int, mode: int) -> None:
    """Create ``path`` if missing and force its owner and mode."""
    fd = _open_dir(path)
    try:
        os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def _make_parents(path: Path) -> None:
    """Create the missing ancestors of ``path`` as root:root 0755; existing ones are left untouched."""
    missing = []
    parent = path.parent
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    for directory in reversed(missing):
        _make_dir(directory, 0, 0, 0o755)


def _check_absolute(path: Path) -> Path:
    if not path.is_absolute():
        raise ValueError(f"{path} is not an absolute path")
    return Path(os.path.normpath(path))


def _gecos(comment: str) -> str:
    # The passwd format forbids ":" and newlines; keep the rest readable.
    return "".join(c if c.isprintable() and c != ":" else "?" for c in comment)


def ensure_user(
    name: str, home: Path, *, comment: str = "", groups: Collection[str] = (), uid: int | None = None
) -> Account:
    """Create user ``name`` if missing and make sure ``home`` exists, belongs to it and has mode 0700.

    New users get a user-private primary group, ``/bin/bash`` and a locked password. ``groups`` are
    supplementary groups (e.g. :func:`hub_groupname`) the user must be in; they must exist, are added when
    missing and never removed. Missing parents of ``home`` are created root:root 0755. Idempotent, and safe to
    call concurrently (also for the same name). An existing user with another home is an error. A new user gets
    `uid` (and a private group of the same number) when that is free (restores keep owners and ACLs as they were).
    """
    _check_unix_name(name)
    for group in groups:
        _check_unix_name(group)
    home = _check_absolute(home)
    _make_parents(home)
    with _accounts_lock():
        entry = _passwd_entry(name)
        if entry is None:
            _run(
                "useradd",
                "--create-home",
                "--home-dir",
                str(home),
                "--shell",
                "/bin/bash",
                "--user-group",
                *(["--groups", ",".join(sorted(groups))] if groups else []),
                "--comment",
                _gecos(comment),
                *(["--uid", str(uid)] if uid is not None and _free_id(uid, gid=False) else []),
                # Create the home 0700 right away; skip /etc/subuid ranges (they run out after ~9000 users).
                "--key",
                "HOME_MODE=0700",
                "--key",
                "SUB_UID_COUNT=0",
                "--key",
                "SUB_GID_COUNT=0",
                name,
            )
            entry = pwd.getpwnam(name)
        for group in sorted(groups):
            member = _group_entry(group)
            if member is None:
                raise AccountsError(f"group {group} does not exist")
            if name not in member.gr_mem:
                _run("gpasswd", "--add", name, group)
    if Path(entry.pw_dir) != home:
        raise AccountsError(f"user {name} already exists with home {entry.pw_dir}, not {home}")
    _make_dir(home, entry.pw_uid, entry.pw_gid, 0o700)
    return Account(name=name, uid=entry.pw_uid, gid=entry.pw_gid, home=home)


def ensure_system_user(name: str, home: Path) -> Account:
    """Create system account ``name`` if missing: no login shell, a locked password, its own group, ``home`` named
    but not created (the caller owns that folder). For services such as the environment builder. Idempotent."""
    _check_unix_name(name)
    home = _check_absolute(home)
    with _accounts_lock():
        entry = _passwd_entry(name)
        if entry is None:
            _run(
                "useradd",
                "--system",
                "--no-create-home",
                "--home-dir",
                str(home),
                "--shell",
                "/usr/sbin/nologin",
                "--user-group",
                "--comment",
                "hubfleet builds",
                name,
            )
            entry = pwd.getpwnam(name)
    return Account(name=name, uid=entry.pw_uid, gid=entry.pw_gid, home=Path(entry.pw_dir))


def _free_id(number: int, *, gid: bool) -> bool:
    """Whether no group (`gid`) or user has the id `number`."""
    try:
        (grp.getgrgid if gid else pwd.getpwuid)(number)
    except KeyError:
        return True
    return False


def ensure_group(name: str, gid: int | None = None) -> int:
    """Create group ``name`` if missing (with `gid` when that is free) and return its gid; safe to call
    concurrently."""
    _check_unix_name(name)
    with _accounts_lock():
        entry = _group_entry(name)
        if entry is None:
            _run("groupadd", *(["--gid", str(gid)] if gid is not None and _free_id(gid, gid=True) else []), name)
            entry = grp.getgrnam(name)
    return entry.gr_gid


def set_managed_groups(user: str, groups: set[str], managed_prefix: str) -> None:
    """Make ``user`` a member of exactly ``groups`` among the groups whose name starts with ``managed_prefix``.

    Memberships in other groups are left alone. Every name in ``groups`` must start with ``managed_prefix``
    (usually :func:`hub_group_prefix`) and exist. Changes reach the user's processes started afterwards.
    """
    _check_unix_name(user)
    if not managed_prefix:
        raise ValueError("managed_prefix must not be empty")
    outside = sorted(g for g in groups if not g.startswith(managed_prefix))
    if outside:
        raise ValueError(f"groups {outside} do not start with {managed_prefix!r}")
    for group in groups:
        _check_unix_name(group)
    with _accounts_lock():
        if _passwd_entry(user) is None:
            raise AccountsError(f"user {user} does not exist")
        current = {g.gr_name for g in grp.getgrall() if g.gr_name.startswith(managed_prefix) and user in g.gr_mem}
        for group in sorted(groups - current):
            _run("gpasswd", "--add", user, group)
        for group in sorted(current - groups):
            _run("gpasswd", "--delete", user, group)


def ensure_shared_folder(path: Path, access: Mapping[str, Literal["read", "write"]]) -> None:
    """Make ``path`` a folder that exactly the groups in ``access`` can read (``r-x``) or write (``rwx``).

    The folder is root:root with mode 2770 and no access for others; the groups get POSIX ACL entries, and the
    same entries as default ACL so that files and folders created inside inherit them (readers read what
    writers create later, writers modify each other's files). Re-applying replaces the folder's whole ACL, so a
    group left out loses its entries. Only the folder itself is changed: content created earlier keeps its
    entries, but a group that lost its entry on the folder can no longer reach any of it. Missing parents are
    created root:root 0755. Needs the ``acl`` package and a file system with POSIX ACLs.
    """
    path = _check_absolute(path)
    entries = []
    for group, level in sorted(access.items()):
        if level not in ("read", "write"):
            raise ValueError(f"access for group {group} must be 'read' or 'write', not {level!r}")
        _check_unix_name(group)
        entry = _group_entry(group)
        if entry is None:
            raise AccountsError(f"group {group} does not exist")
        entries.append(f"g:{entry.gr_gid}:{'rwx' if level == 'write' else 'r-x'}")
    acl = ["u::rwx", "g::---", "m::rwx", "o::---", *entries]
    spec = ",".join(acl + [f"d:{entry}" for entry in acl])
    _make_parents(path)
    fd = _open_dir(path)
    try:
        os.fchown(fd, 0, 0)
        os.fchmod(fd, 0o2770)
        # Through the descriptor, so the ACL lands on the directory just opened even if the path is swapped.
        try:
            _run("setfacl", "--set", spec, f"/proc/self/fd/{fd}", pass_fds=(fd,))
        except AccountsError as exc:
            raise AccountsError(f"setting the ACL of {path}: {exc}") from exc
    finally:
        os.close(fd)


def ensure_folder(path: Path, uid: int = 0, gid: int = 0, mode: int = 0o755) -> None:
    """Make ``path`` a directory owned by ``uid:gid`` with ``mode``, whatever it was (root:root 0755 by default).

    A symlink at ``path`` is an error, never followed. Missing parents are created root:root 0755; existing ones
    are left untouched, so the caller must make sure nobody but root can change them (as with the homes' and
    the shared folders' parents).
    """
    path = _check_absolute(path)
    _make_parents(path)
    _make_dir(path, uid, gid, mode)


def runtime_dir(uid: int) -> Path:
    """The Jupyter runtime folder of the account with ``uid`` (see RUNTIME_ROOT): a path short enough for the Unix
    sockets kept there."""
    return RUNTIME_ROOT / str(uid)


def remove_user(name: str) -> None:
    """Delete user ``name`` with its home, runtime folder, mail spool and private group; nothing happens if it is
    missing."""
    _check_unix_name(name)
    with _accounts_lock():
        entry = _passwd_entry(name)
        if entry is not None:
            _run("userdel", "--remove", "--force", name)
            shutil.rmtree(runtime_dir(entry.pw_uid), ignore_errors=True)


def remove_hub_accounts(hub: str) -> list[str]:
    """Remove every Unix user (homes included) and group of ``hub``; returns their names.

    For a hub that is gone for good: hubfleet never does this on its own, since users' files outlive their hub.
    """
    _check_hub(hub)
    prefix = f"{hub}_"
    removed = []
    for entry in pwd.getpwall():
        if entry.pw_name.startswith(prefix):
            remove_user(entry.pw_name)
            removed.append(entry.pw_name)
    for group in grp.getgrall():
        if group.gr_name.startswith(prefix) or group.gr_name == hub_groupname(hub):
            remove_group(group.gr_name)
            removed.append(group.gr_name)
    return removed


def remove_group(name: str) -> None:
    """Delete group ``name``; nothing happens if it is missing."""
    _check_unix_name(name)
    with _accounts_lock():
        if _group_entry(name) is not None:
            _run("groupdel", name)
