"""An assignment's way through the exchange: release a source folder, autograde the collected submissions, make the
feedback pages. Shared by the exchange service and `hubfleet assignment …` (both act on the fleet database)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hubfleet.edu.assignments import GradeResult, GradingSpec, SourceError, generate, grade_batch, load_source
from hubfleet.edu.assignments import Submission as GradingSubmission
from hubfleet.edu.assignments.autotest import sandbox_session
from hubfleet.edu.assignments.feedback import CellScore, feedback_page, notebooks_page
from hubfleet.edu.assignments.grader import limits_for
from hubfleet.edu.assignments.nbgrader_course import load_any
from hubfleet.edu.exchange.sources import read_course_folder
from hubfleet.edu.exchange.store import CellGrade, Exchange, ExchangeError, GradebookRow, check_files
from hubfleet.edu.exchange.tables import Assignment, Grade, Submission


def read_folder(root: Path) -> dict[str, bytes]:
    """Every regular file below `root` (relative POSIX path → content); symbolic links are not followed."""
    files = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            files[path.relative_to(root).as_posix()] = path.read_bytes()
    return files


def write_folder(root: Path, files: dict[str, bytes]) -> None:
    """Write `files` (already checked relative paths) below `root`."""
    for path, data in files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


@dataclass(frozen=True)
class PreparedRelease:
    """A source folder made into its student version, not released yet: what the course page previews."""

    spec: GradingSpec  # with the hidden tests: never shown to students
    files: dict[str, bytes]  # the student version
    due: dt.datetime | None
    late_policy: dict[str, Any]

    @property
    def name(self) -> str:
        return self.spec.assignment

    def choose(self, *, due: dt.datetime | None, instant_feedback: bool) -> PreparedRelease:
        """The same release with another due date and instant-feedback choice."""
        spec = self.spec.model_copy(update={"due": due, "instant_feedback": instant_feedback})
        return dataclasses.replace(self, spec=spec, due=due)


def prepare_release(source_dir: Path) -> PreparedRelease:
    """Make the student version of an assignment folder (``assignment.yaml``, or ``source/<name>`` of an nbgrader
    course) — solutions and hidden tests out — without releasing it (ExchangeError naming what is wrong)."""
    try:
        source = load_any(source_dir)
        with tempfile.TemporaryDirectory(prefix="hubfleet-release-") as tmp:
            spec = generate(source, Path(tmp) / "release", autotests=sandbox_session(source.root))
            files = read_folder(Path(tmp) / "release")
    except SourceError as exc:
        raise ExchangeError(str(exc)) from None
    late_policy = source.late_policy.model_dump() if source.late_policy else {}
    return PreparedRelease(spec=spec, files=files, due=source.due, late_policy=late_policy)


def prepare_files(files: dict[str, bytes], *, max_bytes: int, name: str | None = None) -> PreparedRelease:
    """`prepare_release` of an uploaded source folder (path → content); with `name`, its `assignment.yaml` must
    name that assignment."""
    files = check_files(files, max_bytes)
    with tempfile.TemporaryDirectory(prefix="hubfleet-source-") as tmp:
        write_folder(Path(tmp), files)
        try:
            source_name = load_source(tmp).name
        except SourceError as exc:
            raise ExchangeError(str(exc).replace(tmp, name or "the upload")) from None
        if name is not None and source_name != name:
            raise ExchangeError(f"assignment.yaml names the assignment {source_name!r}, not {name!r}")
        return _prepare_copy(Path(tmp), Path(tmp), name or "the upload")


def prepare_course_folder(course_folder: Path, relative: str, *, max_bytes: int) -> PreparedRelease:
    """`prepare_release` of a folder inside the course's shared folder (read safely: `sources.read_course_folder`)."""
    files = read_course_folder(course_folder, relative, max_bytes=max_bytes)
    with tempfile.TemporaryDirectory(prefix="hubfleet-source-") as tmp:
        write_folder(Path(tmp), files)
        return _prepare_copy(Path(tmp), Path(tmp) / relative, relative)


def _prepare_copy(copy: Path, folder: Path, shown: str) -> PreparedRelease:
    """`prepare_release` of `folder` inside a temporary `copy`; errors name `shown`, not the copy."""
    try:
        return prepare_release(folder)
    except ExchangeError as exc:
        raise ExchangeError(exc.message.replace(str(folder), shown).replace(str(copy), shown)) from None


def release_prepared(
    exchange: Exchange, course: str, prepared: PreparedRelease, *, by: str, max_bytes: int
) -> Assignment:
    """Release a prepared student version to the course's students (again: replaces the files; submissions stay)."""
    return exchange.release(
        course,
        prepared.name,
        prepared.files,
        grading_spec=prepared.spec.model_dump(mode="json"),
        max_score=prepared.spec.max_total,
        due=prepared.due,
        late_policy=prepared.late_policy,
        by=by,
        max_bytes=max_bytes,
    )


def release_source(
    exchange: Exchange,
    course: str,
    source_dir: Path,
    *,
    by: str,
    max_bytes: int,
    instant_feedback: bool | None = None,
) -> Assignment:
    """Make the student version of an assignment folder and release it. ``instant_feedback`` overrides the
    folder's choice."""
    prepared = prepare_release(source_dir)
    if instant_feedback is not None:
        prepared = prepared.choose(due=prepared.due, instant_feedback=instant_feedback)
    return release_prepared(exchange, course, prepared, by=by, max_bytes=max_bytes)


def release_source_files(
    exchange: Exchange, course: str, name: str, files: dict[str, bytes], *, by: str, max_bytes: int
) -> Assignment:
    """Release an uploaded source folder (its `assignment.yaml` must name the assignment `name`)."""
    prepared = prepare_files(files, max_bytes=max_bytes, name=name)
    return release_prepared(exchange, course, prepared, by=by, max_bytes=max_bytes)


@dataclass
class GradingSummary:
    """What one autograde run did."""

    collected: int  # students with a collected submission
    already_graded: int  # skipped: graded by an earlier (possibly interrupted) run
    graded: int  # graded now


WAITING, GRADING, GRADED, FAILED = "waiting", "grading", "graded", "failed"


@dataclass
class SubmissionProgress:
    """One submission in a grading run: waiting, grading (a sandbox is on it), graded (its score) or failed."""

    submission_id: int
    student: str
    state: str = WAITING
    total: float | None = None
    error: str | None = None


class GradingProgress:
    """Live progress of a grading run, per submission (filled in by the grading threads, read by anyone)."""

    def __init__(self, on_change: Callable[[GradingProgress], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._submissions: dict[int, SubmissionProgress] = {}
        self.on_change = on_change  # told after every change (in the thread that made it)

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change(self)

    def waiting(self, submissions: list[Submission]) -> None:
        with self._lock:
            for submission in submissions:
                self._submissions[submission.id] = SubmissionProgress(submission.id, submission.student)
        self._changed()

    def set(self, submission_id: int, state: str, *, total: float | None = None, error: str | None = None) -> None:
        with self._lock:
            entry = self._submissions.get(submission_id)
            if entry is not None:
                entry.state, entry.total, entry.error = state, total, error
        self._changed()

    def snapshot(self) -> list[SubmissionProgress]:
        """The submissions of the run, by student."""
        with self._lock:
            return sorted((dataclasses.replace(s) for s in self._submissions.values()), key=lambda s: s.student)

    def counts(self) -> dict[str, int]:
        """How many submissions are in each state."""
        counts = dict.fromkeys((WAITING, GRADING, GRADED, FAILED), 0)
        for entry in self.snapshot():
            counts[entry.state] += 1
        return counts


def _cells(result: GradeResult) -> list[CellGrade]:
    return [
        CellGrade(
            notebook=notebook,
            cell=cell.grade_id,
            max_score=cell.max_points,
            auto_score=cell.points if cell.kind == "auto" else None,
            status=cell.status,
            output=cell.message,
        )
        for notebook, results in result.notebooks.items()
        for cell in results
    ]


def _graded_notebooks(result: GradeResult) -> dict[str, bytes]:
    if result.graded_folder is None:
        return {}
    return {path: data for path, data in read_folder(result.graded_folder).items() if path.endswith(".ipynb")}


def _grade(
    exchange: Exchange,
    course: str,
    name: str,
    todo: list[Submission],
    *,
    workers: int | None,
    replace: bool,
    progress: GradingProgress | None,
) -> int:
    """Grade `todo` in parallel sandboxes, storing each result in its own transaction as it is ready; how many
    were stored (a submission graded meanwhile by another run is not stored twice, unless `replace`)."""
    assignment = exchange.assignment(course, name)
    spec = GradingSpec.model_validate(assignment.grading_spec)
    graded = 0
    if progress is not None:
        progress.waiting(todo)

    def store(result: GradeResult) -> None:
        nonlocal graded
        error = "; ".join(result.errors) or None
        submission_id = int(result.submission_id)
        stored = exchange.record_grading(
            submission_id, _cells(result), error=error, graded_files=_graded_notebooks(result), replace=replace
        )
        graded += stored
        if progress is not None:
            progress.set(submission_id, FAILED if error else GRADED, total=result.total, error=error)

    def started(submission_id: str) -> None:
        if progress is not None:
            progress.set(int(submission_id), GRADING)

    with tempfile.TemporaryDirectory(prefix="hubfleet-grade-") as tmp:
        release = Path(tmp) / "release"
        write_folder(release, exchange.release_files(course, name))
        submissions = []
        for submission in todo:
            folder = Path(tmp) / "submissions" / str(submission.id)
            write_folder(folder, exchange.submission_files(submission.id))
            submissions.append(GradingSubmission(id=str(submission.id), folder=folder))
        if submissions:
            grade_batch(
                spec,
                submissions,
                on_result=store,
                on_start=started,
                workers=workers,
                limits=limits_for(spec),
                graded_root=Path(tmp) / "graded",
                data_dir=release,
            )
    return graded


def autograde(
    exchange: Exchange,
    course: str,
    name: str,
    *,
    workers: int | None = None,
    progress: GradingProgress | None = None,
) -> GradingSummary:
    """Grade each student's collected submission that has no grade yet, in parallel sandboxes; every result is
    stored in its own transaction as soon as it is ready, so a killed run resumes with nothing lost or twice.
    `progress` (optional) follows each submission as it waits, is graded and gets its score."""
    collected = exchange.collected(course, name)
    done = exchange.graded_ids(s.id for s in collected)
    todo = [s for s in collected if s.id not in done]
    graded = _grade(exchange, course, name, todo, workers=workers, replace=False, progress=progress)
    return GradingSummary(collected=len(collected), already_graded=len(done), graded=graded)


def check_regradable(submission: Submission) -> None:
    """ExchangeError unless the submission was collected (grading works on collected submissions only)."""
    if submission.collected_at is None:
        raise ExchangeError(f"submission {submission.id} of {submission.student} is not collected: collect first")


def regrade(
    exchange: Exchange, course: str, name: str, submission_id: int, *, progress: GradingProgress | None = None
) -> float:
    """Grade one submission again (after a fix to the tests, or a sandbox failure) and replace its grading in one
    transaction; manual scores and comments of its cells are kept. Its new automatic total."""
    submission = exchange.submission(course, name, submission_id)
    check_regradable(submission)
    _grade(exchange, course, name, [submission], workers=1, replace=True, progress=progress)
    return sum(grade.auto_score or 0.0 for grade in exchange.grades(submission.id))


def make_feedback(
    exchange: Exchange, course: str, name: str, *, on_page: Callable[[int, int], None] | None = None
) -> int:
    """Make (or remake, after overrides) the feedback page of every graded collected submission: students see
    theirs from then on. How many; `on_page(made, of)` is told after each page (live progress)."""
    assignment = exchange.assignment(course, name)
    rows = [row for row in exchange.gradebook(course, name) if row.graded]
    for made, row in enumerate(rows, start=1):
        notebooks = exchange.graded_files(row.submission_id) or {
            path: data for path, data in exchange.submission_files(row.submission_id).items() if path.endswith(".ipynb")
        }
        page = feedback_html(assignment, row.student, notebooks, exchange.grades(row.submission_id), row)
        exchange.set_feedback(row.submission_id, page)
        if on_page is not None:
            on_page(made, len(rows))
    return len(rows)


def feedback_html(
    assignment: Assignment, student: str, notebooks: dict[str, bytes], grades: list[Grade], row: GradebookRow
) -> str:
    """One HTML page: the student's graded notebooks, each graded cell followed by its score, the grader's message
    and comment; the total and the late policy's effect at the top."""
    scores = {
        (g.notebook, g.cell): CellScore(
            score=g.score,
            max_score=g.max_score,
            status=g.status,
            message=g.output,
            comment=g.comment or "",
            grader=g.grader or "",
        )
        for g in grades
    }
    return feedback_page(
        str(assignment.grading_spec.get("title") or assignment.name),
        student,
        notebooks,
        scores,
        total=row.total,
        max_total=row.max_score,
        raw_total=row.raw_total,
        kept=row.kept,
    )


def graded_page(exchange: Exchange, course: str, name: str, submission_id: int) -> str:
    """One submission's notebooks as the autograder ran them, each graded cell with its score, message and comment
    (what the course's staff look at; the feedback page of the counting submission, before it is released)."""
    assignment = exchange.assignment(course, name)
    submission = exchange.submission(course, name, submission_id)
    grades = exchange.grades(submission.id)
    counting = next((row for row in exchange.gradebook(course, name) if row.submission_id == submission.id), None)
    if counting is None:  # an earlier submission, or one not collected yet: its own scores, without the late policy
        raw = round(sum(grade.score for grade in grades), 6)
        counting = GradebookRow(
            student=submission.student,
            submission_id=submission.id,
            submitted_at=submission.submitted_at,
            late=submission.late,
            graded=bool(grades),
            raw_total=raw,
            total=raw,
            max_score=assignment.max_score,
        )
    notebooks = exchange.graded_files(submission.id) or {
        path: data for path, data in exchange.submission_files(submission.id).items() if path.endswith(".ipynb")
    }
    return feedback_html(assignment, submission.student, notebooks, grades, counting)


def preview_html(prepared: PreparedRelease) -> str:
    """The student version's notebooks as students will get them (sanitised HTML; serve it sandboxed)."""
    return notebooks_page(f"{prepared.spec.title} — student version", prepared.files)
