"""Thin adapters from the server to :mod:`sync_protocol` (envelopes and keys)."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Any

from sync_protocol import keys
from sync_protocol.envelope import EncryptedEnvelope
from sync_protocol.envelope import parse_submission as parse_submission


def is_encrypted_envelope(parsed: Any) -> bool:
    """True for an encrypted envelope (manifest + ``.enc`` parts)."""
    return isinstance(parsed, EncryptedEnvelope)


@dataclass(slots=True)
class GeneratedKey:
    """A new project key pair, with only the passphrase-encrypted private key kept."""

    public_key_b64: str
    fingerprint: str
    encrypted_private_pem: bytes


def generate_project_key(passphrase: bytes) -> GeneratedKey:
    """Generate an RSA-2048 pair; return public key b64, fingerprint, encrypted PKCS#8 PEM."""
    key = keys.generate_private_key(2048)
    return GeneratedKey(
        public_key_b64=keys.public_key_b64(key),
        fingerprint=keys.fingerprint(key),
        encrypted_private_pem=keys.encrypt_private_key(key, passphrase),
    )


def fingerprint_of_b64(public_key_b64: str) -> str:
    """``sha256:<hex>`` of the DER SubjectPublicKeyInfo (same as ``sync_protocol.keys``)."""
    return "sha256:" + hashlib.sha256(base64.b64decode(public_key_b64)).hexdigest()
