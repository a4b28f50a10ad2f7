"""Key generation, storage and loading."""

from __future__ import annotations

import base64
import subprocess

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st

from sync_protocol import keys
from sync_protocol.errors import (
    KeyFormatError,
    KeySizeError,
    ProtocolError,
    WrongPassphraseError,
)
from tests.sync_protocol.vectors import KEYS_DIR

pytestmark = pytest.mark.skipif(not KEYS_DIR.is_dir(), reason="shared vectors missing")


@pytest.fixture(scope="module")
def key():
    return keys.generate_private_key(2048)


def test_encrypt_private_key__roundtrip__same_key(key):
    """Should store as encrypted PKCS#8 and load back with the passphrase."""
    pem = keys.encrypt_private_key(key, b"correct horse battery")
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    loaded = keys.load_private_key(pem, b"correct horse battery")
    assert keys.fingerprint(loaded) == keys.fingerprint(key)


def test_encrypt_private_key__kdf__pbkdf2_sha256_600k(key, tmp_path):
    """Should use PBKDF2-HMAC-SHA256 with 600,000 iterations (checked with openssl)."""
    path = tmp_path / "k.pem"
    path.write_bytes(keys.encrypt_private_key(key, b"pw-pw-pw-pw"))
    out = subprocess.run(
        ["openssl", "asn1parse", "-in", str(path)], capture_output=True, text=True, check=True
    ).stdout
    assert "PBKDF2" in out and "hmacWithSHA256" in out and "aes-256-cbc" in out
    assert ":0927C0" in out  # 600000


def test_load_private_key__wrong_passphrase__clear_error(key):
    """Should raise WrongPassphraseError, not a traceback from the crypto library."""
    pem = keys.encrypt_private_key(key, b"right passphrase")
    with pytest.raises(WrongPassphraseError, match="passphrase"):
        keys.load_private_key(pem, b"wrong passphrase")
    with pytest.raises(WrongPassphraseError):
        keys.load_private_key(pem, None)


@pytest.mark.parametrize(
    ("name", "passphrase_file"),
    [
        ("collect-gen-rsa2048.pkcs8.pem", None),
        ("collect-gen-rsa2048.pkcs1.pem", None),
        ("collect-gen-rsa2048.encrypted-pkcs8.pem", "collect-gen-rsa2048.passphrase.txt"),
    ],
)
def test_load_private_key__encodings__same_key(name, passphrase_file):
    """Should load PKCS#1, PKCS#8 and encrypted PKCS#8 encodings of one key identically."""
    passphrase = (KEYS_DIR / passphrase_file).read_bytes().strip() if passphrase_file else None
    loaded = keys.load_private_key((KEYS_DIR / name).read_bytes(), passphrase)
    public = serialization.load_pem_public_key(
        (KEYS_DIR / "collect-gen-rsa2048.pub.pem").read_bytes()
    )
    assert keys.fingerprint(loaded) == keys.fingerprint(public)


def test_load_private_key__central_archive__same_as_recovered_pem():
    """Should open ODK Central's managed-key archive with its passphrase."""
    archive = (KEYS_DIR / "central-managed.archive.json").read_bytes()
    passphrase = (KEYS_DIR / "central-managed.passphrase.txt").read_bytes().strip()
    loaded = keys.load_private_key(archive, passphrase)
    expected = keys.load_private_key((KEYS_DIR / "central-managed.pkcs8.pem").read_bytes())
    assert keys.fingerprint(loaded) == keys.fingerprint(expected)
    with pytest.raises(WrongPassphraseError):
        keys.load_private_key(archive, b"not the passphrase")


def test_load_private_key__garbage__format_error():
    """Should say the file is not a key."""
    with pytest.raises(KeyFormatError):
        keys.load_private_key(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")


def test_generate_private_key__bad_size__refused():
    """Should refuse sizes outside 2048..4096."""
    with pytest.raises(KeySizeError):
        keys.generate_private_key(1024)


def test_public_key_b64__xform_form__der_spki(key):
    """Should export base64 DER SubjectPublicKeyInfo, loadable as X.509 SPKI."""
    b64 = keys.public_key_b64(key)
    loaded = serialization.load_der_public_key(base64.b64decode(b64))
    assert keys.fingerprint(loaded) == keys.fingerprint(key)
    assert keys.fingerprint(keys.load_public_key(b64.encode())) == keys.fingerprint(key)
    assert keys.fingerprint(keys.load_public_key(keys.public_key_pem(key))) == keys.fingerprint(key)


def test_load_private_key__traditional_encrypted_pkcs1__with_passphrase(key):
    """Should open an OpenSSL 'Proc-Type: 4,ENCRYPTED' PKCS#1 PEM, and refuse it without."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.BestAvailableEncryption(b"legacy passphrase"),
    )
    assert b"Proc-Type: 4,ENCRYPTED" in pem
    loaded = keys.load_private_key(pem, b"legacy passphrase")
    assert keys.fingerprint(loaded) == keys.fingerprint(key)
    with pytest.raises(WrongPassphraseError):
        keys.load_private_key(pem, None)
    with pytest.raises(WrongPassphraseError):
        keys.load_private_key(pem, b"other passphrase")


def test_load_private_key__passphrase_for_plain_key__ignored(key):
    """Should load an unencrypted PEM even when a passphrase is supplied."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    assert keys.fingerprint(keys.load_private_key(pem, b"unused")) == keys.fingerprint(key)


def test_load_private_key__small_or_non_rsa__refused():
    """Should refuse 1024-bit RSA (KeySizeError) and EC keys (KeyFormatError)."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    def pem(k):
        return k.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    with pytest.raises(KeySizeError):
        keys.load_private_key(pem(rsa.generate_private_key(65537, 1024)))  # noqa: S505
    with pytest.raises(KeyFormatError, match="RSA"):
        keys.load_private_key(pem(ec.generate_private_key(ec.SECP256R1())))


def test_load_private_key__errors__never_echo_key_bytes():
    """Should keep key material out of every error message."""
    body = base64.b64encode(b"\x30\x82" + b"A" * 60).decode()
    bogus = f"-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----\n".encode()
    with pytest.raises(KeyFormatError) as err:
        keys.load_private_key(bogus)
    assert body[:16] not in str(err.value)
    archive = (KEYS_DIR / "central-managed.archive.json").read_bytes()
    with pytest.raises(WrongPassphraseError) as err:
        keys.load_private_key(archive, b"wrong wrong wrong")
    assert "privkey" not in str(err.value) and "{" not in str(err.value)


_KEYISH = [
    b"{",
    b"}",
    b'"salt": "AA==", ',
    b'"iv": "AA==", ',
    b'"iv": "AAAAAAAAAAAAAAAAAAAAAA==", ',
    b'"privkey": "AAAA"',
    b"-----BEGIN RSA PRIVATE KEY-----\n",
    b"-----BEGIN ENCRYPTED PRIVATE KEY-----\n",
    b"-----BEGIN PUBLIC KEY-----\n",
    b"Proc-Type: 4,ENCRYPTED\n",
    b"MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA\n",
    b"-----END RSA PRIVATE KEY-----\n",
    b"-----END PUBLIC KEY-----\n",
    b"\xff",
]


@settings(max_examples=200, deadline=None)
@given(
    data=st.one_of(st.binary(max_size=120), st.lists(st.sampled_from(_KEYISH)).map(b"".join)),
    passphrase=st.one_of(st.none(), st.just(b"some passphrase")),
)
def test_load_keys__arbitrary_bytes__only_protocol_errors(data, passphrase):
    """Should answer any key file with a key or a ProtocolError (one clear line, no traceback)."""
    for load in (
        lambda: keys.load_private_key(data, passphrase),
        lambda: keys.load_public_key(data),
    ):
        try:
            load()
        except ProtocolError as err:
            assert str(err)
