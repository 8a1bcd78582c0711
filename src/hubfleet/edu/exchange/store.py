"""The exchange of one hub: releases, submissions and the gradebook, in the fleet database.

Used by the exchange service (REST API) and by `hubfleet assignment …` on the fleet machine; neither holds state
of its own. Errors carry the HTTP status the service answers with.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import posixpath
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from hubfleet.edu.assignments.source import LatePolicy, late_penalty
from hubfleet.edu.exchange.tables import (
    Assignment,
    Blob,
    Check,
    Feedback,
    Fetch,
    Grade,
    GradedFile,
    Grading,
    ReleaseFile,
    Submission,
    SubmissionFile,
    utcnow,
)

MAX_FILES = 500
"""Files in one release or submission."""

MAX_PATH_LENGTH = 255

GRADEBOOK_TOTALS = ("raw_total", "kept", "total", "max_score")
"""The gradebook CSV's last columns, after one column per graded cell."""

NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


class ExchangeError(Exception):
    """A request the exchange refuses; `status` is the HTTP status to answer with."""

    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(ExchangeError):
    status = 404


class Forbidden(ExchangeError):
    status = 403


class TooLarge(ExchangeError):
    status = 413


def check_name(kind: str, name: str) -> str:
    """`name` if it is a safe assignment or course name (letters, digits, '-', '_', '.'; 1-128; no leading dot)."""
    if not (0 < len(name) <= 128) or not set(name) <= NAME_CHARS or name.startswith("."):
        raise ExchangeError(f"invalid {kind} name {name!r}: letters, digits, '-', '_' and '.' only")
    return name


def clean_path(path: str) -> str:
    """A relative POSIX path inside a folder, or ExchangeError (absolute, '..', hidden checkpoints, control chars)."""
    if not isinstance(path, str) or not path or len(path) > MAX_PATH_LENGTH:
        raise ExchangeError(f"invalid file path {path!r}")
    if any(ord(char) < 32 for char in path) or "\\" in path:
        raise ExchangeError(f"invalid file path {path!r}")
    normal = posixpath.normpath(path)
    parts = normal.split("/")
    if normal.startswith("/") or ".." in parts or normal == ".":
        raise ExchangeError(f"file path {path!r} leaves the assignment folder")
    return normal


def check_files(files: dict[str, bytes], max_bytes: int) -> dict[str, bytes]:
    """Clean paths, and the size and count limits (413 when too large)."""
    if not files:
        raise ExchangeError("no files")
    if len(files) > MAX_FILES:
        raise TooLarge(f"too many files: {len(files)} (at most {MAX_FILES})")
    total = sum(len(data) for data in files.values())
    if total > max_bytes:
        raise TooLarge(f"{total} bytes is more than the limit of {max_bytes}")
    cleaned = {clean_path(path): data for path, data in files.items()}
    if len(cleaned) != len(files):
        raise ExchangeError("two file paths name the same file")
    return cleaned


def manifest_sha256(files: dict[str, str]) -> str:
    """The sha256 of a file set: of its sorted (path, content sha256) pairs."""
    text = json.dumps(sorted(files.items()), separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class CellGrade:
    """One graded cell, as the gradebook stores it."""

    notebook: str
    cell: str
    max_score: float
    auto_score: float | None
    status: str = ""
    output: str = ""


@dataclass
class GradebookRow:
    """One student's counting submission and its scores."""

    student: str
    submission_id: int
    submitted_at: dt.datetime
    late: bool
    graded: bool
    cells: dict[str, float] = field(default_factory=dict)  # "notebook:cell" -> score that counts
    raw_total: float = 0.0
    kept: float = 1.0  # fraction kept after the late policy
    total: float = 0.0  # raw_total * kept: the score that counts
    max_score: float = 0.0


@dataclass
class StudentProgress:
    """Where one student is with an assignment: fetched, submitted (late?), collected, graded, feedback made."""

    student: str
    fetched_at: dt.datetime | None = None  # the first fetch
    fetches: int = 0
    submissions: int = 0
    last_submitted: dt.datetime | None = None
    late: bool = False  # the latest submission
    latest_id: int | None = None
    collected_id: int | None = None  # the counting submission (the latest collected one)
    graded: bool = False
    total: float | None = None  # the counting submission's score, once graded
    grading_error: str | None = None
    feedback_at: dt.datetime | None = None
    feedback_stale: bool = False  # grades changed after the feedback page was made


@dataclass
class CourseGradebookRow:
    """One student's totals across the course's assignments (None: nothing graded for that assignment)."""

    student: str
    scores: dict[str, float | None]
    total: float
    max_total: float


@dataclass
class CourseGradebook:
    """Students by assignment: each student's counting total per assignment, and the course total."""

    assignments: list[tuple[str, float]]  # (name, max_score), oldest release first
    rows: list[CourseGradebookRow]

    def csv(self) -> str:
        """student, one column per assignment (its total; empty: not graded), total, max_total."""
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["student", *(name for name, _ in self.assignments), "total", "max_total"])
        for row in self.rows:
            scores = (_number(row.scores.get(name)) for name, _ in self.assignments)
            writer.writerow([row.student, *scores, _number(row.total), _number(row.max_total)])
        return out.getvalue()


def _late(assignment: Assignment, when: dt.datetime) -> bool:
    return assignment.due is not None and when > assignment.due


class Exchange:
    """Releases, submissions and grades of one hub's courses."""

    def __init__(self, sessions: sessionmaker[Session], hub: str) -> None:
        self.sessions = sessions
        self.hub = hub

    # -- assignments -------------------------------------------------------------------------------------------

    def _assignment(self, session: Session, course: str, name: str) -> Assignment:
        found = session.scalars(
            select(Assignment).where(Assignment.hub == self.hub, Assignment.course == course, Assignment.name == name)
        ).one_or_none()
        if found is None:
            raise NotFound(f"no assignment {name!r} in course {course!r}")
        return found

    def assignment(self, course: str, name: str) -> Assignment:
        """The released assignment (404 when there is none)."""
        with self.sessions() as session:
            return self._assignment(session, course, name)

    def assignments(self, course: str) -> list[Assignment]:
        """The course's released assignments, oldest first."""
        with self.sessions() as session:
            query = select(Assignment).where(Assignment.hub == self.hub, Assignment.course == course)
            return list(session.scalars(query.order_by(Assignment.released_at)))

    def release(
        self,
        course: str,
        name: str,
        files: dict[str, bytes],
        *,
        grading_spec: dict[str, Any],
        max_score: float,
        due: dt.datetime | None,
        late_policy: dict[str, Any],
        by: str,
        max_bytes: int,
    ) -> Assignment:
        """Release (or release again, replacing the files and spec) the student version of an assignment."""
        check_name("course", course)
        check_name("assignment", name)
        files = check_files(files, max_bytes)
        with self.sessions.begin() as session:
            assignment = session.scalars(
                select(Assignment).where(
                    Assignment.hub == self.hub, Assignment.course == course, Assignment.name == name
                )
            ).one_or_none()
            if assignment is None:
                assignment = Assignment(hub=self.hub, course=course, name=name)
                session.add(assignment)
            assignment.due = due
            assignment.late_policy = late_policy
            assignment.grading_spec = grading_spec
            assignment.max_score = max_score
            assignment.released_at = utcnow()
            assignment.released_by = by
            session.flush()
            for old in session.scalars(select(ReleaseFile).where(ReleaseFile.assignment_id == assignment.id)):
                session.delete(old)
            shas = _store_blobs(session, files)
            session.add_all(
                ReleaseFile(assignment_id=assignment.id, path=path, sha256=sha) for path, sha in shas.items()
            )
            return assignment

    def release_files(self, course: str, name: str, *, fetched_by: str | None = None) -> dict[str, bytes]:
        """The released student version's files; `fetched_by` (a student) is recorded as having fetched them."""
        now = utcnow()
        with self.sessions.begin() as session:
            assignment = self._assignment(session, course, name)
            if fetched_by is not None:
                insert = _insert(session, Fetch).values(
                    assignment_id=assignment.id, student=fetched_by, first_at=now, last_at=now, count=1
                )
                session.execute(
                    insert.on_conflict_do_update(
                        index_elements=["assignment_id", "student"], set_={"last_at": now, "count": Fetch.count + 1}
                    )
                )
            return _files(session, ReleaseFile, ReleaseFile.assignment_id, assignment.id)

    def fetches(self, course: str, name: str) -> dict[str, Fetch]:
        """Who fetched the assignment: student → their fetches (first, last, how many)."""
        with self.sessions() as session:
            assignment = self._assignment(session, course, name)
            rows = session.scalars(select(Fetch).where(Fetch.assignment_id == assignment.id))
            return {row.student: row for row in rows}

    # -- submissions -------------------------------------------------------------------------------------------

    def submit(self, course: str, name: str, student: str, files: dict[str, bytes], *, max_bytes: int) -> Submission:
        """Keep a new submission, timestamped now; late when after the due date (the late policy applies at
        grading: late work is kept, never refused)."""
        files = check_files(files, max_bytes)
        now = utcnow()
        with self.sessions.begin() as session:
            assignment = self._assignment(session, course, name)
            late = _late(assignment, now)
            shas = _store_blobs(session, files)
            submission = Submission(
                assignment_id=assignment.id,
                student=student,
                submitted_at=now,
                late=late,
                sha256=manifest_sha256(shas),
                size=sum(len(data) for data in files.values()),
            )
            session.add(submission)
            session.flush()
            session.add_all(
                SubmissionFile(submission_id=submission.id, path=path, sha256=sha) for path, sha in shas.items()
            )
            return submission

    def import_submission(
        self,
        course: str,
        name: str,
        student: str,
        files: dict[str, bytes],
        *,
        submitted_at: dt.datetime,
        max_bytes: int,
    ) -> Submission:
        """Keep a submission made elsewhere (an nbgrader course moving to hubfleet) at the time it was made, and
        collected already (it was graded there)."""
        files = check_files(files, max_bytes) if files else {}
        with self.sessions.begin() as session:
            assignment = self._assignment(session, course, name)
            shas = _store_blobs(session, files)
            submission = Submission(
                assignment_id=assignment.id,
                student=student,
                submitted_at=submitted_at,
                late=_late(assignment, submitted_at),
                sha256=manifest_sha256(shas),
                size=sum(len(data) for data in files.values()),
                collected_at=utcnow(),
            )
            session.add(submission)
            session.flush()
            session.add_all(
                SubmissionFile(submission_id=submission.id, path=path, sha256=sha) for path, sha in shas.items()
            )
            return submission

    def submissions(self, course: str, name: str, student: str | None = None) -> list[Submission]:
        """Every submission of the assignment (of one student), oldest first."""
        with self.sessions() as session:
            assignment = self._assignment(session, course, name)
            query = select(Submission).where(Submission.assignment_id == assignment.id)
            if student is not None:
                query = query.where(Submission.student == student)
            return list(session.scalars(query.order_by(Submission.id)))

    def latest(self, course: str, name: str) -> list[Submission]:
        """Each student's latest submission (the one that counts), by student name."""
        with self.sessions() as session:
            return _latest(session, self._assignment(session, course, name))

    def collect(self, course: str, name: str) -> list[Submission]:
        """Each student's latest submission, marked as collected now (the ones grading works on)."""
        now = utcnow()
        with self.sessions.begin() as session:
            latest = _latest(session, self._assignment(session, course, name))
            for submission in latest:
                if submission.collected_at is None:
                    submission.collected_at = now
            return latest

    def collected(self, course: str, name: str) -> list[Submission]:
        """Each student's latest collected submission (later, uncollected submissions wait for the next collect)."""
        with self.sessions() as session:
            return _latest(session, self._assignment(session, course, name), collected=True)

    def submission(self, course: str, name: str, submission_id: int) -> Submission:
        """One submission of the assignment (404 when it belongs to another one)."""
        with self.sessions() as session:
            assignment = self._assignment(session, course, name)
            found = session.get(Submission, submission_id)
            if found is None or found.assignment_id != assignment.id:
                raise NotFound(f"no submission {submission_id} of assignment {name!r}")
            return found

    def submission_files(self, submission_id: int) -> dict[str, bytes]:
        """A submission's files."""
        with self.sessions() as session:
            return _files(session, SubmissionFile, SubmissionFile.submission_id, submission_id)

    # -- grades ------------------------------------------------------------------------------------------------

    def graded_ids(self, submission_ids: Iterable[int]) -> set[int]:
        """Which of these submissions already have a recorded grading."""
        ids = list(submission_ids)
        with self.sessions() as session:
            return set(session.scalars(select(Grading.submission_id).where(Grading.submission_id.in_(ids))))

    def record_grading(
        self,
        submission_id: int,
        cells: list[CellGrade],
        *,
        error: str | None = None,
        graded_files: dict[str, bytes] | None = None,
        replace: bool = False,
    ) -> bool:
        """Store a submission's grading, its cells and its graded notebooks in one transaction; False (nothing
        written) when the submission was graded already, so a resumed or concurrent grader never duplicates.

        With `replace` (a regrade), an earlier grading is replaced in the same transaction; the manual scores and
        comments of cells that are still there are kept (capped at the cell's points)."""
        manual: dict[tuple[str, str], Grade] = {}
        with self.sessions.begin() as session:
            previous = session.get(Grading, submission_id)
            if previous is not None and not replace:
                return False
            if previous is not None:
                for grade in session.scalars(select(Grade).where(Grade.submission_id == submission_id)):
                    if grade.manual_score is not None or grade.comment:
                        manual[(grade.notebook, grade.cell)] = grade
                    session.delete(grade)
                for graded in session.scalars(select(GradedFile).where(GradedFile.submission_id == submission_id)):
                    session.delete(graded)
                session.delete(previous)
                session.flush()
            session.add(Grading(submission_id=submission_id, graded_at=utcnow(), error=error))
            shas = _store_blobs(session, graded_files) if graded_files else {}
            session.add_all(
                GradedFile(submission_id=submission_id, path=path, sha256=sha) for path, sha in shas.items()
            )
            for cell in cells:
                grade = Grade(
                    submission_id=submission_id,
                    notebook=cell.notebook,
                    cell=cell.cell,
                    max_score=cell.max_score,
                    auto_score=cell.auto_score,
                    status=cell.status,
                    output=cell.output[:20_000],
                )
                kept = manual.get((cell.notebook, cell.cell))
                if kept is not None:
                    if kept.manual_score is not None:
                        grade.manual_score = min(kept.manual_score, cell.max_score)
                    grade.grader, grade.comment, grade.overridden_at = kept.grader, kept.comment, kept.overridden_at
                session.add(grade)
            return True

    def grading(self, submission_id: int) -> Grading | None:
        """A submission's grading record (when, and what went wrong for the submission as a whole), if graded."""
        with self.sessions() as session:
            return session.get(Grading, submission_id)

    def graded_files(self, submission_id: int) -> dict[str, bytes]:
        """The notebooks of a submission as the autograder ran them."""
        with self.sessions() as session:
            return _files(session, GradedFile, GradedFile.submission_id, submission_id)

    def grades(self, submission_id: int) -> list[Grade]:
        """A submission's graded cells, in notebook and cell order."""
        with self.sessions() as session:
            query = select(Grade).where(Grade.submission_id == submission_id)
            return list(session.scalars(query.order_by(Grade.notebook, Grade.cell)))

    def override(
        self, course: str, name: str, student: str, notebook: str, cell: str, score: float, grader: str, comment: str
    ) -> Grade:
        """Set a manual score on a cell of the student's counting submission (0 ≤ score ≤ the cell's points)."""
        with self.sessions.begin() as session:
            latest = _latest(session, self._assignment(session, course, name), collected=True)
            submission = next((s for s in latest if s.student == student), None)
            if submission is None:
                raise NotFound(f"no collected submission of {student!r} for {name!r}")
            grade = session.get(Grade, (submission.id, notebook, cell))
            if grade is None:
                raise NotFound(f"no graded cell {notebook}:{cell} in {student!r}'s submission (grade it first)")
            if not 0 <= score <= grade.max_score:
                raise ExchangeError(f"score {score} is outside 0…{grade.max_score}")
            grade.manual_score = score
            grade.grader = grader
            grade.comment = comment
            grade.overridden_at = utcnow()
            return grade

    def gradebook(self, course: str, name: str) -> list[GradebookRow]:
        """One row per student with a collected submission: the cells' counting scores and the total."""
        with self.sessions() as session:
            assignment = self._assignment(session, course, name)
            latest = _latest(session, assignment, collected=True)
            graded = set(
                session.scalars(select(Grading.submission_id).where(Grading.submission_id.in_([s.id for s in latest])))
            )
            grades: dict[int, list[Grade]] = {}
            for grade in session.scalars(select(Grade).where(Grade.submission_id.in_([s.id for s in latest]))):
                grades.setdefault(grade.submission_id, []).append(grade)
        policy = LatePolicy.model_validate(assignment.late_policy) if assignment.late_policy else None
        rows = []
        for submission in latest:
            cells = {f"{g.notebook}:{g.cell}": g.score for g in grades.get(submission.id, [])}
            kept = late_penalty(policy, assignment.due, submission.submitted_at)
            rows.append(
                GradebookRow(
                    student=submission.student,
                    submission_id=submission.id,
                    submitted_at=submission.submitted_at,
                    late=submission.late,
                    graded=submission.id in graded,
                    cells=cells,
                    raw_total=sum(cells.values()),
                    kept=kept,
                    total=round(sum(cells.values()) * kept, 6),
                    max_score=assignment.max_score,
                )
            )
        return rows

    def progress(self, course: str, name: str, students: Iterable[str] = ()) -> list[StudentProgress]:
        """Every student's way through the assignment (fetched, submitted, collected, graded, feedback), by name:
        those who did anything, and `students` (e.g. the course's roster) even if they did nothing yet."""
        with self.sessions() as session:
            assignment = self._assignment(session, course, name)
            rows = {student: StudentProgress(student) for student in students}
            for fetch in session.scalars(select(Fetch).where(Fetch.assignment_id == assignment.id)):
                row = rows.setdefault(fetch.student, StudentProgress(fetch.student))
                row.fetched_at, row.fetches = fetch.first_at, fetch.count
            query = select(Submission).where(Submission.assignment_id == assignment.id).order_by(Submission.id)
            for submission in session.scalars(query):
                row = rows.setdefault(submission.student, StudentProgress(submission.student))
                row.submissions += 1
                row.last_submitted, row.late, row.latest_id = submission.submitted_at, submission.late, submission.id
                if submission.collected_at is not None:
                    row.collected_id = submission.id
            counting = [row.collected_id for row in rows.values() if row.collected_id is not None]
            gradings = {
                g.submission_id: g for g in session.scalars(select(Grading).where(Grading.submission_id.in_(counting)))
            }
            feedback = {
                f.submission_id: f.generated_at
                for f in session.scalars(select(Feedback).where(Feedback.submission_id.in_(counting)))
            }
            changed: dict[int, dt.datetime] = {}
            for grade in session.scalars(select(Grade).where(Grade.submission_id.in_(counting))):
                if grade.overridden_at is not None:
                    changed[grade.submission_id] = max(
                        changed.get(grade.submission_id, grade.overridden_at), grade.overridden_at
                    )
        totals = {row.submission_id: row.total for row in self.gradebook(course, name)}
        for row in rows.values():
            grading = gradings.get(row.collected_id) if row.collected_id is not None else None
            if grading is None:
                continue
            row.graded, row.total, row.grading_error = True, totals.get(row.collected_id), grading.error
            made = feedback.get(grading.submission_id)
            if made is not None:
                last_change = max(grading.graded_at, changed.get(grading.submission_id, grading.graded_at))
                row.feedback_at, row.feedback_stale = made, made < last_change
        return [rows[student] for student in sorted(rows)]

    def course_gradebook(self, course: str, students: Iterable[str] = ()) -> CourseGradebook:
        """Students by assignment: each student's counting total per assignment (late policy applied) and the sum,
        for the students with a graded submission and `students` (the roster)."""
        assignments = self.assignments(course)
        scores: dict[str, dict[str, float | None]] = {student: {} for student in students}
        for assignment in assignments:
            for row in self.gradebook(course, assignment.name):
                if row.graded:
                    scores.setdefault(row.student, {})[assignment.name] = row.total
        max_total = sum(a.max_score for a in assignments)
        rows = [
            CourseGradebookRow(
                student=student,
                scores={a.name: scores[student].get(a.name) for a in assignments},
                total=round(sum(s for s in scores[student].values() if s is not None), 6),
                max_total=max_total,
            )
            for student in sorted(scores)
        ]
        return CourseGradebook(assignments=[(a.name, a.max_score) for a in assignments], rows=rows)

    def gradebook_csv(self, course: str, name: str) -> str:
        """The gradebook as CSV: student, submitted_at, late, graded, one column per cell, raw total, fraction kept
        (late policy), total, max_score."""
        rows = self.gradebook(course, name)
        cells = sorted({cell for row in rows for cell in row.cells})
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["student", "submitted_at", "late", "graded", *cells, *GRADEBOOK_TOTALS])
        for row in rows:
            writer.writerow(
                [
                    row.student,
                    row.submitted_at.isoformat(),
                    row.late,
                    row.graded,
                    *(_number(row.cells.get(cell)) for cell in cells),
                    _number(row.raw_total),
                    _number(row.kept),
                    _number(row.total),
                    _number(row.max_score),
                ]
            )
        return out.getvalue()

    # -- instant feedback --------------------------------------------------------------------------------------

    def record_check(self, submission_id: int, state: str, **values: Any) -> None:
        """Create or update a submission's instant-feedback record (``values``: columns of :class:`Check`)."""
        with self.sessions.begin() as session:
            check = session.get(Check, submission_id)
            if check is None:
                check = Check(submission_id=submission_id, requested_at=utcnow())
                session.add(check)
            check.state = state
            for key, value in values.items():
                setattr(check, key, value)

    def check(self, course: str, name: str, submission_id: int) -> tuple[Submission, Check | None]:
        """A submission of the assignment and its instant-feedback record (``None``: none was asked for)."""
        submission = self.submission(course, name, submission_id)
        with self.sessions() as session:
            return submission, session.get(Check, submission_id)

    # -- feedback ----------------------------------------------------------------------------------------------

    def set_feedback(self, submission_id: int, html: str) -> None:
        """Keep (or replace) a submission's feedback page."""
        with self.sessions.begin() as session:
            feedback = session.get(Feedback, submission_id) or Feedback(submission_id=submission_id)
            feedback.html = html
            feedback.generated_at = utcnow()
            session.add(feedback)

    def feedback(self, course: str, name: str, student: str) -> str:
        """The feedback page of the student's counting submission (404 until generated)."""
        with self.sessions() as session:
            latest = _latest(session, self._assignment(session, course, name), collected=True)
            submission = next((s for s in latest if s.student == student), None)
            found = session.get(Feedback, submission.id) if submission else None
            if found is None:
                raise NotFound(f"no feedback for {student!r} on {name!r} yet")
            return found.html


def _number(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:g}"


def _files(session: Session, table: Any, owner: Any, owner_id: int) -> dict[str, bytes]:
    query = select(table.path, Blob.data).join(Blob, Blob.sha256 == table.sha256).where(owner == owner_id)
    rows = session.execute(query)
    return {path: data for path, data in rows}


def _latest(session: Session, assignment: Assignment, *, collected: bool = False) -> list[Submission]:
    newest = select(func.max(Submission.id)).where(Submission.assignment_id == assignment.id)
    if collected:
        newest = newest.where(Submission.collected_at.is_not(None))
    newest = newest.group_by(Submission.student)
    query = select(Submission).where(Submission.id.in_(newest)).order_by(Submission.student)
    return list(session.scalars(query))


def _insert(session: Session, table: Any) -> Any:
    """An INSERT of `table` in the database's dialect (with ON CONFLICT clauses: SQLite and PostgreSQL)."""
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table)


def _store_blobs(session: Session, files: dict[str, bytes]) -> dict[str, str]:
    """Store each distinct content once (concurrent writers of the same bytes do not clash); path → sha256."""
    shas = {path: hashlib.sha256(data).hexdigest() for path, data in files.items()}
    by_sha = {sha: files[path] for path, sha in shas.items()}
    present = set(session.scalars(select(Blob.sha256).where(Blob.sha256.in_(list(by_sha)))))
    for sha, data in by_sha.items():
        if sha not in present:
            insert = _insert(session, Blob).on_conflict_do_nothing(index_elements=["sha256"])
            session.execute(insert.values(sha256=sha, size=len(data), data=data))
    return shas
