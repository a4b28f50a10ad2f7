"""SubmissionDecryptor: file-by-file streaming decryption as the CLI and server use it."""

from __future__ import annotations

import io

import pytest

from sync_protocol import crypto, keys
from sync_protocol.envelope import parse_submission
from sync_protocol.errors import DecryptionError

KEY = keys.generate_private_key(2048)
MEDIA = {"b.jpg": bytes(range(256)) * 80, "a.m4a": b"\x10" * 48, "audit.csv": b"e,t\n"}


@pytest.fixture(scope="module")
def submission():
    manifest, files = crypto.encrypt_submission(
        b"<data id='f'><q>1</q></data>",
        KEY.public_key(),
        form_id="f",
        version="3",
        instance_id="uuid:stream",
        media=MEDIA,
    )
    return parse_submission(manifest), files


def test_decryptor__files_in_reverse_order_small_chunks__valid(submission):
    """Should decrypt files in any order and chunk size, then report a VALID signature."""
    env, files = submission
    dec = crypto.SubmissionDecryptor(env, KEY)
    out = {}
    for name in reversed(env.expected_files):
        dst = io.BytesIO()
        assert dec.signature_status() is crypto.SignatureStatus.CANNOT_VERIFY
        dec.decrypt_file(name, io.BytesIO(files[name]), dst, chunk_size=7)
        out[dec.plain_name(name)] = dst.getvalue()
    assert out == {**MEDIA, "submission.xml": b"<data id='f'><q>1</q></data>"}
    assert dec.signature_status() is crypto.SignatureStatus.VALID
    assert "uuid:stream" in repr(dec)


def test_decryptor__one_media_file_on_demand__plaintext_only(submission):
    """Should decrypt a single attachment (server on-demand download) without the others."""
    env, files = submission
    dec = crypto.SubmissionDecryptor(env, KEY)
    assert dec.decrypt_bytes("a.m4a.enc", files["a.m4a.enc"]) == MEDIA["a.m4a"]
    assert dec.signature_status() is crypto.SignatureStatus.CANNOT_VERIFY


def test_decryptor__file_from_other_position__invalid_or_refused(submission):
    """Should never validate bytes that belong to another file of the manifest."""
    env, files = submission
    dec = crypto.SubmissionDecryptor(env, KEY)
    swapped = dict(files)
    swapped["b.jpg.enc"], swapped["a.m4a.enc"] = files["a.m4a.enc"], files["b.jpg.enc"]
    try:
        for name in env.expected_files:
            dec.decrypt_bytes(name, swapped[name])
    except DecryptionError:
        return
    assert dec.signature_status() is crypto.SignatureStatus.INVALID


def test_decryptor__unlisted_name__decryption_error(submission):
    """Should refuse a file the manifest does not list (no IV index to use)."""
    env, files = submission
    dec = crypto.SubmissionDecryptor(env, KEY)
    with pytest.raises(DecryptionError, match="not listed"):
        dec.decrypt_bytes("other.jpg.enc", files["b.jpg.enc"])


def test_decryptor__wrong_key__refused_at_construction(submission):
    """Should fail before any file is read when the key is not the project's."""
    env, _files = submission
    with pytest.raises(DecryptionError, match="cannot be opened"):
        crypto.SubmissionDecryptor(env, keys.generate_private_key(2048))


def test_decryptor__without_digest__same_plaintext_but_not_counted(submission):
    """Should decrypt without the MD5 (re-serving) and then not claim a verified signature."""
    env, files = submission
    dec = crypto.SubmissionDecryptor(env, KEY)
    for name in env.expected_files:
        dst = io.BytesIO()
        size = dec.decrypt_file(name, io.BytesIO(files[name]), dst, digest=False)
        assert size == len(dst.getvalue())
        if name != env.encrypted_xml_file:
            assert dst.getvalue() == MEDIA[dec.plain_name(name)]
    assert dec.signature_status() is crypto.SignatureStatus.CANNOT_VERIFY
