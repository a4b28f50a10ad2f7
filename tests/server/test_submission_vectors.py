"""Replay Collect's real encrypted uploads (shared/vectors) over HTTP."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import func, select

from server.blobs import make_blob_store, read_all
from server.models import QuarantinedUpload, Submission, SubmissionStatus
from tests.server.collect import openrosa_message
from tests.server.conftest import publish


def _publish_vectors(app, field, vectors):
    seen = set()
    for v in vectors:
        key = (v.expected["formId"], v.expected.get("version"))
        if key not in seen:
            seen.add(key)
            publish(app, field.project_id, v.form_xml)


def test_vectors__head_then_post__201_and_stored_as_received(app, field, vectors, db_session):
    """Should answer HEAD 204 and POST 201, and keep manifest + .enc parts byte for byte."""
    _publish_vectors(app, field, vectors)
    for v in vectors:
        head = field.collect.head_submission()
        assert head.status_code == 204, v.name
        assert head.headers["X-OpenRosa-Version"] == "1.0"
        assert int(head.headers["X-OpenRosa-Accept-Content-Length"]) > 1_000_000
        resp = field.collect.post_raw(v.body, v.content_type)
        assert resp.status_code == 201, (v.name, resp.data)
        assert resp.headers["Content-Type"] == "text/xml; charset=utf-8"
        assert openrosa_message(resp)
    store = make_blob_store(app.config, db_session)
    for v in vectors:
        sub = db_session.scalar(
            select(Submission).where(Submission.instance_id == v.expected["instanceID"])
        )
        assert sub is not None, v.name
        assert sub.encrypted and sub.complete
        assert sub.status == SubmissionStatus.PENDING_DECRYPTION
        assert sub.device_id == "collect:Xa7bC9dE1fG3hJ5k"
        assert read_all(store, sub.xml_blob_key) == v.manifest_xml
        names = [a.name for a in sorted(sub.attachments, key=lambda a: a.position)]
        assert names == [*v.expected["manifest"]["media_in_manifest_order"], "submission.xml.enc"]
        for att in sub.attachments:
            data = read_all(store, att.blob_key)
            assert data == v.enc_files[att.name], (v.name, att.name)
            assert att.sha256 == hashlib.sha256(data).hexdigest()


def test_vectors__duplicate_post__201_and_one_row(app, field, vectors, db_session):
    """Should treat an identical resend as success without a second row."""
    v = next(x for x in vectors if x.name == "gen-03-media-2")
    publish(app, field.project_id, v.form_xml)
    assert field.collect.post_raw(v.body, v.content_type).status_code == 201
    assert field.collect.post_raw(v.body, v.content_type).status_code == 201
    assert db_session.scalar(select(func.count(Submission.id))) == 1


def test_vectors__conflicting_duplicate__409_message_and_quarantined(
    app, field, vectors, db_session
):
    """Should refuse same instanceID with other XML (409), keeping the raw XML for admins."""
    v = next(x for x in vectors if x.name == "gen-01-small-text")
    publish(app, field.project_id, v.form_xml)
    assert field.collect.submit(v.manifest_xml, v.enc_files).status_code == 201
    changed = v.manifest_xml.replace(b"<base64EncryptedKey>", b"<base64EncryptedKey>AA")
    resp = field.collect.submit(changed, v.enc_files)
    assert resp.status_code == 409
    assert "different content" in openrosa_message(resp)
    assert db_session.scalar(select(func.count(Submission.id))) == 1
    q = db_session.scalars(select(QuarantinedUpload)).one()
    assert read_all(make_blob_store(app.config, db_session), q.blob_key) == changed


def test_vectors__split_upload__complete_after_last_part(app, field, vectors, db_session):
    """Should merge *isIncomplete* POSTs and only queue decryption when every part arrived."""
    v = next(x for x in vectors if x.name == "gen-03-media-2")
    publish(app, field.project_id, v.form_xml)
    media = v.expected["manifest"]["media_in_manifest_order"]
    first = {media[0]: v.enc_files[media[0]]}
    rest = {n: v.enc_files[n] for n in v.enc_files if n != media[0]}
    r1 = field.collect.submit(v.manifest_xml, first, incomplete=True)
    assert r1.status_code == 201
    sub = db_session.scalars(select(Submission)).one()
    assert not sub.complete and sub.status == SubmissionStatus.RECEIVED
    r2 = field.collect.submit(v.manifest_xml, rest)
    assert r2.status_code == 201
    db_session.expire_all()
    sub = db_session.scalars(select(Submission)).one()
    assert sub.complete and sub.status == SubmissionStatus.PENDING_DECRYPTION
    assert all(a.present for a in sub.attachments)


def test_vectors__plaintext_leftovers__discarded_and_flagged(app, field, vectors, db_session):
    """Should drop parts the manifest does not name (plaintext Collect failed to delete)."""
    v = next(x for x in vectors if x.name == "gen-03-media-2")
    publish(app, field.project_id, v.form_xml)
    files = {**v.enc_files, "1736935200123.jpg": b"\xff\xd8plaintext photo"}
    assert field.collect.submit(v.manifest_xml, files).status_code == 201
    sub = db_session.scalars(select(Submission)).one()
    assert "1736935200123.jpg" not in {a.name for a in sub.attachments}
    assert "discarded_unexpected_parts" in sub.flags


@pytest.mark.parametrize("restart", [True])
def test_vectors__restart_between_upload_and_check__nothing_lost(make_app, field, vectors, restart):
    """Should find every submission and byte after a fresh app (a restarted server)."""
    first = make_app()
    _publish_vectors(first, field, vectors)
    collect = type(field.collect)(first.test_client(), field.base)
    for v in vectors:
        assert collect.post_raw(v.body, v.content_type).status_code == 201
    second = make_app()
    with second.extensions["kintsugi.db"].sessionmaker() as session:
        store = make_blob_store(second.config, session)
        subs = session.scalars(select(Submission)).all()
        assert len(subs) == len(vectors)
        by_id = {s.instance_id: s for s in subs}
        for v in vectors:
            sub = by_id[v.expected["instanceID"]]
            assert read_all(store, sub.xml_blob_key) == v.manifest_xml
            assert {a.name: read_all(store, a.blob_key) for a in sub.attachments} == v.enc_files


def test_vectors__resend__no_extra_blobs_kept(app, field, vectors, db_session):
    """Should not keep a second copy of anything when an identical upload is resent."""
    from pathlib import Path

    from server.models import Blob

    def blob_count():
        if app.config["BLOB_BACKEND"] == "postgres":
            return db_session.scalar(select(func.count()).select_from(Blob))
        return sum(1 for p in Path(app.config["DATA_DIR"]).rglob("*") if p.is_file())

    v = next(x for x in vectors if x.name == "gen-03-media-2")
    publish(app, field.project_id, v.form_xml)
    assert field.collect.post_raw(v.body, v.content_type).status_code == 201
    before = blob_count()
    assert before == 1 + len(v.enc_files)
    assert field.collect.post_raw(v.body, v.content_type).status_code == 201
    db_session.expire_all()
    assert blob_count() == before
