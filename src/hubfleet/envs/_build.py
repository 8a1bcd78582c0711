"""Building one version of an environment with uv: resolve, create, install, kernels, bytecode, share.

Every step that runs a package's code (resolving may build an sdist for its metadata, installing builds it) runs
as the build account, with a clean environment, in a work folder of its own: never as root, never able to read
the fleet's state directory (0700, root's) or anything else of root's. Root only prepares folders, installs the
Debian packages the operator allowed, and records the result.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit

import uv
from packaging.requirements import Requirement

from hubfleet.common.environments import BuildProgress, EnvStore, Failure, History, Version
from hubfleet.envs._account import BuildAccount, StepFailed, tool
from hubfleet.envs._history import save_history
from hubfleet.spec.environments import Environment, default_python, python_interpreters
from hubfleet.spec.models import Builds

FORMAT = 1
"""Bumped when the way environments are built changes (a new format means new builds for the same specs)."""

BYTECODE_PREFIX = "/hubfleet-env"
"""Source paths in compiled bytecode start here instead of the build's folder, so that the same file compiles to
the same bytes in every environment and can be shared (Python's import system puts the real path back)."""

STUDENT_COMMAND = "hubfleet-assignment"

SERVER_CONFIG = "jupyter_server_config.json"
"""What hubfleet adds to every environment's server configuration (beside this module): JupyterLab does not offer
to rebuild itself (nobody can change a shared environment from a server), so its page does not ask for a build
check, which starts a Node process (yarn) for every user who opens JupyterLab."""

SERVER_CONFIG_PATH = "etc/jupyter/jupyter_server_config.d/hubfleet.json"
KERNEL_STEPS = {
    "r": ("R", "--slave", "-e", 'IRkernel::installspec(prefix = "{prefix}", name = "ir", displayname = "R")'),
}
"""Extra kernel → the command (run as the build account) that installs its kernelspec into the environment."""

Say = Callable[[int, int, str], None]
"""Progress: (step, steps, what is being done)."""


class BuildError(RuntimeError):
    """A build failed and changed nothing; the message says why (the resolver's own words when it was that)."""

    def __init__(self, key: str, message: str, log: Path | None = None):
        super().__init__(message)
        self.key = key
        self.log = log


@dataclass(frozen=True)
class Result:
    """What a build did."""

    key: str
    version: Version
    new_build: bool
    """False when an existing build matched (nothing was installed)."""
    activated: bool


def server_side() -> list[str]:
    """The pinned requirements hubfleet adds to every environment (server-side.txt)."""
    text = resources.files("hubfleet.envs").joinpath("server-side.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def spec_hash(env: Environment, builds: Builds) -> str:
    """A hash of everything in the fleet file (and the files it names) that shapes the environment."""
    digest = hashlib.sha256()
    digest.update(env.model_dump_json(exclude={"display_name", "description"}).encode())
    digest.update(str(builds.index_url).encode())
    for path in env.files():
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def python_of(env: Environment) -> tuple[str, Path]:
    version = env.python or default_python()
    interpreters = python_interpreters()
    if version is None or version not in interpreters:
        raise ValueError(f"Python {version or '3'} is not on this machine (available: {', '.join(interpreters)})")
    return version, interpreters[version]


@contextmanager
def build_lock(store: EnvStore, say: Say) -> Iterator[None]:
    """One build at a time on this machine's store (builds are CPU- and disk-bound; two would only race)."""
    fd = os.open(store.lock_file, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(0, 0, "waiting for another build to finish")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def prepare_store(store: EnvStore) -> None:
    """The store's folders: readable by everyone where environments are, root's alone for logs and names."""
    for folder, mode in (
        (store.root, 0o755),
        (store.builds, 0o755),
        (store.names, 0o755),
        (store.logs, 0o700),
        (store.work, 0o755),
        (store.tools, 0o755),
    ):
        folder.mkdir(parents=True, exist_ok=True)
        os.chown(folder, 0, 0)
        os.chmod(folder, mode)


def uv_binary(store: EnvStore) -> Path:
    """uv, where the build account may run it: a copy in the store's tools (the fleet's own may be under /root)."""
    source = Path(uv.find_uv_bin())
    target = store.tools / f"uv-{importlib.metadata.version('uv')}"
    if not target.exists():
        tmp = target.with_suffix(".tmp")
        shutil.copyfile(source, tmp)
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
    return target


class Builder:
    """Builds the versions of environments in one store, as one build account."""

    def __init__(self, store: EnvStore, builds: Builds):
        self.store = store
        self.builds = builds

    def build(self, key: str, env: Environment, say: Say, *, update: bool = False) -> Result:
        """Make the fleet file's spec of `key` its active version: reuse a matching build, else build one.

        `update` resolves again even when the spec did not change (newer releases of unpinned packages).
        Raises `BuildError` (nothing changed) when the build fails.
        """
        prepare_store(self.store)
        with build_lock(self.store, say):
            return self._build_locked(key, env, say, update)

    def _build_locked(self, key: str, env: Environment, say: Say, update: bool) -> Result:
        history = self.store.history(key)
        wanted = spec_hash(env, self.builds)
        active = history.active_version
        if active is not None and active.spec_hash == wanted and not update and self.store.complete(active.build):
            return Result(key, active, new_build=False, activated=False)
        started = dt.datetime.now(dt.UTC)
        number = max((v.number for v in history.versions), default=0) + 1
        log_path = self.store.logs / f"{key.replace('/', '--')}-v{number}-{started:%Y%m%d%H%M%S}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        job = _Job(self, key, env, log_path, say, number)
        try:
            version, new_build = job.run(wanted, started)
        except BuildError as exc:
            failure = Failure(spec_hash=wanted, at=started, error=str(exc), log=str(log_path))
            save_history(self.store, history.model_copy(update={"failure": failure}))
            raise
        finally:
            self.store.progress_file(key).unlink(missing_ok=True)
        known = next((v for v in history.live if v.build == version.build), None)
        versions = list(history.versions) if known is not None else [*history.versions, version]
        chosen = known or version
        save_history(
            self.store,
            History(key=key, versions=versions, active=chosen.number, requested=wanted, failure=None),
        )
        return Result(key, chosen, new_build=new_build, activated=True)


class _Job:
    """One build of one environment (the steps, their progress, their log)."""

    def __init__(self, builder: Builder, key: str, env: Environment, log_path: Path, say: Say, number: int):
        self.builder = builder
        self.store = builder.store
        self.key = key
        self.env = env
        self.log_path = log_path
        self.say_outside = say
        self.number = number
        self.steps = 6 + len(env.kernels) + bool(env.debian_packages)
        self.step = 0
        self.started = dt.datetime.now(dt.UTC)
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        self.log = os.fdopen(fd, "a", encoding="utf-8", buffering=1)

    def say(self, doing: str) -> None:
        self.step += 1
        self.write(f"==> [{self.step}/{self.steps}] {doing}")
        progress = BuildProgress(
            pid=os.getpid(),
            started=self.started,
            step=self.step,
            steps=self.steps,
            doing=doing,
            log=str(self.log_path),
        )
        path = self.store.progress_file(self.key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(progress.model_dump_json(), encoding="utf-8")
        os.replace(tmp, path)
        self.say_outside(self.step, self.steps, doing)

    def write(self, line: str) -> None:
        self.log.write(line + "\n")

    def run(self, wanted: str, started: dt.datetime) -> tuple[Version, bool]:
        try:
            return self._run(wanted, started)
        except StepFailed as exc:
            raise BuildError(self.key, f"{exc}: {_explain(exc.output)}", self.log_path) from None
        except (OSError, ValueError) as exc:
            self.write(f"error: {exc}")
            raise BuildError(self.key, str(exc), self.log_path) from None
        finally:
            self.write(f"==> finished at {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S} UTC")
            self.log.close()

    def _run(self, wanted: str, started: dt.datetime) -> tuple[Version, bool]:
        self.write(f"==> building {self.key} v{self.number} (spec {wanted}) at {started:%Y-%m-%d %H:%M:%S} UTC")
        python_version, python = python_of(self.env)
        self.say("preparing the build account and its work folder")
        account = BuildAccount.ensure(self.builder.builds.account, self.store.cache)
        self.store.cache.mkdir(mode=0o700, exist_ok=True)
        os.chown(self.store.cache, account.uid, account.gid)
        work = self._work_folder(account)
        uv_bin = str(uv_binary(self.store))
        uv_env = {
            "UV_CACHE_DIR": str(self.store.cache),
            "UV_PYTHON_DOWNLOADS": "never",
            "UV_NO_CONFIG": "1",
            "UV_LINK_MODE": "hardlink",
            "NO_COLOR": "1",
        }
        if self.builder.builds.index_url is not None:
            # In the environment, not on the command line: an index URL may hold credentials (/proc/PID/cmdline is
            # readable by everyone, /proc/PID/environ only by the build account and root).
            uv_env["UV_DEFAULT_INDEX"] = str(self.builder.builds.index_url)
        if self.env.debian_packages:
            self.say(f"installing Debian packages: {', '.join(self.env.debian_packages)}")
            self._install_debian_packages(account, work)
        self.say("resolving the packages")
        sources = ["requirements.in", *(path.name for path in self._copied_files(work))]
        compile_argv = [uv_bin, "pip", "compile", "--python", str(python), "--no-header", "--no-annotate"]
        account.run([*compile_argv, *sources, "-o", "lock.txt"], cwd=work, env=uv_env, output=self.write)
        lock = _read_plain(work / "lock.txt")
        count = sum(1 for line in lock.splitlines() if line and not line.startswith((" ", "#", "-")))
        build = self._build_id(python_version, python, lock)
        prefix = self.store.prefix(build)
        if self.store.complete(build):
            self.write(f"==> build {build} exists already: nothing to install")
            self.step = self.steps - 1
            self.say(f"reusing the identical build {build}")
            return self._version(build, wanted, python_version, count), False
        self.say(f"installing {count} packages")
        shutil.rmtree(prefix, ignore_errors=True)  # a build that failed or was stopped half-way
        prefix.mkdir(mode=0o755)
        os.chown(prefix, account.uid, account.gid)
        try:
            account.run(
                [uv_bin, "venv", "--allow-existing", "--no-project", "--python", str(python), str(prefix)],
                cwd=work,
                env=uv_env,
                output=self.write,
            )
            python_in_env = str(prefix / "bin" / "python")
            account.run(
                [uv_bin, "pip", "sync", "--python", python_in_env, "lock.txt"],
                cwd=work,
                env=uv_env,
                output=self.write,
            )
            self._finish(account, work, prefix, python_in_env)
        except BaseException:
            shutil.rmtree(prefix, ignore_errors=True)
            raise
        # What was installed, kept by root beside the build; its presence marks the build complete.
        (self.store.builds / f"{build}.ok").write_text(lock, encoding="utf-8")
        return self._version(build, wanted, python_version, count), True

    def _finish(self, account: BuildAccount, work: Path, prefix: Path, python_in_env: str) -> None:
        env_path = {"PATH": f"{prefix}/bin:/usr/local/bin:/usr/bin:/bin"}
        for kernel in self.env.kernels:
            self.say(f"adding the {kernel} kernel")
            argv = [part.format(prefix=prefix) for part in KERNEL_STEPS[kernel]]
            account.run(argv, cwd=work, env=env_path, output=self.write)
        self.say(f"adding {STUDENT_COMMAND} and the server configuration")
        account.run(
            [tool("install"), "-m", "0755", str(work / STUDENT_COMMAND), str(prefix / "bin" / STUDENT_COMMAND)],
            cwd=work,
            env={},
            output=self.write,
        )
        account.run(
            [tool("install"), "-D", "-m", "0644", str(work / SERVER_CONFIG), str(prefix / SERVER_CONFIG_PATH)],
            cwd=work,
            env={},
            output=self.write,
        )
        self.say("compiling bytecode")
        others = [str(self.store.prefix(b)) for b in self._complete_builds() if self.store.prefix(b) != prefix]
        account.run(
            [python_in_env, "-I", str(work / "bytecode.py"), str(prefix), BYTECODE_PREFIX, *others],
            cwd=work,
            env={},
            output=self.write,
        )
        self.say("sharing identical bytecode with the other environments")
        hardlink = shutil.which("hardlink")
        if hardlink is None:
            self.write("hardlink (util-linux) not found: bytecode is not shared between environments")
            return
        account.run(
            [hardlink, "--quiet", "--content", "--include", r"\.pyc$", str(self.store.builds)],
            cwd=work,
            env={},
            output=self.write,
        )

    def _complete_builds(self) -> list[str]:
        """The store's complete builds, newest first (the likeliest to share the most with a new one)."""
        marks = sorted(self.store.builds.glob("*.ok"), key=lambda path: path.stat().st_mtime, reverse=True)
        return [mark.name.removesuffix(".ok") for mark in marks]

    def _work_folder(self, account: BuildAccount) -> Path:
        """A fresh folder with the build's inputs, the build account's: the requirements, copies of the files
        and local packages the spec names (the build account may not be able to read the originals)."""
        work = self.store.work / self.key.replace("/", "--")
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(mode=0o700)
        lines = [*server_side()]
        for text in self.env.packages:
            requirement = Requirement(text)
            if requirement.url and requirement.url.startswith("file:"):
                source = Path(urlsplit(requirement.url).path)
                local = work / "local" / f"{requirement.name}-{source.name}"
                local.parent.mkdir(exist_ok=True)
                if source.is_dir():
                    shutil.copytree(source, local, symlinks=True)
                else:
                    shutil.copyfile(source, local)
                requirement.url = local.as_uri()
                text = str(requirement)
            lines.append(text)
        (work / "requirements.in").write_text("\n".join(lines) + "\n", encoding="utf-8")
        for index, source in enumerate(self.env.files()):
            self._copy_input(source, work / f"input{index}-{source.name}")
        # Standard library only: run by the first python3 on PATH, which in a server is the environment's.
        student = resources.files("hubfleet.edu.exchange").joinpath("student.py").read_text(encoding="utf-8")
        (work / STUDENT_COMMAND).write_text("#!/usr/bin/env python3\n" + student, encoding="utf-8")
        config = resources.files("hubfleet.envs").joinpath(SERVER_CONFIG).read_text(encoding="utf-8")
        (work / SERVER_CONFIG).write_text(config, encoding="utf-8")
        bytecode = resources.files("hubfleet.envs").joinpath("bytecode.py").read_text(encoding="utf-8")
        (work / "bytecode.py").write_text(bytecode, encoding="utf-8")
        account.own(work)
        return work

    def _copy_input(self, source: Path, target: Path) -> None:
        """A requirements, pyproject or lock file, as uv reads it (a pylock.toml becomes the pins it locks)."""
        if source.name == "pylock.toml" or re.fullmatch(r"pylock\.[^.]+\.toml", source.name):
            data = tomllib.loads(source.read_text(encoding="utf-8"))
            pins = [f"{p['name']}=={p['version']}" for p in data.get("packages", []) if "version" in p]
            target.with_suffix(".txt").write_text("\n".join(pins) + "\n", encoding="utf-8")
        elif source.name == "pyproject.toml":
            target.mkdir()
            shutil.copyfile(source, target / "pyproject.toml")
        else:
            shutil.copyfile(source, target)

    def _copied_files(self, work: Path) -> list[Path]:
        found = []
        for path in sorted(work.glob("input*")):
            found.append(path / "pyproject.toml" if path.is_dir() else path)
        return [path.relative_to(work) for path in found]

    def _install_debian_packages(self, account: BuildAccount, work: Path) -> None:
        """The Debian packages of the spec (allowed by the operator, checked when the file was validated), as root:
        they come signed from the machine's archive, and dpkg needs root."""
        missing = [p for p in self.env.debian_packages if not _debian_installed(p)]
        if not missing:
            self.write(f"Debian packages already installed: {', '.join(self.env.debian_packages)}")
            return
        apt = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        install = [tool("apt-get"), "install", "-y", "-q", "--no-install-recommends", *missing]
        try:
            account.run(install, cwd=work, env=apt, output=self.write, as_root=True)
        except StepFailed:
            self.write("==> apt-get install failed: updating the package lists once and trying again")
            account.run([tool("apt-get"), "update", "-q"], cwd=work, env=apt, output=self.write, as_root=True)
            account.run(install, cwd=work, env=apt, output=self.write, as_root=True)

    def _build_id(self, python_version: str, python: Path, lock: str) -> str:
        digest = hashlib.sha256()
        for part in (str(FORMAT), python_version, str(python.resolve()), lock, *self.env.debian_packages):
            digest.update(part.encode() + b"\0")
        digest.update(json.dumps(self.env.kernels).encode())
        return digest.hexdigest()[:16]

    def _version(self, build: str, wanted: str, python_version: str, count: int) -> Version:
        return Version(
            number=self.number,
            build=build,
            spec_hash=wanted,
            created=self.started,
            python=python_version,
            packages=count,
            debian_packages=list(self.env.debian_packages),
            kernels=list(self.env.kernels),
            log=str(self.log_path),
        )


def _read_plain(path: Path) -> str:
    """A file the build account wrote, read by root without following a link it may have put there."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, encoding="utf-8") as source:
        return source.read()


def _debian_installed(package: str) -> bool:
    try:
        query = subprocess.run(
            [tool("dpkg-query"), "-W", "-f=${Status}", package], capture_output=True, text=True, check=False
        )
    except OSError:
        return False
    return query.returncode == 0 and query.stdout.strip() == "install ok installed"


def _explain(output: str) -> str:
    """The part of a tool's output that says why it failed: uv's `error:` and what follows, else the last lines."""
    lines = [line for line in output.splitlines() if line.strip()]
    for index, line in enumerate(lines):
        if line.lstrip().startswith(("error:", "\N{MULTIPLICATION SIGN}")):
            return "\n".join(lines[index : index + 20])
    return "\n".join(lines[-20:])
