"""nbgrader's steps on an nbgrader course folder, done by hubfleet and written in nbgrader's layout.

* :func:`generate_assignment` — ``source/<a>`` → ``release/<a>`` (the student version); the grading spec (with the
  hidden tests) goes to ``.hubfleet/<a>.grading.json`` (0600) in the course folder;
* :func:`autograde` — ``submitted/<student>/<a>`` → ``autograded/<student>/<a>`` (the executed notebooks and the
  files, as nbgrader leaves them), each result appended to ``.hubfleet/<a>.grades.jsonl`` (a journal: a run that
  was stopped resumes; ``force`` grades again, the later line counts);
* :func:`generate_feedback` — ``feedback/<student>/<a>/<notebook>.html`` (and ``timestamp.txt``), as nbgrader's
  ``generate_feedback`` lays them out;
* :func:`scores` — each student's score per notebook (nbgrader's ``notebook.score``) from the journal.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hubfleet.edu.assignments.autotest import sandbox_session
from hubfleet.edu.assignments.feedback import CellScore, feedback_page
from hubfleet.edu.assignments.grader import BatchSummary, grade_batch, limits_for
from hubfleet.edu.assignments.journal import JournalSink
from hubfleet.edu.assignments.models import GradeResult, GradingSpec, Submission
from hubfleet.edu.assignments.nbgrader_course import TIMESTAMP_FILE, NbgraderCourse
from hubfleet.edu.assignments.sandbox import SandboxLimits
from hubfleet.edu.assignments.source import SourceError
from hubfleet.edu.assignments.student_version import generate

__all__ = ["autograde", "generate_assignment", "generate_feedback", "load_spec", "scores"]


def _spec_path(course: NbgraderCourse, assignment: str) -> Path:
    return course.hubfleet_dir() / f"{assignment}.grading.json"


def _journal_path(course: NbgraderCourse, assignment: str) -> Path:
    return course.hubfleet_dir() / f"{assignment}.grades.jsonl"


def generate_assignment(course: NbgraderCourse, assignment: str, *, force: bool = False) -> GradingSpec:
    """Write ``release/<assignment>`` (``force`` replaces an existing one) and keep the grading spec."""
    source = course.load(assignment)
    release = course.release_dir(assignment)
    if release.exists() and any(release.iterdir()):
        if not force:
            raise SourceError(f"{release}: exists already (force replaces it)")
        shutil.rmtree(release)
    spec = generate(source, release, autotests=sandbox_session(source.root))
    folder = course.hubfleet_dir()
    folder.mkdir(mode=0o700, exist_ok=True)
    path = _spec_path(course, assignment)
    path.write_text(spec.dumps())
    path.chmod(0o600)
    return spec


def load_spec(course: NbgraderCourse, assignment: str) -> GradingSpec:
    path = _spec_path(course, assignment)
    try:
        return GradingSpec.loads(path.read_bytes())
    except FileNotFoundError:
        raise SourceError(f"{path}: missing; generate the assignment first") from None


def _copy_graded(graded: Path, target: Path) -> None:
    """The graded working folder as nbgrader's ``autograded/<student>/<assignment>`` (no timestamp.txt)."""
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(graded, target, symlinks=True, ignore=shutil.ignore_patterns(TIMESTAMP_FILE))


def autograde(
    course: NbgraderCourse,
    assignment: str,
    *,
    students: list[str] | None = None,
    workers: int | None = None,
    force: bool = False,
    limits: SandboxLimits | None = None,
    on_result: Callable[[GradeResult], None] = lambda result: None,
) -> BatchSummary:
    """Grade the submissions of ``assignment`` (of ``students``, or all) not graded yet (``force``: all again)."""
    spec = load_spec(course, assignment)
    found = course.submissions(assignment, students)
    submissions = [Submission(id=s.student, folder=s.folder) for s in found]
    with (
        tempfile.TemporaryDirectory(prefix="hubfleet-autograde-") as tmp,
        JournalSink(_journal_path(course, assignment)) as journal,
    ):
        done = set() if force else journal.done_ids()

        def record(result: GradeResult) -> None:
            if result.graded_folder is not None:
                _copy_graded(result.graded_folder, course.autograded_dir(result.submission_id, assignment))
            journal(result)
            on_result(result)

        return grade_batch(
            spec,
            submissions,
            on_result=record,
            workers=workers,
            limits=limits_for(spec, limits or SandboxLimits()),
            skip=done,
            graded_root=Path(tmp) / "graded",
            data_dir=course.source_dir(assignment),
        )


def _latest_results(course: NbgraderCourse, assignment: str) -> dict[str, GradeResult]:
    path = _journal_path(course, assignment)
    if not path.exists():
        return {}
    with JournalSink(path) as journal:
        return {result.submission_id: result for result in journal.results()}


@dataclass(frozen=True)
class NotebookScore:
    """A student's score on one notebook, as nbgrader's ``SubmittedNotebook.score`` (manual cells count 0 until
    graded)."""

    student: str
    notebook: str
    score: float
    max_score: float
    needs_manual_grade: bool


def scores(course: NbgraderCourse, assignment: str) -> list[NotebookScore]:
    """Every graded student's score per notebook (notebook name without ``.ipynb``, as nbgrader names them)."""
    found = []
    for student, result in sorted(_latest_results(course, assignment).items()):
        for notebook, cells in result.notebooks.items():
            found.append(
                NotebookScore(
                    student=student,
                    notebook=notebook.removesuffix(".ipynb"),
                    score=round(sum(c.points or 0.0 for c in cells), 6),
                    max_score=sum(c.max_points for c in cells),
                    needs_manual_grade=any(c.points is None for c in cells),
                )
            )
    return found


def generate_feedback(course: NbgraderCourse, assignment: str) -> int:
    """Write ``feedback/<student>/<assignment>/<notebook>.html`` for every graded student; how many students."""
    made = 0
    for student, result in sorted(_latest_results(course, assignment).items()):
        graded = course.autograded_dir(student, assignment)
        target = course.feedback_dir(student, assignment)
        target.mkdir(parents=True, exist_ok=True)
        for notebook, cells in result.notebooks.items():
            path = graded / notebook
            if not path.is_file():
                continue
            marks = {
                (notebook, c.grade_id): CellScore(
                    score=c.points or 0.0, max_score=c.max_points, status=c.status, message=c.message
                )
                for c in cells
            }
            page = feedback_page(
                f"{assignment}: {notebook}",
                student,
                {notebook: path.read_bytes()},
                marks,
                total=round(sum(c.points or 0.0 for c in cells), 6),
                max_total=sum(c.max_points for c in cells),
            )
            (target / notebook).with_suffix(".html").write_text(page, encoding="utf-8")
        stamp = course.submitted_dir(student, assignment) / TIMESTAMP_FILE
        if stamp.is_file():
            shutil.copyfile(stamp, target / TIMESTAMP_FILE)
        made += 1
    return made
