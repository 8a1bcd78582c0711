"""The exchange's commands in `hubfleet assignment …`: release, collect, grade, regrade, grade-cell, status,
feedback, grades, passback, export.

They act on the fleet database directly (the same code the hub's exchange service and its course pages run), as
the fleet's operator: no hub needs to be up for them, except that students fetch and submit through the running
service.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from hubfleet.cli.output import STATE_DIR_OPTION, console, errors, fail, hub_settings
from hubfleet.cli.tables import Column, print_table
from hubfleet.common.zipstream import ZipLimitError, ZipStream
from hubfleet.db import open_database
from hubfleet.edu.exchange import export
from hubfleet.edu.exchange.settings import DEFAULT_MAX_UPLOAD_BYTES, SETTINGS_FILE, ExchangeSettings
from hubfleet.edu.exchange.store import Exchange, ExchangeError

if TYPE_CHECKING:
    from hubfleet.edu.exchange.passback import PassbackReport

_Result = TypeVar("_Result")

EXCHANGE_HUB: Any = typer.Argument(..., help="the hub (see `hubfleet status`)")
EXCHANGE_COURSE: Any = typer.Argument(..., help="the course's short name")
EXCHANGE_NAME: Any = typer.Argument(..., help="the assignment's name (`name:` of its assignment.yaml)")
OPTIONAL_NAME: Any = typer.Argument(None, help="an assignment: its students (default: every assignment)")
STUDENT_ARGUMENT: Any = typer.Argument(..., help="the student (hub user name)")
NOTEBOOK_ARGUMENT: Any = typer.Argument(..., help="the notebook's path in the assignment, e.g. hw1.ipynb")
CELL_ARGUMENT: Any = typer.Argument(..., help="the cell's nbgrader id (grade_id)")
SCORE_ARGUMENT: Any = typer.Argument(..., help="the cell's score (0 to its points)")
COMMENT_OPTION: Any = typer.Option("", "--comment", help="a comment for the student (shown in the feedback)")
GRADER_OPTION: Any = typer.Option("operator", "--by", help="who grades (shown with the comment)")
STATUS_OPTION: Any = typer.Option(False, "--status", help="only show where each student's score is; send nothing")
SOURCE_ARGUMENT: Any = typer.Argument(..., help="the assignment's source folder (notebooks, data, assignment.yaml)")
BY_OPTION: Any = typer.Option("operator", "--by", help="who releases it (kept with the release)")
INSTANT_OPTION: Any = typer.Option(
    None,
    "--instant-feedback/--no-instant-feedback",
    help="students see their visible tests' results when they submit (default: as the assignment folder says)",
)
COURSE_DIR_ARGUMENT: Any = typer.Argument(..., help="the nbgrader course folder (with nbgrader_config.py)")
ASSIGNMENTS_OPTION: Any = typer.Option(None, "--assignment", help="only this assignment (repeat for more)")
WORKERS_OPTION: Any = typer.Option(None, "--workers", help="parallel sandboxes (default: sized to the cores)")
CSV_OPTION: Any = typer.Option(False, "--csv", help="CSV on standard output (one column per graded cell)")
EXPORT_TO: Any = typer.Option(None, "--to", help="the zip to write (default: HUB-COURSE-records.zip here)")
EXPORT_MAX_BYTES: Any = typer.Option(
    export.MAX_BYTES, "--max-bytes", min=1, help="refuse a course whose submissions hold more bytes than this"
)


def _exchange(hub: str, state_dir: Path | None) -> tuple[Exchange, ExchangeSettings | None]:
    """The hub's exchange on the fleet database, and its service settings (None before the hub first ran one)."""
    settings = hub_settings(state_dir, hub)
    exchange_file = settings.state_dir / SETTINGS_FILE
    service = ExchangeSettings.read(exchange_file) if exchange_file.exists() else None
    return Exchange(open_database(settings.database_url), hub), service


def _refused(function: Callable[[], _Result]) -> _Result:
    """Run an exchange action; a refusal (unknown assignment, bad input) becomes a clear error and exit 1."""
    try:
        return function()
    except ExchangeError as exc:
        raise fail(exc.message) from None


def release_command(
    hub: str = EXCHANGE_HUB,
    course: str = EXCHANGE_COURSE,
    source: Path = SOURCE_ARGUMENT,
    by: str = BY_OPTION,
    instant_feedback: bool | None = INSTANT_OPTION,
    state_dir: Path | None = STATE_DIR_OPTION,
) -> None:
    """Make the student version of SOURCE (a folder with assignment.yaml, or source/NAME of an nbgrader course) and
    release it to COURSE's students (again: replaces the files)."""
    from hubfleet.edu.exchange.workflow import release_source  # nbformat and nbconvert: for the commands using them

    exchange, service = _exchange(hub, state_dir)
    limit = service.max_upload_bytes if service else DEFAULT_MAX_UPLOAD_BYTES
    assignment = _refused(
        lambda: release_source(exchange, course, source, by=by, max_bytes=limit, instant_feedback=instant_feedback)
    )
    due = f"due {assignment.due:%Y-%m-%d %H:%M} UTC" if assignment.due else "no due date"
    console.print(f"released {course}/{assignment.name}: {assignment.max_score:g} points, {due}")


def collect_command(
    hub: str = EXCHANGE_HUB,
    course: str = EXCHANGE_COURSE,
    name: str = EXCHANGE_NAME,
    state_dir: Path | None = STATE_DIR_OPTION,
) -> None:
    """Collect each student's latest submission (the one that counts) for grading."""
    exchange, _ = _exchange(hub, state_dir)
    collected = _refused(lambda: exchange.collect(course, name))
    late = sum(s.late for s in collected)
    console.print(f"collected {len(collected)} submission(s) of {course}/{name} ({late} late)")


def grade_command(
    hub: str = EXCHANGE_HUB,
    course: str = EXCHANGE_COURSE,
    name: str = EXCHANGE_NAME,
    workers: int | None = WORKERS_OPTION,
    state_dir: Path | None = STATE_DIR_OPTION,
) -> None:
    """Autograde the collected submissions not graded yet (a run that was stopped resumes where it was)."""
    from hubfleet.edu.exchange.workflow import GRADED, GradingProgress, autograde

    exchange, _ = _exchange(hub, state_dir)
    columns = (TextColumn("grading"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[now]}"))
    with Progress(*columns, TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task("grading", total=None, now="")

        def show(progress: GradingProgress) -> None:
            entries = progress.snapshot()
            busy = [entry.student for entry in entries if entry.state == "grading"]
            finished = sum(entry.state in (GRADED, "failed") for entry in entries)
            bar.update(task, total=len(entries), completed=finished, now=", ".join(busy[:3]))

        summary = _refused(
            lambda: autograde(exchange, course, name, workers=workers, progress=GradingProgress(on_change=show))
        )
    console.print(
        f"graded {summary.graded} submission(s) of {course}/{name}; {summary.already_graded} graded before, "
        f"{summary.collected} collected"
    )


def _counting(exchange: Exchange, course: str, name: str, student: str) -> Any:
    counting = {s.student: s for s in _refused(lambda: exchange.collected(course, name))}
    if student not in counting:
        raise fail(f"{student} has no collected submission of {course}/{name} (collect first)")
    return counting[student]


def regrade_command(
    hub: str = EXCHANGE_HUB,
    course: str = EXCHANGE_COURSE,
    name: str = EXCHANGE_NAME,
    student: str = STUDENT_ARGUMENT,
    state_dir: Path | None = STATE_DIR_OPTION,
) -> None:
    """Grade STUDENT's counting submission again (after fixing the tests, or a sandbox failure); the scores and
    comments given by hand stay."""
    from hubfleet.edu.exchange.workflow import regrade

    exchange, _ = _exchange(hub, state_dir)
    submission = _counting(exchange, course, name, student)
    total = _refused(lambda: regrade(exchange, course, name, submission.id))
    rows = {row.student: row for row in exchange.gradebook(course, name)}
    console.print(
        f"regraded {escape(student)}'s submission {submission.id} of {course}/{name}: {total:g} automatic points, "
        f"{rows[student].total:g} / {rows[student].max_score:g} in all"
    )


def grade_cell_command(
    hub: str = EXCHANGE_HUB,
    course: str = EXCHANGE_COURSE,
    name: str = EXCHANGE_NAME,
    student: str = STUDENT_ARGUMENT,
    notebook: str = NOTEBOOK_ARGUMENT,
    cell: str = CELL_ARGUMENT,
    score: float = SCORE_ARGUMENT,
    comment: str = COMMENT_OPTION,
    by: str = GRADER_OPTION,
    state_dir: Path | None = STATE_DIR_OPTION,
) -> None:
    """Grade one cell of STUDENT's counting submission by hand (a manually graded answer, or an override of the
    autograder): the score counts in the totals, feedback and passback from then on."""
    exchange, _ = _exchange(hub, state_dir)
    grade = _refused(lambda: exchange.override(course, name, student, notebook, cell, score, by, comment))
    console.print(f"{escape(student)}, {escape(cell)}: {grade.score:g} / {grade.max_score:g} (by {escape(by)})")


def status_command(
    hub: str = EXCHANGE_HUB,
    course: str = EXCHANGE_COURSE,
    name: str | None = OPTIONAL_NAME,
    state_dir: Path | None = STATE_DIR_OPTION,
) -> None:
    """The course's assignments (submissions, collected, graded), or one assignment's students."""
    exchange, _ = _exchange(hub, state_dir)
    if name is None:
        columns = [Column("assignment"), Column("due")]
        columns += [Column(heading, right=True) for heading in ("points", "students submitted", "collected", "graded")]
        lines = []
        for assignment in exchange.assignments(course):
            latest = exchange.latest(course, assignment.name)
            rows = exchange.gradebook(course, assignment.name)
            due = f"{assignment.due:%Y-%m-%d %H:%M}" if assignment.due else "-"
            graded = sum(row.graded for row in rows)
            counts = [str(len(latest)), str(len(rows)), str(graded)]
            lines.append([escape(assignment.name), due, f"{assignment.max_score:g}", *counts])
        print_table(console, f"assignments of {course} on {hub}", columns, lines, note=None)
        return
    progress = _refused(lambda: exchange.progress(course, name))
    maximum = exchange.assignment(course, name).max_score
    columns = [Column(heading) for heading in ("student", "fetched", "last submitted", "late", "collected", "graded")]
    columns.append(Column("score", right=True))
    lines = []
    for row in progress:
        collected = "no" if row.collected_id is None else ("yes" if row.collected_id == row.latest_id else "older")
        lines.append(
            [
                escape(row.student),
                f"{row.fetched_at:%Y-%m-%d %H:%M}" if row.fetched_at else "no",
                f"{row.last_submitted:%Y-%m-%d %H:%M:%S}" if row.last_submitted else "-",
                "late" if row.submissions and row.late else "",
                collected if row.submissions else "-",
                "yes" if row.graded else "no",
                f"{row.total:g} / {maximum:g}" if row.graded and row.total is not None else "-",
            ]
        )
    print_table(console, f"{course}/{name} on {hub}", columns, lines, drop=[1], note=None)


def feedback_command(
    hub: str = EXCHANGE_HUB,
    course: str = EXCHANGE_COURSE,
    name: str = EXCHANGE_NAME,
    state_dir: Path | None = STATE_DIR_OPTION,
) -> None:
    """Make each graded student's feedback page (HTML; students get theirs with `hubfleet-assignment feedback`)."""
    from hubfleet.edu.exchange.workflow import make_feedback

    exchange, _ = _exchange(hub, state_dir)
    made = _refused(lambda: make_feedback(exchange, course, name))
    console.print(f"feedback pages made for {made} student(s) of {course}/{name}")


def grades_command(
    hub: str = EXCHANGE_HUB,
    course: str = EXCHANGE_COURSE,
    name: str | None = OPTIONAL_NAME,
    as_csv: bool = CSV_OPTION,
    state_dir: Path | None = STATE_DIR_OPTION,
) -> None:
    """The gradebook: of the course (each student's total per assignment), or of one assignment (each student's
    counting submission, cell scores and total)."""
    exchange, _ = _exchange(hub, state_dir)
    if name is None:
        book = _refused(lambda: exchange.course_gradebook(course))
        if as_csv:
            print(book.csv(), end="")
            return
        columns = [Column("student")]
        columns += [
            Column(f"{escape(assignment)} /{maximum:g}", right=True) for assignment, maximum in book.assignments
        ]
        columns.append(Column("total", right=True))
        lines = []
        for row in book.rows:
            scores = ["-" if row.scores[a] is None else f"{row.scores[a]:g}" for a, _ in book.assignments]
            lines.append([escape(row.student), *scores, f"{row.total:g} / {row.max_total:g}"])
        print_table(console, f"gradebook of {course}", columns, lines, note=None)
        return
    if as_csv:
        print(_refused(lambda: exchange.gradebook_csv(course, name)), end="")
        return
    columns = [Column(heading) for heading in ("student", "late", "graded")]
    columns += [Column(heading, right=True) for heading in ("raw", "kept", "total", "max")]
    lines = [
        [
            escape(row.student),
            "late" if row.late else "",
            "yes" if row.graded else "no",
            f"{row.raw_total:g}",
            f"{row.kept:.0%}",
            f"{row.total:g}",
            f"{row.max_score:g}",
        ]
        for row in _refused(lambda: exchange.gradebook(course, name))
    ]
    print_table(console, f"grades of {course}/{name}", columns, lines, note=None)


def passback_command(
    hub: str = EXCHANGE_HUB,
    course: str = EXCHANGE_COURSE,
    name: str = EXCHANGE_NAME,
    status: bool = STATUS_OPTION,
    state_dir: Path | None = STATE_DIR_OPTION,
) -> None:
    """Send the assignment's scores to the LMS the course was launched from (only changed scores; kept in the
    outbox while the LMS is down, and delivered later by the hub's exchange). With --status: where each score is."""
    from hubfleet.edu.exchange.passback import Passback, score_status

    exchange, service = _exchange(hub, state_dir)
    if status:
        columns = [Column("student"), Column("score", right=True), Column("state"), Column("in the LMS", right=True)]
        columns.append(Column("why not"))
        rows = [
            [
                escape(entry.student),
                f"{entry.score:g}",
                entry.state,
                "-" if entry.sent_score is None else f"{entry.sent_score:g}",
                escape(entry.error or ""),
            ]
            for entry in _refused(lambda: score_status(exchange, course, name))
        ]
        print_table(console, f"{course}/{name} in the LMS", columns, rows, note=None)
        return
    if service is None:
        raise fail(f"hub {hub} has no exchange service settings yet (a hub with courses or LTI, started once)")

    async def send() -> PassbackReport:
        passback = Passback(exchange, service.lti_platforms, service.tool_key_file)
        try:
            return await passback.send_assignment(course, name)
        finally:
            await passback.close()

    report = _refused(lambda: asyncio.run(send()))
    console.print(
        f"{course}/{name}: {report.queued} changed score(s), {report.delivered} delivered, {report.pending} pending"
    )
    for error in report.errors:
        errors.print(f"[yellow]![/] {escape(error)}")
    if report.pending:
        raise typer.Exit(2)


def import_nbgrader_command(
    hub: str = EXCHANGE_HUB,
    course: str = EXCHANGE_COURSE,
    course_dir: Path = COURSE_DIR_ARGUMENT,
    assignment: list[str] | None = ASSIGNMENTS_OPTION,
    by: str = BY_OPTION,
    state_dir: Path | None = STATE_DIR_OPTION,
) -> None:
    """Move an nbgrader course into COURSE on HUB: release its assignments, import gradebook.db's grades."""
    from hubfleet.edu.exchange.nbgrader_import import import_course, open_course

    exchange, service = _exchange(hub, state_dir)
    limit = service.max_upload_bytes if service else DEFAULT_MAX_UPLOAD_BYTES
    report = _refused(
        lambda: import_course(
            exchange, course, open_course(course_dir), assignments=assignment or None, by=by, max_bytes=limit
        )
    )
    console.print(
        f"released {len(report.released)} assignment(s) to {course} ({', '.join(report.released) or '-'}); "
        f"imported {report.submissions} graded submission(s), {report.already} imported before"
    )
    if report.capped:
        errors.print(f"[yellow]![/] {report.capped} manual score(s) with extra credit capped at the cell's points")
    for warning in report.warnings:
        errors.print(f"[yellow]![/] {escape(warning)}")


def register_nbgrader(nbgrader_app: typer.Typer) -> None:
    """Add `hubfleet assignment nbgrader import` (it acts on a hub's exchange)."""
    nbgrader_app.command("import")(import_nbgrader_command)


def export_command(
    hub: str = EXCHANGE_HUB,
    course: str = EXCHANGE_COURSE,
    to: Path | None = EXPORT_TO,
    max_bytes: int = EXPORT_MAX_BYTES,
    state_dir: Path | None = STATE_DIR_OPTION,
) -> None:
    """Write COURSE's grades and every submission into one zip (what instructors download from the exchange)."""
    exchange, _ = _exchange(hub, state_dir)
    planned = _refused(lambda: export.plan(exchange, course, max_bytes=max_bytes))
    target = to or Path(f"{hub}-{course}-records.zip")
    partial = target.with_name(f".{target.name}.partial")
    try:
        with open(partial, "wb") as out:
            archive = ZipStream(out, max_bytes=planned.bound, max_entries=export.MAX_ENTRIES)
            export.write(exchange, planned, archive)
            archive.close()
        partial.replace(target)
    except (OSError, ZipLimitError) as exc:
        partial.unlink(missing_ok=True)
        raise fail(f"could not write {target}: {exc}") from None
    console.print(
        f"wrote {escape(str(target))}: {len(planned.assignments)} assignment(s), {planned.submission_count} "
        f"submission(s), {target.stat().st_size / 1024**2:.1f} MiB"
    )


def register(assignment_app: typer.Typer) -> None:
    """Add the exchange's commands to `hubfleet assignment`."""
    assignment_app.command("release")(release_command)
    assignment_app.command("collect")(collect_command)
    assignment_app.command("grade")(grade_command)
    assignment_app.command("regrade")(regrade_command)
    assignment_app.command("grade-cell")(grade_cell_command)
    assignment_app.command("status")(status_command)
    assignment_app.command("feedback")(feedback_command)
    assignment_app.command("grades")(grades_command)
    assignment_app.command("passback")(passback_command)
    assignment_app.command("export")(export_command)
