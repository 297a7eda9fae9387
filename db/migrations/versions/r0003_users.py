"""Web accounts and the per-profile code index: users, evidence_codes.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("session_version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("last_login_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("username", name=op.f("uq_users_username")),
    )
    op.create_table(
        "evidence_codes",
        sa.Column("session_pk", sa.Integer(), nullable=False),
        sa.Column("profile", sa.String(length=64), nullable=False),
        sa.Column("procedure", sa.String(length=16), nullable=True),
        sa.ForeignKeyConstraint(
            ["session_pk"],
            ["evidence.session_pk"],
            name=op.f("fk_evidence_codes_session_pk_evidence"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("session_pk", "profile", name=op.f("pk_evidence_codes")),
    )
    op.create_index(
        "ix_evidence_codes_profile",
        "evidence_codes",
        ["profile", "procedure", "session_pk"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_evidence_codes_profile", table_name="evidence_codes")
    op.drop_table("evidence_codes")
    op.drop_table("users")
