"""Raw export bytes in the database: raw_blobs (db/raw_blobs.py).

Created on both backends; which raw store is used is decided from the database
URL and the `raw_store_mode` setting (docs/operations.md, "Raw exports on
PostgreSQL"). Rows are copied in from a folder store by `pumptrail raw migrate`.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "raw_blobs",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("stored_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("sha256", name=op.f("pk_raw_blobs")),
    )


def downgrade() -> None:
    op.drop_table("raw_blobs")
