"""RSA key pairs for encrypted forms: generation, passphrase storage, loading, export.

Storage format
    A private key is only ever stored as a standard PKCS#8 ``ENCRYPTED PRIVATE KEY`` PEM using
    PBES2 with **PBKDF2-HMAC-SHA256 at 600,000 iterations** (the OWASP 2023 figure for
    PBKDF2-SHA256) and AES-256-CBC. cryptography's ``BestAvailableEncryption`` uses only 2,048
    PBKDF2 iterations for PKCS#8, and offers no way to raise it, so the (small, fixed) DER
    structure is assembled here; the result is an ordinary PKCS#8 file that OpenSSL and
    cryptography open with the passphrase. A memory-hard KDF (scrypt) inside PBES2 is not
    readable by cryptography's loader, so PBKDF2 at a high count was chosen for portability.

Loading accepts PKCS#1 (``RSA PRIVATE KEY``) and PKCS#8 PEMs, encrypted or not, and ODK
Central's managed-key archive (JSON ``{pubkey, privkey, salt, iv}``: PBKDF2-SHA256 at 128,000
iterations into AES-256-CBC over the PKCS#8 PEM; openrosa.md §9.6).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from sync_protocol.errors import KeyFormatError, KeySizeError, WrongPassphraseError

__all__ = [
    "MAX_BITS",
    "MIN_BITS",
    "PBKDF2_ITERATIONS",
    "encrypt_private_key",
    "fingerprint",
    "generate_private_key",
    "load_private_key",
    "load_public_key",
    "public_key_b64",
    "public_key_pem",
]

MIN_BITS = 2048
MAX_BITS = 4096
PBKDF2_ITERATIONS = 600_000
_CENTRAL_ITERATIONS = 128_000

# DER object identifiers used by the PKCS#8 PBES2 structure
_OID_PBES2 = "1.2.840.113549.1.5.13"
_OID_PBKDF2 = "1.2.840.113549.1.5.12"
_OID_HMAC_SHA256 = "1.2.840.113549.2.9"
_OID_AES256_CBC = "2.16.840.1.101.3.4.1.42"


def _check_size(bits: int) -> None:
    if not MIN_BITS <= bits <= MAX_BITS:
        raise KeySizeError(f"RSA keys must have {MIN_BITS} to {MAX_BITS} bits, not {bits}.")


def generate_private_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    """Generate an RSA private key (public exponent 65537).

    2048 bits is the default because ODK Central's decryptor handles only 2048-bit keys
    (openrosa.md §9.1); Collect and this server handle up to 4096.
    """
    _check_size(bits)
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


# ----------------------------------------------------------------- minimal DER encoding
def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _tlv(tag: int, body: bytes) -> bytes:
    return bytes([tag]) + _der_len(len(body)) + body


def _seq(*items: bytes) -> bytes:
    return _tlv(0x30, b"".join(items))


def _octets(data: bytes) -> bytes:
    return _tlv(0x04, data)


def _integer(n: int) -> bytes:
    body = n.to_bytes(n.bit_length() // 8 + 1, "big")
    return _tlv(0x02, body)


def _oid(dotted: str) -> bytes:
    parts = [int(p) for p in dotted.split(".")]
    out = bytearray([40 * parts[0] + parts[1]])
    for p in parts[2:]:
        chunk = [p & 0x7F]
        p >>= 7
        while p:
            chunk.append(0x80 | (p & 0x7F))
            p >>= 7
        out.extend(reversed(chunk))
    return _tlv(0x06, bytes(out))


def encrypt_private_key(key: rsa.RSAPrivateKey, passphrase: bytes) -> bytes:
    """Serialise ``key`` as a passphrase-encrypted PKCS#8 PEM (PBKDF2-SHA256 600k, AES-256-CBC).

    :raises WrongPassphraseError: the passphrase is empty
    """
    if not passphrase:
        raise WrongPassphraseError("A passphrase is required to store a private key.")
    plain_der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    salt, iv = os.urandom(16), os.urandom(16)
    kek = PBKDF2HMAC(
        algorithm=hashes.SHA256(), length=32, salt=salt, iterations=PBKDF2_ITERATIONS
    ).derive(passphrase)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plain_der) + padder.finalize()
    encryptor = Cipher(algorithms.AES(kek), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padded) + encryptor.finalize()
    null = b"\x05\x00"
    algorithm = _seq(
        _oid(_OID_PBES2),
        _seq(
            _seq(
                _oid(_OID_PBKDF2),
                _seq(
                    _octets(salt), _integer(PBKDF2_ITERATIONS), _seq(_oid(_OID_HMAC_SHA256), null)
                ),
            ),
            _seq(_oid(_OID_AES256_CBC), _octets(iv)),
        ),
    )
    der = _seq(algorithm, _octets(ciphertext))
    body = base64.encodebytes(der).decode("ascii").replace("\n", "")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return (
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\n"
        + "\n".join(lines)
        + "\n-----END ENCRYPTED PRIVATE KEY-----\n"
    ).encode("ascii")


def _load_central_archive(data: bytes, passphrase: bytes | None) -> rsa.RSAPrivateKey:
    try:
        archive = json.loads(data)
        salt = base64.b64decode(archive["salt"])
        iv = base64.b64decode(archive["iv"])
        ciphertext = base64.b64decode(archive["privkey"])
        if len(iv) != 16 or not salt or not ciphertext or len(ciphertext) % 16:
            raise ValueError("archive fields of the wrong size")
    except (ValueError, KeyError, TypeError) as err:
        raise KeyFormatError("The key archive is not an ODK Central managed-key archive.") from err
    if not passphrase:
        raise WrongPassphraseError("This key archive needs its passphrase.")
    kek = PBKDF2HMAC(
        algorithm=hashes.SHA256(), length=32, salt=salt, iterations=_CENTRAL_ITERATIONS
    ).derive(passphrase)
    decryptor = Cipher(algorithms.AES(kek), modes.CBC(iv)).decryptor()
    try:
        padded = decryptor.update(ciphertext) + decryptor.finalize()
        unpadder = padding.PKCS7(128).unpadder()
        pem = unpadder.update(padded) + unpadder.finalize()
    except ValueError as err:
        raise WrongPassphraseError("The passphrase does not open this key archive.") from err
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as err:
        raise WrongPassphraseError("The passphrase does not open this key archive.") from err
    return _as_rsa(key)


def _as_rsa(key: object) -> rsa.RSAPrivateKey:
    if not isinstance(key, rsa.RSAPrivateKey):
        raise KeyFormatError("The key is not an RSA private key; encrypted forms need RSA.")
    _check_size(key.key_size)
    return key


def load_private_key(data: bytes, passphrase: bytes | None = None) -> rsa.RSAPrivateKey:
    """Load an RSA private key from PEM (PKCS#1 or PKCS#8, encrypted or not) or a Central archive.

    :raises WrongPassphraseError: the key is encrypted and the passphrase is missing or wrong
    :raises KeyFormatError: the bytes are not a supported RSA private key
    :raises KeySizeError: the key is outside 2048 to 4096 bits
    """
    stripped = data.lstrip()
    if stripped.startswith(b"{"):
        return _load_central_archive(stripped, passphrase)
    encrypted = b"ENCRYPTED" in stripped[:200] or b"Proc-Type: 4,ENCRYPTED" in stripped
    try:
        key = serialization.load_pem_private_key(
            stripped, password=passphrase if encrypted else None
        )
    except TypeError as err:
        # cryptography says TypeError when a password is missing for an encrypted key
        raise WrongPassphraseError("This private key is protected: give its passphrase.") from err
    except (ValueError, UnsupportedAlgorithm) as err:
        if encrypted:
            raise WrongPassphraseError("The passphrase does not open this private key.") from err
        raise KeyFormatError(
            "The file is not an RSA private key in PEM form (PKCS#1 or PKCS#8)."
        ) from err
    return _as_rsa(key)


def load_public_key(data: bytes) -> rsa.RSAPublicKey:
    """Load an RSA public key from a PEM, or from the base64 DER an XForm carries."""
    stripped = data.strip()
    try:
        if stripped.startswith(b"-----"):
            key = serialization.load_pem_public_key(stripped)
        else:
            key = serialization.load_der_public_key(base64.b64decode(stripped))
    except (ValueError, UnsupportedAlgorithm) as err:
        raise KeyFormatError("The file is not an RSA public key (PEM or base64 DER).") from err
    if not isinstance(key, rsa.RSAPublicKey):
        raise KeyFormatError("The public key is not an RSA key.")
    return key


def _public(key: rsa.RSAPrivateKey | rsa.RSAPublicKey) -> rsa.RSAPublicKey:
    return key.public_key() if isinstance(key, rsa.RSAPrivateKey) else key


def _spki_der(key: rsa.RSAPrivateKey | rsa.RSAPublicKey) -> bytes:
    return _public(key).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_key_b64(key: rsa.RSAPrivateKey | rsa.RSAPublicKey) -> str:
    """Base64 of the DER SubjectPublicKeyInfo: the XForm ``base64RsaPublicKey`` value."""
    return base64.b64encode(_spki_der(key)).decode("ascii")


def public_key_pem(key: rsa.RSAPrivateKey | rsa.RSAPublicKey) -> bytes:
    """The public key as a ``BEGIN PUBLIC KEY`` PEM."""
    return _public(key).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def fingerprint(key: rsa.RSAPrivateKey | rsa.RSAPublicKey) -> str:
    """``sha256:<hex>`` of the DER SubjectPublicKeyInfo: identifies a key without revealing it."""
    return "sha256:" + hashlib.sha256(_spki_der(key)).hexdigest()
