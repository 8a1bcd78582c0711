"""The exchange's tables in the fleet database: assignments, their files, submissions, grades, feedback, passback.

Files live in the database as content-addressed blobs (`exchange_blobs`, keyed by sha256): a submission's rows and
its files commit in one transaction (no orphan or missing files after a crash), the same bytes are stored once
however many submissions carry them, and a fleet database on PostgreSQL serves every machine without a shared
folder. Uploads are bounded (the service's `max_upload_bytes`), which keeps blobs small enough for any database.
Times are UTC.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from hubfleet.db import Base


class UTCDateTime(TypeDecorator):
    """A timestamp stored as naive UTC and read back as an aware UTC datetime (SQLite keeps no zone)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given for a UTC column")
        return value.astimezone(dt.UTC).replace(tzinfo=None)

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        return None if value is None else value.replace(tzinfo=dt.UTC)


def utcnow() -> dt.datetime:
    """The current time, UTC."""
    return dt.datetime.now(dt.UTC)


class Blob(Base):
    """File content, stored once per distinct content."""

    __tablename__ = "exchange_blobs"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Assignment(Base):
    """An assignment released to a course's students on one hub."""

    __tablename__ = "exchange_assignments"
    __table_args__ = (UniqueConstraint("hub", "course", "name", name="uq_exchange_assignments_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    hub: Mapped[str] = mapped_column(String(64))
    course: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(128))
    due: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    late_policy: Mapped[dict] = mapped_column(JSON, default=dict)
    grading_spec: Mapped[dict] = mapped_column(JSON)  # the grader's GradingSpec (points, checksums, hidden tests)
    max_score: Mapped[float] = mapped_column(Float, default=0.0)
    released_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    released_by: Mapped[str] = mapped_column(String(128))
    lms_lineitem: Mapped[str | None] = mapped_column(String(1024), nullable=True)  # AGS line item URL, once known


class ReleaseFile(Base):
    """One file of an assignment's student version."""

    __tablename__ = "exchange_release_files"

    assignment_id: Mapped[int] = mapped_column(ForeignKey("exchange_assignments.id"), primary_key=True)
    path: Mapped[str] = mapped_column(String(512), primary_key=True)
    sha256: Mapped[str] = mapped_column(ForeignKey("exchange_blobs.sha256"))


class Submission(Base):
    """One submission of a student, never changed: every submission is kept, the latest counts."""

    __tablename__ = "exchange_submissions"
    __table_args__ = (Index("ix_exchange_submissions_student", "assignment_id", "student"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    assignment_id: Mapped[int] = mapped_column(ForeignKey("exchange_assignments.id"))
    student: Mapped[str] = mapped_column(String(128))
    submitted_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)  # the server's clock, never the client's
    late: Mapped[bool] = mapped_column(Boolean)
    sha256: Mapped[str] = mapped_column(String(64))  # of the manifest: every (path, file sha256), sorted
    size: Mapped[int] = mapped_column(Integer)
    collected_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Fetch(Base):
    """A student's fetches of an assignment's student version (how many, first and last): who has started."""

    __tablename__ = "exchange_fetches"

    assignment_id: Mapped[int] = mapped_column(ForeignKey("exchange_assignments.id"), primary_key=True)
    student: Mapped[str] = mapped_column(String(128), primary_key=True)
    first_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    last_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    count: Mapped[int] = mapped_column(Integer, default=1)


class _FileOfSubmission:
    """A file that belongs to a submission, by path; its content is a blob."""

    submission_id: Mapped[int] = mapped_column(ForeignKey("exchange_submissions.id"), primary_key=True)
    path: Mapped[str] = mapped_column(String(512), primary_key=True)
    sha256: Mapped[str] = mapped_column(ForeignKey("exchange_blobs.sha256"))


class SubmissionFile(_FileOfSubmission, Base):
    """One file of a submission, as the student sent it."""

    __tablename__ = "exchange_submission_files"


class Grading(Base):
    """A submission's autograding, written in the same transaction as its cells' grades (resume: skip these)."""

    __tablename__ = "exchange_gradings"

    submission_id: Mapped[int] = mapped_column(ForeignKey("exchange_submissions.id"), primary_key=True)
    graded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)  # what went wrong for the submission as a whole


class GradedFile(_FileOfSubmission, Base):
    """A notebook as the autograder ran it (with outputs): what feedback pages are made from."""

    __tablename__ = "exchange_graded_files"


class Grade(Base):
    """One graded cell of a submission: the autograder's score and, for manual grading, an override."""

    __tablename__ = "exchange_grades"

    submission_id: Mapped[int] = mapped_column(ForeignKey("exchange_submissions.id"), primary_key=True)
    notebook: Mapped[str] = mapped_column(String(512), primary_key=True)
    cell: Mapped[str] = mapped_column(String(256), primary_key=True)  # the cell's grade_id
    max_score: Mapped[float] = mapped_column(Float)
    auto_score: Mapped[float | None] = mapped_column(Float, nullable=True)  # None: manually graded cell
    status: Mapped[str] = mapped_column(String(32), default="")  # the grader's verdict (passed, failed, timeout, …)
    output: Mapped[str] = mapped_column(Text, default="")  # error text shown in feedback
    manual_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    grader: Mapped[str | None] = mapped_column(String(128), nullable=True)
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    overridden_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)

    @property
    def score(self) -> float:
        """The score that counts: the override when there is one, else the autograder's (0 if none)."""
        if self.manual_score is not None:
            return self.manual_score
        return self.auto_score or 0.0


class Feedback(Base):
    """The feedback page (HTML) of a graded submission."""

    __tablename__ = "exchange_feedback"

    submission_id: Mapped[int] = mapped_column(ForeignKey("exchange_submissions.id"), primary_key=True)
    html: Mapped[str] = mapped_column(Text)
    generated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class Check(Base):
    """Instant feedback on a submission: its visible tests' results, graded when it arrived (if the assignment
    asks for it). ``state``: queued, running, done, failed (the grader could not run it) or refused (rate limit,
    busy)."""

    __tablename__ = "exchange_checks"

    submission_id: Mapped[int] = mapped_column(ForeignKey("exchange_submissions.id"), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    requested_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    total: Mapped[float | None] = mapped_column(Float, nullable=True)
    max_total: Mapped[float | None] = mapped_column(Float, nullable=True)
    results: Mapped[dict | None] = mapped_column(JSON, nullable=True)  # notebook → [cell results]
    message: Mapped[str | None] = mapped_column(Text, nullable=True)


class LmsCourse(Base):
    """How a course is linked to an LMS, recorded from LTI launches: where its AGS line items are (students' LMS ids
    come from LTI's identity table)."""

    __tablename__ = "exchange_lms_courses"

    hub: Mapped[str] = mapped_column(String(64), primary_key=True)
    course: Mapped[str] = mapped_column(String(64), primary_key=True)
    issuer: Mapped[str] = mapped_column(String(512))
    client_id: Mapped[str] = mapped_column(String(256))
    deployment_id: Mapped[str] = mapped_column(String(256))
    context_id: Mapped[str] = mapped_column(String(256))
    lineitems_url: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    memberships_url: Mapped[str | None] = mapped_column(String(2048), nullable=True)  # NRPS: the LMS roster
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class RosterSync(Base):
    """The last roster sync of a course from its LMS (NRPS): when, who asked, what it changed or why it failed."""

    __tablename__ = "exchange_roster_syncs"

    hub: Mapped[str] = mapped_column(String(64), primary_key=True)
    course: Mapped[str] = mapped_column(String(64), primary_key=True)
    synced_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    by: Mapped[str] = mapped_column(String(128))  # a user name, or "operator" for the CLI
    ok: Mapped[bool] = mapped_column(Boolean)
    report: Mapped[dict] = mapped_column(JSON, default=dict)  # `hubfleet.edu.roster.SyncReport.to_dict()`
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


class ScoreOut(Base):
    """The score of one student on one assignment as the LMS should have it: the durable passback outbox.

    A row is pending while `delivered_score` differs from `score` (or the maximum changed); delivering records what
    the LMS acknowledged, so an unchanged score is never posted again.
    """

    __tablename__ = "exchange_scores_out"

    assignment_id: Mapped[int] = mapped_column(ForeignKey("exchange_assignments.id"), primary_key=True)
    student: Mapped[str] = mapped_column(String(128), primary_key=True)
    score: Mapped[float] = mapped_column(Float)
    maximum: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    delivered_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    delivered_maximum: Mapped[float | None] = mapped_column(Float, nullable=True)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    claimed_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)  # a deliverer is on it

    @property
    def pending(self) -> bool:
        """Whether the LMS does not have this score yet."""
        return self.delivered_score != self.score or self.delivered_maximum != self.maximum
