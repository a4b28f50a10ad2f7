"""Known-answer tests against real Collect/Central/Briefcase output (../shared/vectors)."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from sync_protocol import crypto, envelope, keys
from sync_protocol.errors import DecryptionError, MissingFileError, SignatureError
from tests.sync_protocol.vectors import KEYS_DIR, VECTORS_DIR, Vector, decryptable_vectors

VECTORS = decryptable_vectors()
POSITIVE = [v for v in VECTORS if not v.name.startswith("neg-")]

pytestmark = pytest.mark.skipif(not VECTORS, reason=f"no vectors under {VECTORS_DIR}")


def test_vectors__present__all_cases_found():
    """Should find every case the vectors README lists (a silent empty run proves nothing)."""
    names = {v.name for v in VECTORS}
    assert {"gen-01-small-text", "gen-03-media-2", "neg-01-tampered-media"} <= names
    assert len(VECTORS) >= 13


@pytest.mark.parametrize("vector", POSITIVE, ids=lambda v: v.name)
def test_decrypt__collect_vector__byte_exact_plaintext(vector: Vector):
    """Should decrypt the XML and every media file byte for byte."""
    env = envelope.parse_submission(vector.manifest)
    assert isinstance(env, envelope.EncryptedEnvelope)
    result = crypto.decrypt_submission(env, keys.load_private_key(vector.key_pem), vector.files())
    assert result.xml == vector.plaintext("submission.xml")
    if result.signature is crypto.SignatureStatus.VALID:
        assert result.require_valid() is result
    for name, data in result.media.items():
        assert data == vector.plaintext(name), name
    if vector.name == "fixture-central-collect-v1.22.4":
        # the photo is not in Central's repo: the signature cannot be checked
        assert result.signature is crypto.SignatureStatus.CANNOT_VERIFY
        assert result.media == {}
    else:
        assert result.signature is crypto.SignatureStatus.VALID
        assert len(result.media) == len(env.media)


def test_decrypt__tampered_media__signature_invalid():
    """Should decrypt a flipped ciphertext byte without padding error but report INVALID."""
    (vector,) = [v for v in VECTORS if v.name == "neg-01-tampered-media"]
    env = envelope.parse_submission(vector.manifest)
    result = crypto.decrypt_submission(env, keys.load_private_key(vector.key_pem), vector.files())
    assert result.signature is crypto.SignatureStatus.INVALID
    photo = next(n for n in result.media if n.endswith(".jpg"))
    assert result.media[photo] != vector.plaintext(photo)
    with pytest.raises(SignatureError, match="does not match"):
        result.require_valid()


def test_decrypt__truncated_ciphertext__decryption_error():
    """Should refuse a file with its last AES block cut off."""
    (vector,) = [v for v in VECTORS if v.name == "neg-04-truncated-ciphertext"]
    env = envelope.parse_submission(vector.manifest)
    with pytest.raises(DecryptionError, match="padding") as err:
        crypto.decrypt_submission(env, keys.load_private_key(vector.key_pem), vector.files())
    assert "BEGIN" not in str(err.value)


def test_decrypt__missing_media__cannot_verify():
    """Should decrypt what is there and say the signature cannot be verified."""
    (vector,) = [v for v in VECTORS if v.name == "gen-03-media-2"]
    env = envelope.parse_submission(vector.manifest)
    files = vector.files()
    del files[env.media[0]]
    result = crypto.decrypt_submission(env, keys.load_private_key(vector.key_pem), files)
    assert result.signature is crypto.SignatureStatus.CANNOT_VERIFY
    assert result.xml == vector.plaintext("submission.xml")
    with pytest.raises(SignatureError, match="cannot be checked"):
        result.require_valid()


def test_decrypt__wrong_key__decryption_error_without_key_material():
    """Should fail cleanly with another project's key."""
    (vector,) = [v for v in VECTORS if v.name == "gen-01-small-text"]
    env = envelope.parse_submission(vector.manifest)
    other = keys.load_private_key((KEYS_DIR / "central-test-priv.pem").read_bytes())
    with pytest.raises(DecryptionError) as err:
        crypto.decrypt_submission(env, other, vector.files())
    assert env.encrypted_key not in str(err.value)


@pytest.mark.parametrize(
    "vector", [v for v in POSITIVE if "debug" in v.expected], ids=lambda v: v.name
)
def test_encrypt__fixed_aes_key__reproduces_collect_ciphertext(vector: Vector):
    """Should produce Collect's exact .enc bytes when given the vector's AES key."""
    exp = vector.expected
    aes_key = base64.b64decode(exp["debug"]["aes_key_base64"])
    env = envelope.parse_submission(vector.manifest)
    private = keys.load_private_key(vector.key_pem)
    media = {n[:-4]: vector.plaintext(n[:-4]) for n in env.media}
    _manifest, files = crypto.encrypt_submission(
        vector.plaintext("submission.xml"),
        private.public_key(),
        form_id=env.form_id,
        version=env.version,
        instance_id=env.instance_id,
        media=media,
        aes_key=aes_key,
    )
    assert files == vector.files()


@pytest.mark.parametrize(
    "vector", [v for v in POSITIVE if "signature" in v.expected], ids=lambda v: v.name
)
def test_signature_source__vector__matches_collect_text(vector: Vector):
    """Should rebuild Collect's signature source text exactly."""
    env = envelope.parse_submission(vector.manifest)
    media = [(n[:-4], hashlib.md5(vector.plaintext(n[:-4])).hexdigest()) for n in env.media]
    source = crypto.signature_source(
        form_id=env.form_id,
        version=env.version,
        encrypted_key=env.encrypted_key,
        instance_id=env.instance_id,
        media_md5=media,
        xml_md5=hashlib.md5(vector.plaintext("submission.xml")).hexdigest(),
    )
    assert source == vector.expected["signature"]["source_text"]


def test_unit_vectors__central__key_unwrap_and_ivs():
    """Should match Central's unit vectors for key unwrap and the IV sequence."""
    data = json.loads((VECTORS_DIR / "fixture-central-unit-vectors" / "vectors.json").read_text())
    private = keys.load_private_key((VECTORS_DIR / data["key_unwrap"]["private_key"]).read_bytes())
    aes = crypto.unwrap_key(private, data["key_unwrap"]["base64EncryptedKey"])
    assert base64.b64encode(aes).decode() == data["key_unwrap"]["aes_key_base64"]
    ivs_spec = data["iv_sequence"]
    ivs = crypto.file_ivs(ivs_spec["instanceID"], base64.b64decode(ivs_spec["aes_key_base64"]), 32)
    for index, hex_iv in ivs_spec["ivs_hex_by_index"].items():
        assert ivs[int(index)].hex() == hex_iv


def test_envelope__manifest_bytes__identical_to_collect():
    """Should render the manifest exactly as Collect's serializer for a generated vector."""
    for name in ("gen-01-small-text", "gen-03-media-2", "gen-02-unicode"):
        (vector,) = [v for v in VECTORS if v.name == name]
        env = envelope.parse_submission(vector.manifest)
        rendered = crypto.render_manifest(
            form_id=env.form_id,
            version=env.version,
            instance_id=env.instance_id,
            encrypted_key=env.encrypted_key,
            media=list(env.media),
            signature=env.signature,
        )
        assert rendered == vector.manifest, name


def _central_unit(name: str) -> dict:
    data = json.loads((VECTORS_DIR / "fixture-central-unit-vectors" / "vectors.json").read_text())
    return data[name]


@pytest.mark.parametrize("case", ["end_to_end", "negative_bad_padding"])
def test_unit_vectors__central_end_to_end__plaintext_or_padding_error(case):
    """Should decrypt Central's Collect v1.22.4 ciphertext at IV index 1, refuse it unpadded."""
    vec = _central_unit(case)
    private = keys.load_private_key((KEYS_DIR / "central-test-priv.pem").read_bytes())
    aes = crypto.unwrap_key(private, vec["base64EncryptedKey"])
    iv = crypto.file_ivs(vec["instanceID"], aes, vec["file_index"] + 1)[vec["file_index"]]
    ciphertext = base64.b64decode(vec["ciphertext_base64"])
    if case == "end_to_end":
        assert crypto.decrypt_bytes(ciphertext, aes, iv) == vec["plaintext"].encode("utf-8")
    else:
        with pytest.raises(DecryptionError):
            crypto.decrypt_bytes(ciphertext, aes, iv)


def test_envelope_only__central_fixture__parsed_and_missing_files_reported():
    """Should accept a real envelope whose files have not arrived, and say which is missing."""
    case = VECTORS_DIR / "fixture-central-envelope-only"
    exp = json.loads((case / "expected.json").read_text())
    env = envelope.parse_submission((case / "submission.xml").read_bytes())
    assert isinstance(env, envelope.EncryptedEnvelope)
    assert (env.form_id, env.version, env.instance_id) == (
        exp["formId"],
        exp["version"],
        exp["instanceID"],
    )
    assert list(env.media) == exp["manifest"]["media_in_manifest_order"]
    assert env.encrypted_xml_file == exp["manifest"]["encryptedXmlFile"] and env.signature
    private = keys.load_private_key((KEYS_DIR / "central-test-priv.pem").read_bytes())
    with pytest.raises(MissingFileError, match=r"submission\.xml\.enc"):
        crypto.decrypt_submission(env, private, {})


def test_decrypt__gen02_manifest_in_legacy_encoding__same_result():
    """Should give VALID for gen-02 when its manifest is written the pre-2025.3 way (&#NNNN;)."""
    (vector,) = [v for v in VECTORS if v.name == "gen-02-unicode"]
    text = vector.manifest.decode("utf-8")
    legacy_character_references = "".join(c if ord(c) < 128 else f"&#{ord(c)};" for c in text)
    assert legacy_character_references != text  # the version really is non-ASCII
    env = envelope.parse_submission(legacy_character_references.encode("ascii"))
    assert env == envelope.parse_submission(vector.manifest)
    result = crypto.decrypt_submission(env, keys.load_private_key(vector.key_pem), vector.files())
    assert result.require_valid().xml == vector.plaintext("submission.xml")
