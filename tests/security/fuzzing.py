"""Input generators shared by the CI fuzz tests and ``bench/fuzz.py``: seeds (real Collect
uploads, envelopes and plain instances) and byte-level mutations of them."""

from __future__ import annotations

import random
import uuid
from pathlib import Path

from tests.server.collect import load_vectors, multipart_body
from tests.server.forms import instance

ENVELOPE = (
    b'<?xml version="1.0"?><data id="aso" version="2026" encrypted="yes" '
    b'xmlns="http://www.opendatakit.org/xforms/encrypted"><base64EncryptedKey>QUJD</base64EncryptedKey>'
    b'<meta xmlns="http://openrosa.org/xforms"><instanceID>uuid:0f3c</instanceID></meta>'
    b"<media><file>a.jpg.enc</file></media><encryptedXmlFile>submission.xml.enc</encryptedXmlFile>"
    b"<base64EncryptedElementSignature>c2ln</base64EncryptedElementSignature></data>"
)
TOKENS = [b"<", b">", b"</", b"/>", b"&", b"&amp;", b"&#0;", b"&#xD800;", b"<!DOCTYPE x [", b'"',
          b"<!ENTITY e SYSTEM 'file:///etc/passwd'>", b"\x00", b"\xff\xfe", b"]]>", b"<![CDATA[",
          b"encrypted=\"yes\"", b"<meta>", b"<instanceID>", b"\r\n", b"--", b"; filename=\"",
          b"Content-Disposition: form-data; name=\"xml_submission_file\"", b"\r\n\r\n"]  # fmt: skip


def xml_seeds(shared: Path | None = None) -> list[bytes]:
    """Valid submission XML: plain instances, an envelope, and the shared vectors' manifests."""
    seeds = [instance(), instance(photo="p.jpg", deprecated_id="uuid:x"), ENVELOPE]
    if shared is not None:
        seeds += [v.manifest_xml for v in load_vectors(shared)]
    return seeds


def multipart_seeds(shared: Path | None = None) -> list[tuple[bytes, str]]:
    """Valid Collect uploads: (body, boundary)."""
    out = []
    for xml in xml_seeds(None):
        body, _ = multipart_body(xml, files={"p.jpg": b"\xff\xd8" * 50}, boundary="b0undary")
        out.append((body, "b0undary"))
    if shared is not None:
        for v in load_vectors(shared):
            out.append((v.body, v.content_type.split("boundary=", 1)[1].strip('"')))
    return out


def mutate(data: bytes, rng: random.Random, *, rounds: int | None = None) -> bytes:
    """Apply 1-8 random byte edits: flip, delete a span, duplicate a span, insert a token."""
    buf = bytearray(data)
    for _ in range(rounds or rng.randint(1, 8)):
        op = rng.randrange(6)
        pos = rng.randrange(len(buf) + 1)
        if op == 0 and buf:
            buf[min(pos, len(buf) - 1)] = rng.randrange(256)
        elif op == 1 and buf:
            del buf[pos : pos + rng.randint(1, 64)]
        elif op == 2 and buf:
            span = bytes(buf[pos : pos + rng.randint(1, 256)])
            buf[pos:pos] = span * rng.randint(1, 4)
        elif op == 3:
            buf[pos:pos] = rng.choice(TOKENS)
        elif op == 4:  # an id-like token, from ``rng`` so that a seed replays the same inputs
            buf[pos:pos] = uuid.UUID(int=rng.getrandbits(128), version=4).hex.encode()
        else:
            buf = buf[:pos]  # truncation: an upload cut off by the network
    return bytes(buf)
