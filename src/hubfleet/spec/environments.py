"""Environments in the fleet file: the software users' servers run in, built by hubfleet from these specs.

An environment is declared at the fleet level (`environments:`, shared by every hub that names it) or by a hub
(its own `environments:`, which a template may carry); a profile names the environment(s) its servers run in.
"""

from __future__ import annotations

import functools
import os
import re
import stat
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from packaging.requirements import InvalidRequirement, Requirement
from pydantic import AfterValidator, AnyHttpUrl, Field, StringConstraints, model_validator

from hubfleet.spec.base import Slug, SpecModel

EnvironmentName = Slug

PYTHON_DIRS = (Path("/usr/bin"), Path("/usr/local/bin"))
"""Where the Pythons environments may be built from are looked for: outside any home, readable by every user."""

KERNEL_PACKAGES = {"r": "r-cran-irkernel"}
"""Extra kernel → the Debian package that provides it (its dependencies bring the language itself)."""


def _requirement(text: str) -> str:
    """A PEP 508 requirement: a name with extras, versions and markers, or a name @ an https:// or file:// URL."""
    try:
        requirement = Requirement(text)
    except InvalidRequirement as exc:
        raise ValueError(f"{text!r} is not a valid requirement ({exc})") from None
    if requirement.url is not None:
        url = urlsplit(requirement.url)
        if url.scheme not in ("https", "file"):
            raise ValueError(f"{text!r}: only https:// and file:// URLs are allowed after '@'")
        if url.scheme == "file" and not Path(url.path).is_absolute():
            raise ValueError(f"{text!r}: a file:// URL needs an absolute path")
    return text


PackageRequirement = Annotated[
    str,
    AfterValidator(_requirement),
    Field(description="a requirement as pip takes it: `xarray`, `numpy>=2,<3`, `name @ https://…`, `name @ file:///…`"),
]
DebianPackage = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z0-9][a-z0-9+.-]+$"),
    Field(description="a Debian package name, e.g. `r-base`"),
]
DebianPattern = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z0-9*][a-z0-9+.*-]*$"),
    Field(description="a Debian package name, or a pattern with `*` (e.g. `r-cran-*`)"),
]


class Environment(SpecModel):
    """Software users' servers run in: a Python environment hubfleet builds (with uv) from this spec, versioned.

    hubfleet adds the server side (JupyterLab, jupyter_server, jupyterhub-singleuser, batchspawner, the Dask
    Gateway client, nbgitpuller and `hubfleet-assignment`) to every environment, so that no spec breaks spawning.
    """

    display_name: str | None = Field(None, description="the name users see in the profile form (default: the key)")
    description: str = Field("", description="a line shown to users beside the name")
    python: str | None = Field(
        None,
        pattern=r"^3\.\d{1,2}$",
        description="Python version (`3.11`) from those on this machine (default: the machine's `python3`)",
    )
    packages: list[PackageRequirement] = Field(default_factory=list, description="packages to install")
    requirements_file: Path | None = Field(
        None,
        description="a `requirements.txt` or `pyproject.toml` with more packages (relative to the fleet file)",
    )
    lock_file: Path | None = Field(
        None,
        description="exact versions to install: a `requirements.txt` of pins (e.g. from `uv pip compile`) or a "
        "`pylock.toml` (relative to the fleet file); not with `packages` or `requirements_file`",
    )
    debian_packages: list[DebianPackage] = Field(
        default_factory=list,
        description="Debian packages the environment needs on the machine (each allowed by `builds.debian_packages`)",
    )
    kernels: list[Literal["r"]] = Field(
        default_factory=list,
        description="extra Jupyter kernels beside Python: `r` (IRkernel; needs `r-cran-irkernel` in `debian_packages`)",
    )

    @model_validator(mode="after")
    def _one_source_of_truth(self) -> Environment:
        if self.lock_file is not None and (self.packages or self.requirements_file is not None):
            raise ValueError("a lock_file lists every package: drop packages and requirements_file, or the lock")
        for kernel in self.kernels:
            package = KERNEL_PACKAGES[kernel]
            if package not in self.debian_packages:
                raise ValueError(f"the {kernel} kernel needs the Debian package {package}: add it to debian_packages")
        return self

    def files(self) -> list[Path]:
        """The files this spec reads (requirements and lock files)."""
        return [path for path in (self.requirements_file, self.lock_file) if path is not None]

    def local_paths(self) -> list[Path]:
        """Local packages (`name @ file:///…`) this spec installs."""
        paths = []
        for text in self.packages:
            url = Requirement(text).url
            if url is not None and url.startswith("file:"):
                paths.append(Path(urlsplit(url).path))
        return paths


class Builds(SpecModel):
    """How hubfleet builds environments (`hubfleet env build`, and `up`/`apply` for what changed)."""

    index_url: AnyHttpUrl | None = Field(None, description="the package index (default: PyPI)")
    debian_packages: list[DebianPattern] = Field(
        default_factory=list,
        description="Debian packages environments may ask for, installed with apt-get (none by default)",
    )
    account: str = Field(
        "hubfleet-build",
        pattern=r"^[a-z_][a-z0-9_-]{0,31}$",
        description="the unprivileged system account builds run as (created when missing)",
    )
    keep: int = Field(2, ge=0, le=100, description="unused older versions of each environment kept for rollback")


@functools.cache
def python_interpreters() -> dict[str, Path]:
    """Version (`3.11`) → interpreter every user may run, found in `PYTHON_DIRS` (python3.N, not in a home)."""
    found: dict[str, Path] = {}
    for folder in PYTHON_DIRS:
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            continue
        for name in names:
            match = re.fullmatch(r"python(3\.\d{1,2})", name)
            path = folder / name
            if match is None or match[1] in found:
                continue
            try:
                mode = path.stat().st_mode
            except OSError:
                continue
            if stat.S_ISREG(mode) and mode & stat.S_IXOTH and mode & stat.S_IROTH:
                found[match[1]] = path
    return found


def default_python() -> str | None:
    """The version of the machine's `python3` (/usr/bin/python3), if it is one of `python_interpreters()`."""
    try:
        target = Path("/usr/bin/python3").resolve(strict=True)
    except OSError:
        return None
    match = re.fullmatch(r"python(3\.\d{1,2})", target.name)
    return match[1] if match and match[1] in python_interpreters() else None


def debian_allowed(package: str, patterns: list[str]) -> bool:
    """Whether `package` matches one of the operator's allowed names or patterns (`*` matches anything)."""
    return any(re.fullmatch(re.escape(p).replace(r"\*", ".*"), package) for p in patterns)
