# ruff: noqa: F811 (the shared ``target`` fixture is imported from test_backup)
"""Backup and restore cases an admin hits: forward links between rows, blob backends that
do not match, a half-copied archive, an output path that cannot be written."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from server.models import Submission
from server.models_cases import Assessment
from tests.conftest import CliRunner
from tests.ops.test_backup import _dump, target  # noqa: F401 (fixture)
from tests.server.conftest import publish


def _two_submissions(app, field, vectors):
    for form in {v.expected["formId"]: v.form_xml for v in vectors}.values():
        publish(app, field.project_id, form)
    for v in vectors[:2]:
        assert field.collect.post_raw(v.body, v.content_type).status_code == 201
    with app.extensions["kintsugi.db"].sessionmaker() as s:
        return [sub.id for sub in s.scalars(select(Submission).order_by(Submission.id))][:2]


def test_restore__superseded_assessment__restores(
    app,
    runner,
    field,
    vectors,
    target,
    tmp_path,
):
    """Should restore an assessment superseded by a later one (conflict resolved 'keep').

    ``assessments.superseded_by_id`` points at a *higher* id (cases.py 'keep', reconcile.py);
    restore inserts rows in primary-key order, so the older row names a row not inserted yet.
    """
    sub_ids = _two_submissions(app, field, vectors)
    with app.extensions["kintsugi.db"].sessionmaker() as s:
        old = Assessment(project_id=field.project_id, submission_id=sub_ids[0], instance_id="a")
        new = Assessment(project_id=field.project_id, submission_id=sub_ids[1], instance_id="b")
        s.add_all([old, new])
        s.flush()
        old.state, old.superseded_by_id = "superseded", new.id
        s.commit()
    before = _dump(app.extensions["kintsugi.db"].engine)
    archive = tmp_path / "k.tar.gz"
    assert runner.invoke("backup", "--out", str(archive)).exit_code == 0
    restored = CliRunner(target).invoke("restore", str(archive))
    assert restored.exit_code == 0, restored.output
    from server.db import make_engine

    engine2 = make_engine(target["KINTSUGI_DATABASE_URL"])
    try:
        assert _dump(engine2)["assessments"] == before["assessments"]
    finally:
        engine2.dispose()


def test_restore__truncated_archive__clear_refusal(runner, app, tmp_path, target):
    """Should refuse a partially copied archive with a clear message, not a traceback."""
    archive = tmp_path / "k.tar.gz"
    assert runner.invoke("backup", "--out", str(archive)).exit_code == 0
    partial = tmp_path / "partial.tar.gz"
    data = archive.read_bytes()
    partial.write_bytes(data[: len(data) // 2])
    result = CliRunner(target).invoke("restore", str(partial))
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert "backup" in result.output.lower(), result.output


@pytest.mark.postgres_only
def test_restore__postgres_blob_archive_into_local_backend__refused(
    app,
    runner,
    field,
    vectors,
    target,
    tmp_path,
    make_app,
    backend,
):
    """Should refuse an archive whose blobs live in the blobs table when the target uses
    KINTSUGI_BLOB_BACKEND=local: it would restore, and every submission would be unreadable."""
    assert backend == "postgres" and app.config["BLOB_BACKEND"] == "postgres"
    _two_submissions(app, field, vectors)
    archive = tmp_path / "k.tar.gz"
    assert runner.invoke("backup", "--out", str(archive)).exit_code == 0
    env = {**target, "KINTSUGI_BLOB_BACKEND": "local"}
    restored = CliRunner(env).invoke("restore", str(archive))
    assert restored.exit_code == 1, restored.output
    assert "restore with KINTSUGI_BLOB_BACKEND=postgres" in restored.output


def test_restore__target_with_data_at_an_older_schema__refused_and_left_unmigrated(
    runner, tmp_path, target
):
    """Should refuse a target that holds data before migrating it: a restore pointed at the
    wrong database must leave it exactly as it was, schema included."""
    from sqlalchemy import create_engine, text

    from server import db

    archive = tmp_path / "k.tar.gz"
    assert runner.invoke("backup", "--out", str(archive)).exit_code == 0
    url = target["KINTSUGI_DATABASE_URL"]
    db.upgrade(url, "0008")  # another instance, one release behind, with a project
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO projects (name, encrypted, created_at) "
                "VALUES ('Other', false, '2026-01-01')"
            )
        )
    engine.dispose()
    refused = CliRunner(target).invoke("restore", str(archive))
    assert refused.exit_code == 1 and "not empty" in refused.output, refused.output
    assert db.current_revision(url) == "0008"
