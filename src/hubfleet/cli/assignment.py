"""Assignment commands (`hubfleet assignment …`): the assignment format and the grader's commands, and the exchange's
(release, collect, grade, status, feedback, grades, passback: `hubfleet.cli.exchange`)."""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from hubfleet.cli import exchange
from hubfleet.cli.output import console, errors, fail
from hubfleet.cli.tables import Column, print_table
from hubfleet.edu import assignments as grading  # its parts load on first use (nbformat, the grader)

assignment_app = typer.Typer(
    name="assignment",
    help="Assignments: make the student version, release, collect, autograde, feedback, grades and LMS passback.",
    no_args_is_help=True,
)

SPEC_FILE = ".hubfleet-grading.json"
"""Where `generate` writes the grading spec by default: a hidden file in the source folder (it has the hidden tests)."""


SOURCE_DIR: Any = typer.Argument(..., help="the assignment's source folder (notebooks, data, assignment.yaml)")
OUT_DIR: Any = typer.Argument(..., help="new folder for the student version")
SPEC_OPTION: Any = typer.Option(None, help=f"where to write the grading spec (default SOURCE_DIR/{SPEC_FILE})")
SPEC_OR_SOURCE: Any = typer.Argument(..., help="a grading spec (from `generate`) or the source folder")
SUBMISSIONS_DIR: Any = typer.Argument(..., help="one folder per submission; its name is the submission id")
JOURNAL: Any = typer.Option(..., help="append-only results file (JSON lines); a rerun skips what it holds")
WORKERS: Any = typer.Option(None, min=1, help="parallel sandboxes (default: two per CPU core)")
GRADED_DIR: Any = typer.Option(None, help="keep the executed notebooks here (default JOURNAL.graded/)")
CELL_TIMEOUT: Any = typer.Option(None, min=0.1, help="seconds per cell (default: the assignment's, else 30)")
NOTEBOOK_TIMEOUT: Any = typer.Option(300.0, min=0.1, help="seconds per notebook")
MEMORY_MB: Any = typer.Option(1024, min=16, help="memory limit of each sandbox, MiB")
DATA_DIR: Any = typer.Option(
    None, help="the assignment's data files, put over the submissions' copies (default: next to the spec)"
)


@assignment_app.command("generate")
def generate_command(
    source_dir: Path = SOURCE_DIR,
    out_dir: Path = OUT_DIR,
    spec: Path | None = SPEC_OPTION,
) -> None:
    """Make the student version: solutions replaced by stubs, hidden tests removed, checksums recorded."""
    from hubfleet.edu.assignments.autotest import sandbox_session
    from hubfleet.edu.assignments.nbgrader_course import load_any

    try:
        source = load_any(source_dir)
        spec_made = grading.generate(source, out_dir, autotests=sandbox_session(source.root))
    except grading.SourceError as exc:
        raise fail(str(exc)) from None
    spec_path = spec or source.root / SPEC_FILE
    spec_path.write_text(spec_made.dumps())
    spec_path.chmod(0o600)
    cells = sum(len([c for c in nb.cells if c.grade or c.task]) for nb in spec_made.notebooks)
    console.print(
        f"Student version of [bold]{escape(spec_made.assignment)}[/] in {escape(str(out_dir))}: "
        f"{len(spec_made.notebooks)} notebook(s), {cells} graded cell(s), {spec_made.max_total:g} points, "
        f"{len(spec_made.data_files)} data file(s)."
    )
    console.print(f"Grading spec (with the hidden tests; keep it from students): {escape(str(spec_path))}")


def _load_spec(spec_or_source: Path, workdir: Path) -> grading.GradingSpec:
    if spec_or_source.is_dir():
        from hubfleet.edu.assignments.autotest import sandbox_session
        from hubfleet.edu.assignments.nbgrader_course import load_any

        source = load_any(spec_or_source)
        return grading.generate(source, workdir / "release", autotests=sandbox_session(source.root))
    try:
        return grading.GradingSpec.loads(spec_or_source.read_bytes())
    except (OSError, ValidationError) as exc:
        raise grading.SourceError(f"{spec_or_source}: not a grading spec ({exc.__class__.__name__}: {exc})") from None


def _submissions(folder: Path) -> list[grading.Submission]:
    found = []
    for entry in sorted(folder.iterdir()):
        if entry.is_dir() and not entry.is_symlink() and not entry.name.startswith("."):
            try:
                found.append(grading.Submission(id=entry.name, folder=entry))
            except ValidationError:
                raise grading.SourceError(f"{entry}: the folder name is not usable as a submission id") from None
    return found


@assignment_app.command("autograde")
def autograde_command(
    spec_or_source: Path = SPEC_OR_SOURCE,
    submissions_dir: Path = SUBMISSIONS_DIR,
    journal: Path = JOURNAL,
    workers: int | None = WORKERS,
    graded_dir: Path | None = GRADED_DIR,
    cell_timeout: float | None = CELL_TIMEOUT,
    notebook_timeout: float = NOTEBOOK_TIMEOUT,
    memory_mb: int = MEMORY_MB,
    data_dir: Path | None = DATA_DIR,
) -> None:
    """Grade every submission in sandboxes, in parallel; results go to the journal one by one, as they finish.

    Each submission gets the assignment's data files from the source folder (or DATA_DIR), not its own copies."""
    from hubfleet.edu.assignments.grader import limits_for

    base = grading.SandboxLimits(notebook_seconds=notebook_timeout, memory_bytes=memory_mb * 2**20)
    with tempfile.TemporaryDirectory(prefix="hubfleet-autograde-") as tmp, grading.JournalSink(journal) as sink:
        try:
            spec = _load_spec(spec_or_source, Path(tmp))
            submissions = _submissions(submissions_dir)
        except (grading.SourceError, OSError) as exc:
            raise fail(str(exc)) from None
        limits = limits_for(spec, base)
        if cell_timeout is not None:
            limits = dataclasses.replace(limits, cell_seconds=cell_timeout)
        done = sink.done_ids()
        todo = [s for s in submissions if s.id not in done]
        totals: list[grading.GradeResult] = []
        columns: list[Any] = [TextColumn("grading"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
        with Progress(*columns, console=console, transient=False) as progress:
            task = progress.add_task("grading", total=len(todo))

            def record(result: grading.GradeResult) -> None:
                sink(result)
                totals.append(result)
                progress.advance(task)

            try:
                summary = grading.grade_batch(
                    spec,
                    submissions,
                    workers=workers,
                    limits=limits,
                    skip=done,
                    on_result=record,
                    graded_root=graded_dir or journal.with_name(journal.name + ".graded"),
                    data_dir=data_dir or (spec_or_source if spec_or_source.is_dir() else spec_or_source.parent),
                )
            except (grading.SandboxError, ValueError) as exc:
                raise fail(str(exc)) from None
    rate = summary.graded / summary.seconds if summary.seconds else 0.0
    troubled = sum(1 for r in totals if r.errors)
    console.print(
        f"Graded {summary.graded} submission(s) in {summary.seconds:.1f} s with {summary.workers} worker(s) "
        f"({rate:.1f}/s); skipped {summary.skipped} already in {escape(str(journal))}; "
        f"{troubled} with problems (see their `errors`)."
    )


# --------------------------------------------------------------------------------------------- nbgrader courses

nbgrader_app = typer.Typer(
    name="nbgrader",
    help="An nbgrader course folder as it is: generate, autograde, feedback and scores in nbgrader's layout; "
    "import it into a hub's exchange.",
    no_args_is_help=True,
)
COURSE_DIR: Any = typer.Argument(..., help="the nbgrader course folder (with nbgrader_config.py)")
COURSE_ASSIGNMENT: Any = typer.Argument(..., help="the assignment (its folder in source/)")
FORCE: Any = typer.Option(False, "--force", help="redo what was done before (release folder, grading)")
STUDENTS: Any = typer.Option(None, "--student", help="only this student's submission (repeat for more)")
JSON_OPTION: Any = typer.Option(False, "--json", help="JSON lines instead of a table")


def _course(course_dir: Path) -> Any:
    from hubfleet.edu.assignments.nbgrader_course import NbgraderCourse

    try:
        course = NbgraderCourse.open(course_dir)
    except grading.SourceError as exc:
        raise fail(str(exc)) from None
    for name in course.config.ignored:
        errors.print(f"[yellow]![/] nbgrader_config.py: {escape(name)} does not change grading; ignored")
    return course


@nbgrader_app.command("generate")
def nbgrader_generate(course_dir: Path = COURSE_DIR, assignment: str = COURSE_ASSIGNMENT, force: bool = FORCE) -> None:
    """source/ASSIGNMENT → release/ASSIGNMENT, as `nbgrader generate_assignment` (AUTOTEST cells run in a sandbox)."""
    from hubfleet.edu.assignments.course_grading import generate_assignment

    course = _course(course_dir)
    try:
        spec = generate_assignment(course, assignment, force=force)
    except grading.SourceError as exc:
        raise fail(str(exc)) from None
    console.print(
        f"Student version of [bold]{escape(assignment)}[/] in {escape(str(course.release_dir(assignment)))}: "
        f"{len(spec.notebooks)} notebook(s), {spec.max_total:g} points."
    )


@nbgrader_app.command("autograde")
def nbgrader_autograde(
    course_dir: Path = COURSE_DIR,
    assignment: str = COURSE_ASSIGNMENT,
    student: list[str] | None = STUDENTS,
    workers: int | None = WORKERS,
    force: bool = FORCE,
) -> None:
    """submitted/*/ASSIGNMENT → autograded/*/ASSIGNMENT, in sandboxes, in parallel (as `nbgrader autograde`)."""
    from hubfleet.edu.assignments.course_grading import autograde

    course = _course(course_dir)
    with Progress(
        TextColumn("grading"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as bar:
        task = bar.add_task("grading", total=None)
        try:
            summary = autograde(
                course,
                assignment,
                students=student or None,
                workers=workers,
                force=force,
                on_result=lambda result: bar.advance(task),
            )
        except (grading.SourceError, grading.SandboxError, ValueError) as exc:
            raise fail(str(exc)) from None
    console.print(f"Graded {summary.graded} submission(s) in {summary.seconds:.1f} s; {summary.skipped} graded before.")
    _print_scores(course, assignment, as_json=False)


@nbgrader_app.command("feedback")
def nbgrader_feedback(course_dir: Path = COURSE_DIR, assignment: str = COURSE_ASSIGNMENT) -> None:
    """feedback/*/ASSIGNMENT/<notebook>.html for every graded student (as `nbgrader generate_feedback`)."""
    from hubfleet.edu.assignments.course_grading import generate_feedback

    made = generate_feedback(_course(course_dir), assignment)
    console.print(f"feedback written for {made} student(s) of {escape(assignment)}")


@nbgrader_app.command("scores")
def nbgrader_scores(
    course_dir: Path = COURSE_DIR, assignment: str = COURSE_ASSIGNMENT, as_json: bool = JSON_OPTION
) -> None:
    """Each graded student's score per notebook (nbgrader's notebook score; manual cells count 0 until graded)."""
    _print_scores(_course(course_dir), assignment, as_json=as_json)


def _print_scores(course: Any, assignment: str, *, as_json: bool) -> None:
    from hubfleet.edu.assignments.course_grading import scores

    found = scores(course, assignment)
    if as_json:
        for row in found:
            print(json.dumps(dataclasses.asdict(row)))
        return
    columns = [Column("student"), Column("notebook"), Column("score", right=True), Column("max", right=True)]
    columns.append(Column("manual grading"))
    rows = [
        [
            escape(row.student),
            escape(row.notebook),
            f"{row.score:g}",
            f"{row.max_score:g}",
            "needed" if row.needs_manual_grade else "",
        ]
        for row in found
    ]
    print_table(console, f"scores of {escape(assignment)}", columns, rows, note=None)


def register(root: typer.Typer) -> None:
    """Add `hubfleet assignment …` to `root`."""
    exchange.register(assignment_app)
    exchange.register_nbgrader(nbgrader_app)
    assignment_app.add_typer(nbgrader_app)
    root.add_typer(assignment_app)
