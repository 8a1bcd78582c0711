"""A course's records in one zip: its grades and every submission, for its instructors to keep or to take
elsewhere (the exchange's ``GET api/courses/C/export``, `hubfleet assignment export`).

The archive, under a folder named after the course::

    grades.csv                                    one row per student and assignment: the score that counts
    submissions.csv                               every submission: when, late, collected, counted, checksum
    <assignment>/grades.csv                       the assignment's gradebook, one column per graded cell
    <assignment>/submissions/<student>/<time>-<id>/…   the files of each submission, as submitted

Everything comes from the exchange's own store (`Exchange.gradebook`, `gradebook_csv`, `submissions`,
`submission_files`): the same numbers as `hubfleet assignment grades` and the service's gradebook. It is written
front to back into a `ZipStream` with one submission's files in memory at a time, and bounded: a course whose
submissions hold more than `MAX_BYTES` is refused (413) before anything is written.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

from hubfleet.common.zipstream import ZipStream, member_name
from hubfleet.edu.exchange.store import Exchange, TooLarge, check_name
from hubfleet.edu.exchange.tables import Assignment, Submission

MAX_BYTES = 4 * 1024**3
"""Submitted bytes one course export may hold."""

MAX_ENTRIES = 500_000
"""Files one course export may hold."""

SUMMARY_COLUMNS = ("student", "assignment", "total", "max_score", "raw_total", "kept", "late", "graded", "submitted_at")
INDEX_COLUMNS = (
    "assignment",
    "student",
    "submission",
    "submitted_at",
    "late",
    "collected_at",
    "counts",
    "files",
    "bytes",
    "sha256",
    "folder",
)


@dataclass(frozen=True)
class CourseExport:
    """What a course export will hold, known before it is written."""

    course: str
    assignments: list[Assignment]
    submissions: dict[str, list[Submission]]
    """Assignment name → its submissions, oldest first."""

    @property
    def submitted_bytes(self) -> int:
        return sum(s.size for subs in self.submissions.values() for s in subs)

    @property
    def submission_count(self) -> int:
        return sum(len(subs) for subs in self.submissions.values())

    @property
    def bound(self) -> int:
        """What the archive's content may come to: the submissions, and room for the grades and the index."""
        return self.submitted_bytes + 16 * 1024**2 + 4096 * self.submission_count


def plan(exchange: Exchange, course: str, *, max_bytes: int = MAX_BYTES) -> CourseExport:
    """The course's assignments and submissions; TooLarge when they hold more than `max_bytes`."""
    check_name("course", course)
    assignments = exchange.assignments(course)
    export = CourseExport(course, assignments, {a.name: exchange.submissions(course, a.name) for a in assignments})
    if export.submitted_bytes > max_bytes:
        raise TooLarge(
            f"the submissions of {course} hold {export.submitted_bytes} bytes, more than one export may hold "
            f"({max_bytes}): export it with `hubfleet assignment export --max-bytes` on the fleet's machine"
        )
    return export


def _csv(rows: list[list[object]]) -> bytes:
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return out.getvalue().encode()


def _number(value: float) -> str:
    return f"{value:g}"


def write(exchange: Exchange, export: CourseExport, archive: ZipStream) -> None:
    """Write the course's records (see the module docstring) into `archive`."""
    course = export.course
    summary: list[list[object]] = [list(SUMMARY_COLUMNS)]
    index: list[list[object]] = [list(INDEX_COLUMNS)]
    for assignment in export.assignments:
        name = assignment.name
        book = exchange.gradebook(course, name)
        counting = {row.submission_id for row in book}
        for row in book:
            summary.append(
                [
                    row.student,
                    name,
                    _number(row.total),
                    _number(row.max_score),
                    _number(row.raw_total),
                    _number(row.kept),
                    row.late,
                    row.graded,
                    row.submitted_at.isoformat(),
                ]
            )
        archive.add_bytes(member_name(course, name, "grades.csv"), exchange.gradebook_csv(course, name).encode())
        for submission in export.submissions[name]:
            when = f"{submission.submitted_at:%Y%m%dT%H%M%SZ}-{submission.id}"
            folder = member_name(course, name, "submissions", submission.student, when)
            files = exchange.submission_files(submission.id)
            mtime = submission.submitted_at.timestamp()
            for path, data in sorted(files.items()):
                archive.add_bytes(member_name(folder, path), data, mtime=mtime)
            index.append(
                [
                    name,
                    submission.student,
                    submission.id,
                    submission.submitted_at.isoformat(),
                    submission.late,
                    submission.collected_at.isoformat() if submission.collected_at else "",
                    submission.id in counting,
                    len(files),
                    submission.size,
                    submission.sha256,
                    folder.removeprefix(f"{course}/"),
                ]
            )
    archive.add_bytes(member_name(course, "grades.csv"), _csv(summary))
    archive.add_bytes(member_name(course, "submissions.csv"), _csv(index))


__all__ = ["MAX_BYTES", "MAX_ENTRIES", "CourseExport", "plan", "write"]
