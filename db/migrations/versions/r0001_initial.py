"""Initial tables: pumps, sessions, setting values, events, raw files, evidence.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "pumps",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("serial", sa.String(length=32), nullable=False),
        sa.Column("model", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pumps")),
        sa.UniqueConstraint("serial", name=op.f("uq_pumps_serial")),
    )
    op.create_table(
        "sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("session_id", sa.String(length=36), nullable=False),
        sa.Column("pump_id", sa.Integer(), nullable=False),
        sa.Column("session_start_utc", sa.DateTime(), nullable=False),
        sa.Column("session_start_local", sa.DateTime(), nullable=False),
        sa.Column("utc_offset_min", sa.SmallInteger(), nullable=False),
        sa.Column("pump_model", sa.String(length=32), nullable=False),
        sa.Column("programmer_model", sa.String(length=32), nullable=False),
        sa.Column("programmer_serial", sa.String(length=32), nullable=False),
        sa.Column("programmer_software", sa.String(length=32), nullable=False),
        sa.Column("operator_id", sa.String(length=64), nullable=False),
        sa.Column("operator_role", sa.String(length=16), nullable=False),
        sa.Column("clinic_id", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=True),
        sa.Column("patient_name", sa.String(length=64), nullable=True),
        sa.Column("patient_birth_date", sa.Date(), nullable=True),
        sa.Column("has_refill", sa.Boolean(), nullable=False),
        sa.Column("pump_clock_local", sa.DateTime(), nullable=True),
        sa.Column("source_sha256", sa.String(length=64), nullable=False),
        sa.Column("source_name", sa.Text(), nullable=False),
        sa.Column("source_format", sa.String(length=16), nullable=False),
        sa.Column("format_version", sa.String(length=8), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("conflicting_exports", sa.Boolean(), nullable=False),
        sa.Column("parser_version", sa.String(length=40), nullable=False),
        sa.Column("imported_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["pump_id"], ["pumps.id"], name=op.f("fk_sessions_pump_id_pumps")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sessions")),
        sa.UniqueConstraint("session_id", name=op.f("uq_sessions_session_id")),
    )
    # The chain index (docs/coding-rules.md §7.5): the prior session is one probe.
    op.create_index("ix_sessions_chain", "sessions", ["pump_id", "session_start_utc", "session_id"])
    op.create_index("ix_sessions_patient", "sessions", ["patient_id", "session_start_utc"])
    op.create_index("ix_sessions_start", "sessions", ["session_start_utc"])
    op.create_table(
        "events",
        sa.Column("session_pk", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(length=8), nullable=False),
        sa.Column("time_utc", sa.DateTime(), nullable=True),
        sa.Column("position_kind", sa.String(length=8), nullable=False),
        sa.Column("position_value", sa.Integer(), nullable=False),
        sa.Column("pump_clock_local", sa.DateTime(), nullable=True),
        sa.Column("data", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["session_pk"],
            ["sessions.id"],
            name=op.f("fk_events_session_pk_sessions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("session_pk", "seq", name=op.f("pk_events")),
    )
    op.create_table(
        "evidence",
        sa.Column("session_pk", sa.Integer(), nullable=False),
        sa.Column("prior_session_pk", sa.Integer(), nullable=True),
        sa.Column("procedure", sa.String(length=16), nullable=True),
        sa.Column("flags", sa.Text(), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("rules_version", sa.String(length=40), nullable=False),
        sa.Column("parser_version", sa.String(length=40), nullable=False),
        sa.Column("derived_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["prior_session_pk"],
            ["sessions.id"],
            name=op.f("fk_evidence_prior_session_pk_sessions"),
        ),
        sa.ForeignKeyConstraint(
            ["session_pk"],
            ["sessions.id"],
            name=op.f("fk_evidence_session_pk_sessions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("session_pk", name=op.f("pk_evidence")),
    )
    op.create_index("ix_evidence_procedure", "evidence", ["procedure", "session_pk"])
    op.create_table(
        "evidence_flags",
        sa.Column("session_pk", sa.Integer(), nullable=False),
        sa.Column("flag", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["session_pk"],
            ["sessions.id"],
            name=op.f("fk_evidence_flags_session_pk_sessions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("session_pk", "flag", name=op.f("pk_evidence_flags")),
    )
    op.create_index("ix_evidence_flags_flag", "evidence_flags", ["flag", "session_pk"])
    op.create_table(
        "raw_files",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("source_format", sa.String(length=16), nullable=True),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("session_pk", sa.Integer(), nullable=True),
        sa.Column("parser_version", sa.String(length=40), nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["session_pk"], ["sessions.id"], name=op.f("fk_raw_files_session_pk_sessions")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_raw_files")),
        sa.UniqueConstraint("sha256", name=op.f("uq_raw_files_sha256")),
    )
    op.create_index("ix_raw_files_session", "raw_files", ["session_pk"])
    op.create_table(
        "setting_values",
        sa.Column("session_pk", sa.Integer(), nullable=False),
        sa.Column("phase", sa.SmallInteger(), nullable=False),
        sa.Column("param", sa.String(length=32), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["session_pk"],
            ["sessions.id"],
            name=op.f("fk_setting_values_session_pk_sessions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("session_pk", "phase", "param", name=op.f("pk_setting_values")),
    )


def downgrade() -> None:
    op.drop_table("setting_values")
    op.drop_index("ix_raw_files_session", table_name="raw_files")
    op.drop_table("raw_files")
    op.drop_index("ix_evidence_flags_flag", table_name="evidence_flags")
    op.drop_table("evidence_flags")
    op.drop_index("ix_evidence_procedure", table_name="evidence")
    op.drop_table("evidence")
    op.drop_table("events")
    op.drop_index("ix_sessions_start", table_name="sessions")
    op.drop_index("ix_sessions_patient", table_name="sessions")
    op.drop_index("ix_sessions_chain", table_name="sessions")
    op.drop_table("sessions")
    op.drop_table("pumps")
