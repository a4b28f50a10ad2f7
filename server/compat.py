"""Adapters to :mod:`sync_protocol` (envelope parsing, key handling).

The server calls ``sync_protocol.envelope.parse_submission`` and ``sync_protocol.keys``; while
those modules are not installed in a checkout, the small hardened fallbacks below (same return
shapes) keep the server usable. Once the library modules exist they are always preferred.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from typing import Any

from sync_protocol.errors import ProtocolError

ENCRYPTED_NS = "http://www.opendatakit.org/xforms/encrypted"


class FallbackMalformedSubmissionError(ProtocolError):
    """The submission XML is not usable."""

    code = "MALFORMED_SUBMISSION"


@dataclass(slots=True)
class _Envelope:
    form_id: str
    version: str | None
    instance_id: str
    encrypted_key: str
    signature: str | None
    media: tuple[str, ...]
    encrypted_xml_file: str


@dataclass(slots=True)
class _Plain:
    form_id: str
    version: str | None
    instance_id: str
    deprecated_id: str | None
    instance_name: str | None
    root_tag: str
    entities: tuple = ()
    root: Any = field(default=None, repr=False)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _fallback_parse(data: bytes) -> Any:
    from defusedxml import ElementTree
    from defusedxml.common import DefusedXmlException

    try:
        root = ElementTree.fromstring(data, forbid_dtd=True)
    except DefusedXmlException as err:
        raise FallbackMalformedSubmissionError(
            "The submission contains XML features this server refuses (DTD or entities)."
        ) from err
    except Exception as err:  # ParseError and friends
        raise FallbackMalformedSubmissionError(
            "The submission file is not valid XML. Try sending it again."
        ) from err
    form_id = (root.get("id") or "").strip()
    if not form_id:
        raise FallbackMalformedSubmissionError("The submission does not say which form it is for.")
    version = root.get("version")
    found: dict[str, str] = {}
    media: list[str] = []
    for el in root.iter():
        name = _local(el.tag)
        text = (el.text or "").strip()
        if name == "file" and el is not root:
            media.append(text)
        elif name not in found and text:
            found[name] = text
    instance_id = found.get("instanceID", "")
    if root.get("encrypted") == "yes" or (_local(root.tag) == "data" and ENCRYPTED_NS in root.tag):
        if not instance_id or "base64EncryptedKey" not in found:
            raise FallbackMalformedSubmissionError(
                "The encrypted submission has no instanceID or key."
            )
        return _Envelope(
            form_id=form_id,
            version=version,
            instance_id=instance_id,
            encrypted_key=found["base64EncryptedKey"],
            signature=found.get("base64EncryptedElementSignature"),
            media=tuple(m for m in media if m),
            encrypted_xml_file=found.get("encryptedXmlFile", "submission.xml.enc"),
        )
    if not instance_id:
        raise FallbackMalformedSubmissionError("The submission has no instanceID.")
    return _Plain(
        form_id=form_id,
        version=version,
        instance_id=instance_id,
        deprecated_id=found.get("deprecatedID"),
        instance_name=found.get("instanceName"),
        root_tag=_local(root.tag),
        root=root,
    )


def parse_submission(data: bytes) -> Any:
    """``sync_protocol.envelope.parse_submission`` (or the fallback above)."""
    try:
        from sync_protocol.envelope import parse_submission as parse
    except ImportError:
        parse = _fallback_parse
    return parse(data)


def is_encrypted_envelope(parsed: Any) -> bool:
    """True for an encrypted envelope (has ``encrypted_xml_file``)."""
    return hasattr(parsed, "encrypted_xml_file")


# ---------------------------------------------------------------- keys


@dataclass(slots=True)
class GeneratedKey:
    """A new project key pair, with only the passphrase-encrypted private key kept."""

    public_key_b64: str
    fingerprint: str
    encrypted_private_pem: bytes


def generate_project_key(passphrase: bytes) -> GeneratedKey:
    """Generate an RSA-2048 pair; return public key b64, fingerprint, encrypted PKCS#8 PEM."""
    try:
        from sync_protocol import keys
    except ImportError:
        keys = None  # type: ignore[assignment]
    if keys is not None:
        key = keys.generate_private_key(2048)
        try:
            public_b64 = keys.public_key_b64(key)
        except (TypeError, AttributeError):  # the helper may want the public half
            public_b64 = keys.public_key_b64(key.public_key())
        return GeneratedKey(
            public_key_b64=public_b64,
            fingerprint=fingerprint_of_b64(public_b64),
            encrypted_private_pem=keys.encrypt_private_key(key, passphrase),
        )
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase),
    )
    public_b64 = base64.b64encode(der).decode("ascii")
    return GeneratedKey(
        public_key_b64=public_b64,
        fingerprint=fingerprint_of_b64(public_b64),
        encrypted_private_pem=pem,
    )


def fingerprint_of_b64(public_key_b64: str) -> str:
    """``sha256:<hex>`` of the DER SubjectPublicKeyInfo: the one fingerprint scheme the server
    uses for project keys and form versions alike."""
    der = base64.b64decode(public_key_b64)
    return "sha256:" + hashlib.sha256(der).hexdigest()
