"""upstream: the open-source contribution ledger (items from GitHub, non-code work, sync state).

Revision ID: upstream_0001
Revises:
Create Date: 2026-12-14
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "upstream_0001"
down_revision = None
branch_labels = ("upstream",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "upstream_items",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("github_id", sa.String(100), nullable=False),
        sa.Column("login", sa.String(64), nullable=False),
        sa.Column("repo", sa.String(160), nullable=False),
        sa.Column("number", sa.Integer(), nullable=True),
        sa.Column("title", sa.String(500), nullable=False),
        sa.Column("url", sa.String(500), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("merged_at", sa.DateTime(), nullable=True),
        sa.Column("state", sa.String(24), nullable=False),
        sa.Column("additions", sa.Integer(), nullable=False),
        sa.Column("deletions", sa.Integer(), nullable=False),
        sa.Column("comments", sa.Integer(), nullable=False),
        sa.UniqueConstraint("kind", "github_id", name="uq_upstream_items_kind_github_id"),
    )
    op.create_index("ix_upstream_items_created", "upstream_items", ["created_at"])
    op.create_index("ix_upstream_items_login", "upstream_items", ["login"])
    op.create_table(
        "upstream_noncode",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("login", sa.String(64), nullable=False),
        sa.Column("project", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("hours", sa.Float(), nullable=False),
        sa.Column("title", sa.String(500), nullable=False),
        sa.Column("url", sa.String(500), nullable=True),
        sa.Column("recorded_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_upstream_noncode_day", "upstream_noncode", ["day"])
    op.create_table(
        "upstream_sync",
        sa.Column("stream", sa.String(200), primary_key=True),
        sa.Column("synced_until", sa.DateTime(), nullable=True),
        sa.Column("progress", sa.Text(), nullable=True),
        sa.Column("etag", sa.String(200), nullable=True),
        sa.Column("updated", sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    for table in ("upstream_sync", "upstream_noncode", "upstream_items"):
        op.drop_table(table)
