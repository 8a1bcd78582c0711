"""An assignment's source folder: nbgrader-style notebooks, data files and ``assignment.yaml``.

Layout::

    hw1/
      assignment.yaml        # name, title, due, late_policy, notebooks (optional order)
      part1.ipynb            # source notebooks: solutions and hidden tests inside nbgrader markers
      part2.ipynb
      data/measurements.csv  # every other file is a data file, copied to the student version

``assignment.yaml``::

    name: hw1                          # [a-z0-9][a-z0-9_-]* (at most 32), the assignment's id
    title: Homework 1 — vectors
    due: 2026-12-01T23:59:00+01:00     # ISO 8601 with a time zone (or omit: no due date)
    late_policy:                       # or omit / null: late work gets no penalty
      penalty_per_day: 0.1             # fraction of the score lost per started day late
      max_days_late: 3                 # later than that scores 0
    notebooks: [part1.ipynb, part2.ipynb]   # optional; default: every *.ipynb at the top, sorted
    header: header.ipynb               # optional: its cells go before every notebook's (nbgrader's header)
    footer: footer.ipynb               # optional: its cells go after every notebook's
    instant_feedback: true             # optional: students see their visible tests' results when they submit

An ``autotests.yml`` in the folder holds the templates of ``### AUTOTEST`` cells (:mod:`.autotest`); it is handed
out like any data file, as nbgrader does. An nbgrader course folder is read by :mod:`.nbgrader_course` into the
same :class:`AssignmentSource`.

Hidden files and folders (``.ipynb_checkpoints``, ``.git``, …) and ``__pycache__`` are ignored. Every error names
the file it comes from.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from hubfleet.edu.assignments.autotest import AutotestOptions
from hubfleet.edu.assignments.nbgrader_format import DEFAULT_OPTIONS, FormatOptions

__all__ = ["AssignmentSource", "LatePolicy", "SourceError", "late_penalty", "load_source"]

CONFIG_FILE = "assignment.yaml"
IGNORED_NAMES = frozenset({"__pycache__", CONFIG_FILE})

AssignmentName = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z0-9]([a-z0-9_-]{0,30}[a-z0-9])?$"),
    Field(description="lower-case letters, digits, '-' and '_', at most 32 characters"),
]


class SourceError(ValueError):
    """The assignment's source folder is unusable; the message names the file and what is wrong."""


def _relative_notebook(name: str) -> str:
    path = Path(name)
    if path.is_absolute() or ".." in path.parts or path.suffix != ".ipynb" or name != path.as_posix():
        raise ValueError(f"{name!r} is not a relative path of a .ipynb file inside the assignment folder")
    return name


def _aware(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("the due date needs a time zone, e.g. 2026-12-01T23:59:00+01:00 or ...Z")
    return value


class LatePolicy(BaseModel):
    """How late work is penalised: ``penalty_per_day`` of the score per started day, nothing after ``max_days_late``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    penalty_per_day: float = Field(ge=0.0, le=1.0, description="fraction of the score lost per started day late")
    max_days_late: int = Field(ge=0, description="work later than this many days scores 0")


class AssignmentConfig(BaseModel):
    """The contents of ``assignment.yaml``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: AssignmentName
    title: str = Field(min_length=1, max_length=200)
    due: Annotated[dt.datetime, AfterValidator(_aware)] | None = None
    late_policy: LatePolicy | None = None
    notebooks: list[Annotated[str, AfterValidator(_relative_notebook)]] | None = Field(default=None, min_length=1)
    header: Annotated[str, AfterValidator(_relative_notebook)] | None = None
    footer: Annotated[str, AfterValidator(_relative_notebook)] | None = None
    instant_feedback: bool = False


class AssignmentSource(BaseModel):
    """A loaded source folder: its configuration, its notebooks (in order) and its data files (relative paths),
    and how nbgrader's options (from ``nbgrader_config.py`` for a course folder) shape the student version."""

    model_config = ConfigDict(frozen=True)

    root: Path
    name: str
    title: str
    due: dt.datetime | None
    late_policy: LatePolicy | None
    notebooks: tuple[str, ...]
    data_files: tuple[str, ...]
    header: Path | None = None
    footer: Path | None = None
    format: FormatOptions = DEFAULT_OPTIONS
    autotest: AutotestOptions = AutotestOptions()
    autotest_files: tuple[Path, ...] = ()
    """where ``autotests.yml`` may be, in order (the assignment's folder, then the course's)"""
    restore_deleted: bool = True
    """put deleted test and locked cells back before grading (nbgrader's ``OverwriteCells.add_missing_cells``)"""
    student_files: tuple[str, ...] = ()
    """data files graded as the student submitted them (nbgrader's ``Autograde.exclude_overwriting``)"""
    cell_seconds: float | None = None
    """time limit of a cell when grading (nbgrader's ``Execute.timeout``), if the assignment sets one"""
    instant_feedback: bool = False


def late_penalty(policy: LatePolicy | None, due: dt.datetime | None, submitted: dt.datetime) -> float:
    """The fraction of the score kept for work submitted at ``submitted`` (1.0 on time, 0.0 when too late).

    Each started day after ``due`` costs ``penalty_per_day``; more than ``max_days_late`` days late keeps nothing.
    No due date or no policy keeps everything. ``submitted`` must carry a time zone.
    """
    if due is None or policy is None or submitted <= due:
        return 1.0
    days = math.ceil((submitted - due) / dt.timedelta(days=1))
    if days > policy.max_days_late:
        return 0.0
    return max(0.0, 1.0 - policy.penalty_per_day * days)


def _visible_files(root: Path) -> list[str]:
    """Relative POSIX paths of the regular files below ``root``, skipping hidden and ignored names and symlinks."""
    found = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(part.startswith(".") or part in IGNORED_NAMES for part in relative.parts):
            continue
        if path.is_symlink():
            raise SourceError(f"{path}: symbolic links are not allowed in an assignment folder")
        if path.is_file():
            found.append(relative.as_posix())
    return found


def _describe(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors())


def load_source(path: Path | str) -> AssignmentSource:
    """Read the source folder at ``path``; :class:`SourceError` names the file and the problem."""
    root = Path(path).resolve()
    config_path = root / CONFIG_FILE
    if not root.is_dir():
        raise SourceError(f"{root}: not a folder")
    try:
        raw = YAML(typ="safe").load(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SourceError(f"{config_path}: missing (every assignment folder needs one)") from None
    except (OSError, UnicodeDecodeError, YAMLError) as exc:
        raise SourceError(f"{config_path}: cannot read it: {exc}") from None
    if not isinstance(raw, dict):
        raise SourceError(f"{config_path}: expected a mapping with name, title, due, ...")
    try:
        config = AssignmentConfig.model_validate(raw)
    except ValidationError as exc:
        raise SourceError(f"{config_path}: {_describe(exc)}") from None
    files = _visible_files(root)
    extra = {name for name in (config.header, config.footer) if name is not None}
    for name in extra:
        if name not in files:
            raise SourceError(f"{root / name}: named in {CONFIG_FILE} but missing")
    top_notebooks = [f for f in files if f.endswith(".ipynb") and "/" not in f and f not in extra]
    notebooks = config.notebooks if config.notebooks is not None else top_notebooks
    if not notebooks:
        raise SourceError(f"{root}: no notebook (*.ipynb) in the assignment folder")
    if len(set(notebooks)) != len(notebooks):
        raise SourceError(f"{config_path}: notebooks lists a notebook twice")
    for notebook in notebooks:
        if notebook not in files:
            raise SourceError(f"{root / notebook}: listed in {CONFIG_FILE} but missing")
    data_files = tuple(f for f in files if f not in notebooks and not f.endswith(".ipynb"))
    return AssignmentSource(
        root=root,
        name=config.name,
        title=config.title,
        due=config.due,
        late_policy=config.late_policy,
        notebooks=tuple(notebooks),
        data_files=data_files,
        header=root / config.header if config.header else None,
        footer=root / config.footer if config.footer else None,
        autotest_files=(root / AutotestOptions().autotest_filename,),
        instant_feedback=config.instant_feedback,
    )
