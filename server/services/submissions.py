"""Durable ingest of Collect submissions.

Policy for bad input (the device keeps an instance until it gets a 201/202, openrosa.md §6.2):

* **Refuse** (4xx + OpenRosaResponse message, nothing stored) when the request itself is wrong
  and the field worker or an admin can fix it while the data stays safe on the phone: failed
  authentication, wrong content type, missing ``xml_submission_file``, body over the limit (413),
  too many parts, attachment names with path separators or ``..``, a closed form, an app user
  not allowed on the form.
* **Quarantine** (4xx + message, and the raw XML kept in ``quarantined_uploads`` for admins) when
  an authenticated, well-formed request carries XML the server cannot turn into a submission:
  unparseable or malformed XML, XML bombs (stored as bytes, never parsed again), an unknown form
  or form version, and a conflicting resend (same instanceID, different XML). The phone still
  has the data, but a worker may delete it after seeing the error; the copy means nothing is lost.
* **Accept but flag**: a plaintext submission to a form version that declares a public key (Collect
  sends plaintext when its crypto provider is missing) gets the flag
  ``plaintext_for_encrypted_form``; unexpected parts next to an encrypted envelope (plaintext
  leftovers Collect failed to delete) are discarded and flagged ``discarded_unexpected_parts``.

Idempotency per (form, instanceID): identical XML bytes → merge the attachments that are new →
201; different bytes → 409. Split uploads (``*isIncomplete*``) merge the same way. Two identical
POSTs at once produce one row: the unique index decides and the loser retries as a merge.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.blobs import BlobStore, new_key
from server.compat import is_encrypted_envelope, parse_submission
from server.db import utcnow
from server.errors import BadSubmissionError, ForbiddenError, SubmissionConflictError
from server.models import (
    FLAG_DISCARDED_PARTS,
    FLAG_PLAINTEXT_FOR_ENCRYPTED_FORM,
    AppUser,
    Form,
    FormState,
    FormVersion,
    Project,
    QuarantinedUpload,
    Submission,
    SubmissionAttachment,
    SubmissionStatus,
    WebUser,
)
from sync_protocol.errors import ProtocolError


class RejectedUploadError(BadSubmissionError):
    """A refused upload; ``quarantine`` says whether its raw XML must be kept for admins."""

    def __init__(self, message: str, *, http_status: int = 400, quarantine: bool = False) -> None:
        super().__init__(message, http_status=http_status)
        self.quarantine = quarantine


@dataclass(slots=True)
class Upload:
    """One POST as received (already size- and count-checked by the view)."""

    xml: bytes
    parts: dict[str, bytes] = field(default_factory=dict)
    incomplete: bool = False
    app_user: AppUser | None = None
    web_user: WebUser | None = None
    device_id: str | None = None
    user_agent: str | None = None


@dataclass(slots=True)
class Receipt:
    """What happened to an upload."""

    submission_id: int
    created: bool
    complete: bool


def check_part_name(name: str) -> None:
    """Refuse part names that could address another file (path separators, ``..``, NUL)."""
    if not name or "/" in name or "\\" in name or "\x00" in name or ".." in name or len(name) > 255:
        raise RejectedUploadError(
            "An attachment has a file name this server refuses (path separators or '..'). "
            "Rename the file on the device or contact your supervisor."
        )


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def receive_submission(
    session: Session, store: BlobStore, project: Project, upload: Upload
) -> Receipt:
    """Store a submission (or merge into an identical one); raise on anything refused.

    Blobs are written through ``store`` (fsynced for the local store); the caller commits, then
    answers 201.
    """
    for name in upload.parts:
        check_part_name(name)
    try:
        parsed = parse_submission(upload.xml)
    except ProtocolError as err:
        raise RejectedUploadError(str(err), quarantine=True) from err

    # form and version in one round trip (this runs for every upload)
    version_str = (parsed.version or "").strip()
    row = session.execute(
        select(Form, FormVersion)
        .outerjoin(
            FormVersion,
            and_(FormVersion.form_id == Form.id, FormVersion.version == version_str),
        )
        .where(Form.project_id == project.id, Form.xml_form_id == parsed.form_id)
    ).first()
    if row is None:
        raise RejectedUploadError(
            f"The form '{parsed.form_id}' is not on this server. Ask your supervisor to publish "
            "it; keep this submission on the device.",
            http_status=404,
            quarantine=True,
        )
    form, version = row
    if upload.app_user is not None and not upload.app_user.may_use_form(form.xml_form_id):
        raise ForbiddenError("This device may not send this form. Ask your supervisor.")
    if form.state == FormState.CLOSED.value:
        raise SubmissionConflictError(
            f"The form '{form.xml_form_id}' is closed and takes no more submissions. "
            "Keep this submission on the device and contact your supervisor."
        )
    if version is None:
        raise RejectedUploadError(
            f"Version '{version_str}' of form '{form.xml_form_id}' is not on this server. "
            "Update the blank form, or ask your supervisor; keep this submission on the device.",
            http_status=404,
            quarantine=True,
        )

    encrypted = is_encrypted_envelope(parsed)
    flags: list[str] = []
    positions: dict[str, int | None]
    if encrypted:
        expected = [*parsed.media, parsed.encrypted_xml_file]
        positions = {name: i for i, name in enumerate(expected)}
        for name in expected:
            check_part_name(name)
    else:
        root = getattr(parsed, "root", None)
        texts = (
            {(el.text or "").strip() for el in root.iter() if (el.text or "").strip()}
            if root is not None
            else set()
        )
        expected = [name for name in upload.parts if name in texts]
        positions = dict.fromkeys(expected)
        if version.encrypted:
            flags.append(FLAG_PLAINTEXT_FOR_ENCRYPTED_FORM)
    kept = {name: data for name, data in upload.parts.items() if name in positions}
    if len(kept) != len(upload.parts):
        flags.append(FLAG_DISCARDED_PARTS)

    xml_sha = _sha256(upload.xml)
    all_present = not encrypted or all(name in kept for name in positions)
    complete = all_present and not upload.incomplete
    status = SubmissionStatus.RECEIVED.value
    if encrypted and complete:
        status = SubmissionStatus.PENDING_DECRYPTION.value
    xml_key = new_key("submissions")
    # Insert first, ON CONFLICT DO NOTHING: a resend (or a concurrent identical POST) costs no
    # blob writes, and the unique (form, instanceID) index decides who created the row.
    submission_id = _insert_submission(
        session,
        form_id=form.id,
        form_version_id=version.id,
        instance_id=parsed.instance_id,
        deprecated_id=None if encrypted else getattr(parsed, "deprecated_id", None),
        instance_name=None if encrypted else getattr(parsed, "instance_name", None),
        encrypted=encrypted,
        status=status,
        flags=sorted(set(flags)),
        complete=complete,
        xml_blob_key=xml_key,
        xml_sha256=xml_sha,
        xml_size=len(upload.xml),
        app_user_id=upload.app_user.id if upload.app_user else None,
        web_user_id=upload.web_user.id if upload.web_user else None,
        device_id=(upload.device_id or None) and upload.device_id[:255],
        user_agent=(upload.user_agent or None) and upload.user_agent[:255],
    )
    if submission_id is None:
        existing = session.scalar(
            select(Submission).where(
                Submission.form_id == form.id, Submission.instance_id == parsed.instance_id
            )
        )
        if existing is None:  # pragma: no cover - the conflicting row vanished (rolled back)
            raise IntegrityError("submission conflict", None, Exception("retry"))
        if existing.xml_sha256 != xml_sha:
            raise RejectedUploadError(
                "A submission with this instance ID was already received with different "
                "content. To add files, resend exactly the same submission.",
                http_status=409,
                quarantine=True,
            )
        return _merge(session, store, existing, kept, positions, upload, flags)

    store.put(xml_key, upload.xml)
    rows = []
    for name, position in positions.items():
        values: dict[str, Any] = {
            "submission_id": submission_id,
            "name": name,
            "position": position,
            "present": False,
            "blob_key": None,
            "size": None,
            "sha256": None,
        }
        if name in kept:
            key = new_key("attachments")
            size, sha = store.put(key, kept[name])
            values.update(blob_key=key, size=size, sha256=sha, present=True)
        rows.append(values)
    if rows:
        session.execute(insert(SubmissionAttachment), rows)
    return Receipt(submission_id=submission_id, created=True, complete=complete)


def _insert_submission(session: Session, **values: Any) -> int | None:
    """INSERT ... ON CONFLICT (form_id, instance_id) DO NOTHING RETURNING id."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    now = utcnow()
    stmt = (
        dialect_insert(Submission.__table__)
        .values(received_at=now, updated_at=now, **values)
        .on_conflict_do_nothing(index_elements=["form_id", "instance_id"])
        .returning(Submission.__table__.c.id)
    )
    return session.execute(stmt).scalar()


def _store_part(store: BlobStore, att: SubmissionAttachment, data: bytes) -> None:
    key = new_key("attachments")
    size, sha = store.put(key, data)
    att.blob_key, att.size, att.sha256, att.present = key, size, sha, True


def _settle(sub: Submission, incomplete: bool, *, first: bool) -> None:
    """Update ``complete`` and ``status`` after parts arrived."""
    all_present = all(a.present for a in sub.attachments) if sub.encrypted else True
    previously = bool(sub.complete) and not first
    sub.complete = (previously or not incomplete) and all_present
    if sub.encrypted:
        if sub.complete and sub.status == SubmissionStatus.RECEIVED.value:
            sub.status = SubmissionStatus.PENDING_DECRYPTION.value
    sub.updated_at = utcnow()


def _merge(
    session: Session,
    store: BlobStore,
    sub: Submission,
    kept: dict[str, bytes],
    positions: dict[str, Any],
    upload: Upload,
    flags: list[str],
) -> Receipt:
    by_name = {a.name: a for a in sub.attachments}
    for name, data in kept.items():
        att = by_name.get(name)
        if att is None:
            att = SubmissionAttachment(name=name, position=positions.get(name), present=False)
            sub.attachments.append(att)
        if not att.present:
            _store_part(store, att, data)
    if flags:
        sub.flags = sorted(set(sub.flags or []) | set(flags))
    _settle(sub, upload.incomplete, first=False)
    session.flush()
    return Receipt(submission_id=sub.id, created=False, complete=sub.complete)


def quarantine_upload(
    session: Session,
    store: BlobStore,
    project: Project | None,
    upload: Upload,
    reason: str,
) -> QuarantinedUpload:
    """Keep the raw XML of a refused upload for admins (never parsed again from here)."""
    key = new_key("quarantine")
    size, sha = store.put(key, upload.xml)
    row = QuarantinedUpload(
        project_id=project.id if project else None,
        reason=reason[:2000],
        blob_key=key,
        size=size,
        sha256=sha,
        part_names=sorted(upload.parts)[:200],
        app_user_id=upload.app_user.id if upload.app_user else None,
        web_user_id=upload.web_user.id if upload.web_user else None,
        device_id=(upload.device_id or None) and upload.device_id[:255],
    )
    session.add(row)
    session.flush()
    return row
