"""Payers, coverage and providers (docs/coding-rules.md §9.1, §9.3; `db.payers`).

- `payers`: name (unique in any case through `name_key`), optional payer ID,
  the profile it codes under;
- `coverage`: a patient ID's payer from a date, optionally to a date;
- `providers`: a programmer operator ID mapped to a person with an NPI and a role.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "payers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("name_key", sa.String(length=128), nullable=False),
        sa.Column("payer_id", sa.String(length=32), nullable=True),
        sa.Column("profile", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payers")),
        sa.UniqueConstraint("name_key", name=op.f("uq_payers_name_key")),
    )
    op.create_table(
        "coverage",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("payer_pk", sa.Integer(), nullable=False),
        sa.Column("starts_on", sa.Date(), nullable=False),
        sa.Column("ends_on", sa.Date(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["payer_pk"], ["payers.id"], name=op.f("fk_coverage_payer_pk_payers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_coverage")),
    )
    op.create_index("ix_coverage_patient", "coverage", ["patient_id", "starts_on"], unique=False)
    op.create_table(
        "providers",
        sa.Column("operator_id", sa.String(length=64), nullable=False),
        sa.Column("npi", sa.String(length=10), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("operator_id", name=op.f("pk_providers")),
    )


def downgrade() -> None:
    op.drop_table("providers")
    op.drop_index("ix_coverage_patient", table_name="coverage")
    op.drop_table("coverage")
    op.drop_table("payers")
