"""An assignment's way through the exchange: release a source folder, autograde the collected submissions, make the
feedback pages. Shared by the exchange service and `hubfleet assignment …` (both act on the fleet database)."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from hubfleet.edu.assignments import GradeResult, GradingSpec, SourceError, generate, grade_batch, load_source
from hubfleet.edu.assignments import Submission as GradingSubmission
from hubfleet.edu.assignments.autotest import sandbox_session
from hubfleet.edu.assignments.feedback import CellScore, feedback_page
from hubfleet.edu.assignments.grader import limits_for
from hubfleet.edu.assignments.nbgrader_course import load_any
from hubfleet.edu.exchange.store import CellGrade, Exchange, ExchangeError, GradebookRow, check_files
from hubfleet.edu.exchange.tables import Assignment, Grade


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


def release_source(
    exchange: Exchange,
    course: str,
    source_dir: Path,
    *,
    by: str,
    max_bytes: int,
    instant_feedback: bool | None = None,
) -> Assignment:
    """Make the student version of an assignment folder (``assignment.yaml``, or ``source/<name>`` of an nbgrader
    course) — solutions and hidden tests out — and release it. ``instant_feedback`` overrides the folder's choice."""
    try:
        source = load_any(source_dir)
        with tempfile.TemporaryDirectory(prefix="hubfleet-release-") as tmp:
            spec = generate(source, Path(tmp) / "release", autotests=sandbox_session(source.root))
            files = read_folder(Path(tmp) / "release")
    except SourceError as exc:
        raise ExchangeError(str(exc)) from None
    if instant_feedback is not None:
        spec = spec.model_copy(update={"instant_feedback": instant_feedback})
    return exchange.release(
        course,
        source.name,
        files,
        grading_spec=spec.model_dump(mode="json"),
        max_score=spec.max_total,
        due=source.due,
        late_policy=source.late_policy.model_dump() if source.late_policy else {},
        by=by,
        max_bytes=max_bytes,
    )


def release_source_files(
    exchange: Exchange, course: str, name: str, files: dict[str, bytes], *, by: str, max_bytes: int
) -> Assignment:
    """Release an uploaded source folder (its `assignment.yaml` must name the assignment `name`)."""
    files = check_files(files, max_bytes)
    with tempfile.TemporaryDirectory(prefix="hubfleet-source-") as tmp:
        write_folder(Path(tmp), files)
        try:
            source_name = load_source(tmp).name
        except SourceError as exc:
            raise ExchangeError(str(exc).replace(tmp, name)) from None
        if source_name != name:
            raise ExchangeError(f"assignment.yaml names the assignment {source_name!r}, not {name!r}")
        return release_source(exchange, course, Path(tmp), by=by, max_bytes=max_bytes)


@dataclass
class GradingSummary:
    """What one autograde run did."""

    collected: int  # students with a collected submission
    already_graded: int  # skipped: graded by an earlier (possibly interrupted) run
    graded: int  # graded now


def autograde(exchange: Exchange, course: str, name: str, *, workers: int | None = None) -> GradingSummary:
    """Grade each student's collected submission that has no grade yet, in parallel sandboxes; every result is
    stored in its own transaction as soon as it is ready, so a killed run resumes with nothing lost or twice."""
    assignment = exchange.assignment(course, name)
    spec = GradingSpec.model_validate(assignment.grading_spec)
    collected = exchange.collected(course, name)
    done = exchange.graded_ids(s.id for s in collected)
    todo = [s for s in collected if s.id not in done]
    graded = 0

    def store(result: GradeResult) -> None:
        nonlocal graded
        cells = [
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
        notebooks = {}
        if result.graded_folder is not None:
            notebooks = {
                path: data for path, data in read_folder(result.graded_folder).items() if path.endswith(".ipynb")
            }
        error = "; ".join(result.errors) or None
        if exchange.record_grading(int(result.submission_id), cells, error=error, graded_files=notebooks):
            graded += 1

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
                workers=workers,
                limits=limits_for(spec),
                skip={str(i) for i in done},
                graded_root=Path(tmp) / "graded",
                data_dir=release,
            )
    return GradingSummary(collected=len(collected), already_graded=len(done), graded=graded)


def make_feedback(exchange: Exchange, course: str, name: str) -> int:
    """Make (or remake, after overrides) the feedback page of every graded collected submission; how many."""
    assignment = exchange.assignment(course, name)
    made = 0
    for row in exchange.gradebook(course, name):
        if not row.graded:
            continue
        notebooks = exchange.graded_files(row.submission_id) or {
            path: data for path, data in exchange.submission_files(row.submission_id).items() if path.endswith(".ipynb")
        }
        page = feedback_html(assignment, row.student, notebooks, exchange.grades(row.submission_id), row)
        exchange.set_feedback(row.submission_id, page)
        made += 1
    return made


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
