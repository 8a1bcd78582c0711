"""lti: LMS identities (issuer, sub) → hub user name.

Revision ID: lti_0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "lti_0001"
down_revision = None
branch_labels = ("lti",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "lti_identities",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("issuer", sa.String(255), nullable=False),
        sa.Column("sub", sa.String(255), nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("email", sa.String(255), nullable=True),
        sa.Column("name", sa.String(255), nullable=True),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("issuer", "sub", name="uq_lti_identities_issuer_sub"),
        sa.UniqueConstraint("username", name="uq_lti_identities_username"),
    )


def downgrade() -> None:
    op.drop_table("lti_identities")
