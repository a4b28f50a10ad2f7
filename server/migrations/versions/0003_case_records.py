"""Case records: cases, assessments and review items (reconciliation of decrypted submissions).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 22:49:09.860168
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import server.db

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cases",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("case_code", sa.String(length=64), nullable=False),
        sa.Column("entity_uuid", sa.String(length=36), nullable=True),
        sa.Column("casework_type", sa.String(length=100), nullable=True),
        sa.Column("office", sa.String(length=100), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("intake_date", sa.Date(), nullable=True),
        sa.Column("latest_date", sa.Date(), nullable=True),
        sa.Column("next_due", sa.Date(), nullable=True),
        sa.Column("closure_ready", sa.Boolean(), nullable=False),
        sa.Column("latest_scores", sa.JSON(), nullable=False),
        sa.Column("intake_scores", sa.JSON(), nullable=False),
        sa.Column("flags", sa.JSON(), nullable=False),
        sa.Column("assessment_count", sa.Integer(), nullable=False),
        sa.Column("created_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.Date(), nullable=True),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_cases_project_id_projects")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cases")),
        sa.UniqueConstraint("project_id", "case_code", name=op.f("uq_cases_project_id_case_code")),
    )
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_cases_entity_uuid"), ["entity_uuid"], unique=False)
        batch_op.create_index("ix_cases_project_next_due", ["project_id", "next_due"], unique=False)
        batch_op.create_index("ix_cases_project_status", ["project_id", "status"], unique=False)

    op.create_table(
        "assessments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=True),
        sa.Column("submission_id", sa.Integer(), nullable=False),
        sa.Column("instance_id", sa.String(length=255), nullable=False),
        sa.Column("deprecated_id", sa.String(length=255), nullable=True),
        sa.Column("superseded_by_id", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("case_code", sa.String(length=64), nullable=True),
        sa.Column("entity_uuid", sa.String(length=36), nullable=True),
        sa.Column("assessment_date", sa.Date(), nullable=True),
        sa.Column("collection_point", sa.String(length=32), nullable=True),
        sa.Column("casework_type", sa.String(length=100), nullable=True),
        sa.Column("office", sa.String(length=100), nullable=True),
        sa.Column("instrument_version", sa.String(length=32), nullable=True),
        sa.Column("ratings", sa.JSON(), nullable=False),
        sa.Column("scores", sa.JSON(), nullable=False),
        sa.Column("device_scores", sa.JSON(), nullable=False),
        sa.Column("survivor_view", sa.JSON(), nullable=False),
        sa.Column("has_notes", sa.Boolean(), nullable=False),
        sa.Column("flags", sa.JSON(), nullable=False),
        sa.Column("created_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["case_id"], ["cases.id"], name=op.f("fk_assessments_case_id_cases")
        ),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_assessments_project_id_projects")
        ),
        sa.ForeignKeyConstraint(
            ["submission_id"],
            ["submissions.id"],
            name=op.f("fk_assessments_submission_id_submissions"),
        ),
        sa.ForeignKeyConstraint(
            ["superseded_by_id"],
            ["assessments.id"],
            name=op.f("fk_assessments_superseded_by_id_assessments"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_assessments")),
        sa.UniqueConstraint("submission_id", name=op.f("uq_assessments_submission_id")),
    )
    with op.batch_alter_table("assessments", schema=None) as batch_op:
        batch_op.create_index(
            "ix_assessments_case_date", ["case_id", "assessment_date"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_assessments_instance_id"), ["instance_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_assessments_project_id"), ["project_id"], unique=False)

    op.create_table(
        "review_items",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("submission_id", sa.Integer(), nullable=True),
        sa.Column("assessment_id", sa.Integer(), nullable=True),
        sa.Column("case_id", sa.Integer(), nullable=True),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("created_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", server.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("resolution", sa.String(length=40), nullable=True),
        sa.Column("resolved_by", sa.String(length=255), nullable=True),
        sa.ForeignKeyConstraint(
            ["assessment_id"],
            ["assessments.id"],
            name=op.f("fk_review_items_assessment_id_assessments"),
        ),
        sa.ForeignKeyConstraint(
            ["case_id"], ["cases.id"], name=op.f("fk_review_items_case_id_cases")
        ),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_review_items_project_id_projects")
        ),
        sa.ForeignKeyConstraint(
            ["submission_id"],
            ["submissions.id"],
            name=op.f("fk_review_items_submission_id_submissions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_review_items")),
        sa.UniqueConstraint(
            "kind", "submission_id", name=op.f("uq_review_items_kind_submission_id")
        ),
    )
    with op.batch_alter_table("review_items", schema=None) as batch_op:
        batch_op.create_index(
            "ix_review_items_project_open", ["project_id", "resolved_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("review_items", schema=None) as batch_op:
        batch_op.drop_index("ix_review_items_project_open")

    op.drop_table("review_items")
    with op.batch_alter_table("assessments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_assessments_project_id"))
        batch_op.drop_index(batch_op.f("ix_assessments_instance_id"))
        batch_op.drop_index("ix_assessments_case_date")

    op.drop_table("assessments")
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.drop_index("ix_cases_project_status")
        batch_op.drop_index("ix_cases_project_next_due")
        batch_op.drop_index(batch_op.f("ix_cases_entity_uuid"))

    op.drop_table("cases")
