"""Uploads Collect really sends that a server must not turn into an error it cannot get past.

Collect keeps an instance as "failed" until a POST answers 201/202 and retries it from the start
(openrosa.md §6.2); a 500 is retried for ever, and a 4xx tells the field worker the data did
not arrive. So anything the server has already stored must be answered 201 on a resend, and
values Collect may legitimately send must never break the database write.
"""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import func, select

from server.models import Form, QuarantinedUpload, Submission, SubmissionAttachment
from server.services.forms import set_form_state
from tests.server.collect import openrosa_message
from tests.server.conftest import publish
from tests.server.forms import instance, xform


@pytest.fixture
def household(app, field):
    """The plaintext 'household' form v1 published to the field project."""
    publish(app, field.project_id, xform())
    return field


def _close_form(app) -> None:
    with app.extensions["kintsugi.db"].sessionmaker() as s:
        set_form_state(s, s.scalar(select(Form)), "closed", actor="test")
        s.commit()


def _with_instance_name(xml: bytes, name: str) -> bytes:
    return xml.replace(
        b"<instanceName>visit</instanceName>", f"<instanceName>{name}</instanceName>".encode()
    )


def test_submission__long_instance_name__201_and_name_kept_shortened(household, db_session):
    """Should store a submission whose meta/instanceName (a designer's calculate, e.g. every
    household member's name) is longer than the column, instead of failing the insert (a 500
    on PostgreSQL that Collect retries for ever)."""
    name = "Ama Kofi Mensah, " * 40  # 680 characters
    resp = household.collect.submit(_with_instance_name(instance(), name))
    assert resp.status_code == 201, openrosa_message(resp)
    sub = db_session.scalars(select(Submission)).one()
    assert name.startswith(sub.instance_name) and len(sub.instance_name) == 500


def test_submission__instance_id_longer_than_storable__400_message_and_quarantined(
    household, db_session
):
    """Should refuse (never a 500) an instanceID longer than the server can store, say why,
    and keep the raw XML for admins."""
    long_id = "uuid:" + "-".join(str(uuid.uuid4()) for _ in range(8))  # 300 characters
    resp = household.collect.submit(instance(instance_id=long_id))
    assert resp.status_code == 400
    assert "instance ID" in openrosa_message(resp)
    db_session.expire_all()
    assert db_session.scalar(select(func.count(Submission.id))) == 0
    assert db_session.scalar(select(func.count(QuarantinedUpload.id))) == 1


def test_resend__form_closed_after_the_submission_arrived__201_nothing_changes(
    app, household, db_session
):
    """Should answer 201 to a resend of a submission already received before the form was
    closed (the 201 was lost on the way back): the data is on the server, and a 409 "keep it on
    the device" would leave the instance failed on the phone for ever."""
    xml = instance(photo="p.jpg")
    assert household.collect.submit(xml, {"p.jpg": b"\xff\xd8photo"}).status_code == 201
    _close_form(app)
    resp = household.collect.submit(xml, {"p.jpg": b"\xff\xd8photo"})
    assert resp.status_code == 201, openrosa_message(resp)
    db_session.expire_all()
    assert db_session.scalar(select(func.count(Submission.id))) == 1
    assert db_session.scalar(select(func.count(SubmissionAttachment.id))) == 1
    assert db_session.scalar(select(func.count(QuarantinedUpload.id))) == 0


def test_split_upload__form_closed_between_its_posts__last_post_completes_it(
    app, household, db_session
):
    """Should take the remaining files of a split upload whose first POST arrived while the
    form was open: the submission was received, only its last files are late."""
    xml = instance(photo="p.jpg")
    first = household.collect.submit(xml, {"audit.csv": b"event\n"}, incomplete=True)
    assert first.status_code == 201
    _close_form(app)
    resp = household.collect.submit(xml, {"p.jpg": b"\xff\xd8photo"})
    assert resp.status_code == 201, openrosa_message(resp)
    db_session.expire_all()
    sub = db_session.scalars(select(Submission)).one()
    assert sub.complete
    assert {a.name for a in sub.attachments if a.present} == {"p.jpg"}


def test_submission__new_instance_to_closed_form__still_409(app, household, db_session):
    """Should still refuse a submission the server has never seen once the form is closed,
    and a changed resend of a known one."""
    xml = instance()
    assert household.collect.submit(xml).status_code == 201
    _close_form(app)
    assert household.collect.submit(instance()).status_code == 409
    changed = xml.replace(b"Fictional Person", b"Another Person")
    assert household.collect.submit(changed).status_code == 409
    db_session.expire_all()
    assert db_session.scalar(select(func.count(Submission.id))) == 1


def test_refused_upload__collect_auto_send_retries__quarantined_once(household, db_session):
    """Should keep one copy of an upload it refuses however often Collect retries it: auto-send
    resends every "submission failed" instance on each run, and each copy counted as another
    quarantined upload for admins (and stored the XML again)."""
    xml = instance(version="9", photo="p.jpg")  # a version that was never published
    for files in ({"audit.csv": b"event\n"}, {"p.jpg": b"\xff\xd8"}, {"p.jpg": b"\xff\xd8"}):
        resp = household.collect.submit(xml, files)
        assert resp.status_code == 404
        assert "Version '9'" in openrosa_message(resp)
    db_session.expire_all()
    [row] = db_session.scalars(select(QuarantinedUpload)).all()
    assert row.part_names == ["audit.csv", "p.jpg"]
    # a different upload is its own entry
    assert household.collect.submit(instance(version="9")).status_code == 404
    db_session.expire_all()
    assert db_session.scalar(select(func.count(QuarantinedUpload.id))) == 2
