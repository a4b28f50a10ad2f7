"""Encrypted submissions, byte-exact with ODK Collect (openrosa.md §9, vectors/README.md).

Recipe (Collect ``EncryptionUtils``):

* a random 256-bit AES key, wrapped with RSA-OAEP using SHA-256 for both the OAEP hash and MGF1
  (BouncyCastle's ``OAEPWithSHA256AndMGF1Padding``), base64 without line breaks;
* per file, AES-256-CFB128 with PKCS#7 padding applied even though CFB needs none, so every
  ``.enc`` is ``16 * (n // 16 + 1)`` bytes;
* IVs: ``seed = MD5(UTF-8(instanceID) + aes_key)``; before the i-th file ``seed[i % 16] += 1``
  (cumulatively, mod 256) and the IV is a copy of the seed. File order is the manifest's
  ``media/file`` order, then ``submission.xml.enc`` last;
* the signature is RSA-OAEP (same parameters) of the raw MD5 of a text listing form id,
  version (only if any), the encrypted key, the instanceID, then ``name::md5hex`` for each
  plaintext media file and ``submission.xml::md5hex``, each line ended by ``\\n``.

Enketo (the web-form client) follows the same recipe, but from 2018 until its August 2025
fix it took the two MD5s of the signature (of ``submission.xml`` and of the signature text)
over the JavaScript string instead of its UTF-8 bytes; :func:`js_string_md5` reproduces that
digest, and a signature that matches it is as VALID as Collect's (the "signature" is only
encrypted with the public key, so it proves integrity, never origin, either way).

Decrypting never needs a whole file in memory: :func:`decrypt_stream` works chunk by chunk and
keeps only the last block back to check the padding.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import BinaryIO
from xml.sax.saxutils import escape, quoteattr

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

try:  # cryptography >= 47 moved CFB to "decrepit"; it leaves primitives in 49
    from cryptography.hazmat.decrepit.ciphers.modes import CFB
except ImportError:  # pragma: no cover - older cryptography
    from cryptography.hazmat.primitives.ciphers.modes import CFB

from sync_protocol.constants import (
    ENC_SUFFIX,
    ENCRYPTED_NS,
    ENCRYPTED_XML_FILE,
    OPENROSA_XFORMS_NS,
    SUBMISSION_XML,
)
from sync_protocol.envelope import EncryptedEnvelope
from sync_protocol.errors import DecryptionError, MissingFileError, SignatureError

__all__ = [
    "CHUNK_SIZE",
    "ENCRYPTED_NS",
    "DecryptedSubmission",
    "SignatureStatus",
    "SubmissionDecryptor",
    "decrypt_bytes",
    "decrypt_stream",
    "decrypt_submission",
    "encrypt_submission",
    "file_ivs",
    "js_string_md5",
    "plain_name",
    "render_manifest",
    "signature_source",
    "unwrap_key",
    "verify_signature",
]

CHUNK_SIZE = 1 << 20
_BLOCK = 16
_OAEP = asym_padding.OAEP(
    mgf=asym_padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None
)


class SignatureStatus(enum.Enum):
    """Outcome of checking ``base64EncryptedElementSignature``."""

    VALID = "valid"
    INVALID = "invalid"
    #: a file the signature covers is missing, or the envelope carries no signature
    CANNOT_VERIFY = "cannot-verify"


@dataclass(slots=True)
class DecryptedSubmission:
    """Plaintext of one submission. Only trust it when ``signature`` is VALID."""

    xml: bytes
    #: plaintext name (``x.jpg``) -> bytes, in manifest order
    media: dict[str, bytes] = field(default_factory=dict)
    signature: SignatureStatus = SignatureStatus.CANNOT_VERIFY

    def require_valid(self) -> DecryptedSubmission:
        """Return self if the signature is VALID, else raise :class:`SignatureError`.

        The one-line guard for code that is about to use the plaintext as good data.
        """
        if self.signature is SignatureStatus.INVALID:
            raise SignatureError(
                "The submission's signature does not match its files: they were altered in "
                "transit or storage, or do not belong together."
            )
        if self.signature is not SignatureStatus.VALID:
            raise SignatureError(
                "The submission's signature cannot be checked (a file is missing or the "
                "manifest carries no signature)."
            )
        return self


# --------------------------------------------------------------------------- primitives
def unwrap_key(private_key: rsa.RSAPrivateKey, encrypted_key_b64: str) -> bytes:
    """Recover the 32-byte AES key of a submission.

    :raises DecryptionError: wrong key, or not a Collect-wrapped AES-256 key
    """
    try:
        wrapped = base64.b64decode(encrypted_key_b64, validate=True)
        aes_key = private_key.decrypt(wrapped, _OAEP)
    except ValueError as err:
        raise DecryptionError(
            "The submission's key cannot be opened with this project's private key "
            "(wrong key, or the data is damaged)."
        ) from err
    if len(aes_key) != 32:
        raise DecryptionError("The submission's wrapped key is not an AES-256 key.")
    return aes_key


def file_ivs(instance_id: str, aes_key: bytes, count: int) -> list[bytes]:
    """The IVs of the first ``count`` files, with Collect's cumulative increments."""
    seed = bytearray(hashlib.md5(instance_id.encode("utf-8") + aes_key).digest())  # noqa: S324
    ivs = []
    for i in range(count):
        seed[i % 16] = (seed[i % 16] + 1) % 256
        ivs.append(bytes(seed))
    return ivs


def decrypt_stream(
    src: BinaryIO,
    dst: BinaryIO,
    aes_key: bytes,
    iv: bytes,
    *,
    chunk_size: int = CHUNK_SIZE,
    digest: bool = True,
) -> tuple[int, str | None]:
    """Decrypt one ``.enc`` file from ``src`` into ``dst`` without holding it in memory.

    Memory use is two ``chunk_size`` buffers whatever the file size.

    :param digest: compute the plaintext MD5 the signature check needs. MD5 costs several
        times the AES itself, so re-serving an attachment whose submission was already
        verified may pass False.
    :return: (plaintext size, lowercase MD5 hex of the plaintext or None without ``digest``)
    :raises DecryptionError: truncated ciphertext or bad PKCS#7 padding
    """
    decryptor = Cipher(algorithms.AES(aes_key), CFB(iv)).decryptor()
    md5 = hashlib.md5() if digest else None  # noqa: S324 - Collect's signature format is MD5
    # Two buffers reused for the whole file: no per-chunk allocation (large allocations are
    # fresh mmaps, and their page faults cost more than the AES itself).
    # The output buffer keeps a one-block slot in front of the decrypted chunk: the block held
    # back from the previous chunk goes there, so each chunk is one contiguous write.
    inbuf = bytearray(chunk_size)
    outbuf = bytearray(_BLOCK + chunk_size + _BLOCK)
    inview, outview = memoryview(inbuf), memoryview(outbuf)
    body = outview[_BLOCK:]
    readinto = getattr(src, "readinto", None)
    held = b""  # the last block is held back until we know it ends the file
    size = 0
    total_in = 0
    while True:
        if readinto is not None:
            n = readinto(inbuf) or 0
            data = inview[:n] if n else b""
        else:
            data = src.read(chunk_size)
            n = len(data)
        if not n:
            break
        total_in += n
        m = decryptor.update_into(data, body)
        if m >= _BLOCK:
            first = _BLOCK - len(held)
            outview[first:_BLOCK] = held
            part = outview[first:m]  # held + all but the last block of this chunk
            held = bytes(outview[m : m + _BLOCK])
        else:  # a short read: keep at most one block back
            joined = held + bytes(body[:m])
            part = joined[:-_BLOCK] if len(joined) > _BLOCK else b""
            held = joined[-_BLOCK:]
        if part:
            dst.write(part)
            if md5 is not None:
                md5.update(part)
            size += len(part)
    held += decryptor.finalize()
    tail = _unpad(held, total_in)
    if tail:
        dst.write(tail)
        if md5 is not None:
            md5.update(tail)
        size += len(tail)
    return size, md5.hexdigest() if md5 is not None else None


def _unpad(last: bytes, ciphertext_size: int) -> bytes:
    """Check Collect's PKCS#7 padding on the last plaintext block(s); return the data part."""
    if ciphertext_size == 0 or ciphertext_size % _BLOCK or len(last) < _BLOCK:
        raise DecryptionError(
            "An encrypted file is truncated or damaged (its length is not whole AES blocks)."
        )
    pad = last[-1]
    if not 1 <= pad <= _BLOCK or last[-pad:] != bytes([pad]) * pad:
        raise DecryptionError("An encrypted file cannot be decrypted (bad padding).")
    return last[:-pad]


def decrypt_bytes(ciphertext: bytes, aes_key: bytes, iv: bytes) -> bytes:
    """Decrypt one small ``.enc`` held in memory (see :func:`decrypt_stream` for large ones).

    :raises DecryptionError: truncated ciphertext or bad PKCS#7 padding
    """
    decryptor = Cipher(algorithms.AES(aes_key), CFB(iv)).decryptor()
    plain = decryptor.update(ciphertext) + decryptor.finalize()
    return _unpad(plain, len(ciphertext))


def _encrypt_bytes(plaintext: bytes, aes_key: bytes, iv: bytes) -> bytes:
    pad = _BLOCK - len(plaintext) % _BLOCK
    encryptor = Cipher(algorithms.AES(aes_key), CFB(iv)).encryptor()
    return encryptor.update(plaintext + bytes([pad]) * pad) + encryptor.finalize()


# --------------------------------------------------------------------------- signature
def signature_source(
    *,
    form_id: str,
    version: str | None,
    encrypted_key: str,
    instance_id: str,
    media_md5: list[tuple[str, str]],
    xml_md5: str,
) -> str:
    """The text whose MD5 Collect encrypts as ``base64EncryptedElementSignature``.

    :param media_md5: ``(plaintext name without .enc, md5 hex)`` in manifest order
    """
    lines = [form_id]
    if version is not None:  # Collect: omitted only when null; an empty version is a line
        lines.append(version)
    lines += [encrypted_key, instance_id]
    lines += [f"{name}::{digest}" for name, digest in media_md5]
    # literally "submission.xml", whatever name the manifest gives the encrypted XML
    lines.append(f"{SUBMISSION_XML}::{xml_md5}")
    return "".join(line + "\n" for line in lines)


def verify_signature(private_key: rsa.RSAPrivateKey, signature_b64: str, source: str) -> bool:
    """True when ``signature_b64`` is Collect's encrypted MD5 of ``source``."""
    got = _signature_digest(private_key, signature_b64)
    expected = hashlib.md5(source.encode("utf-8")).digest()  # noqa: S324
    return got is not None and hmac.compare_digest(got, expected)


def _signature_digest(private_key: rsa.RSAPrivateKey, signature_b64: str) -> bytes | None:
    """The MD5 digest ``base64EncryptedElementSignature`` carries, or None if it won't open."""
    try:
        return private_key.decrypt(base64.b64decode(signature_b64, validate=True), _OAEP)
    except ValueError:
        return None


def js_string_md5(text: str) -> bytes | None:
    """MD5 as node-forge computes it over a JavaScript string given without an encoding.

    Enketo before August 2025 hashed strings that way: forge reads the string's UTF-16 code
    units four at a time into a 32-bit word, ``u0 ^ u1 << 8 ^ u2 << 16 ^ u3 << 24``, so a unit
    above 0xFF spills its high byte onto the next byte of the word (dropped off the end of
    the word), and the length counts code units. For ASCII text this is the ordinary MD5.

    :return: the digest, or None in the one case an ordinary MD5 cannot express (the last
        code unit is above 0xFF and spills into the MD5 padding: never the case for XML or
        for the signature text, which end in ``>`` and a newline)
    """
    raw = text.encode("utf-16-le", "surrogatepass")
    low, high = raw[0::2], raw[1::2]
    n = len(low)
    if not any(high):
        return hashlib.md5(low).digest()  # noqa: S324 - Enketo's signature format is MD5
    if n % 4 and high[-1]:
        return None
    spill = bytearray(n)  # the high byte of unit i lands on byte i + 1 of the same word
    spill[1:] = high[:-1]
    spill[0::4] = bytes(len(range(0, n, 4)))
    packed = (int.from_bytes(low, "big") ^ int.from_bytes(spill, "big")).to_bytes(n, "big")
    return hashlib.md5(packed).digest()  # noqa: S324


def plain_name(envelope: EncryptedEnvelope, enc_name: str) -> str:
    """The plaintext name of an encrypted file: ``submission.xml`` for the XML, else minus .enc."""
    if enc_name == envelope.encrypted_xml_file:
        return SUBMISSION_XML
    return enc_name.removesuffix(ENC_SUFFIX)


# --------------------------------------------------------------------------- submissions
class SubmissionDecryptor:
    """Streaming decryption of one encrypted submission, file by file, then its signature.

    The AES key is unwrapped once. Files may be decrypted in any order (each has a fixed IV
    index from the manifest); the plaintext MD5 of each is recorded for the signature. The
    server uses it for on-demand media decryption, the CLI for whole submissions::

        dec = SubmissionDecryptor(envelope, private_key)   # DecryptionError: wrong key
        for name in envelope.expected_files:
            with open_src(name) as src, open_dst(dec.plain_name(name)) as dst:
                dec.decrypt_file(name, src, dst)           # DecryptionError: damaged file
        dec.signature_status()                             # VALID / INVALID / CANNOT_VERIFY
    """

    __slots__ = ("_aes_key", "_ivs", "_md5", "_private_key", "_xml", "envelope")

    def __init__(self, envelope: EncryptedEnvelope, private_key: rsa.RSAPrivateKey) -> None:
        self.envelope = envelope
        self._private_key = private_key
        self._aes_key = unwrap_key(private_key, envelope.encrypted_key)
        names = envelope.expected_files
        ivs = file_ivs(envelope.instance_id, self._aes_key, len(names))
        self._ivs = dict(zip(names, ivs, strict=True))
        self._md5: dict[str, str] = {}
        #: the plaintext XML, kept only to check a pre-2025 Enketo signature (see js_string_md5)
        self._xml: bytes | None = None

    def __repr__(self) -> str:  # never show the AES key
        return f"<SubmissionDecryptor {self.envelope.instance_id}>"

    def plain_name(self, enc_name: str) -> str:
        """Plaintext name of ``enc_name`` (``submission.xml`` for the encrypted XML)."""
        return plain_name(self.envelope, enc_name)

    def decrypt_file(
        self,
        enc_name: str,
        src: BinaryIO,
        dst: BinaryIO,
        *,
        chunk_size: int = CHUNK_SIZE,
        digest: bool = True,
    ) -> int:
        """Decrypt the file the manifest calls ``enc_name`` from ``src`` into ``dst``, in chunks.

        :param digest: False skips the MD5 (re-serving an already verified attachment); the
            file then does not count towards :meth:`signature_status`
        :return: the plaintext size
        :raises DecryptionError: the manifest does not list ``enc_name``, or it is damaged
        """
        iv = self._ivs.get(enc_name)
        if iv is None:
            raise DecryptionError("The file is not listed in the submission's manifest.")
        keep = _Keep(dst) if digest and enc_name == self.envelope.encrypted_xml_file else None
        size, md5 = decrypt_stream(
            src, keep or dst, self._aes_key, iv, chunk_size=chunk_size, digest=digest
        )
        if md5 is not None:
            self._md5[enc_name] = md5
        if keep is not None:
            self._xml = keep.kept()
        return size

    def decrypt_bytes(self, enc_name: str, ciphertext: bytes) -> bytes:
        """In-memory :meth:`decrypt_file` for small files."""
        iv = self._ivs.get(enc_name)
        if iv is None:
            raise DecryptionError("The file is not listed in the submission's manifest.")
        plain = decrypt_bytes(ciphertext, self._aes_key, iv)
        self._md5[enc_name] = hashlib.md5(plain).hexdigest()  # noqa: S324
        if enc_name == self.envelope.encrypted_xml_file:
            self._xml = plain
        return plain

    def signature_status(self) -> SignatureStatus:
        """Check ``base64EncryptedElementSignature`` over every file decrypted so far.

        CANNOT_VERIFY until every file of the manifest has been decrypted, or when the
        manifest carries no signature. Collect's digest and the one Enketo made before
        August 2025 (:func:`js_string_md5`) are both VALID.
        """
        env = self.envelope
        if not env.signature or any(n not in self._md5 for n in env.expected_files):
            return SignatureStatus.CANNOT_VERIFY
        got = _signature_digest(self._private_key, env.signature)
        if got is None:
            return SignatureStatus.INVALID
        fields = {
            "form_id": env.form_id,
            "version": env.version,
            "encrypted_key": env.encrypted_key,
            "instance_id": env.instance_id,
            "media_md5": [(self.plain_name(n), self._md5[n]) for n in env.media],
        }
        source = signature_source(**fields, xml_md5=self._md5[env.encrypted_xml_file])
        expected = hashlib.md5(source.encode("utf-8")).digest()  # noqa: S324
        if hmac.compare_digest(got, expected):
            return SignatureStatus.VALID
        if self._legacy_enketo_digest(fields, source) == got:
            return SignatureStatus.VALID
        return SignatureStatus.INVALID

    def _legacy_enketo_digest(self, fields: dict, source: str) -> bytes | None:
        """The digest Enketo (2018 to July 2025) would have signed, when it differs."""
        xml_md5 = self._md5[self.envelope.encrypted_xml_file]
        if self._xml is not None and not self._xml.isascii():
            try:
                text = self._xml.decode("utf-8")
            except UnicodeDecodeError:  # Enketo always encrypted UTF-8
                return None
            legacy_xml = js_string_md5(text)
            if legacy_xml is None:
                return None
            xml_md5 = legacy_xml.hex()
        elif source.isascii():
            return None  # both digests are the same: nothing else to try
        return js_string_md5(signature_source(**fields, xml_md5=xml_md5))


class _Keep:
    """Passes writes on to ``dst`` and keeps a copy, up to :data:`_KEEP_LIMIT` bytes."""

    __slots__ = ("_buf", "_dst")

    def __init__(self, dst: BinaryIO) -> None:
        self._dst = dst
        self._buf: bytearray | None = bytearray()

    def write(self, data: bytes) -> int:
        if self._buf is not None:
            if len(self._buf) + len(data) > _KEEP_LIMIT:
                self._buf = None
            else:
                self._buf += data
        return self._dst.write(data)

    def kept(self) -> bytes | None:
        return bytes(self._buf) if self._buf is not None else None


#: the largest decrypted submission XML kept to check a pre-2025 Enketo signature
_KEEP_LIMIT = 64 << 20


def decrypt_submission(
    envelope: EncryptedEnvelope,
    private_key: rsa.RSAPrivateKey,
    files: Mapping[str, bytes],
) -> DecryptedSubmission:
    """Decrypt a whole submission held in memory and check its signature.

    Media missing from ``files`` are skipped and make the signature CANNOT_VERIFY; a missing
    ``submission.xml.enc`` is an error. A submission whose signature is INVALID is returned so
    the caller can quarantine it with the reason, never to be used as good data.

    :raises MissingFileError: the encrypted XML file was not received
    :raises DecryptionError: wrong key, truncated or damaged ciphertext
    """
    if envelope.encrypted_xml_file not in files:
        raise MissingFileError(
            f"The encrypted data file {envelope.encrypted_xml_file} has not been received yet."
        )
    decryptor = SubmissionDecryptor(envelope, private_key)
    media = {
        decryptor.plain_name(name): decryptor.decrypt_bytes(name, files[name])
        for name in envelope.media
        if name in files
    }
    xml = decryptor.decrypt_bytes(envelope.encrypted_xml_file, files[envelope.encrypted_xml_file])
    return DecryptedSubmission(xml=xml, media=media, signature=decryptor.signature_status())


def render_manifest(
    *,
    form_id: str,
    version: str | None,
    instance_id: str,
    encrypted_key: str,
    media: list[str],
    signature: str,
) -> bytes:
    """The manifest exactly as Collect's KXmlSerializer writes it (no declaration, raw UTF-8)."""
    attrs = f"id={quoteattr(form_id)}"
    if version is not None:
        attrs += f" version={quoteattr(version)}"
    parts = [
        f'<data {attrs} encrypted="yes" xmlns="{ENCRYPTED_NS}">',
        f"<base64EncryptedKey>{encrypted_key}</base64EncryptedKey>",
        f'<orx:meta xmlns:orx="{OPENROSA_XFORMS_NS}">',
        f"<orx:instanceID>{escape(instance_id)}</orx:instanceID></orx:meta>\n",
    ]
    parts += [f"<media><file>{escape(name)}</file></media>\n" for name in media]
    parts += [
        f"<encryptedXmlFile>{ENCRYPTED_XML_FILE}</encryptedXmlFile>",
        f"<base64EncryptedElementSignature>{signature}</base64EncryptedElementSignature>",
        "</data>",
    ]
    return "".join(parts).encode("utf-8")


def encrypt_submission(
    plaintext_xml: bytes,
    public_key: rsa.RSAPublicKey | rsa.RSAPrivateKey,
    *,
    form_id: str,
    version: str | None,
    instance_id: str,
    media: Mapping[str, bytes] | None = None,
    aes_key: bytes | None = None,
) -> tuple[bytes, dict[str, bytes]]:
    """Encrypt a submission as Collect does at finalisation.

    Used by the demo seed, tests and benchmarks to produce what a phone would upload.

    :param media: plaintext media by name, in the order Collect would list them
    :param aes_key: fix the AES key (tests reproducing a vector); random otherwise
    :return: (manifest bytes for ``xml_submission_file``, ``{"x.jpg.enc": ..., "submission.xml.enc": ...}``)
    """
    if isinstance(public_key, rsa.RSAPrivateKey):
        public_key = public_key.public_key()
    media = dict(media or {})
    aes_key = aes_key if aes_key is not None else os.urandom(32)
    encrypted_key = base64.b64encode(public_key.encrypt(aes_key, _OAEP)).decode("ascii")
    ivs = file_ivs(instance_id, aes_key, len(media) + 1)
    files: dict[str, bytes] = {}
    media_md5 = []
    for index, (name, data) in enumerate(media.items()):
        files[name + ENC_SUFFIX] = _encrypt_bytes(data, aes_key, ivs[index])
        media_md5.append((name, hashlib.md5(data).hexdigest()))  # noqa: S324
    files[ENCRYPTED_XML_FILE] = _encrypt_bytes(plaintext_xml, aes_key, ivs[-1])
    source = signature_source(
        form_id=form_id,
        version=version,
        encrypted_key=encrypted_key,
        instance_id=instance_id,
        media_md5=media_md5,
        xml_md5=hashlib.md5(plaintext_xml).hexdigest(),  # noqa: S324
    )
    digest = hashlib.md5(source.encode("utf-8")).digest()  # noqa: S324
    signature = base64.b64encode(public_key.encrypt(digest, _OAEP)).decode("ascii")
    manifest = render_manifest(
        form_id=form_id,
        version=version,
        instance_id=instance_id,
        encrypted_key=encrypted_key,
        media=[n + ENC_SUFFIX for n in media],
        signature=signature,
    )
    return manifest, files
