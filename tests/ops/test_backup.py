"""``kintsugi backup`` then ``kintsugi restore`` into an empty instance loses nothing."""

from __future__ import annotations

import datetime as dt
import tarfile
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData, select

from server.blobs import make_blob_store, read_all
from server.models import Submission
from server.models_cases import Case
from server.services.projects import create_project
from tests.conftest import CliRunner, _create_postgres_database
from tests.server.conftest import publish


def _dump(engine: Any) -> dict[str, list[tuple]]:
    meta = MetaData()
    meta.reflect(engine)
    with engine.connect() as conn:
        return {
            t.name: sorted(tuple(map(repr, r)) for r in conn.execute(select(t)))
            for t in meta.sorted_tables
            if t.name != "alembic_version"
        }


@pytest.fixture
def target(backend, tmp_path, app_config):
    """An empty (unmigrated) second instance on the same backend: its CLI env and config."""
    drop = None
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'restored.sqlite3'}"
    else:
        url, drop = _create_postgres_database()
    env = {
        "KINTSUGI_DATABASE_URL": url,
        "KINTSUGI_VAR_DIR": str(tmp_path / "var2"),
        "KINTSUGI_DATA_DIR": str(tmp_path / "data2"),
        "KINTSUGI_SECRET_KEY": app_config["SECRET_KEY"],
        "KINTSUGI_ENV": "testing",
    }
    yield env
    if drop:
        drop()


def test_backup_restore__populated_instance__every_row_and_blob_back(
    app, runner, field, vectors, target, tmp_path, make_app
):
    """Should restore every submission, key, project, form and blob byte-for-byte."""
    for form in {v.expected["formId"]: v.form_xml for v in vectors}.values():
        publish(app, field.project_id, form)
    for v in vectors:
        assert field.collect.post_raw(v.body, v.content_type).status_code == 201
    with app.extensions["kintsugi.db"].sessionmaker() as s:
        enc = create_project(s, "Encrypted office", passphrase=b"fictional demo passphrase")
        s.flush()
        # a case with dates, JSON scores and flags (types the archive must carry exactly)
        s.add(
            Case(
                project_id=enc.id,
                case_code="BK-0001",
                intake_date=dt.date(2026, 1, 10),
                next_due=dt.date(2026, 7, 10),
                latest_scores={"SAF": 2.5, "LEG": None},
                flags=["overdue"],
            )
        )
        s.commit()
    before = _dump(app.extensions["kintsugi.db"].engine)
    assert before["submissions"] and before["project_keys"] and before["cases"]

    archive = tmp_path / "backups" / "kintsugi.tar.gz"
    result = runner.invoke("backup", "--out", str(archive))
    assert result.exit_code == 0, result.output
    assert archive.stat().st_mode & 0o077 == 0  # survivor data: owner-only
    assert "backup written" in result.output

    restored = CliRunner(target).invoke("restore", str(archive))
    assert restored.exit_code == 0, restored.output
    assert "restored" in restored.output, restored.output

    app2 = make_app(
        DATABASE_URL=target["KINTSUGI_DATABASE_URL"], DATA_DIR=target["KINTSUGI_DATA_DIR"]
    )
    engine2 = app2.extensions["kintsugi.db"].engine
    assert _dump(engine2) == before
    with (
        app.extensions["kintsugi.db"].sessionmaker() as s1,
        app2.extensions["kintsugi.db"].sessionmaker() as s2,
    ):
        subs = s2.scalars(select(Submission)).all()
        assert len(subs) == len(vectors)
        for sub in subs:
            original = read_all(make_blob_store(app.config, s1), sub.xml_blob_key)
            assert read_all(make_blob_store(app2.config, s2), sub.xml_blob_key) == original
    # the restored instance serves Collect with the same app-user token, and new ids don't clash
    client2 = app2.test_client()
    assert client2.get("/readyz").status_code == 200
    assert (
        client2.get(f"{field.base}/formList", headers={"X-OpenRosa-Version": "1.0"}).status_code
        == 200
    )
    with app2.extensions["kintsugi.db"].sessionmaker() as s:
        create_project(s, "After restore")
        s.commit()
    # restoring twice is refused: the target is no longer empty
    again = CliRunner(target).invoke("restore", str(archive))
    assert again.exit_code != 0 and "not empty" in again.output
    engine2.dispose()


def test_restore__damaged_archive__refused_nothing_written(runner, tmp_path, target, app):
    """Should refuse an archive whose member does not match its checksum, writing nothing."""
    archive = tmp_path / "b.tar.gz"
    assert runner.invoke("backup", "--out", str(archive)).exit_code == 0
    damaged = tmp_path / "damaged.tar.gz"
    with tarfile.open(archive) as src, tarfile.open(damaged, "w:gz") as dst:
        for m in src.getmembers():
            data = src.extractfile(m).read()
            if m.name == "tables/projects.jsonl":
                data += b'{"id": 99}\n'
                m.size = len(data)
            import io

            dst.addfile(m, io.BytesIO(data))
    result = CliRunner(target).invoke("restore", str(damaged))
    assert result.exit_code != 0 and "damaged" in result.output
    assert not Path(target["KINTSUGI_DATA_DIR"]).exists() or not any(
        Path(target["KINTSUGI_DATA_DIR"]).rglob("*")
    )


def test_restore__not_a_backup__clear_message(tmp_path, target):
    """Should say the file is not a backup instead of a traceback."""
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not a tarball")
    result = CliRunner(target).invoke("restore", str(junk))
    assert result.exit_code == 1 and "not a Kintsugi backup" in result.output
