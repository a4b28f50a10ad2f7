"""An encrypted project end to end: key pair, keyed form, encrypted upload, decryptable later."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.asymmetric import padding as apad
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.serialization import (
    load_der_public_key,
    load_pem_private_key,
)
from sqlalchemy import select

from server.blobs import make_blob_store, read_all
from server.models import Project, ProjectKey, Submission, SubmissionStatus
from server.services.projects import create_project
from server.services.users import create_app_user
from tests.server.collect import CollectActions, encrypt_like_collect
from tests.server.conftest import publish
from tests.server.forms import instance, xform

try:
    from cryptography.hazmat.decrepit.ciphers.modes import CFB
except ImportError:  # older cryptography
    from cryptography.hazmat.primitives.ciphers.modes import CFB

PASSPHRASE = b"fictional demo passphrase"


def _decrypt(private_key, manifest: bytes, enc: bytes, index: int) -> bytes:
    """Reference decryption (openrosa.md §9.5) to prove what the server kept is usable."""
    key_b64 = re.search(rb"<base64EncryptedKey>(.*?)</base64EncryptedKey>", manifest).group(1)
    instance_id = re.search(rb"<orx:instanceID>(.*?)</orx:instanceID>", manifest).group(1)
    oaep = apad.OAEP(mgf=apad.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    aes_key = private_key.decrypt(base64.b64decode(key_b64), oaep)
    seed = bytearray(hashlib.md5(instance_id + aes_key, usedforsecurity=False).digest())
    for i in range(index + 1):
        seed[i % 16] = (seed[i % 16] + 1) % 256
    dec = Cipher(algorithms.AES(aes_key), CFB(bytes(seed))).decryptor()
    unpadder = padding.PKCS7(128).unpadder()
    return unpadder.update(dec.update(enc) + dec.finalize()) + unpadder.finalize()


def test_encrypted_project__collect_upload__stored_and_decryptable_with_passphrase(
    app, client, db_session
):
    """Should publish with the project key, store the envelope, and need only the passphrase."""
    with app.extensions["kintsugi.db"].sessionmaker() as s:
        project = create_project(s, "Encrypted office", passphrase=PASSPHRASE)
        _, token = create_app_user(s, project, "Tablet")
        s.commit()
        pid, key_b64 = project.id, project.active_key.public_key_b64
    publish(app, pid, xform(public_key=key_b64))
    collect = CollectActions(client, f"/v1/key/{token}/projects/{pid}")
    assert (
        key_b64.encode() in collect.get(f"/v1/key/{token}/projects/{pid}/forms/household.xml").data
    )

    plaintext = instance(photo="p.jpg")
    photo = b"\xff\xd8 fictional photo bytes" * 50
    manifest, files = encrypt_like_collect(
        load_der_public_key(base64.b64decode(key_b64)),
        "household",
        "1",
        plaintext,
        {"p.jpg": photo},
    )
    assert collect.submit(manifest, files).status_code == 201

    sub = db_session.scalars(select(Submission)).one()
    assert sub.encrypted and sub.status == SubmissionStatus.PENDING_DECRYPTION and sub.flags == []
    store = make_blob_store(app.config, db_session)
    assert read_all(store, sub.xml_blob_key) == manifest
    atts = {a.name: a for a in sub.attachments}
    assert {n: a.position for n, a in atts.items()} == {"p.jpg.enc": 0, "submission.xml.enc": 1}

    stored_key = db_session.scalars(select(ProjectKey)).one()
    with pytest.raises(TypeError):  # stored encrypted: unusable without the passphrase
        load_pem_private_key(stored_key.encrypted_private_pem, password=None)
    private = load_pem_private_key(stored_key.encrypted_private_pem, password=PASSPHRASE)
    got_xml = _decrypt(private, manifest, read_all(store, atts["submission.xml.enc"].blob_key), 1)
    got_photo = _decrypt(private, manifest, read_all(store, atts["p.jpg.enc"].blob_key), 0)
    assert got_xml == plaintext and got_photo == photo
    assert db_session.get(Project, pid).encrypted


def test_encrypted_project__sync_protocol_round_trip__signature_valid(app, client, db_session):
    """Should store an upload made by sync_protocol.crypto so that it decrypts with a VALID
    signature from the stored blobs and the passphrase-protected project key."""
    import uuid

    from sync_protocol import crypto, keys
    from sync_protocol.envelope import parse_submission

    with app.extensions["kintsugi.db"].sessionmaker() as s:
        project = create_project(s, "Encrypted office", passphrase=PASSPHRASE)
        _, token = create_app_user(s, project, "Tablet")
        s.commit()
        pid, key_b64 = project.id, project.active_key.public_key_b64
    publish(app, pid, xform(public_key=key_b64))
    instance_id = f"uuid:{uuid.uuid4()}"
    plaintext = instance(instance_id=instance_id, photo="p.jpg")
    manifest, files = crypto.encrypt_submission(
        plaintext,
        keys.load_public_key(key_b64.encode()),
        form_id="household",
        version="1",
        instance_id=instance_id,
        media={"p.jpg": b"fictional photo"},
    )
    collect = CollectActions(client, f"/v1/key/{token}/projects/{pid}")
    assert collect.submit(manifest, files).status_code == 201

    sub = db_session.scalars(select(Submission)).one()
    store = make_blob_store(app.config, db_session)
    stored = {a.name: read_all(store, a.blob_key) for a in sub.attachments}
    envelope = parse_submission(read_all(store, sub.xml_blob_key))
    private = keys.load_private_key(
        db_session.scalars(select(ProjectKey)).one().encrypted_private_pem, PASSPHRASE
    )
    result = crypto.decrypt_submission(envelope, private, stored)
    assert result.xml == plaintext and result.media == {"p.jpg": b"fictional photo"}
    assert result.signature.name == "VALID"
