"""Store blob bytes uncompressed out of line on PostgreSQL (STORAGE EXTERNAL).

Blobs are encrypted parts and already-compressed media: trying to compress them is wasted CPU
on every upload (about 40% of the time of a 1 MB insert here). No-op on SQLite.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE blobs ALTER COLUMN data SET STORAGE EXTERNAL")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE blobs ALTER COLUMN data SET STORAGE EXTENDED")
