"""Project memberships: managers and viewers get access per project (admins stay site-wide).

Until now a manager or viewer saw every project. So that nobody loses access at upgrade, every
existing manager/viewer is made a member of every existing project with their current role;
admins then narrow that down (``kintsugi users revoke``, the users page or the API). Projects
and users created from now on start with no memberships.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import server.db

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "project_memberships",
        sa.Column("web_user_id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("created_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_project_memberships_project_id_projects")
        ),
        sa.ForeignKeyConstraint(
            ["web_user_id"],
            ["web_users.id"],
            name=op.f("fk_project_memberships_web_user_id_web_users"),
        ),
        sa.PrimaryKeyConstraint("web_user_id", "project_id", name=op.f("pk_project_memberships")),
    )
    with op.batch_alter_table("project_memberships", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_project_memberships_project_id"), ["project_id"], unique=False
        )

    # keep what every existing manager/viewer could see (see the module docstring)
    users = sa.table("web_users", sa.column("id"), sa.column("role"))
    projects = sa.table("projects", sa.column("id"))
    memberships = sa.table(
        "project_memberships",
        sa.column("web_user_id"),
        sa.column("project_id"),
        sa.column("role"),
        sa.column("created_at", server.db.UTCDateTime(timezone=True)),
    )
    now = sa.literal(server.db.utcnow(), server.db.UTCDateTime(timezone=True))
    op.execute(
        memberships.insert().from_select(
            ["web_user_id", "project_id", "role", "created_at"],
            sa.select(users.c.id, projects.c.id, users.c.role, now)
            .select_from(users.join(projects, sa.true()))
            .where(users.c.role.in_(["manager", "viewer"])),
        )
    )


def downgrade() -> None:
    with op.batch_alter_table("project_memberships", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_project_memberships_project_id"))

    op.drop_table("project_memberships")
