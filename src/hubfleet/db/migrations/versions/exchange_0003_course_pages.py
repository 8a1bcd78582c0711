"""exchange: what the course pages show — students' fetches, the LMS roster URL and the last roster sync.

Revision ID: exchange_0003
Revises: exchange_0002
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "exchange_0003"
down_revision = "exchange_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "exchange_fetches",
        sa.Column("assignment_id", sa.Integer(), sa.ForeignKey("exchange_assignments.id"), primary_key=True),
        sa.Column("student", sa.String(128), primary_key=True),
        sa.Column("first_at", sa.DateTime(), nullable=False),
        sa.Column("last_at", sa.DateTime(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
    )
    op.create_table(
        "exchange_roster_syncs",
        sa.Column("hub", sa.String(64), primary_key=True),
        sa.Column("course", sa.String(64), primary_key=True),
        sa.Column("synced_at", sa.DateTime(), nullable=False),
        sa.Column("by", sa.String(128), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
    )
    with op.batch_alter_table("exchange_lms_courses") as table:
        table.add_column(sa.Column("memberships_url", sa.String(2048), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("exchange_lms_courses") as table:
        table.drop_column("memberships_url")
    op.drop_table("exchange_roster_syncs")
    op.drop_table("exchange_fetches")
