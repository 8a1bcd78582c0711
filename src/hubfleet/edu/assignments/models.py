"""The typed records grading passes around: what to grade (:class:`GradingSpec`), what was handed in
(:class:`Submission`) and what came out (:class:`GradeResult`). All are JSON-serialisable pydantic models
(``model_dump_json`` / ``model_validate_json``) so that a gradebook can store them as they are.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from hubfleet.edu.assignments.source import LatePolicy

__all__ = [
    "CellKind",
    "CellResult",
    "CellSpec",
    "CellStatus",
    "GradeResult",
    "GradingSpec",
    "NotebookSpec",
    "Submission",
]

SPEC_VERSION = 1
SUBMISSION_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,199}")

CellKind = Literal["auto", "manual"]
CellStatus = Literal["passed", "failed", "error", "timeout", "altered-restored", "missing", "not-run", "manual"]
"""Outcome of one graded cell:

* ``passed`` — ran without an error (full or partial credit, as nbgrader gives it);
* ``failed`` — an ``AssertionError`` (a test said no), or output on stderr (nbgrader scores both 0);
* ``error`` — any other exception, or the notebook's process died (crash, ``os._exit``, out of memory);
* ``timeout`` — the cell or the notebook ran out of time;
* ``altered-restored`` — the student changed (or deleted) this locked cell; it was restored from the source and
  ran, and scored like ``passed`` (``points`` tells the credit); a failing restored cell reports ``failed``/``error``
  and says "restored" in its message;
* ``missing`` — the student deleted this test cell and the assignment does not put deleted cells back
  (nbgrader's default for its course folders): 0 points;
* ``not-run`` — an earlier cell took the notebook's process down, so this one never ran (0 points);
* ``manual`` — a manually graded cell (written answer, task): ``points`` is ``None`` until a grader scores it,
  or 0 when the student left the answer untouched (as nbgrader does).
"""


class CellSpec(BaseModel):
    """One nbgrader cell of a source notebook (grade, solution, locked or task cell), as grading needs it."""

    model_config = ConfigDict(frozen=True)

    grade_id: str
    cell_type: Literal["code", "markdown", "raw"]
    grade: bool
    solution: bool
    locked: bool
    task: bool
    points: float | None = Field(description="maximum points of a grade or task cell, else None")
    source: str = Field(description="the source as graded: with hidden tests, solutions replaced by the stub")
    checksum: str = Field(description="nbgrader checksum of `source` (what a restored cell must match)")
    student_checksum: str = Field(description="nbgrader checksum of the student version of the cell")


class NotebookSpec(BaseModel):
    """One notebook of the assignment: its path inside the assignment folder and its nbgrader cells, in order."""

    model_config = ConfigDict(frozen=True)

    name: str
    cells: tuple[CellSpec, ...]
    defined_names: tuple[str, ...] = Field(
        default=(),
        description="names the source notebook's code defines at the top level (classes and functions a "
        "submission is meant to write: test cells compare their objects as they are)",
    )

    @property
    def max_points(self) -> float:
        return sum(c.points or 0.0 for c in self.cells if c.grade or c.task)


class GradingSpec(BaseModel):
    """Everything needed to grade submissions of one assignment (made by :func:`~.generate.generate`).

    Store it as JSON (:meth:`dumps` / :meth:`loads`); it contains the hidden tests, so keep it away from students.
    """

    model_config = ConfigDict(frozen=True)

    spec_version: int = SPEC_VERSION
    assignment: str
    title: str
    due: dt.datetime | None = None
    late_policy: LatePolicy | None = None
    notebooks: tuple[NotebookSpec, ...]
    data_files: tuple[str, ...] = ()
    student_files: tuple[str, ...] = Field(
        default=(), description="data files graded as submitted (the others come from the assignment)"
    )
    restore_deleted: bool = Field(default=True, description="put deleted test and locked cells back before grading")
    cell_seconds: float | None = Field(default=None, description="the assignment's time limit per cell, if any")
    instant_feedback: bool = Field(default=False, description="students get their visible tests' results at once")

    @property
    def max_total(self) -> float:
        return sum(nb.max_points for nb in self.notebooks)

    def dumps(self) -> str:
        """The spec as JSON text."""
        return self.model_dump_json(indent=1)

    @classmethod
    def loads(cls, text: str | bytes) -> GradingSpec:
        """A spec from :meth:`dumps`' JSON text (raises ``pydantic.ValidationError`` on anything else)."""
        return cls.model_validate_json(text)


class Submission(BaseModel):
    """One student's submitted files: ``folder`` holds the notebooks (same relative paths as the assignment)."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(description="unique in the batch; letters, digits and . _ @ + - (at most 200), e.g. the user")
    folder: Path

    @field_validator("id")
    @classmethod
    def _safe_id(cls, value: str) -> str:
        if not SUBMISSION_ID_RE.fullmatch(value):
            raise ValueError(f"submission id {value!r}: use letters, digits and . _ @ + - (at most 200)")
        return value


class CellResult(BaseModel):
    """The score of one graded cell (see :data:`CellStatus`)."""

    model_config = ConfigDict(frozen=True)

    grade_id: str
    points: float | None
    max_points: float
    kind: CellKind
    status: CellStatus
    message: str = ""


class GradeResult(BaseModel):
    """The outcome of grading one submission.

    ``total`` counts the automatic scores (manual cells count 0 until graded); ``errors`` lists problems with the
    submission as a whole (an unreadable or missing notebook, a crashed process, a sandbox failure).
    ``graded_folder`` holds the executed notebooks with their outputs (for feedback), or is ``None`` when the
    caller did not ask to keep them.
    """

    model_config = ConfigDict(frozen=True)

    submission_id: str
    assignment: str
    notebooks: dict[str, list[CellResult]]
    total: float
    max_total: float
    errors: list[str] = []
    graded_folder: Path | None = None
    seconds: float = Field(default=0.0, description="wall time spent grading it")
    graded_at: dt.datetime
