"""Damaged or mismatched encrypted submissions, posted like Collect and reconciled with
``kintsugi reconcile --once``: each ends quarantined with a reason an admin can act on, and
neither the reason nor the worker's output quotes the plaintext."""

from __future__ import annotations

import base64
import re
import uuid

import pytest
from sqlalchemy import select

from server.models import Submission
from sync_protocol import keys
from tests.cases.fieldwork import encrypted_upload, instance_xml, ratings_for

SECRET = "fictional-secret-answer-Wanjiru"


def _record(field, code):
    r = field.report
    instance_id, xml = instance_xml(
        r, case_code=code, point="intake", date="2026-03-01", ratings=ratings_for(r, "2"),
        entity_id=str(uuid.uuid4()), notes={r["domains"][0]["id"]: SECRET},
    )  # fmt: skip
    return instance_id, xml


def _key_b64(field, db_session):
    from server.models import Project

    return db_session.get(Project, field.project_id).active_key.public_key_b64


def _truncated_key(field, db_session, code):
    instance_id, xml = _record(field, code)
    public = keys.load_public_key(_key_b64(field, db_session).encode())
    manifest, files = encrypted_upload(field.report, public, instance_id, xml)
    manifest = re.sub(rb"(<base64EncryptedKey>)(.{40})[^<]*", rb"\1\2", manifest)
    return instance_id, manifest, files


def _other_key(field, db_session, code):
    instance_id, xml = _record(field, code)
    other = keys.generate_private_key(2048).public_key()
    manifest, files = encrypted_upload(field.report, other, instance_id, xml)
    return instance_id, manifest, files


def _no_signature(field, db_session, code):
    instance_id, xml = _record(field, code)
    public = keys.load_public_key(_key_b64(field, db_session).encode())
    manifest, files = encrypted_upload(field.report, public, instance_id, xml)
    manifest = re.sub(rb"<base64EncryptedElementSignature>[^<]*</base64EncryptedElementSignature>",
                      b"", manifest)  # fmt: skip
    return instance_id, manifest, files


def _swapped_media(field, db_session, code):
    from sync_protocol.crypto import encrypt_submission

    instance_id, xml = _record(field, code)
    public = keys.load_public_key(_key_b64(field, db_session).encode())
    manifest, files = encrypt_submission(
        xml, public, form_id=field.report["form_id"], version=field.report["version"],
        instance_id=instance_id, media={"a.jpg": b"\xff\xd8 first " * 30, "b.jpg": b"second " * 30},
    )  # fmt: skip
    manifest = manifest.replace(b"a.jpg.enc", b"TMP").replace(b"b.jpg.enc", b"a.jpg.enc")
    return instance_id, manifest.replace(b"TMP", b"b.jpg.enc"), files


def _garbage_signature(field, db_session, code):
    instance_id, manifest, files = _no_signature(field, db_session, code)
    sig = base64.b64encode(b"\x00" * 256).decode()
    manifest = manifest.replace(
        b"</data>",
        f"<base64EncryptedElementSignature>{sig}</base64EncryptedElementSignature></data>".encode(),
    )
    return instance_id, manifest, files


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (_truncated_key, "cannot be decrypted"),
        (_other_key, "cannot be decrypted"),
        (_no_signature, "carries no signature"),
        (_swapped_media, "signature invalid"),
        (_garbage_signature, "signature invalid"),
    ],
    ids=["truncated-key", "other-key", "no-signature", "swapped-media", "garbage-signature"],
)
def test_reconcile__damaged_envelope__quarantined_with_actionable_reason(
    field, reconcile, db_session, make, reason
):
    """Should quarantine (never drop, never crash) with a precise reason and no plaintext."""
    instance_id, manifest, files = make(field, db_session, "KE-0800")
    field.post(manifest, files)
    output = reconcile()
    assert "1 quarantined" in output
    db_session.expire_all()
    sub = db_session.scalar(select(Submission).where(Submission.instance_id == instance_id))
    assert sub.status == "quarantined"
    assert reason in sub.quarantine_reason, sub.quarantine_reason
    assert SECRET not in sub.quarantine_reason and SECRET not in output
