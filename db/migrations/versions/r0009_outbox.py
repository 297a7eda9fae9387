"""The billing interface's outbox: one row per DFT^P03 message (docs/interfaces.md "Outbox").

- `hl7_outbox`: the session and decision version a message charges or reverses,
  its kind, control ID (MSH-10, unique), text, status, send attempts and billing's
  answer (ACK code and text).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "hl7_outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("session_pk", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("control_id", sa.String(length=20), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("last_sent_at", sa.DateTime(), nullable=True),
        sa.Column("answered_at", sa.DateTime(), nullable=True),
        sa.Column("ack_code", sa.String(length=2), nullable=True),
        sa.Column("ack_text", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["session_pk"],
            ["sessions.id"],
            name=op.f("fk_hl7_outbox_session_pk_sessions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hl7_outbox")),
        sa.UniqueConstraint("control_id", name=op.f("uq_hl7_outbox_control_id")),
    )
    op.create_index("ix_hl7_outbox_status", "hl7_outbox", ["status", "id"], unique=False)
    op.create_index("ix_hl7_outbox_session", "hl7_outbox", ["session_pk", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_hl7_outbox_session", table_name="hl7_outbox")
    op.drop_index("ix_hl7_outbox_status", table_name="hl7_outbox")
    op.drop_table("hl7_outbox")
