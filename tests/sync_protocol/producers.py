"""Encrypted submissions as producers other than Collect make them, for tests.

Written here from the producers' published algorithms (nothing copied):

* **Enketo** (the web-form client ODK Central serves; ``enketo`` monorepo,
  ``packages/enketo-express/public/js/src/module/encryptor.js`` and ``connection.js``). It
  encrypts in the browser with node-forge: the same RSA-OAEP (forge's ``mgf`` option is not
  one it reads, so MGF1 uses the OAEP hash, SHA-256), AES-CFB with PKCS#7, IV seed and
  signature lines as Collect, but

  - the manifest is built with DOM calls and ``XMLSerializer``: root
    ``<data xmlns="http://opendatakit.org/submissions" encrypted="yes" id=.. version=..>``,
    an unprefixed ``<meta xmlns="http://openrosa.org/xforms">``, one ``<media>`` per file, no
    whitespace at all;
  - the form's version is left out of both the manifest and the signature when it is empty;
  - before August 2025 (enketo commit 4aa31f21, "UTF-8 encode submission xml when creating
    MD5 hash") the MD5 of ``submission.xml`` and of the signature text were taken over the
    JavaScript *string*, not its UTF-8 bytes: forge packs UTF-16 code units into 32-bit words
    with ``charCodeAt(i) ^ charCodeAt(i+1) << 8 ^ ...``, so any non-ASCII answer gives a
    digest that no UTF-8 MD5 reproduces. ``legacy_md5=True`` makes those submissions;
  - the upload is the browser's ``FormData`` piped through enketo-express: the manifest part
    is named and file-named ``xml_submission_file``, a CSRF text field rides along, each file
    part is named after the file, and large records are split into several POSTs that each
    repeat the manifest (no ``*isIncomplete*``).

:func:`forge_string_md5` is a from-scratch MD5 fed the words forge feeds it, independent of
the server's implementation, so the two check each other.
"""

from __future__ import annotations

import base64
import hashlib
import math
import os
import struct
import uuid
from collections.abc import Sequence
from xml.sax.saxutils import escape, quoteattr

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding as apad
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

try:
    from cryptography.hazmat.decrepit.ciphers.modes import CFB
except ImportError:  # older cryptography
    from cryptography.hazmat.primitives.ciphers.modes import CFB

ODK_SUBMISSION_NS = "http://opendatakit.org/submissions"
OPENROSA_XFORMS_NS = "http://openrosa.org/xforms"
_OAEP = apad.OAEP(mgf=apad.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)

# ------------------------------------------------------------------ MD5 over a JS string
_S = [7, 12, 17, 22] * 4 + [5, 9, 14, 20] * 4 + [4, 11, 16, 23] * 4 + [6, 10, 15, 21] * 4
_K = [int(abs(math.sin(i + 1)) * 2**32) & 0xFFFFFFFF for i in range(64)]
_M32 = 0xFFFFFFFF


def _rotl(x: int, n: int) -> int:
    return ((x << n) | (x >> (32 - n))) & _M32


def _md5_words(units: list[int]) -> bytes:
    """MD5 as forge computes it over a byte-string buffer holding ``units`` (char codes)."""
    n = len(units)
    padded = [*units, 0x80] + [0] * ((55 - n) % 64)
    padded += list(struct.pack("<Q", (n * 8) & 0xFFFFFFFFFFFFFFFF))
    state = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476]
    for block in range(0, len(padded), 64):
        chunk = padded[block : block + 64]
        words = [
            (chunk[j] ^ (chunk[j + 1] << 8) ^ (chunk[j + 2] << 16) ^ (chunk[j + 3] << 24)) & _M32
            for j in range(0, 64, 4)
        ]
        _md5_block(state, words)
    return struct.pack("<4I", *state)


def _md5_block(state: list[int], w: list[int]) -> None:
    a, b, c, d = state
    for i in range(64):
        if i < 16:
            f, g = (b & c) | ((~b & _M32) & d), i
        elif i < 32:
            f, g = (d & b) | ((~d & _M32) & c), (5 * i + 1) % 16
        elif i < 48:
            f, g = b ^ c ^ d, (3 * i + 5) % 16
        else:
            f, g = c ^ (b | (~d & _M32)), (7 * i) % 16
        rotated = _rotl((a + f + _K[i] + w[g]) & _M32, _S[i])
        a, d, c, b = d, c, b, (b + rotated) & _M32
    for i, v in enumerate((a, b, c, d)):
        state[i] = (state[i] + v) & _M32


def js_units(text: str) -> list[int]:
    """The UTF-16 code units of ``text`` (what ``charCodeAt`` returns)."""
    raw = text.encode("utf-16-le", "surrogatepass")
    return [raw[i] | (raw[i + 1] << 8) for i in range(0, len(raw), 2)]


def forge_string_md5(text: str) -> bytes:
    """``forge.md.md5.create().update(text).digest()`` for a JS string (no UTF-8 step)."""
    return _md5_words(js_units(text))


# ------------------------------------------------------------------ Enketo's encryptor
def _encrypt(data: bytes, key: bytes, iv: bytes) -> bytes:
    pad = 16 - len(data) % 16
    enc = Cipher(algorithms.AES(key), CFB(iv)).encryptor()
    return enc.update(data + bytes([pad]) * pad) + enc.finalize()


def encrypt_like_enketo(
    xml: str,
    public_key: rsa.RSAPublicKey,
    *,
    form_id: str,
    version: str | None,
    instance_id: str,
    media: Sequence[tuple[str, bytes]] = (),
    legacy_md5: bool = False,
    aes_key: bytes | None = None,
) -> tuple[bytes, dict[str, bytes]]:
    """(manifest bytes, {enc name: ciphertext}) as Enketo's ``encryptRecord`` makes them.

    :param xml: the record's XML string (Enketo serialises it without a declaration)
    :param legacy_md5: Enketo before August 2025 (MD5 over the JS string, see module doc)
    """
    key = aes_key or os.urandom(32)
    enc_key = base64.b64encode(public_key.encrypt(key, _OAEP)).decode("ascii")
    seed = bytearray(hashlib.md5(instance_id.encode("utf-8") + key).digest())
    counter = 0

    def next_iv() -> bytes:
        nonlocal counter
        seed[counter % 16] = (seed[counter % 16] + 1) % 256
        counter += 1
        return bytes(seed)

    def md5hex_of_string(s: str) -> str:
        if legacy_md5:
            return forge_string_md5(s).hex()
        return hashlib.md5(s.encode("utf-8")).hexdigest()

    files: dict[str, bytes] = {}
    lines = [form_id, *([version] if version else []), enc_key, instance_id]
    for name, data in media:
        files[f"{name}.enc"] = _encrypt(data, key, next_iv())
        lines.append(f"{name}::{hashlib.md5(data).hexdigest()}")
    files["submission.xml.enc"] = _encrypt(xml.encode("utf-8"), key, next_iv())
    lines.append(f"submission.xml::{md5hex_of_string(xml)}")
    source = "\n".join(lines) + "\n"
    digest = forge_string_md5(source) if legacy_md5 else hashlib.md5(source.encode()).digest()
    signature = base64.b64encode(public_key.encrypt(digest, _OAEP)).decode("ascii")

    # XMLSerializer: attributes in the order they were set, namespace declaration first
    attrs = f'xmlns="{ODK_SUBMISSION_NS}" encrypted="yes" id={quoteattr(form_id)}'
    if version:
        attrs += f" version={quoteattr(version)}"
    out = [
        f"<data {attrs}>",
        f"<base64EncryptedKey>{enc_key}</base64EncryptedKey>",
        f'<meta xmlns="{OPENROSA_XFORMS_NS}"><instanceID>{escape(instance_id)}</instanceID></meta>',
    ]
    out += [f"<media><file>{escape(name)}.enc</file></media>" for name, _ in media]
    out += [
        "<encryptedXmlFile>submission.xml.enc</encryptedXmlFile>",
        f"<base64EncryptedElementSignature>{signature}</base64EncryptedElementSignature>",
        "</data>",
    ]
    return "".join(out).encode("utf-8"), files


def enketo_multipart(
    manifest: bytes, files: dict[str, bytes], *, csrf: str | None = "fictional-csrf-token"
) -> tuple[bytes, str]:
    """A browser ``FormData`` body as Enketo builds one batch: returns (body, content type)."""
    boundary = f"----WebKitFormBoundary{uuid.uuid4().hex[:16]}"
    out = bytearray()

    def part(disposition: str, ctype: str | None, data: bytes) -> None:
        out.extend(f"--{boundary}\r\nContent-Disposition: form-data; {disposition}\r\n".encode())
        if ctype:
            out.extend(f"Content-Type: {ctype}\r\n".encode())
        out.extend(b"\r\n" + data + b"\r\n")

    part('name="xml_submission_file"; filename="xml_submission_file"', "text/xml", manifest)
    if csrf is not None:
        part('name="__csrf"', None, csrf.encode())
    for name, data in files.items():
        quoted = name.replace('"', "%22")
        part(f'name="{quoted}"; filename="{quoted}"', "application/octet-stream", data)
    out.extend(f"--{boundary}--\r\n".encode())
    return bytes(out), f"multipart/form-data; boundary={boundary}"
