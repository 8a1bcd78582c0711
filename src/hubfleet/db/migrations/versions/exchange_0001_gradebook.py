"""exchange: assignments, content-addressed files, submissions, grades, feedback, LMS links, passback outbox.

Revision ID: exchange_0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "exchange_0001"
down_revision = None
branch_labels = ("exchange",)
depends_on = None


def _file_table(name: str, owner: str, owner_table: str) -> None:
    op.create_table(
        name,
        sa.Column(owner, sa.Integer(), sa.ForeignKey(f"{owner_table}.id"), primary_key=True),
        sa.Column("path", sa.String(512), primary_key=True),
        sa.Column("sha256", sa.String(64), sa.ForeignKey("exchange_blobs.sha256"), nullable=False),
    )


def upgrade() -> None:
    op.create_table(
        "exchange_blobs",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
    )
    op.create_table(
        "exchange_assignments",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("hub", sa.String(64), nullable=False),
        sa.Column("course", sa.String(64), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("due", sa.DateTime(), nullable=True),
        sa.Column("late_policy", sa.JSON(), nullable=False),
        sa.Column("grading_spec", sa.JSON(), nullable=False),
        sa.Column("max_score", sa.Float(), nullable=False),
        sa.Column("released_at", sa.DateTime(), nullable=False),
        sa.Column("released_by", sa.String(128), nullable=False),
        sa.Column("lms_lineitem", sa.String(1024), nullable=True),
        sa.UniqueConstraint("hub", "course", "name", name="uq_exchange_assignments_name"),
    )
    _file_table("exchange_release_files", "assignment_id", "exchange_assignments")
    op.create_table(
        "exchange_submissions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("assignment_id", sa.Integer(), sa.ForeignKey("exchange_assignments.id"), nullable=False),
        sa.Column("student", sa.String(128), nullable=False),
        sa.Column("submitted_at", sa.DateTime(), nullable=False),
        sa.Column("late", sa.Boolean(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("collected_at", sa.DateTime(), nullable=True),
    )
    op.create_index("ix_exchange_submissions_student", "exchange_submissions", ["assignment_id", "student"])
    _file_table("exchange_submission_files", "submission_id", "exchange_submissions")
    op.create_table(
        "exchange_gradings",
        sa.Column("submission_id", sa.Integer(), sa.ForeignKey("exchange_submissions.id"), primary_key=True),
        sa.Column("graded_at", sa.DateTime(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
    )
    _file_table("exchange_graded_files", "submission_id", "exchange_submissions")
    op.create_table(
        "exchange_grades",
        sa.Column("submission_id", sa.Integer(), sa.ForeignKey("exchange_submissions.id"), primary_key=True),
        sa.Column("notebook", sa.String(512), primary_key=True),
        sa.Column("cell", sa.String(256), primary_key=True),
        sa.Column("max_score", sa.Float(), nullable=False),
        sa.Column("auto_score", sa.Float(), nullable=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("output", sa.Text(), nullable=False),
        sa.Column("manual_score", sa.Float(), nullable=True),
        sa.Column("grader", sa.String(128), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("overridden_at", sa.DateTime(), nullable=True),
    )
    op.create_table(
        "exchange_feedback",
        sa.Column("submission_id", sa.Integer(), sa.ForeignKey("exchange_submissions.id"), primary_key=True),
        sa.Column("html", sa.Text(), nullable=False),
        sa.Column("generated_at", sa.DateTime(), nullable=False),
    )
    op.create_table(
        "exchange_lms_courses",
        sa.Column("hub", sa.String(64), primary_key=True),
        sa.Column("course", sa.String(64), primary_key=True),
        sa.Column("issuer", sa.String(512), nullable=False),
        sa.Column("client_id", sa.String(256), nullable=False),
        sa.Column("deployment_id", sa.String(256), nullable=False),
        sa.Column("context_id", sa.String(256), nullable=False),
        sa.Column("lineitems_url", sa.String(1024), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )
    op.create_table(
        "exchange_scores_out",
        sa.Column("assignment_id", sa.Integer(), sa.ForeignKey("exchange_assignments.id"), primary_key=True),
        sa.Column("student", sa.String(128), primary_key=True),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("maximum", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("delivered_score", sa.Float(), nullable=True),
        sa.Column("delivered_maximum", sa.Float(), nullable=True),
        sa.Column("delivered_at", sa.DateTime(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("claimed_until", sa.DateTime(), nullable=True),
    )


def downgrade() -> None:
    for table in (
        "exchange_scores_out",
        "exchange_lms_courses",
        "exchange_feedback",
        "exchange_grades",
        "exchange_graded_files",
        "exchange_gradings",
        "exchange_submission_files",
        "exchange_submissions",
        "exchange_release_files",
        "exchange_assignments",
        "exchange_blobs",
    ):
        op.drop_table(table)
