"""usage: the usage ledger (samples, hourly and daily rollups, home bytes, activity, groups, coverage, alerts).

Revision ID: usage_0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "usage_0001"
down_revision = None
branch_labels = ("usage",)
depends_on = None


def _rollup_columns() -> list[sa.Column]:
    return [
        sa.Column("hub", sa.String(64), primary_key=True),
        sa.Column("user", sa.String(128), primary_key=True),
        sa.Column("kind", sa.String(8), primary_key=True),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("cpu_charged", sa.Float(), nullable=False),
        sa.Column("cpu_used", sa.Float(), nullable=False),
        sa.Column("memory_charged", sa.Float(), nullable=False),
        sa.Column("memory_used", sa.Float(), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "usage_samples",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("hub", sa.String(64), nullable=False),
        sa.Column("user", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("start", sa.BigInteger(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("cpu_seconds", sa.Float(), nullable=False),
        sa.Column("cpu_request", sa.Float(), nullable=False),
        sa.Column("memory_bytes", sa.BigInteger(), nullable=False),
        sa.Column("memory_request", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_usage_samples_start", "usage_samples", ["start"])
    op.create_table("usage_hourly", *_rollup_columns(), sa.Column("hour", sa.BigInteger(), primary_key=True))
    op.create_index("ix_usage_hourly_hour", "usage_hourly", ["hour"])
    op.create_table("usage_daily", *_rollup_columns(), sa.Column("day", sa.Date(), primary_key=True))
    op.create_index("ix_usage_daily_day", "usage_daily", ["day"])
    op.create_table(
        "usage_home_bytes",
        sa.Column("hub", sa.String(64), primary_key=True),
        sa.Column("user", sa.String(128), primary_key=True),
        sa.Column("day", sa.Date(), primary_key=True),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "usage_activity",
        sa.Column("hub", sa.String(64), primary_key=True),
        sa.Column("user", sa.String(128), primary_key=True),
        sa.Column("day", sa.Date(), primary_key=True),
        sa.Column("last_activity", sa.DateTime(), nullable=True),
        sa.Column("logins", sa.Integer(), nullable=False),
    )
    op.create_index("ix_usage_activity_day", "usage_activity", ["day"])
    op.create_table(
        "usage_group_members",
        sa.Column("hub", sa.String(64), primary_key=True),
        sa.Column("group", sa.String(128), primary_key=True),
        sa.Column("user", sa.String(128), primary_key=True),
    )
    op.create_table(
        "usage_coverage",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("start", sa.BigInteger(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("cpu_count", sa.Float(), nullable=False),
        sa.Column("memory_bytes", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_usage_coverage_start", "usage_coverage", ["start"])
    op.create_table(
        "usage_alerts",
        sa.Column("hub", sa.String(64), primary_key=True),
        sa.Column("period", sa.String(32), primary_key=True),
        sa.Column("threshold", sa.Float(), primary_key=True),
        sa.Column("sent_at", sa.DateTime(), nullable=False),
        sa.Column("fraction", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    for table in (
        "usage_alerts",
        "usage_coverage",
        "usage_group_members",
        "usage_activity",
        "usage_home_bytes",
        "usage_daily",
        "usage_hourly",
        "usage_samples",
    ):
        op.drop_table(table)
