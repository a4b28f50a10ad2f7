"""The upload hot path: one write statement on PostgreSQL, and what the short lookup cache may
and may not remember (a revoked token or a closed form stops uploads at once in this process,
and within HOT_CACHE_SECONDS when another node made the change)."""

from __future__ import annotations

import pytest
from sqlalchemy import event, func, select, update

from server import hotcache
from server.models import AppUser, Blob, Form, Submission, SubmissionAttachment
from server.services.forms import set_form_state
from server.services.users import revoke_app_user
from tests.server.conftest import publish
from tests.server.forms import instance, xform


@pytest.fixture
def household(app, field):
    publish(app, field.project_id, xform())
    return field


@pytest.fixture
def cache_clock(monkeypatch):
    """The hot cache's clock, moved only by the test: a loaded CI machine can take longer
    than HOT_CACHE_SECONDS between two uploads, which would expire the entry mid-test."""
    clock = [1000.0]
    monkeypatch.setattr(hotcache.time, "monotonic", lambda: clock[0])
    return clock


def _statements(app):
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        seen.append(" ".join(statement.split()))

    event.listen(app.extensions["kintsugi.db"].engine, "before_cursor_execute", record)
    return seen


def test_upload__new_submission__written_in_one_statement_on_postgres(
    app, household, db_session, backend, cache_clock
):
    """Should write the row, its blobs and attachment rows with one statement on PostgreSQL
    (atomic on its own, so also the commit) and keep everything it wrote."""
    household.collect.submit(instance(photo="warm.jpg"), {"warm.jpg": b"\xff\xd8warm"})
    seen = _statements(app)
    resp = household.collect.submit(instance(photo="p.jpg"), {"p.jpg": b"\xff\xd8photo"})
    assert resp.status_code == 201
    writes = [s for s in seen if not s.startswith("SELECT")]
    if backend == "postgres":
        assert len(writes) == 1 and writes[0].startswith("WITH new_submission AS (INSERT")
        assert "blob_insert AS (INSERT INTO blobs" in writes[0]
        assert not [s for s in seen if s.startswith("SELECT")]  # token and form: cached
    else:  # SQLite: one transaction under the writer lock, blobs as fsynced files
        assert [w.split(" (")[0] for w in writes] == [
            "INSERT INTO submissions",
            "INSERT INTO submission_attachments",
        ]
    sub = db_session.scalar(select(Submission).order_by(Submission.id.desc()))
    att = db_session.scalar(
        select(SubmissionAttachment).where(SubmissionAttachment.submission_id == sub.id)
    )
    assert (att.name, att.present, att.size) == ("p.jpg", True, 7)
    if backend == "postgres":
        keys = set(db_session.scalars(select(Blob.key)))
        assert {sub.xml_blob_key, att.blob_key} <= keys


def test_upload__same_submission_again__merged_not_duplicated(household, db_session):
    """Should, after the one-statement insert found the row, merge in a transaction (201)."""
    xml = instance(photo="p.jpg")
    assert household.collect.submit(xml, {}).status_code == 201
    assert household.collect.submit(xml, {"p.jpg": b"\xff\xd8late"}).status_code == 201
    assert db_session.scalar(select(func.count()).select_from(Submission)) == 1
    att = db_session.scalar(select(SubmissionAttachment))
    assert att.present and att.size == 6


def test_upload__token_revoked_here__403_at_once(app, household):
    """Should refuse the very next upload after an admin revokes the token on this node."""
    assert household.collect.submit(instance(), {}).status_code == 201  # now cached
    with app.extensions["kintsugi.db"].sessionmaker() as s:
        revoke_app_user(s, household.app_user_id, actor="test")
        s.commit()
    assert household.collect.submit(instance(), {}).status_code == 403


def test_upload__form_closed_here__409_at_once(app, household):
    """Should refuse the very next upload after the form is closed on this node."""
    assert household.collect.submit(instance(), {}).status_code == 201
    with app.extensions["kintsugi.db"].sessionmaker() as s:
        set_form_state(s, s.scalar(select(Form)), "closed", actor="test")
        s.commit()
    assert household.collect.submit(instance(), {}).status_code == 409


def test_upload__token_revoked_by_another_node__refused_within_the_ttl(app, household, cache_clock):
    """Should honour a revocation made elsewhere (no local invalidation) once the cache entry
    is HOT_CACHE_SECONDS old - and not remember longer than that."""
    clock = cache_clock
    assert household.collect.submit(instance(), {}).status_code == 201
    with app.extensions["kintsugi.db"].sessionmaker() as s:  # as another node would: raw SQL
        s.execute(update(AppUser).values(revoked_at=func.now()))
        s.commit()
    clock[0] += app.config["HOT_CACHE_SECONDS"] / 2
    assert household.collect.submit(instance(), {}).status_code == 201  # the documented window
    clock[0] += app.config["HOT_CACHE_SECONDS"]
    assert household.collect.submit(instance(), {}).status_code == 403


def test_upload__cache_off__every_upload_looks_up(make_app, field, monkeypatch):
    """Should look the token up on every upload when HOT_CACHE_SECONDS is 0."""
    app = make_app(HOT_CACHE_SECONDS=0)
    publish(app, field.project_id, xform())
    from tests.server.collect import CollectActions

    collect = CollectActions(app.test_client(), field.base)
    seen = _statements(app)
    for _ in range(2):
        assert collect.submit(instance(), {}).status_code == 201
    assert sum("FROM app_users" in s for s in seen) == 2
