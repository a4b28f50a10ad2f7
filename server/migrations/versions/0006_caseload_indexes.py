"""Caseload indexes: the caseload page and case-code search stay fast at 100,000 cases.

* ``ix_cases_project_due_code`` (project, next_due, case_code) serves the caseload's order
  (``next_due NULLS LAST, case_code``) straight from the index and replaces
  ``ix_cases_project_next_due``, which it contains.
* On PostgreSQL, a trigram index on ``case_code`` serves the substring search (``ILIKE
  '%...%'``). It needs the ``pg_trgm`` extension (trusted since PostgreSQL 13: the database
  owner may create it). Where it cannot be created, the migration says so and goes on:
  search stays correct, only slower.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""

from __future__ import annotations

import logging

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

log = logging.getLogger("alembic.runtime.migration")


def upgrade() -> None:
    with op.batch_alter_table("cases") as batch:
        batch.drop_index("ix_cases_project_next_due")
        batch.create_index("ix_cases_project_due_code", ["project_id", "next_due", "case_code"])
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    try:
        with bind.begin_nested():
            op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    except Exception as err:
        log.warning(
            "pg_trgm is not available (%s): case-code search will scan; ask the database "
            "administrator to run CREATE EXTENSION pg_trgm, then re-create ix_cases_case_code_trgm",
            type(err).__name__,
        )
        return
    op.create_index(
        "ix_cases_case_code_trgm",
        "cases",
        ["case_code"],
        postgresql_using="gin",
        postgresql_ops={"case_code": "gin_trgm_ops"},
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_cases_case_code_trgm")
    with op.batch_alter_table("cases") as batch:
        batch.drop_index("ix_cases_project_due_code")
        batch.create_index("ix_cases_project_next_due", ["project_id", "next_due"])
