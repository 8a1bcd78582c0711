"""Entering the sandbox: what a single-use grading process can see and do.

The forkserver forks each notebook's process into a new PID namespace (it is PID 1 there: it sees no process of
the host, and when it ends every process it left behind ends too). That process then, still as root:

1. joins its cgroup (memory, pids, CPU limits) through the ``cgroup.procs`` descriptors the grader passed;
2. gets new mount, network, IPC and UTS namespaces (no network interface at all, not even loopback; no abstract
   Unix socket of the host; host name ``grader``);
3. builds a minimal root file system on an empty tmpfs and pivots into it: ``/usr`` and the Python environment
   read-only, a synthetic ``/etc`` (passwd, group, hosts and the loader cache only), a private ``/dev`` (null,
   zero, full, random, urandom), a ``/proc`` of its own PID namespace, empty ``/tmp``, ``/var/tmp`` and
   ``/dev/shm``, and its working folder (a copy of its own submission) read-write as ``/assignment`` — nothing
   else of the host:
   no other homes, no state directories, no other submission, no grading spec;
4. sets resource limits (no core dumps, file size, processes, open files) and drops to the slot's unprivileged
   account with no supplementary groups and ``no_new_privs``.

Standard library only.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import socket
from collections.abc import Iterable

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MNT_DETACH = 0x2
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
SYS_PIVOT_ROOT = 155  # x86_64 and aarch64 differ; see _pivot_root
HOSTNAME = b"grader"
DEVICES = ("null", "zero", "full", "random", "urandom")
TOP_LINKS = ("bin", "lib", "lib32", "lib64", "libx32", "sbin")
ETC_FILES = ("ld.so.cache", "localtime")

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def prctl(option: int, value: int) -> None:
    _check(_libc.prctl(option, ctypes.c_ulong(value), 0, 0, 0), f"prctl({option})")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(
        _libc.mount(
            source.encode() if source else None,
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        ),
        f"mount {target}",
    )


def _pivot_root(new_root: str, put_old: str) -> None:
    import platform

    number = {"x86_64": 155, "aarch64": 41, "ppc64le": 203, "s390x": 217}.get(platform.machine(), SYS_PIVOT_ROOT)
    _check(_libc.syscall(ctypes.c_long(number), new_root.encode(), put_old.encode()), "pivot_root")


class PidNamespaces:
    """Lets the forkserver put each child it forks into a new PID namespace of its own (unshare(CLONE_NEWPID)
    works once per namespace: going back to our own one first makes it work again for every child)."""

    def __init__(self) -> None:
        self._own = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)

    def next_child_in_new_namespace(self) -> None:
        _check(_libc.setns(self._own, CLONE_NEWPID), "setns(pid)")
        _check(_libc.unshare(CLONE_NEWPID), "unshare(pid)")


def join_cgroup(procs_fds: Iterable[int]) -> None:
    for fd in procs_fds:
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)


def _bind(source: str, target: str, *, writable: bool = False) -> None:
    _mount(source, target, None, MS_BIND | MS_REC)
    flags = MS_BIND | MS_REMOUNT | MS_NOSUID | MS_NODEV | (0 if writable else MS_RDONLY)
    _mount(None, target, None, flags)


def _inside(root: str, path: str) -> str:
    return root + "/" + path.strip("/")


def _make_mountpoint(root: str, path: str, *, is_dir: bool) -> str:
    """An empty directory (or file) at ``path`` in the new root; folders made on the way can be passed through
    but not listed (as the grading folders on the host)."""
    target = _inside(root, path)
    folder = target if is_dir else os.path.dirname(target)
    missing = []
    while not os.path.isdir(folder):
        missing.append(folder)
        folder = os.path.dirname(folder)
    for folder in reversed(missing):
        os.mkdir(folder)
        os.chmod(folder, 0o711)
    if not is_dir:
        open(target, "w").close()
    return target


def _etc(root: str, account: str, uid: int, gid: int) -> None:
    etc = _inside(root, "/etc")
    os.makedirs(etc, exist_ok=True)
    files = {
        "passwd": f"root:x:0:0:root:/root:/usr/sbin/nologin\n{account}:x:{uid}:{gid}:grading:/nonexistent:/bin/sh\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
        "group": f"root:x:0:\n{account}:x:{gid}:\nnogroup:x:65534:\n",
        "hosts": "127.0.0.1 localhost\n::1 localhost\n",
        "nsswitch.conf": "passwd: files\ngroup: files\nhosts: files\n",
    }
    for name, text in files.items():
        with open(f"{etc}/{name}", "w") as f:
            f.write(text)
    for name in ETC_FILES:
        host = f"/etc/{name}"
        if os.path.islink(host):
            os.symlink(os.readlink(host), f"{etc}/{name}")
        elif os.path.isfile(host):
            _bind(host, _make_mountpoint(root, host, is_dir=False))


def build_root(job: dict, read_only: Iterable[str]) -> None:
    """Steps 2 and 3 of the module docstring (needs root, and a PID namespace of its own for /proc)."""
    _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS), "unshare")
    _check(_libc.sethostname(HOSTNAME, len(HOSTNAME)), "sethostname")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    root = job["root"]
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=4m,mode=0755")
    for name in TOP_LINKS:
        host = f"/{name}"
        if os.path.islink(host):
            os.symlink(os.readlink(host), _inside(root, host))
        elif os.path.isdir(host):
            _bind(host, _make_mountpoint(root, host, is_dir=True))
    for path in sorted({"/usr", *(p.rstrip("/") for p in read_only)}):
        if os.path.isdir(path) and not path.startswith("/usr/"):
            _bind(path, _make_mountpoint(root, path, is_dir=True))
    _etc(root, job["account"], job["uid"], job["gid"])
    dev = _make_mountpoint(root, "/dev", is_dir=True)
    for name in DEVICES:
        _bind(f"/dev/{name}", _make_mountpoint(root, f"/dev/{name}", is_dir=False), writable=True)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1")):
        os.symlink(target, f"{dev}/{name}")
    os.symlink("/proc/self/fd/2", f"{dev}/stderr")
    for path in ("/tmp", "/var/tmp", "/dev/shm"):
        target = _make_mountpoint(root, path, is_dir=True)
        _mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, f"size={job['tmp_bytes']},mode=1777")
    _bind(job["workdir"], _make_mountpoint(root, job["inside"], is_dir=True), writable=True)
    _make_mountpoint(root, "/proc", is_dir=True)
    old = _make_mountpoint(root, "/.old-root", is_dir=True)
    _pivot_root(root, old)
    os.chdir("/")
    _check(_libc.umount2(b"/.old-root", MNT_DETACH), "umount the host's root")
    os.rmdir("/.old-root")
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    _mount(None, "/", None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


def drop_privileges(job: dict) -> None:
    """Step 4 of the module docstring."""
    for limit, value in (
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_FSIZE, job["file_bytes"]),
        (resource.RLIMIT_NPROC, job["pids"]),
        (resource.RLIMIT_NOFILE, 1024),
    ):
        resource.setrlimit(limit, (value, value))
    os.setgroups([])
    os.setgid(job["gid"])
    os.setuid(job["uid"])
    prctl(PR_SET_NO_NEW_PRIVS, 1)


def enter(job: dict, sock: socket.socket, procs_fds: list[int], read_only: Iterable[str]) -> None:
    """Everything of the module docstring, for the PID-1 process of a new namespace; closes every descriptor but
    ``sock``, and points 0, 1 and 2 at /dev/null."""
    os.setsid()
    join_cgroup(procs_fds)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.closerange(3, sock.fileno())
    os.closerange(sock.fileno() + 1, 65536)
    build_root(job, read_only)
    drop_privileges(job)
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    os.chdir(job["inside"])
