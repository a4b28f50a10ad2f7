"""The alembic migrations build exactly the schema the models describe, on both backends."""

from __future__ import annotations

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
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
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


@pytest.mark.postgres
def test_migrations__postgres_blobs__stored_external(app, backend):
    """Should keep blob bytes uncompressed out of line on PostgreSQL (no wasted compression)."""
    from sqlalchemy import text

    if backend != "postgres":
        pytest.skip("storage modes exist only on PostgreSQL")
    engine = app.extensions["kintsugi.db"].engine
    with engine.connect() as conn:
        storage = conn.execute(
            text(
                "SELECT attstorage FROM pg_attribute WHERE attrelid = 'blobs'::regclass "
                "AND attname = 'data'"
            )
        ).scalar()
    assert storage == "e"
