"""Assignments: nbgrader-compatible source notebooks, the student version, and the sandboxed parallel autograder.

The pieces, in the order an assignment goes through them:

* :mod:`.source` — an assignment's source folder (notebooks, data files, ``assignment.yaml``): :func:`load_source`.
* :mod:`.nbgrader_format` — nbgrader's cell metadata (schema v3), its solution / hidden-test markers and its
  checksums, reimplemented so that nbgrader course material works unchanged.
* :mod:`.student_version` — :func:`generate`: the student version (solutions stripped, hidden tests removed, checksums
  recorded) and the :class:`GradingSpec` (everything needed to grade, JSON-serialisable).
* :mod:`.grader` — :func:`grade_batch`: grades submissions in parallel, each in a sandbox (:mod:`.sandbox`), and
  hands each :class:`GradeResult` to a callback as soon as it is done; :class:`JournalSink` is a durable
  append-only sink for it.

Everything here runs on the fleet side (or in a hub service); the sandboxed student code runs in the single-user
environment's Python, never in hubfleet's.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hubfleet.edu.assignments.grader import BatchSummary, JournalSink, grade_batch
    from hubfleet.edu.assignments.models import (
        CellResult,
        CellSpec,
        GradeResult,
        GradingSpec,
        NotebookSpec,
        Submission,
    )
    from hubfleet.edu.assignments.sandbox import SandboxError, SandboxLimits
    from hubfleet.edu.assignments.source import AssignmentSource, LatePolicy, SourceError, late_penalty, load_source
    from hubfleet.edu.assignments.student_version import generate

_HOMES = {
    "student_version": ("generate",),
    "grader": ("BatchSummary", "JournalSink", "grade_batch"),
    "models": ("CellResult", "CellSpec", "GradeResult", "GradingSpec", "NotebookSpec", "Submission"),
    "sandbox": ("SandboxError", "SandboxLimits"),
    "source": ("AssignmentSource", "LatePolicy", "SourceError", "late_penalty", "load_source"),
}
"""Module of each public name: imported on first use, so that `hubfleet.edu.assignments.source` (which the exchange
and the CLI import) does not pay for nbformat and the grader."""


def __getattr__(name: str) -> Any:
    for module, names in _HOMES.items():
        if name in names:
            value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
            globals()[name] = value
            return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AssignmentSource",
    "BatchSummary",
    "CellResult",
    "CellSpec",
    "GradeResult",
    "GradingSpec",
    "JournalSink",
    "LatePolicy",
    "NotebookSpec",
    "SandboxError",
    "SandboxLimits",
    "SourceError",
    "Submission",
    "generate",
    "grade_batch",
    "late_penalty",
    "load_source",
]
