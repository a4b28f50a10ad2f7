"""Access to the shared ODK encryption vectors (../shared/vectors, read-only)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import SHARED_DIR

VECTORS_DIR = SHARED_DIR / "vectors"
KEYS_DIR = VECTORS_DIR / "KEYS"


@dataclass(frozen=True)
class Vector:
    """One case directory: manifest, ciphertexts, expected plaintext and metadata."""

    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def expected(self) -> dict:
        return json.loads((self.path / "expected.json").read_text())

    @property
    def manifest(self) -> bytes:
        return (self.path / "submission.xml").read_bytes()

    @property
    def key_pem(self) -> bytes:
        key = self.expected["key"]
        rel = key["private_pem"] if isinstance(key, dict) else key
        return (VECTORS_DIR / rel).read_bytes()

    def files(self) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in self.path.glob("*.enc")}

    def plaintext(self, name: str) -> bytes | None:
        p = self.path / "plaintext" / name
        return p.read_bytes() if p.exists() else None


def decryptable_vectors() -> list[Vector]:
    """Every case with a manifest, ciphertext and key."""
    if not VECTORS_DIR.is_dir():
        return []
    out = []
    for case in sorted(VECTORS_DIR.iterdir()):
        if (case / "submission.xml.enc").exists() and (case / "expected.json").exists():
            out.append(Vector(case))
    return out
