# ruff: noqa: F811 (the shared ``target`` fixture is imported from test_backup)
"""A backup taken while a writer replaces blobs (``encrypt-stored``, a completed split upload)
still restores every blob its rows name, and a blob missing from the store is reported."""

from __future__ import annotations

import tarfile
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import select

from server import backup
from server.blobs import LocalBlobStore, read_all
from server.models import Submission
from tests.conftest import CliRunner
from tests.ops.test_backup import _dump, target  # noqa: F401 (fixture)
from tests.server.conftest import publish


@pytest.fixture
def app(make_app):
    """Blob files on both backends: only files can vanish under a running backup."""
    return make_app(BLOB_BACKEND="local")


@pytest.fixture
def runner(runner):
    runner.env = {**runner.env, "KINTSUGI_BLOB_BACKEND": "local"}
    return runner


def _received(app, field, vectors) -> int:
    v = vectors[0]
    publish(app, field.project_id, v.form_xml)
    assert field.collect.post_raw(v.body, v.content_type).status_code == 201
    with app.extensions["kintsugi.db"].sessionmaker() as s:
        return s.scalars(select(Submission.id)).one()


def _replace_xml_blob(app, sub_id: int) -> tuple[str, bytes]:
    """What a writer does after the snapshot: new blob, row repointed (committed), old file gone."""
    store = LocalBlobStore(app.config["DATA_DIR"])
    with app.extensions["kintsugi.db"].sessionmaker() as s:
        sub = s.get(Submission, sub_id)
        old = sub.xml_blob_key
        body = read_all(store, old) + b"<!-- rewritten -->"
        new = old + ".rewritten"
        store.put(new, body)
        sub.xml_blob_key = new
        s.commit()
    store.delete(old)
    return new, body


def test_backup__blob_replaced_after_snapshot__archive_restores_every_named_blob(
    app, runner, field, vectors, target, tmp_path, monkeypatch
):
    """Should take the backup again when a blob its snapshot names was replaced meanwhile."""
    sub_id = _received(app, field, vectors)
    taken = backup._snapshot
    calls = []

    @contextmanager
    def snapshot_then_writer(engine):
        with taken(engine) as conn:
            yield conn
        calls.append(1)
        if len(calls) == 1:  # a commit lands between the first snapshot and the file copy
            _replace_xml_blob(app, sub_id)

    monkeypatch.setattr(backup, "_snapshot", snapshot_then_writer)
    archive = tmp_path / "k.tar.gz"
    result = runner.invoke("backup", "--out", str(archive))
    assert result.exit_code == 0, result.output
    assert len(calls) == 2  # the first archive named a file that was gone: taken again

    restored = CliRunner({**target, "KINTSUGI_BLOB_BACKEND": "local"}).invoke(
        "restore", str(archive)
    )
    assert restored.exit_code == 0, restored.output
    from server.db import make_engine

    engine2 = make_engine(target["KINTSUGI_DATABASE_URL"])
    try:
        assert (
            _dump(engine2)["submissions"]
            == _dump(app.extensions["kintsugi.db"].engine)["submissions"]
        )
        with engine2.connect() as conn:
            key = conn.scalars(select(Submission.xml_blob_key)).one()
    finally:
        engine2.dispose()
    assert key.endswith(".rewritten")
    source = read_all(LocalBlobStore(app.config["DATA_DIR"]), key)
    assert read_all(LocalBlobStore(target["KINTSUGI_DATA_DIR"]), key) == source


def test_backup__blob_missing_from_store__archive_kept_and_admin_told(
    app, runner, field, vectors, tmp_path
):
    """Should write what there is, name the missing file and exit non-zero (cron sees it)."""
    sub_id = _received(app, field, vectors)
    with app.extensions["kintsugi.db"].sessionmaker() as s:
        key = s.get(Submission, sub_id).xml_blob_key
    (Path(app.config["DATA_DIR"]) / key).unlink()

    archive = tmp_path / "k.tar.gz"
    result = runner.invoke("backup", "--out", str(archive))
    assert result.exit_code == 1
    assert "1 blob files named by the database are missing" in result.output
    assert key in result.output
    with tarfile.open(archive) as tar:  # everything else is in the archive
        names = tar.getnames()
    assert "tables/submissions.jsonl" in names and "manifest.json" in names
    assert f"blobs/{key}" not in names
