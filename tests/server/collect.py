"""Speak to the server the way ODK Collect does (headers, deviceID, OkHttp-style multipart).

Usable with the Flask test client (``CollectActions(client, base)``) and, through
:func:`multipart_body`, with ``requests`` against a real gunicorn.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

USER_AGENT = "org.odk.collect.android/v2026.3.0 Dalvik/2.1.0 (Linux; U; Android 14; Pixel 7)"
DEVICE_ID = "collect:Xa7bC9dE1fG3hJ5k"


def collect_headers() -> dict[str, str]:
    """Headers Collect puts on every request (§1.1); Date is deliberately in Collect's odd format."""
    return {
        "User-Agent": USER_AGENT,
        "X-OpenRosa-Version": "1.0",
        "Date": "Thu, 26 Nov 2026 09:19:05 GMT",
    }


def with_device_id(url: str) -> str:
    """Append ``deviceID`` like ``Uri.appendQueryParameter`` (percent-encoded colon)."""
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}deviceID={DEVICE_ID.replace(':', '%3A')}"


def multipart_body(
    xml: bytes,
    *,
    xml_filename: str = "instance.xml",
    files: dict[str, bytes] | None = None,
    incomplete: bool = False,
    boundary: str | None = None,
) -> tuple[bytes, str]:
    """An OkHttp ``MultipartBody.FORM`` as Collect builds it: returns (body, content type)."""
    boundary = boundary or str(uuid.uuid4())
    out = bytearray()

    def part(headers: list[str], data: bytes) -> None:
        out.extend(f"--{boundary}\r\n".encode())
        for h in headers:
            out.extend(h.encode("utf-8") + b"\r\n")
        out.extend(f"Content-Length: {len(data)}\r\n\r\n".encode())
        out.extend(data + b"\r\n")

    part(
        [
            f'Content-Disposition: form-data; name="xml_submission_file"; filename="{xml_filename}"',
            "Content-Type: text/xml",
        ],
        xml,
    )
    for name, data in (files or {}).items():
        part(
            [
                f'Content-Disposition: form-data; name="{name}"; filename="{name}"',
                "Content-Type: application/octet-stream",
            ],
            data,
        )
    if incomplete:
        part(['Content-Disposition: form-data; name="*isIncomplete*"'], b"yes")
    out.extend(f"--{boundary}--\r\n".encode())
    return bytes(out), f"multipart/form-data; boundary={boundary}"


@dataclass(slots=True)
class Vector:
    """One case of shared/vectors with an ``upload.multipart``."""

    name: str
    path: Path
    expected: dict[str, Any]
    body: bytes
    content_type: str
    form_xml: bytes
    manifest_xml: bytes
    enc_files: dict[str, bytes] = field(default_factory=dict)


def load_vectors(shared: Path) -> list[Vector]:
    """Every vector case that has a recorded Collect upload."""
    out = []
    root = shared / "vectors"
    for case in sorted(root.iterdir()) if root.is_dir() else []:
        upload = case / "upload.multipart"
        if not upload.is_file():
            continue
        expected = json.loads((case / "expected.json").read_text())
        enc = {p.name: p.read_bytes() for p in case.glob("*.enc")}
        out.append(
            Vector(
                name=case.name,
                path=case,
                expected=expected,
                body=upload.read_bytes(),
                content_type=expected["upload"]["content_type_header"],
                form_xml=(case / "form.xml").read_bytes(),
                manifest_xml=(case / "submission.xml").read_bytes(),
                enc_files=enc,
            )
        )
    return out


class CollectActions:
    """Collect's calls against ``base`` (e.g. ``/v1/key/<token>/projects/1``) via a test client."""

    def __init__(self, client: Any, base: str, *, headers: dict[str, str] | None = None) -> None:
        self.client = client
        self.base = base.rstrip("/")
        self.extra = headers or {}

    def _path(self, url: str) -> str:
        parts = urlsplit(url)
        return parts.path + (f"?{parts.query}" if parts.query else "") if parts.scheme else url

    def get(self, url: str, **kw: Any) -> Any:
        """GET an absolute or relative URL as Collect would (deviceID appended)."""
        return self.client.get(
            with_device_id(self._path(url)), headers={**collect_headers(), **self.extra}, **kw
        )

    def form_list(self) -> Any:
        """GET formList."""
        return self.get(f"{self.base}/formList")

    def head_submission(self) -> Any:
        """HEAD /submission (the probe before each upload)."""
        return self.client.head(
            with_device_id(f"{self.base}/submission"), headers={**collect_headers(), **self.extra}
        )

    def post_raw(self, body: bytes, content_type: str, **headers: str) -> Any:
        """POST a prepared body to /submission."""
        return self.client.post(
            with_device_id(f"{self.base}/submission"),
            data=body,
            headers={**collect_headers(), **self.extra, "Content-Type": content_type, **headers},
        )

    def submit(
        self,
        xml: bytes,
        files: dict[str, bytes] | None = None,
        *,
        incomplete: bool = False,
        xml_filename: str = "instance.xml",
    ) -> Any:
        """POST a submission with its files, like OkHttpConnection.uploadSubmissionAndFiles."""
        body, ctype = multipart_body(
            xml, xml_filename=xml_filename, files=files, incomplete=incomplete
        )
        return self.post_raw(body, ctype)


def openrosa_message(resp: Any) -> str:
    """The first ``<message>`` of an OpenRosaResponse body (what Collect shows)."""
    from defusedxml import ElementTree

    root = ElementTree.fromstring(resp.data)
    for el in root.iter():
        if el.tag.rsplit("}", 1)[-1] == "message":
            return el.text or ""
    raise AssertionError("no <message> in response")


def encrypt_like_collect(
    public_key: Any, form_id: str, version: str, plaintext: bytes, media: dict[str, bytes]
) -> tuple[bytes, dict[str, bytes]]:
    """Encrypt like Collect's EncryptionUtils (OAEP-SHA256 key, AES-256-CFB128 + PKCS#7).

    Returns (manifest bytes, {"x.enc": ciphertext}) with a fresh instanceID; media are encrypted
    in dict order, then submission.xml (IV index = position), as openrosa.md §9.2 describes.
    """
    from cryptography.hazmat.primitives import hashes, padding
    from cryptography.hazmat.primitives.asymmetric import padding as apad
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

    try:
        from cryptography.hazmat.decrepit.ciphers.modes import CFB
    except ImportError:  # older cryptography
        from cryptography.hazmat.primitives.ciphers.modes import CFB

    instance_id = f"uuid:{uuid.uuid4()}"
    key = secrets.token_bytes(32)
    oaep = apad.OAEP(mgf=apad.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    enc_key = base64.b64encode(public_key.encrypt(key, oaep)).decode()
    seed = bytearray(hashlib.md5(instance_id.encode() + key, usedforsecurity=False).digest())
    files = {}
    sig_lines = [form_id, version, enc_key, instance_id]
    for i, (name, data) in enumerate([*media.items(), ("submission.xml", plaintext)]):
        seed[i % 16] = (seed[i % 16] + 1) % 256
        padder = padding.PKCS7(128).padder()
        enc = Cipher(algorithms.AES(key), CFB(bytes(seed))).encryptor()
        files[name + ".enc"] = enc.update(padder.update(data) + padder.finalize()) + enc.finalize()
        sig_lines.append(f"{name}::{hashlib.md5(data, usedforsecurity=False).hexdigest()}")
    digest = hashlib.md5(("\n".join(sig_lines) + "\n").encode(), usedforsecurity=False).digest()
    signature = base64.b64encode(public_key.encrypt(digest, oaep)).decode()
    media_xml = "".join(f"<media><file>{n}.enc</file></media>\n" for n in media)
    manifest = (
        f'<data id="{form_id}" version="{version}" encrypted="yes" '
        'xmlns="http://www.opendatakit.org/xforms/encrypted">'
        f"<base64EncryptedKey>{enc_key}</base64EncryptedKey>"
        '<orx:meta xmlns:orx="http://openrosa.org/xforms">'
        f"<orx:instanceID>{instance_id}</orx:instanceID></orx:meta>\n{media_xml}"
        "<encryptedXmlFile>submission.xml.enc</encryptedXmlFile>"
        f"<base64EncryptedElementSignature>{signature}</base64EncryptedElementSignature></data>"
    ).encode()
    return manifest, files
