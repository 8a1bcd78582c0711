"""An assignment's way through the exchange: release a source folder, autograde the collected submissions, make the
feedback pages. Shared by the exchange service and `hubfleet assignment …` (both act on the fleet database)."""

from __future__ import annotations

import html
import tempfile
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbconvert import HTMLExporter

from hubfleet.edu.assignments import GradeResult, GradingSpec, SourceError, generate, grade_batch, load_source
from hubfleet.edu.assignments import Submission as GradingSubmission
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


def release_source(exchange: Exchange, course: str, source_dir: Path, *, by: str, max_bytes: int) -> Assignment:
    """Make the student version of the source folder (solutions and hidden tests out) and release it."""
    try:
        source = load_source(source_dir)
        with tempfile.TemporaryDirectory(prefix="hubfleet-release-") as tmp:
            spec = generate(source, Path(tmp) / "release")
            files = read_folder(Path(tmp) / "release")
    except SourceError as exc:
        raise ExchangeError(str(exc)) from None
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
    """One HTML page: the student's graded notebooks (nbconvert, sanitised), each graded cell followed by its score,
    the grader's message and comment; the total and the late policy's effect at the top."""
    by_cell = {(g.notebook, g.cell): g for g in grades}
    exporter = HTMLExporter(template_name="basic")
    exporter.sanitize_html = True
    title = html.escape(str(assignment.grading_spec.get("title") or assignment.name))
    parts = [
        f"<h1>{title}</h1>",
        f"<p>Student: <b>{html.escape(student)}</b> — score <b>{row.total:g} / {row.max_score:g}</b>",
    ]
    if row.kept < 1:
        parts.append(f" (late: {row.raw_total:g} points, {row.kept:.0%} kept)")
    parts.append("</p>")
    for path, data in sorted(notebooks.items()):
        try:
            notebook = nbformat.reads(data.decode("utf-8"), as_version=4)
        except (UnicodeDecodeError, ValueError) as exc:
            parts.append(f"<h2>{html.escape(path)}</h2><p>unreadable notebook: {html.escape(str(exc))}</p>")
            continue
        cells = []
        for cell in notebook.cells:
            cells.append(cell)
            grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
            grade = by_cell.get((path, grade_id)) if grade_id else None
            if grade is not None:
                cells.append(nbformat.v4.new_markdown_cell(_score_note(grade)))
        notebook.cells = cells
        body, _ = exporter.from_notebook_node(notebook)
        parts.append(f"<h2>{html.escape(path)}</h2>{body}")
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{title} — feedback</title>"
        "<style>body{font-family:sans-serif;max-width:60em;margin:auto}pre{white-space:pre-wrap}"
        ".score{background:#eef;border-left:4px solid #44a;padding:.3em .8em}</style>"
        f"</head><body>{''.join(parts)}</body></html>"
    )


def _score_note(grade: Grade) -> str:
    lines = [f"**Score: {grade.score:g} / {grade.max_score:g}** ({grade.status or 'graded'})"]
    if grade.output:
        lines.append("\n```\n" + grade.output.replace("```", "'''")[:4000] + "\n```")
    if grade.comment:
        lines.append(f"\n*{grade.grader}:* " + grade.comment.replace("\n", " "))
    return "\n".join(lines)
