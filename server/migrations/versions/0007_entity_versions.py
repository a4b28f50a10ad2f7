"""Entity versions, held offline updates and conflicts: Central's model for the ``cases`` list.

* ``entity_versions`` keeps every version of an entity with the offline branch that made it
  (``branch_id``, ``trunk_version``, ``branch_base_version``), what the device sent and any
  conflict found; existing entities get one row for their current version.
* ``entity_backlog`` holds an offline update whose predecessor in its branch has not arrived.
* ``entities.conflict`` is the entity's conflict state (None, soft, hard).
* The old ``entity_parallel_update`` case flag is dropped: conflicts are now classified and
  shown in their own review queue.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import server.db

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("entities") as batch:
        batch.add_column(sa.Column("conflict", sa.String(length=8), nullable=True))
    op.create_table(
        "entity_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("entity_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("label", sa.Text(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("data_received", sa.JSON(), nullable=True),
        sa.Column("base_version", sa.Integer(), nullable=True),
        sa.Column("trunk_version", sa.Integer(), nullable=True),
        sa.Column("branch_id", sa.String(length=36), nullable=True),
        sa.Column("branch_base_version", sa.Integer(), nullable=True),
        sa.Column("conflict", sa.String(length=8), nullable=True),
        sa.Column("conflicting_properties", sa.JSON(), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("submission_id", sa.Integer(), nullable=True),
        sa.Column("created_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["entity_id"], ["entities.id"], name=op.f("fk_entity_versions_entity_id_entities")
        ),
        sa.ForeignKeyConstraint(
            ["submission_id"],
            ["submissions.id"],
            name=op.f("fk_entity_versions_submission_id_submissions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_entity_versions")),
        sa.UniqueConstraint(
            "entity_id", "version", name=op.f("uq_entity_versions_entity_id_version")
        ),
    )
    with op.batch_alter_table("entity_versions") as batch:
        batch.create_index(
            "ix_entity_versions_branch", ["entity_id", "branch_id", "branch_base_version"]
        )
        batch.create_index(batch.f("ix_entity_versions_submission_id"), ["submission_id"])
    op.create_table(
        "entity_backlog",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("submission_id", sa.Integer(), nullable=False),
        sa.Column("entity_uuid", sa.String(length=36), nullable=False),
        sa.Column("branch_id", sa.String(length=36), nullable=True),
        sa.Column("branch_base_version", sa.Integer(), nullable=False),
        sa.Column("trunk_version", sa.Integer(), nullable=True),
        sa.Column("create", sa.Boolean(), nullable=False),
        sa.Column("label", sa.Text(), nullable=True),
        sa.Column("data_received", sa.JSON(), nullable=False),
        sa.Column("held_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_entity_backlog_project_id_projects")
        ),
        sa.ForeignKeyConstraint(
            ["submission_id"],
            ["submissions.id"],
            name=op.f("fk_entity_backlog_submission_id_submissions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_entity_backlog")),
        sa.UniqueConstraint("submission_id", name=op.f("uq_entity_backlog_submission_id")),
    )
    with op.batch_alter_table("entity_backlog") as batch:
        batch.create_index("ix_entity_backlog_branch", ["project_id", "entity_uuid", "branch_id"])

    # every existing entity gets its current version on record (older ones were not kept)
    entities = sa.table(
        "entities",
        sa.column("id"),
        sa.column("version"),
        sa.column("label"),
        sa.column("properties", sa.JSON()),
        sa.column("updated_at"),
    )
    versions = sa.table(
        "entity_versions",
        sa.column("entity_id"),
        sa.column("version"),
        sa.column("label"),
        sa.column("data", sa.JSON()),
        sa.column("source"),
        sa.column("created_at"),
    )
    op.execute(
        versions.insert().from_select(
            ["entity_id", "version", "label", "data", "source", "created_at"],
            sa.select(
                entities.c.id,
                entities.c.version,
                entities.c.label,
                entities.c.properties,
                sa.literal("server"),
                entities.c.updated_at,
            ),
        )
    )

    cases = sa.table("cases", sa.column("id"), sa.column("flags", sa.JSON()))
    bind = op.get_bind()
    rows = bind.execute(
        sa.select(cases.c.id, cases.c.flags).where(
            sa.cast(cases.c.flags, sa.Text).like("%entity_parallel_update%")
        )
    ).all()
    for case_id, flags in rows:
        kept = [f for f in flags or [] if f != "entity_parallel_update"]
        bind.execute(cases.update().where(cases.c.id == case_id).values(flags=kept))


def downgrade() -> None:
    op.drop_table("entity_backlog")
    op.drop_table("entity_versions")
    with op.batch_alter_table("entities") as batch:
        batch.drop_column("conflict")
