"""Bad uploads get a message a field worker can act on, and nothing half-stored."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from server.models import (
    Form,
    QuarantinedUpload,
    Submission,
    SubmissionAttachment,
    SubmissionStatus,
)
from tests.server.collect import multipart_body, openrosa_message
from tests.server.conftest import publish
from tests.server.forms import instance, xform

BOMB = (
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>'
    b'<data id="household" version="1"><name>&lol2;</name></data>'
)


def _counts(db_session):
    db_session.expire_all()
    return (
        db_session.scalar(select(func.count(Submission.id))),
        db_session.scalar(select(func.count(SubmissionAttachment.id))),
        db_session.scalar(select(func.count(QuarantinedUpload.id))),
    )


@pytest.fixture
def household(app, field):
    """The plaintext 'household' form v1 published to the field project."""
    publish(app, field.project_id, xform())
    return field


def test_plain_submission__with_photo__201_and_photo_stored(household, db_session):
    """Should keep the photo the XML names and answer with an OpenRosaResponse."""
    xml = instance(photo="p1.jpg")
    resp = household.collect.submit(xml, {"p1.jpg": b"\xff\xd8photo"})
    assert resp.status_code == 201
    sub = db_session.scalars(select(Submission)).one()
    assert sub.status == SubmissionStatus.RECEIVED and not sub.encrypted
    assert [a.name for a in sub.attachments] == ["p1.jpg"]
    assert sub.instance_name == "visit"


def test_plain_submission__to_encrypted_form_version__accepted_and_flagged(
    app, field, vectors, db_session
):
    """Should accept plaintext for a keyed form (Collect's fallback), flag it for admins, and
    keep it only encrypted (tests/server/test_encrypt_on_arrival.py checks the ciphertext)."""
    v = next(x for x in vectors if x.name == "gen-01-small-text")
    publish(app, field.project_id, v.form_xml)
    plain = (v.path / "plaintext" / "submission.xml").read_bytes()
    assert field.collect.submit(plain).status_code == 201
    sub = db_session.scalars(select(Submission)).one()
    assert "plaintext_for_encrypted_form" in sub.flags and sub.encrypted


def test_submission__missing_xml_part__400_nothing_stored(household, db_session):
    """Should refuse a multipart body without xml_submission_file."""
    body = (
        b'--b\r\nContent-Disposition: form-data; name="p1.jpg"; filename="p1.jpg"\r\n\r\n'
        b"x\r\n--b--\r\n"
    )
    resp = household.collect.post_raw(body, "multipart/form-data; boundary=b")
    assert resp.status_code == 400
    assert "xml_submission_file" in openrosa_message(resp)
    assert _counts(db_session) == (0, 0, 0)


@pytest.mark.parametrize(
    ("xml", "fragment"),
    [
        (b"<data id='household'><unclosed></data>", ""),
        (BOMB, ""),
        (b"<data><meta><instanceID>uuid:1</instanceID></meta></data>", ""),
    ],
    ids=["malformed", "xml-bomb", "no-form-id"],
)
def test_submission__unusable_xml__400_and_quarantined(household, db_session, xml, fragment):
    """Should answer 400 with a message and keep the raw bytes in quarantine, no submission."""
    resp = household.collect.submit(xml)
    assert resp.status_code == 400
    assert fragment in openrosa_message(resp)
    assert openrosa_message(resp)
    assert _counts(db_session) == (0, 0, 1)


def test_submission__unknown_form__404_and_quarantined(household, db_session):
    """Should tell the worker the form is not on the server."""
    resp = household.collect.submit(instance(form_id="nope"))
    assert resp.status_code == 404
    assert "'nope' is not on this server" in openrosa_message(resp)
    assert _counts(db_session) == (0, 0, 1)


def test_submission__unknown_version__404_and_quarantined(household, db_session):
    """Should name the missing version."""
    resp = household.collect.submit(instance(version="99"))
    assert resp.status_code == 404
    assert "Version '99'" in openrosa_message(resp)
    assert _counts(db_session) == (0, 0, 1)


def test_submission__older_published_version__201(app, household, db_session):
    """Should accept submissions to every published version, not only the newest."""
    publish(app, household.project_id, xform(version="2"))
    assert household.collect.submit(instance(version="1")).status_code == 201
    assert household.collect.submit(instance(version="2")).status_code == 201


def test_submission__closed_form__409_nothing_stored(household, db_session):
    """Should refuse (the device keeps the data) and say the form is closed."""
    form = db_session.scalars(select(Form)).one()
    form.state = "closed"
    db_session.commit()
    resp = household.collect.submit(instance())
    assert resp.status_code == 409
    assert "closed" in openrosa_message(resp)
    assert _counts(db_session) == (0, 0, 0)


def test_submission__oversized_body__413(app, household, db_session):
    """Should refuse a body over the advertised limit with 413 and a message."""
    app.config["MAX_CONTENT_LENGTH"] = 50_000
    resp = household.collect.submit(instance(photo="big.jpg"), {"big.jpg": b"x" * 60_000})
    assert resp.status_code == 413
    assert openrosa_message(resp)
    assert _counts(db_session) == (0, 0, 0)


def test_submission__too_many_parts__400(app, household, db_session):
    """Should refuse more files than Collect ever sends in one POST."""
    app.config["MAX_SUBMISSION_PARTS"] = 3
    files = {f"f{i}.jpg": b"x" for i in range(5)}
    resp = household.collect.submit(instance(), files)
    assert resp.status_code == 400
    assert "Too many files" in openrosa_message(resp)
    assert _counts(db_session) == (0, 0, 0)


@pytest.mark.parametrize("name", ["../evil.jpg", "a/b.jpg", "..", "c\\\\d.jpg"])
def test_submission__attachment_name_with_path__400(household, db_session, name):
    """Should refuse part names that could address another file."""
    resp = household.collect.submit(instance(photo=name), {name: b"x"})
    assert resp.status_code == 400
    assert "file name" in openrosa_message(resp)
    assert _counts(db_session) == (0, 0, 0)


def test_submission__wrong_content_type__400(household, db_session):
    """Should refuse a body that is not multipart/form-data."""
    resp = household.collect.post_raw(instance(), "text/xml")
    assert resp.status_code == 400
    assert "multipart" in openrosa_message(resp)
    assert _counts(db_session) == (0, 0, 0)


def test_submission__never_200_never_redirect(household):
    """Should only ever answer 201 on success (Collect treats 200 as a proxy page)."""
    xml = instance()
    codes = {household.collect.submit(xml).status_code for _ in range(3)}
    assert codes == {201}


def test_submission__two_identical_posts_at_once__one_row(app, household, db_session):
    """Should store one row when two identical POSTs race (unique index + retry as merge)."""
    import threading

    xml = instance(photo="p.jpg")
    body, ctype = multipart_body(xml, files={"p.jpg": b"photo"})
    results = []
    barrier = threading.Barrier(4)

    def post():
        collect = type(household.collect)(app.test_client(), household.base)
        barrier.wait()
        results.append(collect.post_raw(body, ctype).status_code)

    threads = [threading.Thread(target=post) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [201] * 4
    assert _counts(db_session)[:2] == (1, 1)


def test_submission__closing_form__still_accepted(household, db_session):
    """Should keep accepting submissions to a closing form (hidden from formList only)."""
    form = db_session.scalars(select(Form)).one()
    form.state = "closing"
    db_session.commit()
    assert household.collect.submit(instance()).status_code == 201


def test_submission__edit_with_deprecated_id__new_row_linked(household, db_session):
    """Should store an edit as its own instance carrying deprecatedID."""
    original = "uuid:11111111-1111-4111-8111-111111111111"
    assert household.collect.submit(instance(instance_id=original)).status_code == 201
    edit = instance(instance_id="uuid:22222222-2222-4222-8222-222222222222", deprecated_id=original)
    assert household.collect.submit(edit).status_code == 201
    rows = {s.instance_id: s.deprecated_id for s in db_session.scalars(select(Submission))}
    assert rows == {original: None, "uuid:22222222-2222-4222-8222-222222222222": original}


def test_submission__app_user_scoped_to_other_form__403(app, household, db_session):
    """Should refuse a form outside the app user's scope, storing nothing."""
    from server.models import AppUser

    user = db_session.get(AppUser, household.app_user_id)
    user.form_scope = ["another_form"]
    db_session.commit()
    resp = household.collect.submit(instance())
    assert resp.status_code == 403
    assert _counts(db_session) == (0, 0, 0)
