"""Durable ingest of Collect submissions.

Policy for bad input (the device keeps an instance until it gets a 201/202, openrosa.md §6.2):

* **Refuse** (4xx + OpenRosaResponse message, nothing stored) when the request itself is wrong
  and the field worker or an admin can fix it while the data stays safe on the phone: failed
  authentication, wrong content type, missing ``xml_submission_file``, body over the limit (413),
  too many parts, attachment names with path separators or ``..``, a closed form (but not a
  resend, or the last POST of a split upload, of a submission it received before closing), an
  app user not allowed on the form.
* **Quarantine** (4xx + message, and the raw XML kept in ``quarantined_uploads`` for admins) when
  an authenticated, well-formed request carries XML the server cannot turn into a submission:
  unparseable or malformed XML, XML bombs (stored as bytes, never parsed again), an unknown form
  or form version, an instanceID too long to store, and a conflicting resend (same instanceID,
  different XML). The phone still has the data, but a worker may delete it after seeing the
  error; the copy means nothing is lost. Retries of the same XML share one unresolved copy.
* **Accept but flag**: a plaintext submission to a form version that declares a public key (Collect
  sends plaintext when its crypto provider is missing) gets the flag
  ``plaintext_for_encrypted_form``. The server encrypts it to the form version's key exactly
  as Collect would have and flags it ``encrypted_on_arrival`` too; it then waits for the key
  like any encrypted submission. A whole upload is encrypted before anything is stored. A split
  upload (``*isIncomplete*``) cannot be: one envelope covers every file, and the later files
  have not arrived. Its parts are stored as sent until the last POST, which encrypts the XML
  and every file (in the order they arrived, Collect's order) in the transaction that completes
  it and removes the plaintext blobs (files only once that transaction has committed). An
  upload whose last POST never comes stays in plaintext, incomplete. Complete submissions an
  older server stored in plaintext are encrypted the same way (:func:`encrypt_stored_plaintext`)
  by ``kintsugi submissions encrypt-stored`` (:mod:`server.services.stored_plaintext`).
  Unexpected parts next to an encrypted envelope (plaintext leftovers Collect failed to
  delete) are discarded and flagged ``discarded_unexpected_parts``.

Idempotency per (form, instanceID): identical XML bytes → merge the attachments that are new →
201; different bytes → 409. Split uploads (``*isIncomplete*``) merge the same way. Two identical
POSTs at once produce one row: the unique index decides and the loser retries as a merge.
A submission encrypted on arrival keeps ``xml_sha256`` of the XML sent, so a resend of the same
plaintext (any of its POSTs) matches and answers 201 without changing anything.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.serialization import load_der_public_key
from sqlalchemy import and_, bindparam, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server import hotcache
from server.blobs import BlobStore, delete_on_commit, new_key, put_many, read_many
from server.compat import is_encrypted_envelope, parse_submission
from server.db import utcnow
from server.errors import (
    BadSubmissionError,
    ForbiddenError,
    NotFoundError,
    ServerError,
    SubmissionConflictError,
)
from server.models import (
    FLAG_DISCARDED_PARTS,
    FLAG_ENCRYPTED_ON_ARRIVAL,
    FLAG_PLAINTEXT_FOR_ENCRYPTED_FORM,
    Form,
    FormState,
    FormVersion,
    QuarantinedUpload,
    Submission,
    SubmissionAttachment,
    SubmissionStatus,
)
from sync_protocol.crypto import encrypt_submission
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
    #: names of ``parts`` sent as plain form fields, not files (Enketo's CSRF token)
    fields: frozenset[str] = frozenset()
    incomplete: bool = False
    app_user_id: int | None = None
    app_user_forms: list[str] | None = None  # the app user's form scope (None = all forms)
    web_user_id: int | None = None
    device_id: str | None = None
    user_agent: str | None = None


@dataclass(slots=True)
class Receipt:
    """What happened to an upload."""

    submission_id: int
    created: bool
    complete: bool


def check_part_name(name: str) -> None:
    """Refuse part names that could address another file (path separators, ``.``/``..``, NUL).

    Dots inside a name are fine: a file picked in a browser keeps its own name in Enketo,
    and ``Certificat v1..2.pdf`` addresses nothing but itself.
    """
    if not name.strip(".") or "/" in name or "\\" in name or "\x00" in name or len(name) > 255:
        raise RejectedUploadError(
            "An attachment has a file name this server refuses (path separators, or only "
            "dots). Rename the file on the device or contact your supervisor."
        )


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


_FORM = Form.__table__.c
_VERSION = FormVersion.__table__.c
# Statements built once (per-request statement construction costs real CPU on the hot path).
_FORM_AND_VERSION = (
    select(_FORM.id, _FORM.state, _FORM.xml_form_id, _VERSION.id, _VERSION.public_key_b64)
    .select_from(Form.__table__)
    .outerjoin(
        FormVersion.__table__,
        and_(_VERSION.form_id == _FORM.id, _VERSION.version == bindparam("version")),
    )
    .where(
        _FORM.project_id == bindparam("project_id"), _FORM.xml_form_id == bindparam("xml_form_id")
    )
)
_INSERT_ATTACHMENTS = insert(SubmissionAttachment.__table__)
_INSERT_SUBMISSION: dict[str, Any] = {}


def _insert_submission_stmt(dialect: str) -> Any:
    stmt = _INSERT_SUBMISSION.get(dialect)
    if stmt is None:
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        else:
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        table = Submission.__table__
        stmt = _INSERT_SUBMISSION[dialect] = (
            dialect_insert(table)
            .on_conflict_do_nothing(index_elements=["form_id", "instance_id"])
            .returning(table.c.id)
        )
    return stmt


@dataclass(slots=True)
class Plaintext:
    """A plaintext upload to a form version that declares a public key, as it was sent."""

    xml: bytes
    parsed: Any  # sync_protocol's PlainInstance of ``xml``
    public_key_b64: str  # the form version's key
    parts: dict[str, bytes]  # the parts kept (named by the instance), in upload order
    positions: dict[str, int | None]

    def encrypt(self, media: dict[str, bytes]) -> tuple[bytes, dict[str, bytes]]:
        """(manifest, encrypted files) of this submission with ``media`` (in Collect's order)."""
        return _encrypt_on_arrival(self.xml, self.parsed, self.public_key_b64, media)


@dataclass(slots=True)
class Prepared:
    """An upload checked against the database, ready to be written."""

    values: dict[str, Any]  # the submissions row
    kept: dict[str, bytes]
    positions: dict[str, int | None]
    flags: list[str]
    items: list[tuple[str, bytes]]  # blobs: the XML first, then the kept parts
    part_keys: dict[str, str]  # part name -> blob key
    incomplete: bool  # the request carried *isIncomplete*
    written: list[tuple[int, str]] | None = None  # (size, sha256) when written ahead
    #: plaintext sent to an encrypted form version: the upload as sent, for the merge into an
    #: earlier part of a split upload (its parts join as sent; the last POST encrypts it all)
    plain: Plaintext | None = None


def receive_submission(
    session: Session, store: BlobStore, project_id: int, upload: Upload
) -> Receipt:
    """Store a submission (or merge into an identical one); raise on anything refused.

    Blobs are written through ``store`` (fsynced for the local store, same transaction for
    PostgreSQL); the caller commits, then answers 201. This is the hot path: Core statements,
    one round trip per step. Callers that serialise writers (SQLite) call
    :func:`prepare_submission` outside their lock and :func:`write_submission` inside it.
    """
    return write_submission(session, store, prepare_submission(session, store, project_id, upload))


def ingest_on_autocommit(session: Session) -> None:
    """Call first thing in an upload request: on PostgreSQL, run its reads and its one write
    statement (:func:`write_in_one_statement`) without BEGIN/COMMIT round trips.

    The single write statement is atomic by itself and, with ``synchronous_commit`` on (the
    default), returns only once its WAL is flushed: the same durability as a COMMIT. Anything
    needing several writes (a merge, a quarantine) runs after :func:`store_upload` released
    this connection, in an ordinary transaction on the next one.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})


def store_upload(
    session: Session,
    store: BlobStore,
    project_id: int,
    upload: Upload,
    *,
    lock: AbstractContextManager[Any] | None = None,
    cache_seconds: float = 0,
) -> Receipt:
    """Check and durably store an upload: committed when this returns (then answer 201).

    One statement on PostgreSQL for a new submission; otherwise insert-or-merge in a
    transaction under ``lock`` (``server.db.write_lock``: SQLite's one writer). Two identical
    POSTs at once: the loser of the unique (form, instanceID) race retries as a merge.

    :raises RejectedUploadError: refused; when ``quarantine`` is set, the raw XML was kept
    """
    for attempt in (1, 2):
        try:
            # checks and (local) blob fsyncs happen outside the SQLite writer lock
            prepared = prepare_submission(
                session, store, project_id, upload, cache_seconds=cache_seconds
            )
            if attempt == 1 and _one_statement_applies(session, store, prepared):
                new_id = write_in_one_statement(session, store, prepared)
                session.commit()  # on an autocommit connection: nothing left to send
                if new_id is not None:
                    return Receipt(new_id, created=True, complete=prepared.values["complete"])
            else:
                # Release the connection the reads used (it may be in autocommit, see
                # ingest_on_autocommit): the writes below must share one transaction.
                session.commit()
            with lock or nullcontext():
                receipt = write_submission(session, store, prepared)
                session.commit()
            return receipt
        except IntegrityError:
            session.rollback()
            if attempt == 2:
                raise
        except RejectedUploadError as err:
            session.rollback()
            if err.quarantine:
                quarantine_upload(session, store, project_id, upload, err.message)
                session.commit()
            raise
    raise AssertionError("unreachable")  # pragma: no cover


def _one_statement_applies(session: Session, store: BlobStore, prepared: Prepared) -> bool:
    return (
        prepared.written is None
        and getattr(store, "insert_cte", None) is not None
        and session.get_bind().dialect.name == "postgresql"
    )


def prepare_submission(
    session: Session,
    store: BlobStore,
    project_id: int,
    upload: Upload,
    *,
    cache_seconds: float = 0,
) -> Prepared:
    """Parse and check the upload (reads only); on a non-transactional store (local files)
    also write and fsync its blobs now, so the database write that follows is short."""
    for name in upload.parts:
        check_part_name(name)
    try:
        parsed = parse_submission(upload.xml)
    except ProtocolError as err:
        raise RejectedUploadError(str(err), quarantine=True) from err

    version_str = (parsed.version or "").strip()
    params = {"project_id": project_id, "xml_form_id": parsed.form_id, "version": version_str}
    row = hotcache.cached(
        session,
        ("form_version", project_id, parsed.form_id, version_str),
        cache_seconds,
        lambda: session.execute(_FORM_AND_VERSION, params).first(),
        keep=lambda r: r is not None and r[3] is not None,  # a published version only
    )
    if row is None:
        raise RejectedUploadError(
            f"The form '{parsed.form_id}' is not on this server. Ask your supervisor to publish "
            "it; keep this submission on the device.",
            http_status=404,
            quarantine=True,
        )
    form_id, form_state, xml_form_id, version_id, version_key = row
    if upload.app_user_forms is not None and xml_form_id not in upload.app_user_forms:
        raise ForbiddenError("This device may not send this form. Ask your supervisor.")
    _check_ids_storable(parsed)
    xml_sha = _sha256(upload.xml)  # of what was sent: a resend of the same bytes matches
    if form_state == FormState.CLOSED.value and not _received_already(
        session, form_id, parsed.instance_id, xml_sha
    ):
        raise SubmissionConflictError(
            f"The form '{xml_form_id}' is closed and takes no more submissions. "
            "Keep this submission on the device and contact your supervisor."
        )
    if version_id is None:
        raise RejectedUploadError(
            f"Version '{version_str}' of form '{xml_form_id}' is not on this server. "
            "Update the blank form, or ask your supervisor; keep this submission on the device.",
            http_status=404,
            quarantine=True,
        )

    encrypted = is_encrypted_envelope(parsed)
    flags: list[str] = []
    positions: dict[str, int | None]
    if encrypted:
        # Only the files the manifest names, in manifest order (= IV index for decryption).
        expected = [*parsed.media, parsed.encrypted_xml_file]
        positions = {name: i for i, name in enumerate(expected)}
        for name in expected:
            check_part_name(name)
    else:
        # Plaintext: keep the parts the instance names (binary answers are bare file names).
        root = getattr(parsed, "root", None)
        texts = (
            {(el.text or "").strip() for el in root.iter() if (el.text or "").strip()}
            if root is not None
            else set()
        )
        positions = dict.fromkeys(name for name in upload.parts if name in texts)
        if version_key:
            flags.append(FLAG_PLAINTEXT_FOR_ENCRYPTED_FORM)
    kept = {name: data for name, data in upload.parts.items() if name in positions}
    if set(upload.parts) - set(kept) - upload.fields:  # a form field is no stray file
        flags.append(FLAG_DISCARDED_PARTS)

    stored_xml, plain = upload.xml, None
    if not encrypted and version_key:
        plain = Plaintext(upload.xml, parsed, version_key, kept, positions)
    if plain is not None and not upload.incomplete:
        stored_xml, kept = plain.encrypt(kept)
        encrypted = True
        positions = {name: i for i, name in enumerate(kept)}  # media first, the XML last
        flags.append(FLAG_ENCRYPTED_ON_ARRIVAL)
    all_present = not encrypted or len(kept) == len(positions)
    complete = all_present and not upload.incomplete
    status = SubmissionStatus.RECEIVED.value
    if encrypted and complete:
        status = SubmissionStatus.PENDING_DECRYPTION.value
    xml_key = new_key("submissions")
    values = {
        "form_id": form_id,
        "form_version_id": version_id,
        "instance_id": parsed.instance_id,
        "deprecated_id": None if encrypted else getattr(parsed, "deprecated_id", None),
        # a display name only (a designer's calculate can make it long): shortened to fit
        "instance_name": None if encrypted else _clip(getattr(parsed, "instance_name", None)),
        "encrypted": encrypted,
        "status": status,
        "flags": sorted(set(flags)),
        "complete": complete,
        "xml_blob_key": xml_key,
        "xml_sha256": xml_sha,
        "xml_size": len(stored_xml),
        "app_user_id": upload.app_user_id,
        "web_user_id": upload.web_user_id,
        "device_id": (upload.device_id or None) and upload.device_id[:255],
        "user_agent": (upload.user_agent or None) and upload.user_agent[:255],
    }
    part_keys = {name: new_key("attachments") for name in kept}
    items = [(xml_key, stored_xml)] + [(part_keys[n], data) for n, data in kept.items()]
    prepared = Prepared(values, kept, positions, flags, items, part_keys, upload.incomplete)
    prepared.plain = plain
    if not getattr(store, "transactional", False):
        prepared.written = put_many(store, items)
    return prepared


#: Longest instanceID / deprecatedID and instance name the ``submissions`` columns hold
MAX_ID_LENGTH = Submission.__table__.c.instance_id.type.length
MAX_INSTANCE_NAME_LENGTH = Submission.__table__.c.instance_name.type.length


def _clip(value: str | None, limit: int = MAX_INSTANCE_NAME_LENGTH) -> str | None:
    return value[:limit] if value else value


def _check_ids_storable(parsed: Any) -> None:
    """Refuse (400, quarantined) an instanceID or deprecatedID too long to store: shortening
    it would merge different submissions, and a failed insert is a 500 Collect retries."""
    for value in (parsed.instance_id, getattr(parsed, "deprecated_id", None)):
        if value and len(value) > MAX_ID_LENGTH:
            raise RejectedUploadError(
                f"The submission's instance ID is longer than {MAX_ID_LENGTH} characters, "
                "which this server cannot store. The form must be fixed by its designer; keep "
                "the data on the phone and contact your supervisor.",
                quarantine=True,
            )


def _received_already(session: Session, form_id: int, instance_id: str, xml_sha: str) -> bool:
    """Whether exactly this submission XML was stored already (a resend, or a later POST of a
    split upload): the form's state no longer matters to something it has received."""
    stored = session.scalar(
        select(Submission.xml_sha256).where(
            Submission.form_id == form_id, Submission.instance_id == instance_id
        )
    )
    return stored == xml_sha


def _encrypt_on_arrival(
    xml: bytes, parsed: Any, public_key_b64: str, media: dict[str, bytes]
) -> tuple[bytes, dict[str, bytes]]:
    """(manifest, encrypted files) as Collect would have uploaded this plaintext submission."""
    public = load_der_public_key(base64.b64decode(public_key_b64))
    return encrypt_submission(
        xml,
        public,
        form_id=parsed.form_id,
        version=parsed.version,
        instance_id=parsed.instance_id,
        media=media,
    )


def write_submission(session: Session, store: BlobStore, prepared: Prepared) -> Receipt:
    """Insert the submission (or merge into an identical one); the caller commits."""
    values = prepared.values
    # Insert first, ON CONFLICT DO NOTHING: a resend (or a concurrent identical POST) costs no
    # blob writes, and the unique (form, instanceID) index decides who created the row.
    submission_id = _insert_submission(session, **values)
    if submission_id is None:
        if prepared.written is not None:  # written ahead for nothing: remove the copies
            for key, _data in prepared.items:
                store.delete(key)
        existing = session.scalar(
            select(Submission).where(
                Submission.form_id == values["form_id"],
                Submission.instance_id == values["instance_id"],
            )
        )
        if existing is None:  # the conflicting row was rolled back meanwhile: retry
            raise IntegrityError("submission conflict", None, Exception("retry"))
        if existing.xml_sha256 != values["xml_sha256"]:
            raise RejectedUploadError(
                "A submission with this instance ID was already received with different "
                "content. To add files, resend exactly the same submission.",
                http_status=409,
                quarantine=True,
            )
        return _merge(session, store, existing, prepared)

    results = prepared.written or put_many(store, prepared.items)
    _insert_attachments(session, submission_id, prepared, results)
    return Receipt(submission_id=submission_id, created=True, complete=values["complete"])


def _attachment_rows(prepared: Prepared, results: list[tuple[int, str]]) -> list[dict[str, Any]]:
    stored = {
        name: (prepared.part_keys[name], *res)
        for name, res in zip(prepared.kept, results[1:], strict=True)
    }
    rows = []
    for name, position in prepared.positions.items():
        key, size, sha = stored.get(name, (None, None, None))
        rows.append(
            {
                "name": name,
                "position": position,
                "present": key is not None,
                "blob_key": key,
                "size": size,
                "sha256": sha,
            }
        )
    return rows


def _insert_attachments(
    session: Session, submission_id: int, prepared: Prepared, results: list[tuple[int, str]]
) -> None:
    rows = _attachment_rows(prepared, results)
    if rows:
        session.execute(_INSERT_ATTACHMENTS, [{"submission_id": submission_id, **r} for r in rows])


def write_in_one_statement(session: Session, store: Any, prepared: Prepared) -> int | None:
    """PostgreSQL: the submission row, its blobs and attachment rows in ONE statement.

    ``INSERT submission ... ON CONFLICT DO NOTHING RETURNING id`` as a CTE, with the blob and
    attachment inserts as CTEs that only write when it returned a row. One statement is atomic
    on its own, so on an autocommit connection this is also the commit (one round trip and one
    WAL flush for the whole upload). Returns the new id, or None when the (form, instanceID)
    row exists already (the caller then merges in a transaction). Needs a transactional
    :class:`server.blobs.PostgresBlobStore` (``insert_cte``).
    """
    blob_params, results = store.cte_params(prepared.items)
    rows = _attachment_rows(prepared, results)
    now = utcnow()
    params = {f"sub_{k}": v for k, v in prepared.values.items()}
    params.update(sub_received_at=now, sub_updated_at=now, **blob_params)
    for i, row in enumerate(rows):
        params.update({f"att{i}_{k}": v for k, v in row.items()})
    stmt = _one_statement(
        store.insert_cte, tuple(sorted(prepared.values)), len(prepared.items), len(rows)
    )
    return session.execute(stmt, params).scalar()


@functools.lru_cache(maxsize=64)
def _one_statement(blob_cte: Any, columns: tuple[str, ...], blobs: int, attachments: int) -> Any:
    """The statement of :func:`write_in_one_statement` for one shape, built once."""
    from sqlalchemy import cast, literal_column, union_all
    from sqlalchemy.dialects.postgresql import insert as pg_insert

    sub_t, att_t = Submission.__table__, SubmissionAttachment.__table__
    new_row = (
        pg_insert(sub_t)
        .values(
            {
                c: bindparam(f"sub_{c}", type_=sub_t.c[c].type)
                for c in (*columns, "received_at", "updated_at")
            }
        )
        .on_conflict_do_nothing(index_elements=["form_id", "instance_id"])
        .returning(sub_t.c.id)
        .cte("new_submission")
    )
    stmt = select(new_row.c.id).add_cte(blob_cte(blobs, when=new_row))
    if attachments:
        names = ("name", "position", "present", "blob_key", "size", "sha256")
        rows = union_all(
            *(
                select(
                    # cast: a parameter holding NULL would otherwise reach PostgreSQL untyped
                    *(cast(bindparam(f"att{i}_{n}"), att_t.c[n].type).label(n) for n in names)
                )
                for i in range(attachments)
            )
        ).subquery("att_rows")
        stmt = stmt.add_cte(
            insert(att_t)
            .from_select(
                ["submission_id", *names],
                select(new_row.c.id, *(rows.c[n] for n in names)).select_from(
                    new_row.join(rows, literal_column("true"))
                ),
            )
            .cte("attachment_insert")
        )
    return stmt


def _insert_submission(session: Session, **values: Any) -> int | None:
    """INSERT ... ON CONFLICT (form_id, instance_id) DO NOTHING RETURNING id."""
    now = utcnow()
    stmt = _insert_submission_stmt(session.get_bind().dialect.name)
    return session.execute(stmt, {"received_at": now, "updated_at": now, **values}).scalar()


def _merge(session: Session, store: BlobStore, sub: Submission, prepared: Prepared) -> Receipt:
    """Add the parts ``sub`` does not have yet (resends and split uploads)."""
    kept, positions, flags = prepared.kept, prepared.positions, prepared.flags
    plain = prepared.plain
    if plain is not None and not sub.encrypted:
        # a part of a split plaintext upload to an encrypted form: the parts join as sent
        # until the last POST, which encrypts the whole submission
        kept, positions = plain.parts, plain.positions
        flags = [f for f in flags if f != FLAG_ENCRYPTED_ON_ARRIVAL]
        if not prepared.incomplete and _completes_plaintext(session, sub):
            return _encrypt_split_upload(session, store, sub, plain, flags)
    elif sub.encrypted and (plain is not None or not prepared.values["encrypted"]):
        # Plaintext parts never join an encrypted copy (it holds them already), nor do files
        # this request encrypted on arrival (under an AES key of their own).
        kept = {}
    by_name = {a.name: a for a in sub.attachments}
    for name, data in kept.items():
        att = by_name.get(name)
        if att is None:
            att = SubmissionAttachment(name=name, position=positions.get(name), present=False)
            sub.attachments.append(att)
        if not att.present:
            key = new_key("attachments")
            att.size, att.sha256 = store.put(key, data)
            att.blob_key, att.present = key, True
    if flags:
        sub.flags = sorted(set(sub.flags or []) | set(flags))
    all_present = all(a.present for a in sub.attachments) if sub.encrypted else True
    sub.complete = (bool(sub.complete) or not prepared.incomplete) and all_present
    if sub.encrypted and sub.complete and sub.status == SubmissionStatus.RECEIVED.value:
        sub.status = SubmissionStatus.PENDING_DECRYPTION.value
    sub.updated_at = utcnow()
    session.flush()
    return Receipt(submission_id=sub.id, created=False, complete=sub.complete)


def _completes_plaintext(session: Session, sub: Submission) -> bool:
    """Whether this POST (the last of a split plaintext upload) is the one completing ``sub``.

    Decided under the row lock (PostgreSQL; SQLite's writers are serialised already): of two
    identical last POSTs at once, the second waits, then finds the submission encrypted.
    """
    if sub.encrypted or sub.complete:
        return False
    session.refresh(sub, with_for_update=True)
    return not sub.encrypted and not sub.complete and sub.status == SubmissionStatus.RECEIVED.value


def _encrypt_split_upload(
    session: Session, store: BlobStore, sub: Submission, plain: Plaintext, flags: list[str]
) -> Receipt:
    """Complete a split plaintext upload to an encrypted form by encrypting all of it
    (:func:`encrypt_stored_plaintext`, the parts stored by the earlier POSTs, then this POST's
    new ones); it then waits for the key."""
    pending = SubmissionStatus.PENDING_DECRYPTION.value
    try:
        encrypt_stored_plaintext(session, store, sub, plain, status=pending, flags=flags)
    except NotFoundError as err:
        raise ServerError(
            "The server cannot find a file it received earlier with this submission. Keep "
            "the submission on the device and tell your supervisor."
        ) from err
    return Receipt(submission_id=sub.id, created=False, complete=True)


def encrypt_stored_plaintext(
    session: Session,
    store: BlobStore,
    sub: Submission,
    plain: Plaintext,
    *,
    status: str,
    flags: list[str] | tuple[str, ...] = (),
) -> None:
    """Replace a plaintext submission stored for an encrypted form by its encryption, whole.

    The XML (``plain.xml``: the same bytes as stored) and every part stored for ``sub`` (in
    the order they were stored: the order Collect lists the files in, which is also the order
    it sends them), then those of ``plain.parts`` not stored yet, are encrypted to the form
    version's key exactly as for a whole upload. The envelope and ``.enc`` files replace the
    plaintext rows, and the plaintext blobs are removed with this transaction (files once it
    has committed). ``xml_sha256`` stays that of the XML sent, so Collect's resends still
    match. ``sub`` becomes complete, encrypted, ``status``, flagged ``encrypted_on_arrival``
    (and ``flags``). The caller commits.

    :raises NotFoundError: a part stored earlier is missing from the blob store (nothing
        written)
    """
    earlier = [a for a in sub.attachments if a.present and a.blob_key]
    stored = read_many(store, [a.blob_key for a in earlier])
    media = {a.name: stored[a.blob_key] for a in earlier}
    for name, data in plain.parts.items():
        media.setdefault(name, data)  # a file sent twice: the first copy stays, as in a merge
    manifest, files = plain.encrypt(media)

    xml_key = new_key("submissions")
    file_keys = {name: new_key("attachments") for name in files}
    results = put_many(store, [(xml_key, manifest), *((file_keys[n], d) for n, d in files.items())])
    plaintext_keys = [sub.xml_blob_key, *(a.blob_key for a in sub.attachments if a.blob_key)]
    for att in sub.attachments:
        session.delete(att)
    session.flush()  # the plaintext rows go first: an .enc name may not meet a row it replaces
    session.expire(sub, ["attachments"])
    sub.attachments.extend(
        SubmissionAttachment(
            name=name, position=i, present=True, blob_key=file_keys[name], size=size, sha256=sha
        )
        for i, (name, (size, sha)) in enumerate(zip(files, results[1:], strict=True))
    )
    sub.xml_blob_key, sub.xml_size = xml_key, len(manifest)
    sub.encrypted, sub.complete = True, True
    sub.status = status
    sub.deprecated_id = sub.instance_name = None  # read from the plaintext: not kept beside it
    sub.flags = sorted(set(sub.flags or []) | set(flags) | {FLAG_ENCRYPTED_ON_ARRIVAL})
    sub.updated_at = utcnow()
    session.flush()
    delete_on_commit(session, store, plaintext_keys)


def quarantine_upload(
    session: Session,
    store: BlobStore,
    project_id: int | None,
    upload: Upload,
    reason: str,
) -> QuarantinedUpload:
    """Keep the raw XML of a refused upload for admins (never parsed again from here).

    Once: Collect's auto-send resends every failed instance on each run, so an unresolved
    entry with the same XML in the project takes the retry (its file names joined in, the
    reason the latest) instead of another copy.
    """
    earlier = session.scalars(
        select(QuarantinedUpload)
        .where(
            QuarantinedUpload.project_id == project_id,
            QuarantinedUpload.sha256 == _sha256(upload.xml),
            QuarantinedUpload.resolved_at.is_(None),
        )
        .order_by(QuarantinedUpload.id)
        .limit(1)
    ).first()
    if earlier is not None:
        earlier.part_names = sorted(set(earlier.part_names or []) | set(upload.parts))[:200]
        earlier.reason = reason[:2000]
        session.flush()
        return earlier
    key = new_key("quarantine")
    size, sha = store.put(key, upload.xml)
    row = QuarantinedUpload(
        project_id=project_id,
        reason=reason[:2000],
        blob_key=key,
        size=size,
        sha256=sha,
        part_names=sorted(upload.parts)[:200],
        app_user_id=upload.app_user_id,
        web_user_id=upload.web_user_id,
        device_id=(upload.device_id or None) and upload.device_id[:255],
    )
    session.add(row)
    session.flush()
    return row
