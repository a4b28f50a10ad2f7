"""Plaintext sent to an encrypted form: encrypted by the server before anything is stored.

Collect falls back to plaintext when its crypto provider is missing (openrosa.md §9.2). The
answers crossed the network in the clear, but they must not also rest in the clear: a whole
upload is encrypted to the form version's key exactly as Collect would have done it, so only
the key's holders can read it, and the worker decrypts it like any other. Checked here with
ODK's own generated vector (form, key, plaintext, media), decrypted with the vector's key.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from server.blobs import make_blob_store, read_all
from server.models import Blob, Submission
from sync_protocol.crypto import SignatureStatus, decrypt_submission
from sync_protocol.envelope import EncryptedEnvelope, parse_submission
from tests.server.collect import openrosa_message
from tests.server.conftest import publish

VECTOR = "gen-03-media-2"


@pytest.fixture(params=["default blobs", "blob files"])
def app(request, make_app, backend):
    """The app, and on PostgreSQL also with its blobs in files (deleting those cannot wait
    for a commit the way the rows of the blobs table do)."""
    if request.param == "default blobs":
        return make_app()
    assert backend == "postgres"  # SQLite's blobs are files already (not collected there)
    return make_app(BLOB_BACKEND="local")


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


def _all_blobs(app, db_session) -> dict[str, bytes]:
    """Every blob in the store, whoever refers to it (files, or rows of the blobs table)."""
    if app.config["BLOB_BACKEND"] == "postgres":
        return {k: bytes(d) for k, d in db_session.execute(select(Blob.key, Blob.data))}
    root = Path(app.config["DATA_DIR"])
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _send_split(field, xml: bytes, media: dict[str, bytes]) -> tuple[str, str]:
    """Two POSTs as Collect splits them: the first file with *isIncomplete*, then the rest.
    The first is the file sorting LAST, so arrival order and name order differ."""
    later, earlier = sorted(media, reverse=True)
    assert field.collect.submit(xml, {later: media[later]}, incomplete=True).status_code == 201
    assert field.collect.submit(xml, {earlier: media[earlier]}).status_code == 201
    return later, earlier


def test_split_plaintext_upload__encrypted_whole_when_the_last_part_arrives(
    app, field, db_session, shared_dir
):
    """Should keep the parts of a split upload (*isIncomplete*) as sent until the last POST,
    then encrypt the XML and every file together, in the order they arrived, to the form's key:
    what is stored decrypts with a valid signature to the very bytes sent, and no plaintext
    blob is left in the store."""
    form_xml, xml, media, key = _vector(shared_dir)
    publish(app, field.project_id, form_xml)
    later, earlier = sorted(media, reverse=True)
    assert field.collect.submit(xml, {later: media[later]}, incomplete=True).status_code == 201
    sub, stored_xml, files = _stored(app, db_session)
    assert not sub.encrypted and not sub.complete and sub.status == "received"
    assert stored_xml == xml and files == {later: media[later]}  # until the rest arrives
    plaintext_keys = [sub.xml_blob_key, *(a.blob_key for a in sub.attachments)]

    assert field.collect.submit(xml, {earlier: media[earlier]}).status_code == 201
    sub, stored_xml, files = _stored(app, db_session)
    assert sub.encrypted and sub.complete and sub.status == "pending_decryption"
    assert {"plaintext_for_encrypted_form", "encrypted_on_arrival"} <= set(sub.flags)
    assert sub.xml_sha256 == hashlib.sha256(xml).hexdigest()  # of what was sent
    assert sub.xml_size == len(stored_xml) and sub.instance_name is None
    by_position = sorted(sub.attachments, key=lambda a: a.position)
    assert [a.name for a in by_position] == [f"{later}.enc", f"{earlier}.enc", "submission.xml.enc"]
    assert all(a.present and a.sha256 == hashlib.sha256(files[a.name]).hexdigest()
               for a in sub.attachments)  # fmt: skip
    envelope = parse_submission(stored_xml)
    assert isinstance(envelope, EncryptedEnvelope)
    assert list(envelope.media) == [f"{later}.enc", f"{earlier}.enc"]
    decrypted = decrypt_submission(envelope, key, files)
    assert decrypted.signature is SignatureStatus.VALID
    assert decrypted.xml == xml and decrypted.media == media

    store = make_blob_store(app.config, db_session)
    assert not any(store.exists(k) for k in plaintext_keys)
    for k, data in _all_blobs(app, db_session).items():  # form files and ciphertext only
        assert xml not in data and all(m not in data for m in media.values()), k


def test_split_plaintext_upload__resending_any_part_after__201_and_nothing_changes(
    app, field, db_session, shared_dir
):
    """Should answer Collect's resends of a completed split upload (the last POST, an earlier
    POST with *isIncomplete*, or everything at once) with 201 as the same submission, and
    neither add, un-encrypt nor re-encrypt anything."""
    form_xml, xml, media, _key = _vector(shared_dir)
    publish(app, field.project_id, form_xml)
    later, earlier = _send_split(field, xml, media)
    sub, stored_xml, files = _stored(app, db_session)
    before = (sub.id, sub.xml_blob_key, sorted((a.name, a.blob_key) for a in sub.attachments))
    blobs = _all_blobs(app, db_session)

    for part, incomplete in (({earlier: media[earlier]}, False),
                             ({later: media[later]}, True),
                             (media, False)):  # fmt: skip
        resp = field.collect.submit(xml, part, incomplete=incomplete)
        assert resp.status_code == 201, resp.data
        assert openrosa_message(resp) == "Submission received."
        sub, again_xml, again = _stored(app, db_session)
        assert (
            sub.id,
            sub.xml_blob_key,
            sorted((a.name, a.blob_key) for a in sub.attachments),
        ) == before
        assert (again_xml, again) == (stored_xml, files)
        assert sub.encrypted and sub.complete and sub.status == "pending_decryption"
        assert _all_blobs(app, db_session) == blobs  # no copy kept, plaintext or encrypted
    assert db_session.scalar(select(func.count(Submission.id))) == 1


def test_split_plaintext_upload__last_part_fails_to_commit__plaintext_kept_and_retry_encrypts(
    app, field, db_session, shared_dir
):
    """Should, when the transaction of the last POST does not commit, leave the submission as
    the earlier POSTs stored it (its plaintext blobs still there: nothing lost, the device gets
    no 201 and retries), and encrypt it on the retry."""
    form_xml, xml, media, key = _vector(shared_dir)
    publish(app, field.project_id, form_xml)
    later, earlier = sorted(media, reverse=True)
    assert field.collect.submit(xml, {later: media[later]}, incomplete=True).status_code == 201
    sub, _, _ = _stored(app, db_session)
    plaintext_keys = [sub.xml_blob_key, *(a.blob_key for a in sub.attachments)]

    failed = []

    def fail(session):  # the commit after the merge encrypted it (earlier ones release reads)
        if any(isinstance(o, Submission) and o.encrypted for o in session.identity_map.values()):
            failed.append(True)
            raise RuntimeError("the database went away")

    event.listen(Session, "before_commit", fail)
    try:
        resp = field.collect.submit(xml, {earlier: media[earlier]})
    finally:
        event.remove(Session, "before_commit", fail)
    assert resp.status_code == 500 and failed
    sub, stored_xml, files = _stored(app, db_session)
    assert not sub.encrypted and not sub.complete and stored_xml == xml
    assert files == {later: media[later]}
    store = make_blob_store(app.config, db_session)
    assert all(store.exists(k) for k in plaintext_keys)

    assert field.collect.submit(xml, {later: media[later]}, incomplete=True).status_code == 201
    assert field.collect.submit(xml, {earlier: media[earlier]}).status_code == 201
    sub, stored_xml, files = _stored(app, db_session)
    assert sub.encrypted and sub.status == "pending_decryption"
    decrypted = decrypt_submission(parse_submission(stored_xml), key, files)
    assert decrypted.signature is SignatureStatus.VALID and decrypted.media == media
    assert not any(store.exists(k) for k in plaintext_keys)
