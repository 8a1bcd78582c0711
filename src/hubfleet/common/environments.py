"""Where built environments live and what their history says: the contract between the builder (`hubfleet.envs`,
fleet side) and its readers (the spawner, the Dask Gateway, the CLI).

    <root>/builds/<id>/        one built environment (a virtualenv), owned by the build account, never changed
    <root>/builds/<id>.ok      root's mark that the build is complete (the build account cannot forge it): the
                               pins installed
    <root>/names/<key>.json    the history of one environment: its versions, the active one (root's, 0644)
    <root>/names/<key>.build   progress of a build under way
    <root>/logs/…              build logs (root's, 0600)
    <root>/cache/              uv's package cache, owned by the build account: environments hard-link its files

`<key>` is `name` for a fleet-level environment and `hub/name` for a hub's own. A build `<id>` is a hash of what
was installed (the resolved pins, Python, Debian packages, kernels): two environments that resolve alike share one.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict

BUILD_ID = re.compile(r"[0-9a-f]{16}")
"""What a build id looks like (a prefix of a sha256)."""

KEY = re.compile(r"[a-z0-9][a-z0-9_-]*(/[a-z0-9][a-z0-9_-]*)?")
"""An environment's key: `name` or `hub/name`."""


class Version(BaseModel):
    """One built version of an environment."""

    model_config = ConfigDict(frozen=True)

    number: int
    build: str
    """The build's id: the environment is `<root>/builds/<build>`."""
    spec_hash: str
    """Hash of the fleet file's spec this version was built from."""
    created: dt.datetime
    python: str
    packages: int
    """Python packages installed (the server side included)."""
    debian_packages: list[str] = []
    kernels: list[str] = []
    log: str = ""
    """The build's log file."""
    removed: bool = False
    """Garbage-collected: the number stays taken."""


class Failure(BaseModel):
    """The last build of an environment that failed (it changed nothing)."""

    model_config = ConfigDict(frozen=True)

    spec_hash: str
    at: dt.datetime
    error: str
    log: str


class History(BaseModel):
    """Every version of one environment, which one new servers start from, and the spec last asked for."""

    key: str
    versions: list[Version] = []
    active: int | None = None
    requested: str | None = None
    """The spec hash last built or asked for: a fleet file with this spec needs no build (even after a rollback)."""
    failure: Failure | None = None

    def version(self, number: int) -> Version | None:
        return next((v for v in self.versions if v.number == number), None)

    @property
    def active_version(self) -> Version | None:
        return self.version(self.active) if self.active is not None else None

    @property
    def live(self) -> list[Version]:
        """Versions still on disk, oldest first."""
        return [v for v in self.versions if not v.removed]


class BuildProgress(BaseModel):
    """A build under way, as `hubfleet env list` shows it."""

    pid: int
    started: dt.datetime
    step: int
    steps: int
    doing: str
    log: str


@dataclass(frozen=True)
class EnvStore:
    """The folder every environment of a fleet is built in (`paths.environments`)."""

    root: Path

    @property
    def builds(self) -> Path:
        return self.root / "builds"

    @property
    def names(self) -> Path:
        return self.root / "names"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def tools(self) -> Path:
        return self.root / "tools"

    @property
    def lock_file(self) -> Path:
        return self.root / "build.lock"

    def prefix(self, build: str) -> Path:
        """The environment of build `build`."""
        if not BUILD_ID.fullmatch(build):
            raise ValueError(f"{build!r} is not a build id")
        return self.builds / build

    def complete(self, build: str) -> bool:
        """Whether build `build` finished (root marked it so)."""
        return BUILD_ID.fullmatch(build) is not None and (self.builds / f"{build}.ok").is_file()

    def pins(self, build: str) -> list[str]:
        """What build `build` installed (`name==version`, one a line), [] when it is not complete."""
        try:
            text = (self.builds / f"{build}.ok").read_text(encoding="utf-8")
        except (FileNotFoundError, ValueError):
            return []
        return [line for line in text.splitlines() if line and not line.startswith((" ", "#", "-"))]

    def history_file(self, key: str) -> Path:
        if not KEY.fullmatch(key):
            raise ValueError(f"{key!r} is not an environment key (name or hub/name)")
        return self.names / f"{key}.json"

    def progress_file(self, key: str) -> Path:
        return self.history_file(key).with_suffix(".build")

    def history(self, key: str) -> History:
        """The environment's history (empty when it was never built)."""
        try:
            return History.model_validate_json(self.history_file(key).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return History(key=key)

    def environment_keys(self) -> list[str]:
        """Every environment with a history here."""
        if not self.names.is_dir():
            return []
        return sorted(str(path.relative_to(self.names).with_suffix("")) for path in self.names.rglob("*.json"))

    def progress(self, key: str) -> BuildProgress | None:
        """The build of `key` under way, if any."""
        try:
            return BuildProgress.model_validate(json.loads(self.progress_file(key).read_text(encoding="utf-8")))
        except (FileNotFoundError, ValueError):
            return None

    def active_prefix(self, key: str) -> tuple[Version, Path] | None:
        """The version new servers of environment `key` start from, and its folder (None: nothing built)."""
        version = self.history(key).active_version
        if version is None or not self.complete(version.build):
            return None
        return version, self.prefix(version.build)
