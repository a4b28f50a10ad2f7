"""Digest nonce counts: the highest ``nc`` accepted per nonce, so a replayed request is refused.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import server.db

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "digest_nonces",
        sa.Column("nonce", sa.String(length=128), nullable=False),
        sa.Column("nc", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("nonce", name=op.f("pk_digest_nonces")),
    )
    with op.batch_alter_table("digest_nonces", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_digest_nonces_expires_at"), ["expires_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("digest_nonces", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_digest_nonces_expires_at"))

    op.drop_table("digest_nonces")
