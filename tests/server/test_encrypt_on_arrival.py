"""Plaintext sent to an encrypted form: encrypted by the server before anything is stored.

Collect falls back to plaintext when its crypto provider is missing (openrosa.md §9.2). The
answers crossed the network in the clear, but they must not also rest in the clear: a whole
upload is encrypted to the form version's key exactly as Collect would have done it, so only
the key's holders can read it, and the worker decrypts it like any other. Checked here with
ODK's own generated vector (form, key, plaintext, media), decrypted with the vector's key.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.serialization import load_pem_private_key
from sqlalchemy import select

from server.blobs import make_blob_store, read_all
from server.models import Submission
from sync_protocol.crypto import SignatureStatus, decrypt_submission
from sync_protocol.envelope import EncryptedEnvelope, parse_submission
from tests.server.conftest import publish

VECTOR = "gen-03-media-2"


def _vector(shared_dir: Path) -> tuple[bytes, bytes, dict[str, bytes], object]:
    case = shared_dir / "vectors" / VECTOR
    plain = case / "plaintext"
    media = {p.name: p.read_bytes() for p in sorted(plain.iterdir()) if p.name != "submission.xml"}
    key = load_pem_private_key(
        (shared_dir / "vectors" / "KEYS" / "collect-gen-rsa2048.pkcs8.pem").read_bytes(), None
    )
    return (case / "form.xml").read_bytes(), (plain / "submission.xml").read_bytes(), media, key


def _stored(app, db_session) -> tuple[Submission, bytes, dict[str, bytes]]:
    db_session.expire_all()
    sub = db_session.scalars(select(Submission)).one()
    store = make_blob_store(app.config, db_session)
    files = {a.name: read_all(store, a.blob_key) for a in sub.attachments if a.present}
    return sub, read_all(store, sub.xml_blob_key), files


def test_whole_plaintext_upload__stored_only_encrypted_and_decrypts_to_what_was_sent(
    app, field, db_session, shared_dir
):
    """Should store a manifest and .enc files that decrypt, with a valid signature, to the
    very bytes the device sent; a resend of the same bytes is the same submission."""
    form_xml, xml, media, key = _vector(shared_dir)
    publish(app, field.project_id, form_xml)
    assert field.collect.submit(xml, media).status_code == 201

    sub, stored_xml, files = _stored(app, db_session)
    assert sub.encrypted and sub.status == "pending_decryption" and sub.complete
    assert {"plaintext_for_encrypted_form", "encrypted_on_arrival"} <= set(sub.flags)
    assert sorted(files) == sorted([*(f"{n}.enc" for n in media), "submission.xml.enc"])
    for plaintext in (xml, *media.values()):  # nothing sent is at rest in the clear
        assert plaintext not in stored_xml and all(plaintext not in f for f in files.values())
    envelope = parse_submission(stored_xml)
    assert isinstance(envelope, EncryptedEnvelope)
    assert envelope.instance_id == sub.instance_id
    decrypted = decrypt_submission(envelope, key, files)
    assert decrypted.signature is SignatureStatus.VALID
    assert decrypted.xml == xml and decrypted.media == media

    assert field.collect.submit(xml, media).status_code == 201  # Collect resends: one row
    sub, _, again = _stored(app, db_session)
    assert again == files


def test_split_plaintext_upload__stored_as_sent_and_completed(app, field, db_session, shared_dir):
    """Should keep a split upload (*isIncomplete*) as sent, flagged: its later parts could not
    join one encrypted envelope; the last part completes it in plaintext, never half-encrypted."""
    form_xml, xml, media, _key = _vector(shared_dir)
    publish(app, field.project_id, form_xml)
    first, second = sorted(media)
    assert field.collect.submit(xml, {first: media[first]}, incomplete=True).status_code == 201
    assert field.collect.submit(xml, {second: media[second]}).status_code == 201

    sub, stored_xml, files = _stored(app, db_session)
    assert not sub.encrypted and stored_xml == xml
    assert files == media
    assert "plaintext_for_encrypted_form" in sub.flags
    assert "encrypted_on_arrival" not in sub.flags
