"""Index assessments by the instanceID they replace, so an original that syncs after its edit
finds the edit without a scan.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("assessments") as batch:
        batch.create_index("ix_assessments_project_deprecated", ["project_id", "deprecated_id"])


def downgrade() -> None:
    with op.batch_alter_table("assessments") as batch:
        batch.drop_index("ix_assessments_project_deprecated")
