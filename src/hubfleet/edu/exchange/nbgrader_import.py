"""Moving an nbgrader course into a hub's exchange: its assignments released, its gradebook's grades kept.

For each assignment of the course folder (or the ones asked for), :func:`import_course` makes and releases the
student version from ``source/<a>`` (with nbgrader's rules, :mod:`hubfleet.edu.assignments.nbgrader_course`), then
records every submission ``gradebook.db`` holds for it: the student, the time it was submitted, the files of
``submitted/<student>/<a>/`` (when the course folder still has them), the executed notebooks of ``autograded/``
for feedback, each cell's autograder score and, where a grader set one, the manual score (plus extra credit, up to
the cell's points) and comment. Students keep their nbgrader ids as hub user names. An assignment already in the
exchange is released again (its files and spec replaced); submissions already imported are not imported twice.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

from hubfleet.edu.assignments.nbgrader_course import (
    TIMESTAMP_FILE,
    GradebookSubmission,
    NbgraderCourse,
    read_gradebook,
)
from hubfleet.edu.assignments.source import SourceError
from hubfleet.edu.exchange.store import CellGrade, Exchange, ExchangeError, check_name
from hubfleet.edu.exchange.workflow import read_folder, release_source

__all__ = ["ImportReport", "import_course"]

IMPORTER = "nbgrader import"


@dataclass
class ImportReport:
    """What an import did."""

    released: list[str] = field(default_factory=list)
    submissions: int = 0
    already: int = 0
    capped: int = 0
    """manual scores (with extra credit) above a cell's points, recorded as the cell's points"""
    warnings: list[str] = field(default_factory=list)


def _files(folder: Path) -> dict[str, bytes]:
    if not folder.is_dir():
        return {}
    return {path: data for path, data in read_folder(folder).items() if Path(path).name != TIMESTAMP_FILE}


def import_course(
    exchange: Exchange,
    course: str,
    nbgrader: NbgraderCourse,
    *,
    assignments: list[str] | None = None,
    by: str,
    max_bytes: int,
) -> ImportReport:
    """Release the course folder's assignments to ``course`` and import their grades (see the module docstring)."""
    check_name("course", course)
    report = ImportReport(warnings=[f"ignored nbgrader option: {name}" for name in nbgrader.config.ignored])
    names = assignments or nbgrader.assignments()
    gradebook = nbgrader.gradebook_path()
    graded = read_gradebook(gradebook) if gradebook is not None else []
    if gradebook is None:
        report.warnings.append("no gradebook.db: assignments released, no grades imported")
    for name in names:
        release_source(exchange, course, nbgrader.source_dir(name), by=by, max_bytes=max_bytes)
        report.released.append(name)
        imported = {s.student for s in exchange.submissions(course, name)}
        for entry in (g for g in graded if g.assignment == name):
            try:
                check_name("student", entry.student)
            except ExchangeError as exc:
                report.warnings.append(f"{name}: {exc.message}; not imported")
                continue
            if entry.student in imported:
                report.already += 1
                continue
            _import_one(exchange, course, nbgrader, entry, report, max_bytes)
            report.submissions += 1
    return report


def _import_one(
    exchange: Exchange,
    course: str,
    nbgrader: NbgraderCourse,
    entry: GradebookSubmission,
    report: ImportReport,
    max_bytes: int,
) -> None:
    name, student = entry.assignment, entry.student
    files = _files(nbgrader.submitted_dir(student, name))
    submitted_at = entry.timestamp or dt.datetime.now(dt.UTC)
    submission = exchange.import_submission(
        course, name, student, files, submitted_at=submitted_at, max_bytes=max_bytes
    )
    spec_cells = {
        (nb["name"].removesuffix(".ipynb"), c["grade_id"]): (nb["name"], c)
        for nb in exchange.assignment(course, name).grading_spec["notebooks"]
        for c in nb["cells"]
        if c["grade"] or c["task"]
    }
    cells, manual = [], []
    for notebook, grades in entry.cells.items():
        for cell_name, grade in grades.items():
            found = spec_cells.get((notebook, cell_name))
            if found is None:
                report.warnings.append(f"{name}/{student}: {notebook}:{cell_name} is not in the assignment any more")
                continue
            path, cell = found
            max_score = float(cell["points"] or 0.0)
            auto = cell["grade"] and not cell["solution"] and cell["cell_type"] == "code"
            auto_score = grade.auto_score if auto else None
            cells.append(CellGrade(path, cell_name, max_score, auto_score, status="imported"))
            if grade.manual_score is not None or grade.extra_credit:
                score = (grade.manual_score if grade.manual_score is not None else grade.auto_score or 0.0) + (
                    grade.extra_credit or 0.0
                )
                if score > max_score:
                    report.capped += 1
                    score = max_score
                manual.append((path, cell_name, score, grade.comment or ""))
    graded = _files(nbgrader.autograded_dir(student, name))
    notebooks = {path: data for path, data in graded.items() if path.endswith(".ipynb")}
    exchange.record_grading(submission.id, cells, graded_files=notebooks)
    for path, cell_name, score, comment in manual:
        exchange.override(course, name, student, path, cell_name, score, IMPORTER, comment)


def open_course(folder: Path) -> NbgraderCourse:
    """The nbgrader course at ``folder`` (its root: the folder holding ``nbgrader_config.py``)."""
    try:
        return NbgraderCourse.open(folder)
    except SourceError as exc:
        raise ExchangeError(str(exc)) from None
