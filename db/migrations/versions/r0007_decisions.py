"""The coder's decisions: one row per version of a session's signed-off decision.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "decision_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("session_pk", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("procedure", sa.String(length=8), nullable=False),
        sa.Column("decision", sa.Text(), nullable=False),
        sa.Column("author", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["session_pk"],
            ["sessions.id"],
            name=op.f("fk_decision_versions_session_pk_sessions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_decision_versions")),
        sa.UniqueConstraint(
            "session_pk", "version", name=op.f("uq_decision_versions_session_pk")
        ),
    )
    op.create_index(
        "ix_decision_versions_created", "decision_versions", ["created_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_decision_versions_created", table_name="decision_versions")
    op.drop_table("decision_versions")
