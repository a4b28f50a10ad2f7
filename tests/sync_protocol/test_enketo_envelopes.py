"""Submissions encrypted by Enketo (web forms), current and before its August 2025 fix."""

from __future__ import annotations

import io
import uuid

import pytest

from sync_protocol import crypto, keys
from sync_protocol.envelope import EncryptedEnvelope, parse_submission
from tests.sync_protocol.producers import encrypt_like_enketo, forge_string_md5

KEY = keys.generate_private_key(2048)
UNICODE_XML = (
    '<data xmlns:jr="http://openrosa.org/javarosa" xmlns:orx="http://openrosa.org/xforms" '
    'id="aftercare" version="2026-03"><name>Amélie Ngʼangʼa — ሰላም</name>'
    "<note>Écoute 😀 &amp; suivi</note><photo>scan-12_00_01.jpg</photo>"
    "<meta><instanceID>{iid}</instanceID></meta></data>"
)


def _decrypt(manifest: bytes, files: dict[str, bytes], key=KEY) -> crypto.DecryptedSubmission:
    env = parse_submission(manifest)
    assert isinstance(env, EncryptedEnvelope)
    return crypto.decrypt_submission(env, key, files)


@pytest.mark.parametrize("legacy", [False, True], ids=["enketo-2025.8+", "enketo-2018-2025.7"])
@pytest.mark.parametrize("version", ["2026-03", "", None], ids=["version", "empty", "none"])
def test_enketo__unicode_answers_and_media__decrypt_with_valid_signature(legacy, version):
    """Should decrypt an Enketo record byte for byte and accept its signature, whether Enketo
    took the MD5s over UTF-8 (current) or over the JavaScript string (2018 to July 2025)."""
    iid = f"uuid:{uuid.uuid4()}"
    xml = UNICODE_XML.format(iid=iid)
    photo = b"\xff\xd8 fictional scan " * 40
    manifest, files = encrypt_like_enketo(
        xml, KEY.public_key(), form_id="aftercare", version=version, instance_id=iid,
        media=[("scan-12_00_01.jpg", photo)], legacy_md5=legacy,
    )  # fmt: skip
    result = _decrypt(manifest, files)
    assert result.xml == xml.encode("utf-8")
    assert result.media == {"scan-12_00_01.jpg": photo}
    assert result.signature is crypto.SignatureStatus.VALID


def test_enketo__legacy_signature_streamed__valid_like_in_memory():
    """Should accept the pre-2025 Enketo signature when files are decrypted chunk by chunk
    (the decrypt CLI), not only in memory."""
    iid = f"uuid:{uuid.uuid4()}"
    xml = UNICODE_XML.format(iid=iid)
    manifest, files = encrypt_like_enketo(
        xml, KEY.public_key(), form_id="aftercare", version="2026-03", instance_id=iid,
        legacy_md5=True,
    )  # fmt: skip
    env = parse_submission(manifest)
    dec = crypto.SubmissionDecryptor(env, KEY)
    out = io.BytesIO()
    dec.decrypt_file("submission.xml.enc", io.BytesIO(files["submission.xml.enc"]), out,
                     chunk_size=32)  # fmt: skip
    assert out.getvalue() == xml.encode()
    assert dec.signature_status() is crypto.SignatureStatus.VALID


def test_enketo__legacy_signature_but_altered_xml__invalid():
    """Should still refuse a pre-2025 Enketo submission whose ciphertext was altered."""
    iid = f"uuid:{uuid.uuid4()}"
    manifest, files = encrypt_like_enketo(
        UNICODE_XML.format(iid=iid), KEY.public_key(), form_id="aftercare", version="2026-03",
        instance_id=iid, legacy_md5=True,
    )  # fmt: skip
    blob = bytearray(files["submission.xml.enc"])
    blob[40] ^= 0x01
    files["submission.xml.enc"] = bytes(blob)
    assert _decrypt(manifest, files).signature is crypto.SignatureStatus.INVALID


@pytest.mark.parametrize("bits", [3072, 4096])
def test_enketo__larger_project_keys__valid(bits):
    """Should open Enketo submissions to 3072- and 4096-bit keys (Enketo and Collect allow them)."""
    key = keys.generate_private_key(bits)
    iid = f"uuid:{uuid.uuid4()}"
    manifest, files = encrypt_like_enketo(
        UNICODE_XML.format(iid=iid), key.public_key(), form_id="aftercare", version="1",
        instance_id=iid, legacy_md5=True,
    )  # fmt: skip
    assert _decrypt(manifest, files, key).signature is crypto.SignatureStatus.VALID


@pytest.mark.parametrize(
    ("text", "forge_hex"),
    [  # digests printed by node-forge 1.x: forge.md.md5.create().update(text).digest().toHex()
        ("Amélie — ሰላም 😀\n", "1cb489ebbbfa52ad1671ee306a881da2"),
        ("<n>é</n>", "107cb427e8332d2a2f8a956596e329e8"),
        ("submission.xml::x\n", "5d6cb45853ee5ad997f1f34560e4ce12"),
    ],
)
def test_js_string_md5__known_forge_digests(text, forge_hex):
    """Should give node-forge's digest of a JavaScript string (what pre-2025 Enketo signed)."""
    assert crypto.js_string_md5(text).hex() == forge_hex
    assert forge_string_md5(text).hex() == forge_hex  # the test helper agrees independently


def test_enketo__legacy_non_ascii_form_id_version_and_file_name__valid():
    """Should accept a pre-2025 Enketo signature whose non-ASCII text is outside the XML too:
    the form id, the version and a user-named file (hashed as a JavaScript string)."""
    iid = f"uuid:{uuid.uuid4()}"
    xml = f'<évaluation id="évaluation" version="v1-संस्करण"><meta><instanceID>{iid}</instanceID></meta></évaluation>'
    manifest, files = encrypt_like_enketo(
        xml, KEY.public_key(), form_id="évaluation", version="v1-संस्करण", instance_id=iid,
        media=[("Reçu médical-10_00_00.pdf", b"%PDF fictional")], legacy_md5=True,
    )  # fmt: skip
    assert _decrypt(manifest, files).signature is crypto.SignatureStatus.VALID
