"""Admin key locks that every process honours, and quarantined submissions that can be retried.

* ``projects.key_locked_at``: when an admin last locked the project key (page, API,
  ``kintsugi lock``); cleared by an admin unlock. While set, the reconciliation worker does not
  unlock the key from its passphrase file.
* ``projects.key_lock_generation``: counts admin locks; a process holding a key unlocked at an
  older generation forgets it before its next batch.
* ``review_items``: the unique (kind, submission_id) becomes unique among *open* items only, so
  a retried submission that is quarantined again gets a fresh item next to the resolved one.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import server.db

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # plain ALTER TABLE, also on SQLite: a batch copy of ``projects`` would trip the foreign
    # keys every other table holds on it
    op.add_column(
        "projects", sa.Column("key_locked_at", server.db.UTCDateTime(timezone=True), nullable=True)
    )
    op.add_column(
        "projects",
        sa.Column("key_lock_generation", sa.Integer(), server_default="0", nullable=False),
    )
    with op.batch_alter_table("review_items") as batch:
        batch.drop_constraint("uq_review_items_kind_submission_id", type_="unique")
        batch.create_index(
            "uq_review_items_open_kind_submission",
            ["kind", "submission_id"],
            unique=True,
            sqlite_where=sa.text("resolved_at IS NULL"),
            postgresql_where=sa.text("resolved_at IS NULL"),
        )


def downgrade() -> None:
    # keep the newest item of each (kind, submission) so the old constraint holds again
    op.execute(
        "DELETE FROM review_items WHERE submission_id IS NOT NULL AND id NOT IN "
        "(SELECT MAX(id) FROM review_items WHERE submission_id IS NOT NULL "
        "GROUP BY kind, submission_id)"
    )
    with op.batch_alter_table("review_items") as batch:
        batch.drop_index("uq_review_items_open_kind_submission")
        batch.create_unique_constraint(
            "uq_review_items_kind_submission_id", ["kind", "submission_id"]
        )
    op.drop_column("projects", "key_lock_generation")  # SQLite >= 3.35 drops columns in place
    op.drop_column("projects", "key_locked_at")
