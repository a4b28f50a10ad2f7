"""Key custody: a project's private keys are usable only while an admin has unlocked them.

The unlocked keys live in this process's memory only (never on disk, never in logs) and lock
again after ``KEY_IDLE_SECONDS`` without use, or on request. Every unlock, lock and decryption
is written to the audit log (who, when, what - never the passphrase).

A process is one custody domain: the reconciliation worker unlocks for itself (``kintsugi
reconcile --passphrase-file``); an admin unlocking in the web page unlocks the web worker that
served the request (for on-demand notes). Several processes never share a plaintext key.

Every historic key of a project is kept: devices encrypt to the key of the form version they
hold, so unlocking opens all of them (they share the project passphrase).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from server.errors import CustodyError, KeyLockedError, NotFoundError
from server.models import Project, ProjectKey
from server.services import audit
from sync_protocol import keys
from sync_protocol.errors import ProtocolError

__all__ = [
    "DEFAULT_IDLE_SECONDS",
    "get_private_key",
    "is_unlocked",
    "lock_all",
    "lock_project",
    "rotate_project_key",
    "unlock_project",
]

DEFAULT_IDLE_SECONDS = 15 * 60


@dataclass
class _Unlocked:
    keys: dict[str, rsa.RSAPrivateKey]  # fingerprint -> key
    idle_seconds: float
    last_used: float = field(default_factory=time.monotonic)

    def __repr__(self) -> str:  # never show key objects
        return f"<unlocked {len(self.keys)} key(s)>"


_lock = threading.Lock()
_unlocked: dict[int, _Unlocked] = {}


def _expire(project_id: int, now: float) -> None:
    entry = _unlocked.get(project_id)
    if entry is not None and now - entry.last_used > entry.idle_seconds:
        del _unlocked[project_id]


def unlock_project(
    session: Session,
    project_id: int,
    passphrase: bytes,
    *,
    actor: str,
    idle_seconds: float = DEFAULT_IDLE_SECONDS,
) -> None:
    """Open every key of the project with ``passphrase`` and keep them in memory.

    :raises CustodyError: wrong passphrase or a project without keys (audited as a failure)
    """
    project = session.get(Project, project_id)
    if project is None:
        raise NotFoundError(f"Project {project_id} does not exist on this server.")
    rows = session.scalars(select(ProjectKey).where(ProjectKey.project_id == project_id)).all()
    if not rows:
        raise CustodyError("This project is not encrypted: it has no key to unlock.")
    opened: dict[str, rsa.RSAPrivateKey] = {}
    try:
        for row in rows:
            opened[row.fingerprint] = keys.load_private_key(row.encrypted_private_pem, passphrase)
    except ProtocolError as err:
        audit.record(session, actor, "key.unlock_failed", f"project:{project_id}")
        raise CustodyError("That passphrase does not unlock this project's key.") from err
    with _lock:
        _unlocked[project_id] = _Unlocked(opened, idle_seconds)
    audit.record(session, actor, "key.unlock", f"project:{project_id}", keys=len(opened))


def lock_project(session: Session, project_id: int, *, actor: str) -> None:
    """Forget the project's plaintext keys in this process."""
    with _lock:
        was = _unlocked.pop(project_id, None) is not None
    audit.record(session, actor, "key.lock", f"project:{project_id}", was_unlocked=was)


def lock_all() -> None:
    """Forget every unlocked key (process shutdown, tests)."""
    with _lock:
        _unlocked.clear()


def is_unlocked(project_id: int) -> bool:
    """True while the project's keys are open in this process (idle expiry applied)."""
    with _lock:
        _expire(project_id, time.monotonic())
        return project_id in _unlocked


def get_private_key(project_id: int, fingerprint: str) -> rsa.RSAPrivateKey:
    """The unlocked key with ``fingerprint``; touching it resets the idle timer.

    :raises KeyLockedError: the project is locked (or idled out) in this process
    :raises CustodyError: the project has no key with that fingerprint
    """
    with _lock:
        now = time.monotonic()
        _expire(project_id, now)
        entry = _unlocked.get(project_id)
        if entry is None:
            raise KeyLockedError(
                "The project's key is locked: an admin must unlock it before submissions can be "
                "decrypted. Submissions wait safely as pending until then."
            )
        entry.last_used = now
        key = entry.keys.get(fingerprint)
    if key is None:
        raise CustodyError("No key of this project matches the key the form was encrypted with.")
    return key


def rotate_project_key(session: Session, project_id: int, passphrase: bytes, *, actor: str) -> str:
    """Make a new active key for new form versions; old keys stay for old submissions.

    The passphrase must open the current keys (it also protects the new one). Forms must be
    republished to carry the new public key. Returns the new key's fingerprint.
    """
    rows = session.scalars(select(ProjectKey).where(ProjectKey.project_id == project_id)).all()
    if not rows:
        raise CustodyError("This project is not encrypted: it has no key to rotate.")
    try:
        keys.load_private_key(rows[0].encrypted_private_pem, passphrase)
    except ProtocolError as err:
        audit.record(session, actor, "key.rotate_failed", f"project:{project_id}")
        raise CustodyError("That passphrase does not unlock this project's key.") from err
    new = keys.generate_private_key(2048)
    session.execute(
        update(ProjectKey).where(ProjectKey.project_id == project_id).values(active=False)
    )
    row = ProjectKey(
        project_id=project_id,
        public_key_b64=keys.public_key_b64(new),
        fingerprint=keys.fingerprint(new),
        encrypted_private_pem=keys.encrypt_private_key(new, passphrase),
        active=True,
    )
    session.add(row)
    session.flush()
    with _lock:
        entry = _unlocked.get(project_id)
        if entry is not None:
            entry.keys[row.fingerprint] = new
    audit.record(session, actor, "key.rotate", f"project:{project_id}", fingerprint=row.fingerprint)
    return row.fingerprint
