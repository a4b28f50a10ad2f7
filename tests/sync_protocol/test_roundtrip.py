"""Property tests: anything the encryptor (Collect's recipe) produces decrypts back exactly."""

from __future__ import annotations

import io
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sync_protocol import crypto, keys
from sync_protocol.envelope import EncryptedEnvelope, parse_submission
from sync_protocol.errors import DecryptionError

KEY = keys.generate_private_key(2048)

# sizes around block boundaries, including exact multiples of 16
sizes = st.one_of(st.integers(0, 70), st.sampled_from([16, 32, 48, 4096, 65536, 65537]))
names = st.from_regex(r"[A-Za-z0-9_-]{1,12}\.(jpg|m4a|csv)", fullmatch=True)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    xml_body=st.text(min_size=0, max_size=300),
    media=st.dictionaries(
        names, sizes.flatmap(lambda n: st.binary(min_size=n, max_size=n)), max_size=3
    ),
    version=st.one_of(st.none(), st.text(alphabet="abc123.-संस", min_size=1, max_size=10)),
)
def test_roundtrip__random_instances_and_media__exact(xml_body, media, version):
    """Should decrypt byte-exact with a VALID signature."""
    instance_id = f"uuid:{uuid.uuid4()}"
    xml = f"<data id='f'><t>{xml_body!r}</t></data>".encode()
    manifest, files = crypto.encrypt_submission(
        xml, KEY.public_key(), form_id="f", version=version, instance_id=instance_id, media=media
    )
    for name, data in media.items():
        assert len(files[name + ".enc"]) == 16 * (len(data) // 16 + 1)
    env = parse_submission(manifest)
    assert isinstance(env, EncryptedEnvelope)
    result = crypto.decrypt_submission(env, KEY, files)
    assert result.xml == xml
    assert result.media == media
    assert result.signature is crypto.SignatureStatus.VALID


@settings(max_examples=25, deadline=None)
@given(data=st.binary(min_size=0, max_size=5000), chunk=st.integers(1, 300))
def test_decrypt_stream__any_chunking__same_as_whole(data, chunk):
    """Should give the same plaintext and MD5 whatever the read size."""
    import hashlib
    import os

    aes, iv = os.urandom(32), os.urandom(16)
    ct = crypto._encrypt_bytes(data, aes, iv)
    out = io.BytesIO()
    size, md5 = crypto.decrypt_stream(io.BytesIO(ct), out, aes, iv, chunk_size=chunk)
    assert out.getvalue() == data
    assert (size, md5) == (len(data), hashlib.md5(data).hexdigest())
    assert crypto.decrypt_bytes(ct, aes, iv) == data  # the in-memory fast path agrees
    out = io.BytesIO()
    crypto.decrypt_stream(_ReadOnly(ct), out, aes, iv, chunk_size=chunk)  # no readinto()
    assert out.getvalue() == data


class _ReadOnly:
    """A file object with read() only, returning fewer bytes than asked (like a socket)."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def read(self, n: int) -> bytes:
        return self._data.read(max(1, n // 3))


def test_roundtrip__swapped_media_order__signature_invalid():
    """Should not validate when a file is decrypted at another index (manifest order matters)."""
    media = {"a.jpg": b"A" * 40, "b.jpg": b"B" * 40}
    manifest, files = crypto.encrypt_submission(
        b"<d/>", KEY.public_key(), form_id="f", version="1", instance_id="uuid:x", media=media
    )
    env = parse_submission(manifest)
    swapped = EncryptedEnvelope(
        form_id=env.form_id,
        version=env.version,
        instance_id=env.instance_id,
        encrypted_key=env.encrypted_key,
        signature=env.signature,
        media=tuple(reversed(env.media)),
        encrypted_xml_file=env.encrypted_xml_file,
    )
    try:
        result = crypto.decrypt_submission(swapped, KEY, files)
    except DecryptionError:
        return  # a wrong IV may also break the padding: refused either way
    assert result.signature is crypto.SignatureStatus.INVALID


def test_roundtrip__4096_bit_key__works():
    """Should handle the largest supported key size."""
    big = keys.generate_private_key(4096)
    manifest, files = crypto.encrypt_submission(
        b"<d/>", big.public_key(), form_id="f", version=None, instance_id="uuid:y"
    )
    result = crypto.decrypt_submission(parse_submission(manifest), big, files)
    assert result.xml == b"<d/>" and result.signature is crypto.SignatureStatus.VALID


@pytest.mark.parametrize("cut", [1, 15, 16])
def test_decrypt_stream__truncated__error(cut):
    """Should refuse a ciphertext that is not whole blocks or lost its padding block."""
    import os

    aes, iv = os.urandom(32), os.urandom(16)
    ct = crypto._encrypt_bytes(b"x" * 40, aes, iv)[:-cut]
    with pytest.raises(DecryptionError):
        crypto.decrypt_stream(io.BytesIO(ct), io.BytesIO(), aes, iv)
    with pytest.raises(DecryptionError):
        crypto.decrypt_bytes(ct, aes, iv)


# XML-legal text without surrounding whitespace (Collect never pads ids; text is stripped)
_xml_text = (
    st.text(
        alphabet=st.characters(
            blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufffe\uffff"
        ),
        min_size=1,
        max_size=20,
    )
    .map(str.strip)
    .filter(bool)
)


@settings(max_examples=30, deadline=None)
@given(form_id=_xml_text, version=st.one_of(st.none(), _xml_text), instance_id=_xml_text)
def test_roundtrip__random_metadata__manifest_parses_back_and_signature_valid(
    form_id, version, instance_id
):
    """Should escape ids with <, &, quotes and non-ASCII so the manifest parses to the same values."""
    manifest, files = crypto.encrypt_submission(
        b"<d/>", KEY.public_key(), form_id=form_id, version=version, instance_id=instance_id
    )
    env = parse_submission(manifest)
    assert (env.form_id, env.version, env.instance_id) == (form_id, version, instance_id)
    result = crypto.decrypt_submission(env, KEY, files)
    assert result.require_valid().xml == b"<d/>"


@pytest.mark.parametrize(("version", "lines"), [(None, 3), ("", 4), ("7", 4)])
def test_signature_source__empty_version__still_a_line_like_collect(version, lines):
    """Should omit the version line only when there is no version (Collect tests for null)."""
    source = crypto.signature_source(
        form_id="f", version=version, encrypted_key="K", instance_id="uuid:1", media_md5=[],
        xml_md5="0" * 32,
    )  # fmt: skip
    assert source.count("\n") == lines + 1
    manifest, files = crypto.encrypt_submission(
        b"<d/>", KEY.public_key(), form_id="f", version=version, instance_id="uuid:1"
    )
    env = parse_submission(manifest)
    assert env.version == version
    assert crypto.decrypt_submission(env, KEY, files).signature is crypto.SignatureStatus.VALID
