"""Key custody: a project's private keys are usable only while an admin has unlocked them.

The unlocked keys live in this process's memory only (never on disk, never in logs) and lock
again after ``KEY_IDLE_SECONDS`` (``KINTSUGI_KEY_IDLE_SECONDS``, server.config) without use, or
on request. Every unlock, lock and decryption is written to the audit log (who, when, what -
never the passphrase); an idle lock is audited with the actor ``idle-timeout``.

A process is one custody domain: the reconciliation worker unlocks for itself (``kintsugi
reconcile --passphrase-file``); an admin unlocking in the web page unlocks the web worker that
served the request (for on-demand notes). Several processes never share a plaintext key.

Locking on request reaches every process through the database (``projects.key_locked_at`` and
``key_lock_generation``): an admin lock (page, API, ``kintsugi lock``) records itself there, and
every process holding the key forgets it the next time it checks (:func:`honour_admin_lock`: the
worker before each batch, the web tier when it shows the key state or decrypts notes). While an
admin lock is in force no process unlocks on its own (``lift_admin_lock=False``: the worker
waits, submissions stay pending); an admin unlock (page, API, ``kintsugi unlock``) lifts it.

Every historic key of a project is kept: devices encrypt to the key of the form version they
hold, so unlocking opens all of them (they share the project passphrase).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from server.db import utcnow
from server.errors import CustodyError, KeyLockedError, NotFoundError, RateLimitedError
from server.models import AuditLog, Project, ProjectKey
from server.services import audit
from sync_protocol import keys
from sync_protocol.errors import ProtocolError

__all__ = [
    "DEFAULT_IDLE_SECONDS",
    "IDLE_ACTOR",
    "AdminLock",
    "get_private_key",
    "honour_admin_lock",
    "is_unlocked",
    "lock_all",
    "lock_project",
    "rotate_project_key",
    "unlock_project",
]

log = logging.getLogger(__name__)

#: the default of ``KEY_IDLE_SECONDS`` (server.config)
DEFAULT_IDLE_SECONDS = 15 * 60
#: the audit actor of a lock after the idle time
IDLE_ACTOR = "idle-timeout"


@dataclass
class _Unlocked:
    keys: dict[str, rsa.RSAPrivateKey]  # fingerprint -> key
    idle_seconds: float | None  # None: never idles out
    generation: int  # projects.key_lock_generation when unlocked
    engine: Engine | None  # where the idle timer audits its lock
    last_used: float = field(default_factory=time.monotonic)
    timer: threading.Timer | None = None

    def __repr__(self) -> str:  # never show key objects
        return f"<unlocked {len(self.keys)} key(s)>"


class AdminLock(NamedTuple):
    """What :func:`honour_admin_lock` found."""

    locked_at: dt.datetime | None  # an admin lock in force since (None: none)
    forgot: bool  # this process held the key and has just forgotten it


_lock = threading.Lock()
_unlocked: dict[int, _Unlocked] = {}
#: idle locks not yet in the audit log: (project id, when, idle seconds)
_idle_locked: list[tuple[int, dt.datetime, float]] = []


def _forget(project_id: int) -> _Unlocked | None:
    entry = _unlocked.pop(project_id, None)
    if entry is not None and entry.timer is not None:
        entry.timer.cancel()
    return entry


def _expire(project_id: int, now: float) -> None:
    """Forget an idled-out key (caller holds ``_lock``); its audit row is queued."""
    entry = _unlocked.get(project_id)
    if entry is None or entry.idle_seconds is None:
        return
    over = now - entry.last_used - entry.idle_seconds
    if over > 0:
        _forget(project_id)
        at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=over)
        _idle_locked.append((project_id, at, entry.idle_seconds))


def _arm(project_id: int, entry: _Unlocked) -> None:
    """Forget the key when its idle time is over, without waiting for the next use."""
    if entry.idle_seconds is None:
        return
    delay = max(0.0, entry.last_used + entry.idle_seconds - time.monotonic()) + 0.01
    entry.timer = threading.Timer(delay, _idle_timer, (project_id, entry))
    entry.timer.daemon = True
    entry.timer.start()


def _idle_timer(project_id: int, entry: _Unlocked) -> None:
    with _lock:
        if _unlocked.get(project_id) is not entry:
            return
        _expire(project_id, time.monotonic())
        if _unlocked.get(project_id) is entry:  # used meanwhile: wait for the rest
            _arm(project_id, entry)
            return
    if entry.engine is None:
        return  # audited by the next custody call with a session
    written: list[tuple[int, dt.datetime, float]] = []
    try:
        with Session(entry.engine) as session:
            written = _audit_idle_locks(session)
            session.commit()
    except Exception as err:  # queued again for the next custody call
        log.warning("could not audit an idle key lock now: %s", type(err).__name__)
        with _lock:
            _idle_locked[:0] = written


def _audit_idle_locks(session: Session) -> list[tuple[int, dt.datetime, float]]:
    with _lock:
        pending = list(_idle_locked)
        _idle_locked.clear()
    for project_id, at, idle_seconds in pending:
        audit.record(
            session, IDLE_ACTOR, "key.lock", f"project:{project_id}",
            reason="idle", idle_seconds=idle_seconds, idle_since=at.isoformat(),
        )  # fmt: skip
        log.info("project %s: key locked after %s idle seconds", project_id, idle_seconds)
    return pending


def _engine_of(session: Session) -> Engine | None:
    bind = session.get_bind()
    return bind if isinstance(bind, Engine) else None


def refuse_guessing(session: Session, project_id: int, *, limit: int, window_s: float) -> None:
    """Refuse another passphrase attempt after ``limit`` wrong ones within ``window_s``.

    Counts the audited ``key.unlock_failed`` of the project, whoever made them: guessing from
    several admin accounts adds up. Called by the web tier before :func:`unlock_project`.

    :raises RateLimitedError: too many wrong passphrases lately (429)
    """
    since = utcnow() - dt.timedelta(seconds=window_s)
    failed = session.scalar(
        select(func.count(AuditLog.id)).where(
            AuditLog.action == "key.unlock_failed",
            AuditLog.target == f"project:{project_id}",
            AuditLog.at >= since,
        )
    )
    if failed >= limit:
        minutes = max(1, round(window_s / 60))
        raise RateLimitedError(
            f"{failed} wrong passphrases for this project's key in the last {minutes} minutes: "
            f"wait {minutes} minutes, then try again. Every attempt is in the audit log."
        )


def unlock_project(
    session: Session,
    project_id: int,
    passphrase: bytes,
    *,
    actor: str,
    idle_seconds: float | None = DEFAULT_IDLE_SECONDS,
    lift_admin_lock: bool = True,
) -> None:
    """Open every key of the project with ``passphrase`` and keep them in memory.

    :param idle_seconds: forget the keys after this long without use (None: never)
    :param lift_admin_lock: an admin's unlock (page, API, CLI) lifts an admin lock; the
        worker's own unlock passes False and is refused while an admin lock is in force
    :raises CustodyError: wrong passphrase or a project without keys (audited as a failure)
    :raises KeyLockedError: an admin lock is in force and ``lift_admin_lock`` is False
    """
    _audit_idle_locks(session)
    project = session.get(Project, project_id)
    if project is None:
        raise NotFoundError(f"Project {project_id} does not exist on this server.")
    if project.key_locked_at is not None and not lift_admin_lock:
        raise KeyLockedError(
            f"An admin locked this project's key at {project.key_locked_at:%Y-%m-%d %H:%M} UTC: "
            "it stays locked until an admin unlocks it (admin page, API or kintsugi unlock)."
        )
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
    lifted = project.key_locked_at is not None
    if lifted:
        project.key_locked_at = None
    entry = _Unlocked(opened, idle_seconds, project.key_lock_generation, _engine_of(session))
    with _lock:
        _forget(project_id)
        _unlocked[project_id] = entry
        _arm(project_id, entry)
    details: dict[str, Any] = {"keys": len(opened), "idle_seconds": idle_seconds}
    if lifted:
        details["lifted_admin_lock"] = True
    audit.record(session, actor, "key.unlock", f"project:{project_id}", **details)


def lock_project(session: Session, project_id: int, *, actor: str, everywhere: bool = True) -> None:
    """Forget the project's plaintext keys.

    :param everywhere: an admin's lock (page, API, ``kintsugi lock``): recorded in the
        database so every process forgets the key before it next uses it, and none unlocks on
        its own until an admin unlocks again. False: only this process forgets it (a worker
        exiting, ``kintsugi unlock`` after its check).
    """
    _audit_idle_locks(session)
    with _lock:
        was = _forget(project_id) is not None
    details: dict[str, Any] = {"was_unlocked": was}
    if everywhere:
        session.execute(
            update(Project)
            .where(Project.id == project_id)
            .values(
                key_locked_at=dt.datetime.now(dt.UTC),
                key_lock_generation=Project.key_lock_generation + 1,
            )
        )
        details["everywhere"] = True
    audit.record(session, actor, "key.lock", f"project:{project_id}", **details)


def honour_admin_lock(session: Session, project_id: int, *, actor: str) -> AdminLock:
    """Forget this process's key when an admin has locked the project since it was unlocked.

    The forgetting is audited as ``key.lock`` by ``actor`` (the caller commits). Also writes
    pending idle locks to the audit log.
    """
    _audit_idle_locks(session)
    row = session.execute(
        select(Project.key_locked_at, Project.key_lock_generation).where(Project.id == project_id)
    ).one_or_none()
    if row is None:
        return AdminLock(None, False)
    locked_at, generation = row
    with _lock:
        entry = _unlocked.get(project_id)
        stale = entry is not None and (locked_at is not None or entry.generation != generation)
        if stale:
            _forget(project_id)
    if stale:
        audit.record(
            session, actor, "key.lock", f"project:{project_id}",
            reason="locked by an admin", was_unlocked=True,
        )  # fmt: skip
        log.info("project %s: key forgotten, an admin locked it", project_id)
    return AdminLock(locked_at, stale)


def lock_all() -> None:
    """Forget every unlocked key and unaudited idle lock (process shutdown, tests)."""
    with _lock:
        for project_id in list(_unlocked):
            _forget(project_id)
        _idle_locked.clear()


def is_unlocked(project_id: int) -> bool:
    """True while the project's keys are open in this process (idle expiry applied)."""
    with _lock:
        _expire(project_id, time.monotonic())
        return project_id in _unlocked


def unopened_keys(session: Session, project_id: int) -> set[str]:
    """Fingerprints of the project's keys that this process, unlocked, has not opened: keys
    rotated in (by another process) since it unlocked. Empty when it is locked."""
    with _lock:
        entry = _unlocked.get(project_id)
        opened = set(entry.keys) if entry is not None else None
    if opened is None:
        return set()
    stored = session.scalars(
        select(ProjectKey.fingerprint).where(ProjectKey.project_id == project_id)
    )
    return set(stored) - opened


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
