"""Tests for hubfleet.system.accounts: the name mapping, and (as root) real users, groups and shared folders."""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
import re
import secrets
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hubfleet.system.accounts import (
    Account,
    AccountsError,
    ensure_folder,
    ensure_group,
    ensure_shared_folder,
    ensure_user,
    hub_group_prefix,
    hub_groupname,
    remove_group,
    remove_user,
    runtime_dir,
    set_managed_groups,
    unix_groupname,
    unix_username,
)

VALID_NAME = re.compile(r"[a-z_][a-z0-9_-]*")
HUBS = ["research", "college", "r", "research-2", "a" * 20]
TRICKY = [
    "alice",
    "Alice",
    "ALICE",
    "alice.b",
    "alice_b",
    "alice-b",
    "alice b",
    "alice.b.",
    "a-very-long-name-that-certainly-does-not-fit-into-thirty-two-characters",
    "a-very-long-name-that-certainly-does-not-fit-into-thirty-two-characterz",
    "zoë",
    "zoe",
    "zoe\u0308",  # e + combining diaeresis
    "李雷",
    "李磊",
    "alice@example.org",
    "Alice@example.org",
    "",
    "_",
    "-",
    "-x",
    "0",
    "123",
    "g",
    "g_",
    "g_x",
    "g-x",
    "all",
    "hf-research",
    "research_alice",
]


# --- name mapping -----------------------------------------------------------------------------------------------


def test_examples() -> None:
    assert unix_username("research", "alice") == "research_alice"
    assert unix_groupname("research", "physics-101") == "research_g_physics-101"
    assert hub_groupname("research") == "hf-research"
    assert hub_group_prefix("research") == "research_g_"
    digest = hashlib.sha256(b"Alice.Smith").hexdigest()[:8]
    assert unix_username("research", "Alice.Smith") == f"research__alice-smith-{digest}"
    assert unix_groupname("research", "Alice.Smith") == f"research_g__alice-smith-{digest}"
    assert unix_username("research", "李雷") == "research__" + hashlib.sha256("李雷".encode()).hexdigest()[:8]


def test_plain_form_up_to_32_characters() -> None:
    fits = "x" * (32 - len("research_"))
    assert unix_username("research", fits) == f"research_{fits}"
    longer = unix_username("research", fits + "x")
    assert longer.startswith("research__xxx")
    assert len(longer) == 32


def test_names_are_valid_injective_and_disjoint() -> None:
    users = {(hub, name): unix_username(hub, name) for hub in HUBS for name in TRICKY}
    groups = {(hub, name): unix_groupname(hub, name) for hub in HUBS for name in TRICKY}
    hub_groups = {hub: hub_groupname(hub) for hub in HUBS}
    every = [*users.values(), *groups.values(), *hub_groups.values()]
    assert len(set(every)) == len(every)
    for name in every:
        assert VALID_NAME.fullmatch(name), name
        assert len(name) <= 32, name
    assert all(unix_username(hub, name) == mapped for (hub, name), mapped in users.items())  # deterministic


def test_hub_group_prefix_covers_exactly_the_hub_groups() -> None:
    for hub in HUBS:
        prefix = hub_group_prefix(hub)
        assert all(unix_groupname(hub, name).startswith(prefix) for name in TRICKY)
        others = [unix_username(h, name) for h in HUBS for name in TRICKY]
        others += [unix_groupname(h, name) for h in HUBS if h != hub for name in TRICKY]
        others += [hub_groupname(h) for h in HUBS]
        assert not [name for name in others if name.startswith(prefix)]


@pytest.mark.parametrize("hub", ["", "Research", "re_search", "1research", "-research", "a" * 21, "ré"])
def test_invalid_hub_names_are_rejected(hub: str) -> None:
    for mapping in (unix_username, unix_groupname):
        with pytest.raises(ValueError):
            mapping(hub, "alice")
    with pytest.raises(ValueError):
        hub_groupname(hub)


def test_invalid_unix_names_are_rejected_before_running_anything() -> None:
    with pytest.raises(ValueError):
        ensure_user("--badname", Path("/nonexistent/x"))
    with pytest.raises(ValueError):
        ensure_user("alice", Path("relative/home"))
    with pytest.raises(ValueError):
        ensure_group("Admins")
    with pytest.raises(ValueError):
        remove_user("a" * 33)


# --- real accounts (root) -----------------------------------------------------------------------------------------


@dataclass
class Sandbox:
    """A random hub name, a scratch directory, and the users and groups to remove afterwards."""

    hub: str
    base: Path
    users: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)

    def home(self, name: str) -> Path:
        return self.base / "homes" / self.hub / name

    def user(self, local: str, *, groups: Collection[str] = ()) -> Account:
        name = unix_username(self.hub, local)
        self.users.append(name)
        return ensure_user(name, self.home(name), comment=local, groups=groups)

    def group(self, name: str) -> str:
        self.groups.append(name)
        ensure_group(name)
        return name


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    hub = "t" + secrets.token_hex(3)[:5]
    base = Path(tempfile.mkdtemp(prefix=f"hubfleet-{hub}-", dir="/tmp"))
    base.chmod(0o755)  # test users must be able to traverse it
    box = Sandbox(hub=hub, base=base)
    try:
        yield box
    finally:
        errors = []
        for remove, name in [*((remove_user, n) for n in box.users), *((remove_group, n) for n in box.groups)]:
            try:
                remove(name)
            except AccountsError as exc:
                errors.append(exc)
        shutil.rmtree(base, ignore_errors=True)
        assert not errors


def run_as(account: Account, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` as ``account`` with its primary and current supplementary groups."""
    return subprocess.run(
        list(argv),
        user=account.uid,
        group=account.gid,
        extra_groups=os.getgrouplist(account.name, account.gid),
        cwd="/",
        env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def write_as(account: Account, path: Path, text: str, *, append: bool = False) -> subprocess.CompletedProcess[str]:
    redirect = ">>" if append else ">"
    return run_as(account, "/bin/sh", "-c", f'printf %s "$1" {redirect} "$2"', "sh", text, str(path))


def assert_ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stderr


def assert_denied(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode != 0
    assert "Permission denied" in result.stderr, result.stderr


def memberships(user: str) -> set[str]:
    """The supplementary groups ``user`` is listed in."""
    return {g.gr_name for g in grp.getgrall() if user in g.gr_mem}


def getfacl(path: Path) -> str:
    return subprocess.run(
        ["getfacl", "--omit-header", "--absolute-names", str(path)], capture_output=True, text=True, check=True
    ).stdout


@pytest.mark.needs("root")
def test_ensure_user_creates_a_private_home_and_is_idempotent(sandbox: Sandbox) -> None:
    account = sandbox.user("Alice:Smith\n")
    entry = pwd.getpwnam(account.name)
    assert account == Account(account.name, entry.pw_uid, entry.pw_gid, Path(entry.pw_dir))
    assert account.home == sandbox.home(account.name)
    assert entry.pw_shell == "/bin/bash"
    assert entry.pw_gecos == "Alice?Smith?"
    assert grp.getgrgid(account.gid).gr_name == account.name  # user-private group
    status = subprocess.run(["passwd", "--status", account.name], capture_output=True, text=True, check=True)
    assert status.stdout.split()[1] == "L"  # locked password

    def check_home() -> None:
        info = account.home.stat()
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (account.uid, account.gid, 0o700)

    check_home()
    for parent in (sandbox.base / "homes", sandbox.base / "homes" / sandbox.hub):
        info = parent.stat()
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (0, 0, 0o755)

    os.chown(account.home, 0, 0)
    account.home.chmod(0o755)
    assert ensure_user(account.name, account.home) == account
    check_home()
    shutil.rmtree(account.home)
    assert ensure_user(account.name, account.home) == account
    check_home()
    with pytest.raises(AccountsError, match="already exists with home"):
        ensure_user(account.name, sandbox.base / "elsewhere")


@pytest.mark.needs("root")
def test_accounts_and_memberships_are_safe_under_concurrency(sandbox: Sandbox) -> None:
    prefix = hub_group_prefix(sandbox.hub)
    names = [unix_username(sandbox.hub, f"user{i}") for i in range(12)]
    sandbox.users.extend(names)
    sandbox.groups.extend(unix_groupname(sandbox.hub, g) for g in ("a", "b", "c"))
    calls = names + names[:4]  # some names twice, to race on the same account too
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        gids = list(pool.map(ensure_group, sandbox.groups * 3))
        accounts = list(pool.map(lambda name: ensure_user(name, sandbox.home(name)), calls))
        list(pool.map(lambda name: set_managed_groups(name, set(sandbox.groups), prefix), names))
    assert len(set(gids)) == len(sandbox.groups)
    assert [a.name for a in accounts] == calls
    assert len({a.uid for a in accounts}) == len(names)
    for account in accounts:
        assert pwd.getpwnam(account.name).pw_uid == account.uid
        assert account.home.stat().st_uid == account.uid
    for group in sandbox.groups:
        assert sorted(grp.getgrnam(group).gr_mem) == sorted(names)


@pytest.mark.needs("root")
def test_users_cannot_read_each_others_homes(sandbox: Sandbox) -> None:
    alice, bob = sandbox.user("alice"), sandbox.user("bob")
    secret = bob.home / "secret"
    assert_ok(write_as(bob, secret, "s3cret"))
    assert run_as(bob, "cat", str(secret)).stdout == "s3cret"
    assert_denied(run_as(alice, "cat", str(secret)))
    assert_denied(run_as(alice, "ls", str(bob.home)))


@pytest.mark.needs("root")
def test_groups_and_managed_memberships(sandbox: Sandbox) -> None:
    hub, prefix = sandbox.hub, hub_group_prefix(sandbox.hub)
    everyone = sandbox.group(hub_groupname(hub))
    g1, g2, g3 = (sandbox.group(unix_groupname(hub, name)) for name in ("physics", "Chemistry Lab", "ta"))
    assert ensure_group(g1) == grp.getgrnam(g1).gr_gid
    alice = sandbox.user("alice", groups=[everyone])
    bob = sandbox.user("bob")
    assert memberships(alice.name) == {everyone}
    assert ensure_user(bob.name, bob.home, groups=[everyone]) == bob  # added to an existing user
    assert memberships(bob.name) == {everyone}

    set_managed_groups(alice.name, {g1, g2}, prefix)
    assert memberships(alice.name) == {everyone, g1, g2}
    set_managed_groups(alice.name, {g2, g3}, prefix)
    set_managed_groups(alice.name, {g2, g3}, prefix)
    assert memberships(alice.name) == {everyone, g2, g3}
    assert memberships(bob.name) == {everyone}
    assert grp.getgrnam(g2).gr_gid in os.getgrouplist(alice.name, alice.gid)
    set_managed_groups(alice.name, set(), prefix)
    assert memberships(alice.name) == {everyone}

    with pytest.raises(ValueError, match="do not start with"):
        set_managed_groups(alice.name, {everyone}, prefix)
    with pytest.raises(AccountsError, match="does not exist"):
        set_managed_groups(unix_username(hub, "ghost"), {g1}, prefix)
    with pytest.raises(AccountsError, match="does not exist"):
        set_managed_groups(alice.name, {unix_groupname(hub, "ghost")}, prefix)


@pytest.mark.needs("root")
def test_remove_user_and_group(sandbox: Sandbox) -> None:
    alice = sandbox.user("alice")
    group = sandbox.group(unix_groupname(sandbox.hub, "physics"))
    runtime = runtime_dir(alice.uid)
    ensure_folder(runtime, alice.uid, alice.gid, 0o700)
    (runtime / "kernel-1.json").write_text("{}")
    remove_user(alice.name)
    assert not runtime.exists()  # a later account with the same uid finds nothing of alice's
    remove_group(group)
    with pytest.raises(KeyError):
        pwd.getpwnam(alice.name)
    with pytest.raises(KeyError):
        grp.getgrnam(alice.name)  # the private group goes with the user
    with pytest.raises(KeyError):
        grp.getgrnam(group)
    assert not alice.home.exists()
    remove_user(alice.name)  # missing: no error
    remove_group(group)


@pytest.mark.needs("root", "acl")
def test_shared_folder_gives_writers_and_readers_their_access(sandbox: Sandbox) -> None:
    prefix = hub_group_prefix(sandbox.hub)
    writers = sandbox.group(unix_groupname(sandbox.hub, "writers"))
    readers = sandbox.group(unix_groupname(sandbox.hub, "readers"))
    w1, w2, reader, outsider = (sandbox.user(name) for name in ("w1", "w2", "reader", "outsider"))
    set_managed_groups(w1.name, {writers}, prefix)
    set_managed_groups(w2.name, {writers}, prefix)
    set_managed_groups(reader.name, {readers}, prefix)
    folder = sandbox.base / "shared" / "project"
    ensure_shared_folder(folder, {writers: "write", readers: "read"})

    info = folder.stat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (0, 0, 0o2770)
    parent = folder.parent.stat()
    assert (parent.st_uid, parent.st_gid, stat.S_IMODE(parent.st_mode)) == (0, 0, 0o755)

    notes, sub = folder / "notes.txt", folder / "sub"
    assert_ok(write_as(w1, notes, "one"))
    assert_ok(run_as(w1, "mkdir", str(sub)))
    assert_ok(write_as(w1, sub / "deep.txt", "two"))

    assert run_as(reader, "cat", str(notes)).stdout == "one"
    assert run_as(reader, "cat", str(sub / "deep.txt")).stdout == "two"
    assert_ok(run_as(reader, "ls", str(folder)))
    assert_denied(write_as(reader, notes, "x", append=True))
    assert_denied(run_as(reader, "touch", str(folder / "new")))
    assert_denied(run_as(reader, "touch", str(sub / "new")))
    assert_denied(run_as(reader, "rm", "-f", str(notes)))

    assert_ok(write_as(w2, notes, " more", append=True))
    assert_ok(write_as(w2, sub / "w2.txt", "three"))
    assert_ok(write_as(w1, sub / "w2.txt", "changed"))
    assert run_as(reader, "cat", str(notes)).stdout == "one more"

    assert_denied(run_as(outsider, "ls", str(folder)))
    assert_denied(run_as(outsider, "cat", str(notes)))


@pytest.mark.needs("root", "acl")
def test_shared_folder_reapplication_revokes_and_downgrades(sandbox: Sandbox) -> None:
    prefix = hub_group_prefix(sandbox.hub)
    writers = sandbox.group(unix_groupname(sandbox.hub, "writers"))
    readers = sandbox.group(unix_groupname(sandbox.hub, "readers"))
    writer, reader = sandbox.user("writer"), sandbox.user("reader")
    set_managed_groups(writer.name, {writers}, prefix)
    set_managed_groups(reader.name, {readers}, prefix)
    folder = sandbox.base / "shared"
    ensure_shared_folder(folder, {writers: "write", readers: "read"})
    acl = getfacl(folder)
    ensure_shared_folder(folder, {readers: "read", writers: "write"})
    assert getfacl(folder) == acl
    assert f"default:group:{readers}:r-x" in acl
    assert f"default:group:{writers}:rwx" in acl
    notes = folder / "notes.txt"
    assert_ok(write_as(writer, notes, "one"))
    assert run_as(reader, "cat", str(notes)).stdout == "one"

    ensure_shared_folder(folder, {writers: "write"})
    assert readers not in getfacl(folder)
    assert_denied(run_as(reader, "ls", str(folder)))
    assert_denied(run_as(reader, "cat", str(notes)))

    ensure_shared_folder(folder, {writers: "read"})
    assert run_as(writer, "cat", str(notes)).stdout == "one"
    assert_denied(run_as(writer, "touch", str(folder / "new")))

    ensure_shared_folder(folder, {})
    assert_denied(run_as(writer, "ls", str(folder)))
    assert stat.S_IMODE(folder.stat().st_mode) == 0o2770


@pytest.mark.needs("root", "acl")
def test_shared_folder_rejects_bad_input(sandbox: Sandbox) -> None:
    writers = sandbox.group(unix_groupname(sandbox.hub, "writers"))
    with pytest.raises(ValueError, match="'read' or 'write'"):
        ensure_shared_folder(sandbox.base / "a", {writers: "admin"})  # type: ignore[dict-item]
    with pytest.raises(AccountsError, match="does not exist"):
        ensure_shared_folder(sandbox.base / "a", {unix_groupname(sandbox.hub, "ghost"): "read"})
    (sandbox.base / "target").mkdir()
    (sandbox.base / "link").symlink_to(sandbox.base / "target")
    with pytest.raises(AccountsError, match="symlink"):
        ensure_shared_folder(sandbox.base / "link", {writers: "write"})
    assert stat.S_IMODE((sandbox.base / "target").stat().st_mode) == 0o755


@pytest.mark.needs("root")
def test_ensure_folder_forces_owner_and_mode_and_refuses_a_symlink(sandbox: Sandbox) -> None:
    alice = sandbox.user("alice")
    bob = sandbox.user("bob")
    parent = sandbox.base / "srv" / "hub" / "scratch"
    ensure_folder(parent)
    mine = parent / alice.name
    mine.mkdir(mode=0o777)  # whatever was there before
    ensure_folder(mine, alice.uid, alice.gid, 0o700)
    for path, owner, mode in ((parent, (0, 0), 0o755), (parent.parent, (0, 0), 0o755), (mine, alice, 0o700)):
        info = path.stat()
        expected = owner if isinstance(owner, tuple) else (owner.uid, owner.gid)
        assert ((info.st_uid, info.st_gid), stat.S_IMODE(info.st_mode)) == (expected, mode), path
    assert_ok(write_as(alice, mine / "results.csv", "1,2\n"))
    assert_denied(run_as(bob, "ls", str(mine)))
    assert_denied(run_as(bob, "mkdir", str(parent / "bobs-own")))
    elsewhere = sandbox.base / "elsewhere"
    elsewhere.mkdir(mode=0o755)
    (parent / bob.name).symlink_to(elsewhere)
    with pytest.raises(AccountsError, match="symlink"):
        ensure_folder(parent / bob.name, bob.uid, bob.gid, 0o700)
    assert elsewhere.stat().st_uid == 0 and stat.S_IMODE(elsewhere.stat().st_mode) == 0o755
