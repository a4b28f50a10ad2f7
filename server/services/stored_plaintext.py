"""Encrypt plaintext submissions a server stored before it encrypted them on arrival.

Collect sends plaintext to a form version that declares a public key when its crypto provider
is missing. The server now encrypts such an upload to that key as it arrives
(:mod:`server.services.submissions`); a database written before that can still hold them
stored as sent (flag ``plaintext_for_encrypted_form``, not ``encrypted``), notes and media at
rest in the clear, possibly reconciled already. :func:`encrypt_stored` encrypts each one,
whole, exactly as the last POST of a split upload does (:func:`encrypt_stored_plaintext`):

* not reconciled yet (``received``): it becomes ``pending_decryption`` and waits for the key
  like any encrypted submission;
* reconciled (``reconciled``): it keeps its assessment and becomes ``decrypted``, the status of
  an encrypted reconciled submission, so its notes are decrypted on demand with the key;
* quarantined: it stays quarantined (a retry sends it to the worker as an encrypted one).

A split upload whose last part never arrived (not ``complete``) is left alone: its envelope
must cover files that have not arrived; it is encrypted when the device sends them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.blobs import BlobStore, make_blob_store, read_all
from server.compat import is_encrypted_envelope, parse_submission
from server.errors import NotFoundError, ServerError
from server.models import (
    FLAG_PLAINTEXT_FOR_ENCRYPTED_FORM,
    Form,
    FormVersion,
    Project,
    ProjectKey,
    Submission,
    SubmissionStatus,
)
from server.services import audit
from server.services.reconcile import RECONCILED  # a plaintext submission it processed
from server.services.submissions import Plaintext, encrypt_stored_plaintext
from sync_protocol.errors import ProtocolError

__all__ = ["EncryptStoredResult", "encrypt_stored", "encrypt_stored_submission"]

#: status of a plaintext submission -> its status once encrypted
_STATUS_ONCE_ENCRYPTED = {
    SubmissionStatus.RECEIVED.value: SubmissionStatus.PENDING_DECRYPTION.value,
    RECONCILED: SubmissionStatus.DECRYPTED.value,
    SubmissionStatus.QUARANTINED.value: SubmissionStatus.QUARANTINED.value,
}


@dataclass
class EncryptStoredResult:
    """What :func:`encrypt_stored` found (``dry_run``) or did, in counts."""

    dry_run: bool = False
    pending: int = 0  # not reconciled yet: now wait for the key
    reconciled: int = 0  # keep their assessment; notes decrypt on demand with the key
    quarantined: int = 0  # stay quarantined
    incomplete: int = 0  # split uploads whose last part never arrived: left in plaintext
    #: encrypted (or to be) to a form version key no key of the project matches: only that
    #: key's holder can read them (kintsugi decrypt), the worker quarantines them
    foreign_key: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (instanceID, reason)

    @property
    def encrypted(self) -> int:
        """Submissions encrypted (or, in a dry run, that would be)."""
        return self.pending + self.reconciled + self.quarantined


def _candidates(session: Session, project_id: int) -> list[Any]:
    """Plaintext submissions of the project to a form version that declares a public key."""
    return list(
        session.execute(
            select(
                Submission.id,
                Submission.instance_id,
                Submission.status,
                Submission.complete,
                FormVersion.key_fingerprint,
            )
            .join(Form, Form.id == Submission.form_id)
            .join(FormVersion, FormVersion.id == Submission.form_version_id)
            .where(
                Form.project_id == project_id,
                Submission.encrypted.is_(False),
                FormVersion.public_key_b64.is_not(None),
                FormVersion.public_key_b64 != "",
            )
            .order_by(Submission.id)
        )
    )


def encrypt_stored_submission(
    session: Session, store: BlobStore, sub: Submission, *, actor: str
) -> str:
    """Encrypt one complete plaintext submission stored for an encrypted form (audited).

    Its XML and stored files are encrypted to its form version's key as Collect would have
    (:func:`server.services.submissions.encrypt_stored_plaintext`), the plaintext blobs removed
    with the caller's transaction (files once it has committed); ``xml_sha256`` stays that of
    the XML sent. Returns the new status. The caller commits.

    :raises ServerError: not a complete plaintext submission of an encrypted form, or its
        stored XML or a file is missing or not what was received (nothing changed)
    :raises ProtocolError: the stored XML cannot be read as a submission (nothing changed)
    """
    version = session.get(FormVersion, sub.form_version_id)
    status = _STATUS_ONCE_ENCRYPTED.get(sub.status)
    if sub.encrypted or not sub.complete or version is None or not version.public_key_b64:
        raise ServerError("it is not a complete plaintext submission of an encrypted form")
    if status is None:
        raise ServerError(f"it is {sub.status}: left as it is")
    try:
        xml = read_all(store, sub.xml_blob_key)
    except NotFoundError as err:
        raise ServerError("its stored XML is missing from the blob store") from err
    if hashlib.sha256(xml).hexdigest() != sub.xml_sha256:
        raise ServerError("its stored XML is not what was received (sha256 differs)")
    parsed = parse_submission(xml)
    if is_encrypted_envelope(parsed):
        raise ServerError("it is marked plaintext but its XML is an encrypted envelope")
    deprecated_id, files = sub.deprecated_id, sum(1 for a in sub.attachments if a.present)
    plain = Plaintext(xml, parsed, version.public_key_b64, parts={}, positions={})
    try:
        encrypt_stored_plaintext(
            session, store, sub, plain, status=status, flags=[FLAG_PLAINTEXT_FOR_ENCRYPTED_FORM]
        )
    except NotFoundError as err:
        raise ServerError("a file stored with it is missing from the blob store") from err
    if status == SubmissionStatus.DECRYPTED.value:
        sub.deprecated_id = deprecated_id  # as the worker records it when it decrypts
    audit.record(
        session, actor, "submission.encrypt_stored", f"submission:{sub.id}",
        status=status, files=files,
    )  # fmt: skip
    return status


def encrypt_stored(
    session_factory: Callable[[], Session],
    project_id: int,
    *,
    config: dict[str, Any],
    actor: str = "cli",
    dry_run: bool = False,
    write_lock: AbstractContextManager[Any] | None = None,
) -> EncryptStoredResult:
    """Encrypt every complete plaintext submission of the project stored for a form version
    that declares a public key, each in its own transaction; count the rest.

    ``dry_run`` only counts. Idempotent: a second run finds nothing. One that cannot be
    encrypted (a missing blob, say) is rolled back and listed in ``failed``; the others go on.

    :param write_lock: ``server.db.write_lock(app)`` (SQLite's one writer)
    :raises NotFoundError: no such project
    """
    result = EncryptStoredResult(dry_run=dry_run)
    with session_factory() as session:
        if session.get(Project, project_id) is None:
            raise NotFoundError(f"Project {project_id} does not exist on this server.")
        candidates = _candidates(session, project_id)
        ours = set(
            session.scalars(
                select(ProjectKey.fingerprint).where(ProjectKey.project_id == project_id)
            )
        )
    for row in candidates:
        if not row.complete:
            result.incomplete += 1
            continue
        if dry_run:
            status = _STATUS_ONCE_ENCRYPTED.get(row.status)
            if status is None:
                result.failed.append((row.instance_id, f"it is {row.status}: left as it is"))
            _count(result, status, row.key_fingerprint in ours)
            continue
        with write_lock or nullcontext(), session_factory() as session:
            query = select(Submission).where(Submission.id == row.id).with_for_update()
            sub = session.scalar(query)  # waits for a worker holding it (PostgreSQL)
            if sub is None or sub.encrypted:
                continue  # encrypted meanwhile (its last resend, another run)
            try:
                status = encrypt_stored_submission(
                    session, make_blob_store(config, session), sub, actor=actor
                )
            except (ServerError, ProtocolError) as err:
                session.rollback()
                result.failed.append((row.instance_id, str(err)))
                continue
            session.commit()
        _count(result, status, row.key_fingerprint in ours)
    return result


def _count(result: EncryptStoredResult, status: str | None, our_key: bool) -> None:
    if status is None:
        return
    if status == SubmissionStatus.PENDING_DECRYPTION.value:
        result.pending += 1
    elif status == SubmissionStatus.DECRYPTED.value:
        result.reconciled += 1
    else:
        result.quarantined += 1
    if not our_key:
        result.foreign_key += 1
