"""The alembic migrations build exactly the schema the models describe, on both backends."""

from __future__ import annotations

from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from server import db
from server.db import Base


def _head() -> str:
    """The newest revision in server/migrations (one head)."""
    from alembic.script import ScriptDirectory

    heads = ScriptDirectory.from_config(db.alembic_config("sqlite://")).get_heads()
    assert len(heads) == 1, heads
    return heads[0]


def test_migrations__upgraded_database__matches_models(app):
    """Should leave no difference between the migrated schema and the ORM models."""
    engine = app.extensions["kintsugi.db"].engine

    def include_object(obj: Any, name: str, type_: str, reflected: bool, compare_to: Any) -> bool:
        # an index of a PostgreSQL-only kind (GIN trigram) exists on PostgreSQL only
        return not (
            type_ == "index"
            and not reflected
            and obj.dialect_kwargs.get("postgresql_using")
            and engine.dialect.name != "postgresql"
        )

    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_object": include_object})
        diff = compare_metadata(context, Base.metadata)
    assert diff == []


def test_migrations__current_revision__is_head(app):
    """Should report the head revision after the fixture migrated the database."""
    assert db.current_revision(app.config["DATABASE_URL"]) == _head()


def test_migrations__downgrade_to_base_and_up_again__sqlite(tmp_path):
    """Should run every migration down and up again (batch mode on SQLite)."""
    from sqlalchemy import inspect

    url = f"sqlite:///{tmp_path / 'm.sqlite3'}"
    db.upgrade(url)
    db.downgrade(url, "base")
    engine = db.make_engine(url)
    try:
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    finally:
        engine.dispose()
    db.upgrade(url)
    assert db.current_revision(url) == _head()


@pytest.mark.postgres_only
def test_migrations__postgres_blobs__stored_external(app, backend):
    """Should keep blob bytes uncompressed out of line on PostgreSQL (no wasted compression)."""
    from sqlalchemy import text

    assert backend == "postgres"  # storage modes exist only there
    engine = app.extensions["kintsugi.db"].engine
    with engine.connect() as conn:
        storage = conn.execute(
            text(
                "SELECT attstorage FROM pg_attribute WHERE attrelid = 'blobs'::regclass "
                "AND attname = 'data'"
            )
        ).scalar()
    assert storage == "e"


@pytest.fixture
def empty_database_url(backend: str, tmp_path) -> Any:
    """A new, empty database on this backend (for migrating step by step)."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'steps.sqlite3'}"
        return
    from tests.conftest import _create_postgres_database

    try:
        url, drop = _create_postgres_database()
    except Exception as err:
        import os

        if os.environ.get("KINTSUGI_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL unreachable ({type(err).__name__})")
        pytest.skip(f"PostgreSQL unreachable ({type(err).__name__})")
    try:
        yield url
    finally:
        drop()


def test_migration_0005__existing_managers_and_viewers__keep_every_project(empty_database_url):
    """Should make each existing manager/viewer a member of each existing project with their
    role (nobody loses access at upgrade) and give admins no rows (they are site-wide)."""
    from sqlalchemy import select, text
    from sqlalchemy.orm import Session

    from server.models import Project, ProjectMembership, WebUser

    url = empty_database_url
    db.upgrade(url, "0004")
    engine = db.make_engine(url)
    try:
        with Session(engine) as s:
            for name in ("root", "mara", "vic"):
                role = {"root": "admin", "mara": "manager", "vic": "viewer"}[name]
                s.add(WebUser(username=name, role=role, password_hash="x"))
            # the table as of 0004 (the model has columns added later)
            s.execute(
                text(
                    "INSERT INTO projects (name, encrypted, created_at) "
                    "VALUES (:name, :no, CURRENT_TIMESTAMP)"
                ),
                [{"name": "North", "no": False}, {"name": "South", "no": False}],
            )
            s.commit()
        db.upgrade(url)
        with Session(engine) as s:
            rows = s.execute(
                select(WebUser.username, Project.name, ProjectMembership.role)
                .join(WebUser, WebUser.id == ProjectMembership.web_user_id)
                .join(Project, Project.id == ProjectMembership.project_id)
                .order_by(WebUser.username, Project.name)
            ).all()
            created = s.scalars(select(ProjectMembership.created_at)).all()
        assert [tuple(r) for r in rows] == [
            ("mara", "North", "manager"),
            ("mara", "South", "manager"),
            ("vic", "North", "viewer"),
            ("vic", "South", "viewer"),
        ]
        assert all(c.tzinfo is not None for c in created)
        db.downgrade(url, "0004")
        assert db.current_revision(url) == "0004"
    finally:
        engine.dispose()
