"""The reconciliation worker: pending submissions -> decrypted, verified, scored assessments in cases.

For each claimed submission (encrypted ``pending_decryption``, or a complete plaintext one):

1. decrypt with the project key of the submission's form version (custody must be unlocked;
   while locked, submissions simply stay pending - nothing is lost);
2. verify the signature: invalid, unverifiable or undecryptable -> ``quarantined`` with the
   reason and a review item; never dropped, never counted;
3. read the instance with the form version's compiler report, recompute every domain score with
   the scorer derived from the same instrument definition, flag differences from the
   device-calculated scores;
4. reconcile into the case (by entity id, else case code): edits via deprecatedID supersede the
   earlier assessment and keep it as history; two different assessments of one case for the same
   collection point and date are a conflict for review; a follow-up for an unknown case is an
   orphan for review; the case state is recomputed from assessments ordered by assessment date;
5. update the ``cases`` entity list served to devices with Central's version and conflict model
   (:mod:`server.services.entity_versions`): offline updates find their base in their branch,
   wait for a predecessor that has not arrived, and parallel updates are flagged as conflicts.

Claiming is safe with several workers on PostgreSQL (``FOR UPDATE SKIP LOCKED``), and two
batches naming one case (by entity id or code, made yet or not) run one after the other
(:func:`lock_cases`); on SQLite one worker runs at a time (SQLite serialises writers).
Every write for one submission happens in one transaction keyed by the submission id, so a
worker killed midway leaves it pending and the re-run processes it exactly once. Free-text
notes are never written to the database.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import time
import uuid
from calendar import monthrange
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import AbstractContextManager, closing, nullcontext
from dataclasses import dataclass, field
from functools import cached_property, partial
from typing import Any

from sqlalchemy import BigInteger, func, inspect, literal, or_, select, union_all, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import DataError, IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

import server.db
from form_compiler.instance import AssessmentReader
from form_compiler.scoring import Scorer
from server.blobs import make_blob_store, read_all, read_many
from server.errors import CustodyError, KeyLockedError, UnusableSubmissionError
from server.models import (
    Entity,
    EntityBacklog,
    EntityVersion,
    Form,
    FormVersion,
    Submission,
    SubmissionAttachment,
)
from server.models_cases import (
    Assessment,
    AssessmentState,
    Case,
    CaseStatus,
    ReviewItem,
    day_rank,
)
from server.services import audit, custody
from server.services.entity_versions import (
    EntityBook,
    EntityUpdate,
    case_properties,
    merged_into,
    received_properties,
)
from sync_protocol.crypto import SignatureStatus, decrypt_submission
from sync_protocol.envelope import EncryptedEnvelope, PlainInstance, parse_submission
from sync_protocol.errors import ProtocolError

log = logging.getLogger(__name__)

__all__ = [
    "ReconcileResult",
    "lock_cases",
    "plaintext_of",
    "reconcile_batch",
    "reconcile_pending",
    "refresh_case",
]

PENDING = "pending_decryption"
RECEIVED = "received"
DECRYPTED = "decrypted"
RECONCILED = "reconciled"  # a plaintext submission that has been processed
QUARANTINED = "quarantined"
SCORE_TOLERANCE = 0.005
#: days an offline update waits for its predecessor before it is applied anyway (Central: 5)
BACKLOG_DAYS = 5
#: months from intake to the first review, then between scheduled reviews (calendar months: the
#: same day of the month, or the month's last day where it is shorter)
FIRST_REVIEW_MONTHS = 6
REVIEW_MONTHS = 12
#: the collection points the review schedule counts from (not ``ad_hoc``, not ``closure``)
SCHEDULED = ("intake", "six_month", "annual")


@dataclass
class ReconcileResult:
    """Counts of one reconciliation run."""

    processed: int = 0
    assessments: int = 0
    quarantined: int = 0
    orphans: int = 0
    conflicts: int = 0
    mismatches: int = 0
    skipped_locked: int = 0
    adopted: int = 0  # orphans of earlier runs linked to a case that exists now
    entity_conflicts: int = 0  # offline updates of the case list flagged soft or hard
    entity_held: int = 0  # offline updates waiting for their predecessor in the branch
    details: list[str] = field(default_factory=list)

    def add(self, other: ReconcileResult) -> None:
        for name in (
            "processed",
            "assessments",
            "quarantined",
            "orphans",
            "conflicts",
            "mismatches",
            "skipped_locked",
            "adopted",
            "entity_conflicts",
            "entity_held",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass(frozen=True)
class _VersionInfo:
    project_id: int
    fingerprint: str | None
    report: dict[str, Any] | None
    scorer: Scorer | None

    @cached_property
    def reader(self) -> AssessmentReader:
        """The report's refs resolved once for every submission of the version (built at first
        use: a report it cannot read fails each submission's decode, as reading it did)."""
        return AssessmentReader(self.report)


#: form versions are immutable once published, so their report, key and scorer are cached. The
#: cache lives on the pooled database connection, not in a module global: ids are only unique
#: within one database (a process that opens another database, or one emptied and refilled as
#: tests do, must never see another database's key fingerprint for "version 1").
_CACHE_KEY = "kintsugi.form_versions"


def version_info(session: Session, form_version_id: int) -> _VersionInfo:
    """Project, key fingerprint, report and scorer of a form version (cached per connection)."""
    cache: dict[int, _VersionInfo] = session.connection().info.setdefault(_CACHE_KEY, {})
    info = cache.get(form_version_id)
    if info is None:
        row = session.execute(
            select(Form.project_id, FormVersion.key_fingerprint, FormVersion.report)
            .join(Form, Form.id == FormVersion.form_id)
            .where(FormVersion.id == form_version_id)
        ).one()
        report = row.report if row.report and "domains" in row.report else None
        info = _VersionInfo(
            row.project_id,
            row.key_fingerprint,
            report,
            Scorer.from_report(report) if report else None,
        )
        cache[form_version_id] = info
    return info


def _claim(session: Session, project_id: int, batch: int) -> list[Submission]:
    stmt = (
        select(Submission)
        .join(Form, Form.id == Submission.form_id)
        .where(
            Form.project_id == project_id,
            Submission.complete.is_(True),
            Submission.status.in_((PENDING, RECEIVED)),
        )
        .order_by(Submission.id)
        .limit(batch)
    )
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True, of=Submission)
    return list(session.scalars(stmt))


def reconcile_pending(
    session_factory: Callable[[], Session],
    project_id: int,
    *,
    config: dict[str, Any],
    limit: int | None = None,
    batch: int = 100,
    actor: str = "worker",
    write_lock: AbstractContextManager[Any] | None = None,
) -> ReconcileResult:
    """Process pending submissions of a project until none is left (or ``limit``).

    Each batch is one transaction (claimed rows stay locked on PostgreSQL until it commits),
    reconciled set-wise by :func:`reconcile_batch`. Should the batch fail on something other
    than the database, it is rolled back to a savepoint and redone one submission at a time, so
    one bad submission is quarantined without stalling the others. Stops early, leaving
    submissions pending, when the project key is locked.

    :param write_lock: ``server.db.write_lock(app)``: on SQLite the one lock every writer
        (uploads included) takes, so a worker never makes an upload wait on "database is locked"
    """
    total = ReconcileResult()
    threads = max(1, int(config.get("RECONCILE_THREADS", 1)))

    def one_batch(size: int) -> ReconcileResult | None:
        with write_lock or nullcontext(), session_factory() as session:
            claimed = _claim(session, project_id, size)
            if not claimed:
                return None
            store = make_blob_store(config, session)
            result = ReconcileResult()
            try:
                with session.begin_nested():
                    reconcile_batch(session, store, project_id, claimed, result=result,
                                    actor=actor, threads=threads)  # fmt: skip
            except Exception as err:  # redo one by one: only the culprit is quarantined
                if isinstance(err, SQLAlchemyError) and not isinstance(err, DataError):
                    raise  # the database itself failed: the batch rolls back, rows stay pending
                # (a DataError is a value the database refuses: that submission's fault)
                log.warning(
                    "batch of %d failed (%s); redoing one by one", len(claimed), type(err).__name__
                )
                result = _one_by_one(session, store, project_id, claimed, actor)
            session.commit()
            return result

    while limit is None or total.processed < limit:
        size = batch if limit is None else min(batch, limit - total.processed)
        result = _retrying_races(lambda: one_batch(size))  # noqa: B023 (called at once)
        if result is None:
            break
        total.add(result)
        if result.skipped_locked or result.processed == 0:
            break
    if total.assessments:

        def adopt() -> int:
            with write_lock or nullcontext(), session_factory() as session:
                adopted = adopt_waiting_orphans(session, project_id)
                session.commit()
                return adopted

        total.adopted += _retrying_races(adopt)
    days = float(config.get("ENTITY_BACKLOG_DAYS", BACKLOG_DAYS))
    with write_lock or nullcontext(), session_factory() as session:
        force_held_entity_updates(
            session, project_id, older_than=dt.timedelta(days=days), actor=actor
        )
        session.commit()
    return total


_RACE_CODES = {"40P01", "40001", "23505"}  # deadlock, serialization failure, unique violation


def _retrying_races(work: Callable[[], Any], attempts: int = 3) -> Any:
    """Run ``work`` (one transaction), again if it lost a race with another worker.

    Two workers can still collide where no row exists yet to lock (the same new case made by
    two intakes at once) or lock in an order PostgreSQL resolves as a deadlock. The loser's
    transaction rolls back whole - its submissions stay pending - and is simply run again.
    """
    for attempt in range(1, attempts + 1):
        try:
            return work()
        except (IntegrityError, OperationalError) as err:
            code = getattr(getattr(err, "orig", None), "sqlstate", None)
            if code not in _RACE_CODES or attempt == attempts:
                raise
            log.warning("lost a race with another worker (%s); running the batch again", code)
            time.sleep(0.05 * attempt)
    raise AssertionError("unreachable")  # pragma: no cover


def force_held_entity_updates(
    session: Session, project_id: int, *, older_than: dt.timedelta, actor: str = "worker"
) -> int:
    """Apply held offline updates that waited longer than ``older_than`` for their predecessor.

    Central's forced backlog processing: such an update is applied against the latest version
    (and flagged as a conflict where the case changed meanwhile), branch by branch in the
    device's order. Returns how many were forced.
    """
    cutoff = dt.datetime.now(dt.UTC) - older_than
    due = (EntityBacklog.project_id == project_id, EntityBacklog.held_at < cutoff)
    stmt = (
        select(EntityBacklog)
        .where(*due)
        .order_by(EntityBacklog.branch_id, EntityBacklog.branch_base_version, EntityBacklog.id)
    )
    if session.get_bind().dialect.name == "postgresql":
        # first the entities, as a batch locks them (its predecessor may be arriving now: that
        # batch releases the held row, then this finds it gone), then the rows
        held = set(session.scalars(select(EntityBacklog.entity_uuid).where(*due)))
        lock_cases(session, project_id, held, set())
        stmt = stmt.with_for_update(skip_locked=True)
    rows = list(session.scalars(stmt))
    for row in rows:
        if row in session.deleted or inspect(row).deleted or inspect(row).detached:
            continue  # applied as the successor of one forced before it
        case = session.scalar(
            select(Case).where(Case.project_id == project_id, Case.entity_uuid == row.entity_uuid)
        )
        if case is None:
            book = EntityBook(session, project_id)
            book.load({row.entity_uuid})
            book.release_forced(None, row, {})
            audit.record_many(session, actor, book.audit)
            continue
        refresh_case(session, case, forced=row, actor=actor)
    session.flush()
    return len(rows)


def adopt_waiting_orphans(session: Session, project_id: int) -> int:
    """Link orphans whose case exists now; returns how many were linked.

    A batch adopts the orphans of every case it creates, but with several workers a follow-up
    and its intake can be in flight at once, each invisible to the other until commit; and an
    admin may create a case from another orphan with the same code. Run after every worker
    pass, this catches them (orphan rows are claimed with SKIP LOCKED on PostgreSQL).
    """
    stmt = (
        select(Assessment, Case)
        .join(
            Case,
            (Case.project_id == Assessment.project_id)
            & (
                (Case.entity_uuid == Assessment.entity_uuid)
                | (
                    (Case.case_code == Assessment.case_code)
                    & (Assessment.entity_uuid.is_(None) | Case.entity_uuid.is_(None))
                )
            ),
        )
        .where(Assessment.project_id == project_id, Assessment.state == AssessmentState.ORPHAN)
        .order_by(Assessment.id)
    )
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True, of=Assessment)
    linked: dict[int, tuple[Assessment, Case]] = {}
    for orphan, case in session.execute(stmt):
        linked.setdefault(orphan.id, (orphan, case))  # two matches (uuid, code): first wins
    if not linked:
        return 0
    items = {
        item.assessment_id: item
        for item in session.scalars(
            select(ReviewItem).where(
                ReviewItem.kind == "orphan", ReviewItem.assessment_id.in_(linked)
            )
        )
    }
    for orphan, case in linked.values():
        _link_orphan(orphan, case, items.get(orphan.id))
        settle_in_case(session, orphan, case)
    for case in {c.id: c for _, c in linked.values()}.values():
        refresh_case(session, case)
    return len(linked)


def _one_by_one(
    session: Session, store: Any, project_id: int, claimed: list[Submission], actor: str
) -> ReconcileResult:
    result = ReconcileResult()
    for sub in claimed:
        attempt = ReconcileResult()
        try:
            with session.begin_nested():
                reconcile_batch(session, store, project_id, [sub], result=attempt, actor=actor)
        except Exception as err:  # one bad submission must not stall the queue
            if isinstance(err, SQLAlchemyError) and not isinstance(err, DataError):
                raise  # the database failed, not this submission: all of them stay pending
            # only the type: an exception's text may quote a decrypted answer
            kind = type(err.orig if isinstance(err, DataError) else err).__name__
            log.error("reconciling submission %s failed: %s", sub.id, kind)
            why = (
                f"a value in it does not fit the database ({kind})"
                if isinstance(err, DataError)
                else f"reconciliation failed unexpectedly ({kind})"
            )
            attempt = ReconcileResult(processed=1)
            with session.begin_nested():
                batch = _Batch(session, project_id, attempt, actor)
                batch.load([sub], [])
                _quarantine(batch, sub, f"{why}; see the server log, then re-queue it")
                batch.flush()
        result.add(attempt)
        if attempt.skipped_locked:
            break
    return result


def plaintext_of(session: Session, store: Any, sub: Submission, project_id: int) -> bytes:
    """The submission's plaintext instance XML (decrypting with the unlocked key if needed).

    :raises KeyLockedError: the project key is locked
    :raises UnusableSubmissionError: undecryptable, or the signature is not VALID
    """
    raw = read_all(store, sub.xml_blob_key)
    info = version_info(session, sub.form_version_id)
    return _plaintext(
        info, sub, project_id, raw, lambda: _read(session, store, [sub], xml=False)[1][sub.id]
    )


def _read(
    session: Session, store: Any, subs: list[Submission], *, xml: bool
) -> tuple[dict[str, bytes], dict[int, dict[str, bytes]]]:
    """The blobs of ``subs`` in one read (two queries): their instance XML by key (with
    ``xml``), and the present attachments of the encrypted ones by submission id."""
    keys = [s.xml_blob_key for s in subs] if xml else []
    ids = [s.id for s in subs if s.encrypted]
    out: dict[int, dict[str, bytes]] = {i: {} for i in ids}
    rows = []
    if ids:
        rows = session.execute(
            select(
                SubmissionAttachment.submission_id,
                SubmissionAttachment.name,
                SubmissionAttachment.blob_key,
            ).where(
                SubmissionAttachment.submission_id.in_(ids),
                SubmissionAttachment.present.is_(True),
                SubmissionAttachment.blob_key.is_not(None),
            )
        ).all()
    keys += [r.blob_key for r in rows]
    blobs = read_many(store, keys) if keys else {}
    for r in rows:
        out[r.submission_id][r.name] = blobs[r.blob_key]
    return blobs, out


def _plaintext(
    info: _VersionInfo,
    sub: Submission,
    project_id: int,
    raw: bytes,
    files: Callable[[], dict[str, bytes]],
) -> bytes:
    if not sub.encrypted:
        return raw
    try:
        envelope = parse_submission(raw)
    except ProtocolError as err:
        raise UnusableSubmissionError(f"the manifest cannot be read: {err}") from err
    if not isinstance(envelope, EncryptedEnvelope):
        raise UnusableSubmissionError(
            "the submission was marked encrypted but its manifest is plaintext"
        )
    fingerprint = info.fingerprint
    if not fingerprint:
        raise UnusableSubmissionError("the form version has no encryption key on record")
    try:
        key = custody.get_private_key(project_id, fingerprint)
    except KeyLockedError:
        raise  # waits as pending until an admin unlocks
    except CustodyError as err:  # no key of the project has that fingerprint
        raise UnusableSubmissionError(str(err)) from err
    present = files()
    try:
        decrypted = decrypt_submission(envelope, key, present)
    except ProtocolError as err:
        raise UnusableSubmissionError(f"cannot be decrypted: {err}") from err
    if decrypted.signature is SignatureStatus.INVALID:
        raise UnusableSubmissionError(
            "signature invalid: the files were altered or do not belong together"
        )
    if decrypted.signature is SignatureStatus.CANNOT_VERIFY:
        missing = [n for n in envelope.expected_files if n not in present]
        if missing:
            raise UnusableSubmissionError(
                f"signature cannot be verified: {', '.join(missing)} named in the manifest "
                "never arrived; the device must send the submission again"
            )
        raise UnusableSubmissionError(
            "signature cannot be verified: the manifest carries no signature "
            "(base64EncryptedElementSignature), which ODK Collect and Enketo always add; find "
            "out which device or tool sent it before trusting its data"
        )
    return decrypted.xml


def _date(text: str | None) -> dt.date | None:
    try:
        return dt.date.fromisoformat(text[:10]) if text else None
    except ValueError:
        return None


def _canonical(
    ratings: dict[str, Any], current: dict[str, Any], instrument_version: str | None
) -> dict[str, Any] | None:
    """Ratings keyed by the current instrument's subdomain ids, through its declared version
    map; None when the current report declares no mapping from ``instrument_version``."""
    mapping = (current.get("version_map") or {}).get(instrument_version or "")
    if mapping is None:
        return None
    out: dict[str, Any] = {}
    for key, value in ratings.items():
        target = mapping.get("subdomains", {}).get(key, key)
        for t in target if isinstance(target, list) else [target]:
            out.setdefault(t, value)
    return out


def _current_versions(session: Session, form_ids: set[int]) -> dict[int, _VersionInfo]:
    """Per form, its newest published version with an instrument report (one query).

    Assessments made with an older instrument version are scored on the newest one's
    subdomains, through its declared version map, so a case's trend compares like with like.
    """
    out: dict[int, _VersionInfo] = {}
    if not form_ids:
        return out
    rows = session.execute(
        select(FormVersion.id, FormVersion.form_id)
        .where(FormVersion.form_id.in_(form_ids))
        .order_by(FormVersion.form_id, FormVersion.published_at.desc(), FormVersion.id.desc())
    ).all()
    for version_id, form_id in rows:
        if form_id not in out:
            info = version_info(session, version_id)
            if info.report is not None:
                out[form_id] = info
    return out


@dataclass
class _Decoded:
    """A claimed submission after the CPU-only phase (decrypt, verify, parse, score)."""

    sub: Submission
    quarantine: str | None = None
    audit_quarantine: bool = False
    instance: PlainInstance | None = None
    assessment: Assessment | None = None


_FIELD_NAMES = {
    "deprecated_id": "deprecatedID", "case_code": "case code", "entity_uuid": "case entity id",
    "collection_point": "collection point", "casework_type": "casework type",
    "office": "office", "instrument_version": "instrument version",
}  # fmt: skip
_LIMITS = {column: Assessment.__table__.c[column].type.length for column in _FIELD_NAMES}


def _check_fits(values: dict[str, str | None]) -> None:
    """Quarantine, on every database alike, a value longer than its column: PostgreSQL would
    refuse the whole batch, and the same submission would stop the queue at every retry.
    The reason names the field and lengths, never the (decrypted) value."""
    for column, value in values.items():
        limit = _LIMITS[column]
        if value and len(value) > limit:
            raise UnusableSubmissionError(
                f"its {_FIELD_NAMES[column]} is {len(value)} characters long, more than the "
                f"{limit} this server keeps; the form (or its case-code pattern) must be fixed "
                "by its designer, then the submission re-queued"
            )


def _decode(
    info: _VersionInfo,
    sub: Submission,
    project_id: int,
    raw: bytes,
    files: dict[str, bytes],
    current: _VersionInfo | None = None,
) -> _Decoded:
    """Decrypt, verify, parse and score one submission (may raise KeyLockedError).

    Touches neither the session nor a table, so the worker runs several at once in threads:
    the RSA work releases the GIL, and overlaps the parsing and scoring of the others.
    """
    try:
        xml = _plaintext(info, sub, project_id, raw, lambda: files)
        instance = parse_submission(xml)
        if not isinstance(instance, PlainInstance):
            raise UnusableSubmissionError("the decrypted data is not a form instance")
        if instance.instance_id != sub.instance_id:
            raise UnusableSubmissionError("the decrypted instanceID differs from the manifest's")
        _check_fits({"deprecated_id": instance.deprecated_id})
    except UnusableSubmissionError as q:
        return _Decoded(sub, quarantine=q.reason, audit_quarantine=True)
    except ProtocolError as err:
        return _Decoded(sub, quarantine=f"the decrypted instance cannot be read: {err}")
    decoded = _Decoded(sub, instance=instance)
    report, scorer = info.report, info.scorer
    if report is None or scorer is None:
        return decoded  # not an instrument form: stored, nothing to score
    data = info.reader.read(instance.root)
    if data.consent != "yes":
        return decoded  # consent refused (or not recorded): only that is kept
    try:
        _check_fits(
            {"case_code": data.case_code, "entity_uuid": data.case_entity_id,
             "collection_point": data.collection_point, "casework_type": data.casework_type,
             "office": data.office, "instrument_version": data.instrument_version}
        )  # fmt: skip
    except UnusableSubmissionError as q:
        return _Decoded(sub, quarantine=q.reason, audit_quarantine=True)
    # the device scored with its own form version: compare like with like
    own = scorer.score(data.ratings)
    ratings, scores = data.ratings, own
    if current is not None and current.report is not report and current.scorer is not None:
        if (current.report.get("instrument") or {}).get("version") != data.instrument_version:
            mapped = _canonical(data.ratings, current.report, data.instrument_version)
            if mapped is not None:  # the trend spans versions through the declared map
                ratings, scores = mapped, current.scorer.score(mapped)
    flags: list[str] = []
    for domain, score in own.items():
        device = data.device_scores.get(domain)
        if (score is None) != (device is None) or (
            score is not None and device is not None and abs(score - device) > SCORE_TOLERANCE
        ):
            flags.append(f"score_mismatch:{domain}")
    flags += _survivor_gaps(data.survivor_view, scores, scorer)
    decoded.assessment = Assessment(
        project_id=project_id,
        submission_id=sub.id,
        instance_id=sub.instance_id,
        deprecated_id=instance.deprecated_id,
        case_code=data.case_code,
        entity_uuid=data.case_entity_id,
        assessment_date=_date(data.assessment_date),
        collection_point=data.collection_point,
        casework_type=data.casework_type,
        office=data.office,
        instrument_version=data.instrument_version,
        ratings=ratings,
        scores=scores,
        device_scores=data.device_scores,
        survivor_view=data.survivor_view,
        has_notes=bool(data.notes or data.survivor_comments),
        flags=flags,
        state=AssessmentState.ACTIVE,
    )
    return decoded


class _Batch:
    """What one batch reads and writes, held in memory: the worker's unit of work.

    Every lookup the per-submission logic needs (the case by entity id or code, the assessment
    an edit deprecates, a case's active assessments, orphans, the entity row, existing review
    items) is loaded for the whole batch in a handful of queries, then kept current in memory as
    the batch's own submissions are applied in arrival order, so a follow-up finds the case its
    intake created a moment earlier. Nothing is flushed until the end: the unit of work then
    writes cases, assessments, review items and entities with one batched statement per table.
    """

    def __init__(self, session: Session, project_id: int, result: ReconcileResult, actor: str):
        self.session, self.project_id, self.result, self.actor = session, project_id, result, actor
        self.reviewed: set[tuple[str, int]] = set()
        self.by_instance: dict[str, Assessment] = {}
        self.by_deprecated: dict[str, Assessment] = {}  # an edit, by the instanceID it replaces
        self.by_uuid: dict[str, Case] = {}
        self.by_code: dict[str, Case] = {}
        self.by_id: dict[int, Case] = {}
        self.active: dict[Case, list[Assessment]] = {}
        self.merged: dict[str, str] = {}  # a tablet's entity id merged into a case -> its code
        self.orphans: list[Assessment] = []
        self.orphan_items: dict[Assessment, ReviewItem] = {}
        self.conflict_items: dict[Assessment, ReviewItem] = {}  # this batch's conflicts
        self.book = EntityBook(session, project_id)
        self.form_version: dict[int, int] = {}  # submission id -> form version id
        self.seq: dict[Assessment, int] = {}  # arrival order of the batch's new assessments
        self.links: list[tuple[Assessment, Assessment]] = []  # (superseded, by), ids after flush
        #: submissions done, by (status, whether processed now): one UPDATE for each
        self.finished: dict[tuple[str, bool], list[Submission]] = {}
        self.audit: list[tuple[str, str]] = []  # (action, target), written in one statement

    # -- loading -----------------------------------------------------------------------------

    def load(self, subs: list[Submission], found: list[Assessment]) -> None:
        session, pid = self.session, self.project_id
        self.reviewed = set(
            session.execute(
                select(ReviewItem.kind, ReviewItem.submission_id).where(
                    ReviewItem.submission_id.in_([s.id for s in subs]),
                    ReviewItem.resolved_at.is_(None),  # a retried submission gets fresh items
                )
            )
        )
        self.form_version.update((s.id, s.form_version_id) for s in subs)
        if not found:
            return
        deprecated = {a.deprecated_id for a in found if a.deprecated_id}
        uuids = {a.entity_uuid for a in found if a.entity_uuid}
        codes = {a.case_code for a in found if a.case_code}
        lock_cases(session, pid, uuids, codes)
        previous = (
            session.scalars(
                select(Assessment).where(
                    Assessment.project_id == pid, Assessment.instance_id.in_(deprecated)
                )
            ).all()
            if deprecated
            else []
        )
        for a in previous:
            self.by_instance.setdefault(a.instance_id, a)
        successors = session.scalars(
            select(Assessment).where(
                Assessment.project_id == pid,
                Assessment.deprecated_id.in_([a.instance_id for a in found]),
            )
        ).all()
        for a in successors:
            self.by_deprecated.setdefault(a.deprecated_id, a)
        case_ids = {a.case_id for a in [*previous, *successors] if a.case_id}
        self.merged = merged_into(session, pid, uuids)
        codes |= set(self.merged.values())
        stmt = (
            select(Case)
            .where(
                Case.project_id == pid,
                or_(Case.entity_uuid.in_(uuids), Case.case_code.in_(codes), Case.id.in_(case_ids)),
            )
            .order_by(Case.id)
        )
        if session.get_bind().dialect.name == "postgresql":
            # another worker's batch touching one of these cases commits first; what is read
            # next (assessments, entity versions) then includes its work (in id order: no
            # deadlock between two batches)
            stmt = stmt.with_for_update(of=Case)
        cases = session.scalars(stmt).all()
        for case in cases:
            self._index(case)
        if cases:
            rows = session.execute(
                select(Assessment, Submission.form_version_id)
                .join(Submission, Submission.id == Assessment.submission_id)
                .where(
                    Assessment.case_id.in_([c.id for c in cases]),
                    Assessment.state == AssessmentState.ACTIVE,
                )
            ).all()
            for a, form_version_id in rows:
                self.active[self.by_id[a.case_id]].append(a)
                self.form_version[a.submission_id] = form_version_id
        if any(a.collection_point == "intake" for a in found):
            rows = session.execute(
                select(Assessment, Submission.form_version_id)
                .join(Submission, Submission.id == Assessment.submission_id)
                .where(
                    Assessment.project_id == pid,
                    Assessment.state == AssessmentState.ORPHAN,
                    or_(Assessment.entity_uuid.in_(uuids), Assessment.case_code.in_(codes)),
                )
            ).all()
            by_id = {a.id: a for a, _ in rows}
            self.orphans = list(by_id.values())
            self.form_version.update((a.submission_id, fv) for a, fv in rows)
            if by_id:
                for item in session.scalars(
                    select(ReviewItem).where(
                        ReviewItem.kind == "orphan", ReviewItem.assessment_id.in_(by_id)
                    )
                ):
                    self.orphan_items[by_id[item.assessment_id]] = item
        self.book.load(uuids | {c.entity_uuid for c in cases if c.entity_uuid})

    def _index(self, case: Case) -> None:
        if case.entity_uuid:
            self.by_uuid.setdefault(case.entity_uuid, case)
        self.by_code.setdefault(case.case_code, case)
        if case.id is not None:
            self.by_id[case.id] = case
        self.active.setdefault(case, [])

    def case_of(self, a: Assessment) -> Case | None:
        if a.case is not None:
            return a.case
        return self.by_id.get(a.case_id) if a.case_id else None

    def find_case(self, entity_uuid: str | None, case_code: str | None) -> Case | None:
        """The case by its entity id (or the id an admin merged into it), else by its code
        unless that case has another id."""
        if entity_uuid and entity_uuid in self.by_uuid:
            return self.by_uuid[entity_uuid]
        if entity_uuid and entity_uuid in self.merged:
            return self.by_code.get(self.merged[entity_uuid])
        case = self.by_code.get(case_code) if case_code else None
        return case if case is not None and _same_case(case, entity_uuid, case_code) else None

    # -- writing -----------------------------------------------------------------------------

    def supersede(self, old: Assessment, by: Assessment) -> None:
        old.state = AssessmentState.SUPERSEDED
        self.links.append((old, by))

    def finish(self, sub: Submission, *, processed: bool = True) -> None:
        """``sub`` is done: decrypted (or, sent in plaintext, reconciled); ``processed`` False
        for one found done already (its ``updated_at`` is kept). Written for the whole batch
        by :meth:`flush` in one statement, not one per row by the unit of work."""
        status = DECRYPTED if sub.encrypted else RECONCILED
        self.finished.setdefault((status, processed), []).append(sub)

    def flush(self) -> None:
        """Write the batch: one flush (PostgreSQL: ids drawn first, in one query), the links
        between assessments, the audit rows, then the finished submissions' status."""
        session = self.session
        if session.get_bind().dialect.name == "postgresql":
            _draw_ids(session, [o for o in session.new if isinstance(o, _ID_DRAWN)])
        session.flush()
        if self.links:  # after the rows they point to exist (the foreign key is immediate)
            for old, by in self.links:
                old.superseded_by_id = by.id
            self.links.clear()
            session.flush()
        self.result.entity_conflicts += self.book.conflicts
        self.result.entity_held += self.book.held_count
        self.book.conflicts = self.book.held_count = 0
        audit.record_many(session, self.actor, [*self.audit, *self.book.audit])
        self.audit.clear()
        self.book.audit.clear()
        # last, so nothing in the batch's savepoint can fail after it: the objects then carry
        # what the rows hold without the unit of work writing them again
        now, table = dt.datetime.now(dt.UTC), Submission.__table__
        for (status, processed), subs in self.finished.items():
            values = {"status": status, "updated_at": now} if processed else {"status": status}
            session.execute(
                update(table).where(table.c.id.in_([s.id for s in subs])).values(values)
            )
            for sub in subs:
                for name, value in values.items():
                    set_committed_value(sub, name, value)
        self.finished.clear()

    def review(
        self,
        kind: str,
        submission_id: int,
        *,
        summary: str,
        assessment: Assessment | None = None,
        case: Case | None = None,
    ) -> ReviewItem | None:
        if (kind, submission_id) in self.reviewed:
            return None
        self.reviewed.add((kind, submission_id))
        item = ReviewItem(
            project_id=self.project_id,
            kind=kind,
            submission_id=submission_id,
            assessment=assessment,
            case=case,
            summary=summary,
        )
        self.session.add(item)
        return item


def _lock_key(project_id: int, kind: str, value: str) -> int:
    digest = hashlib.blake2b(f"{project_id}\0{kind}\0{value}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big", signed=True)


def lock_cases(session: Session, project_id: int, uuids: set[str], codes: set[str]) -> None:
    """PostgreSQL: wait for, then lock until commit, every case entity id and case code a
    worker's batch names (or an admin linking an orphan, or the pass forcing held updates),
    whether its case exists yet or not (Central's ``_lockEntity``).

    A case's row lock cannot cover a case that another worker's uncommitted batch is creating:
    an intake and a follow-up of one tablet, reconciled at the same moment, would each miss
    the other's work - the follow-up an orphan whose list update waits for a create already
    made, until the backlog days pass. With this lock the second batch waits for the first to
    commit and then reads it (READ COMMITTED), as if the two had run one after the other.
    Taken in one statement in one fixed order (the keys sorted), so two batches never wait
    for each other in a circle; a hash collision only makes two batches wait in turn.
    """
    if session.get_bind().dialect.name != "postgresql" or not (uuids or codes):
        return
    keys = sorted(
        {_lock_key(project_id, "entity", u.lower().removeprefix("uuid:")) for u in uuids}
        | {_lock_key(project_id, "code", c) for c in codes}
    )
    key = func.unnest(literal(keys, ARRAY(BigInteger))).column_valued("key")  # in array order
    session.execute(select(func.pg_advisory_xact_lock(key))).all()


_ID_DRAWN = (Case, Assessment, Entity, EntityVersion, EntityBacklog, ReviewItem)


def _draw_ids(session: Session, objects: list[Any]) -> None:
    """Give new rows their ids from their sequences in one query (PostgreSQL).

    With every id known before the flush, the unit of work writes each table with a plain
    executemany (pipelined by psycopg) instead of INSERT ... RETURNING, and links between new
    rows need no second round.
    """
    by_table: dict[str, list[Any]] = {}
    for obj in sorted(objects, key=lambda o: inspect(o).insert_order or 0):  # = arrival order
        if obj.id is None:
            by_table.setdefault(obj.__table__.name, []).append(obj)
    if not by_table:
        return
    draw = union_all(
        *(
            select(
                literal(name).label("t"),
                func.nextval(func.pg_get_serial_sequence(name, "id")).label("id"),
            ).select_from(func.generate_series(1, len(rows)))
            for name, rows in by_table.items()
        )
    )
    drawn: dict[str, list[int]] = {name: [] for name in by_table}
    with session.no_autoflush:  # the rows must not be written before they have their ids
        result = session.execute(draw).all()
    for name, new_id in result:
        drawn[name].append(new_id)
    for name, rows in by_table.items():
        for obj, new_id in zip(rows, sorted(drawn[name]), strict=True):
            obj.id = new_id


_pools: dict[int, ThreadPoolExecutor] = {}


def _run_all(
    jobs: list[Callable[[], _Decoded]], threads: int
) -> Iterator[_Decoded | BaseException]:
    """Each job's result or exception, in order; ``threads`` at once (RSA releases the GIL)."""
    if threads <= 1 or len(jobs) <= 1:
        for job in jobs:
            yield _settle(job)
        return
    pool = _pools.get(threads)
    if pool is None:
        pool = _pools[threads] = ThreadPoolExecutor(threads, thread_name_prefix="kintsugi-decode")
    futures = [pool.submit(_settle, job) for job in jobs]
    try:
        for future in futures:
            yield future.result()
    finally:  # the batch stopped early (a locked key): no job may outlive it
        for future in futures:
            future.cancel()
        wait(futures)


def _not_opened_yet() -> _Decoded:
    raise KeyLockedError(
        "The form was encrypted with a project key made after this process unlocked the "
        "project: it waits as pending until the key is opened (the worker does so itself)."
    )


def _settle(job: Callable[[], _Decoded]) -> _Decoded | BaseException:
    try:
        return job()
    except Exception as err:  # handed back to the batch, which decides
        return err


def reconcile_batch(
    session: Session,
    store: Any,
    project_id: int,
    subs: list[Submission],
    *,
    result: ReconcileResult,
    actor: str = "worker",
    threads: int = 1,
) -> None:
    """Reconcile claimed submissions in arrival order, inside the caller's transaction.

    Idempotent per submission: one that already has its assessment is only marked done.
    Submissions after one whose key is locked stay pending (``result.skipped_locked``).
    ``threads`` decrypt, verify and score side by side (``RECONCILE_THREADS``).
    """
    batch = _Batch(session, project_id, result, actor)
    with session.no_autoflush:
        done = set(
            session.scalars(
                select(Assessment.submission_id).where(
                    Assessment.submission_id.in_([s.id for s in subs])
                )
            )
        )
        todo = [s for s in subs if s.id not in done]
        raws, files = _read(session, store, todo, xml=True)
        current = _current_versions(session, {s.form_id for s in todo})
        # the same for the case refreshes below (:func:`_rebase`): no query again
        session.info.setdefault(_CURRENT_KEY, {}).update(
            (s.form_version_id, current.get(s.form_id)) for s in todo
        )
        infos = {fv: version_info(session, fv) for fv in {s.form_version_id for s in todo}}
        # a key rotated in since this process unlocked: such submissions wait (as for a locked
        # key) until the worker opens it, rather than being quarantined as undecryptable
        unopened = custody.unopened_keys(session, project_id)
        jobs = [
            _not_opened_yet
            if sub.encrypted and infos[sub.form_version_id].fingerprint in unopened
            else partial(_decode, infos[sub.form_version_id], sub, project_id,
                         raws[sub.xml_blob_key], files.get(sub.id, {}), current.get(sub.form_id))
            for sub in todo
        ]  # fmt: skip
        decoded: list[_Decoded] = []
        for sub in subs:
            if sub.id in done:
                result.processed += 1
                batch.finish(sub, processed=False)
        with closing(_run_all(jobs, threads)) as outcomes:
            for outcome in outcomes:
                if isinstance(outcome, KeyLockedError):
                    result.skipped_locked += 1
                    break
                if isinstance(outcome, BaseException):
                    raise outcome
                decoded.append(outcome)
                result.processed += 1
        batch.load(subs, [d.assessment for d in decoded if d.assessment is not None])
        for d in decoded:
            _apply(batch, d)
    batch.flush()


def _quarantine(batch: _Batch, sub: Submission, reason: str, *, audit_it: bool = False) -> None:
    sub.status = QUARANTINED
    sub.quarantine_reason = reason
    sub.updated_at = dt.datetime.now(dt.UTC)
    batch.review("quarantined", sub.id, summary=f"Submission {sub.instance_id}: {reason}")
    batch.result.quarantined += 1
    if audit_it:
        batch.audit.append(("submission.quarantine", f"submission:{sub.id}"))


def _apply(batch: _Batch, d: _Decoded) -> None:
    sub, session = d.sub, batch.session
    if d.quarantine is not None:
        _quarantine(batch, sub, d.quarantine, audit_it=d.audit_quarantine)
        return
    assert d.instance is not None
    if sub.encrypted:
        batch.audit.append(("submission.decrypt", f"submission:{sub.id}"))
    batch.finish(sub)
    sub.deprecated_id = sub.deprecated_id or d.instance.deprecated_id
    if "plaintext_for_encrypted_form" in (sub.flags or []):
        batch.review(
            "plaintext_for_encrypted_form", sub.id,
            summary=f"Submission {sub.instance_id} arrived unencrypted for a form that requires encryption.",
        )  # fmt: skip
    a = d.assessment
    if a is None:
        return
    session.add(a)
    batch.seq[a] = len(batch.seq)
    batch.result.assessments += 1
    flags = a.flags
    if any(f.startswith("score_mismatch") for f in flags):
        batch.result.mismatches += 1
        batch.review(
            "score_mismatch", sub.id, assessment=a,
            summary=f"{a.case_code or '?'} {a.assessment_date or ''}: device scores differ from the server's "
            f"({', '.join(f.split(':')[1] for f in flags if f.startswith('score_mismatch'))})",
        )  # fmt: skip
    _attach_to_case(batch, sub, a, d.instance)
    batch.by_instance.setdefault(a.instance_id, a)
    if a.deprecated_id:
        batch.by_deprecated.setdefault(a.deprecated_id, a)


def _entity_update(
    batch: _Batch, sub: Submission, a: Assessment, instance: PlainInstance
) -> EntityUpdate | None:
    """The submission's ``cases`` entity block, with what its ``save_to`` fields sent."""
    block = next((e for e in instance.entities if e.dataset == "cases"), None)
    if block is None:
        return None
    report = version_info(batch.session, sub.form_version_id).report or {}
    declared = (report.get("entity_list") or {}).get("properties")
    return EntityUpdate.of(block, sub.id, received_properties(a, declared))


def _attach_to_case(batch: _Batch, sub: Submission, a: Assessment, instance: PlainInstance) -> None:
    change = _entity_update(batch, sub, a, instance)
    if a.deprecated_id and change is not None and not change.update:
        change = None  # an edit of a create: the entity was made by the first version
    successor = batch.by_deprecated.get(a.instance_id)
    if successor is not None:
        # its edit synced first (offline devices): this original is history at once, also
        # when that edit has been edited in turn (a chain uploaded backwards)
        a.case = batch.case_of(successor)
        batch.supersede(a, successor)
        return
    previous = batch.by_instance.get(a.deprecated_id) if a.deprecated_id else None
    if change is not None and previous is not None:
        change = change.editing(previous.submission_id)
    if previous is not None and previous.state == AssessmentState.ORPHAN:
        _supersede_orphan(batch, previous, a)  # the edit of an orphan replaces it as an orphan
        previous = None
    # the case the edit names (it may correct the survivor picked on the tablet), else the
    # case of the version it replaces
    case = batch.find_case(a.entity_uuid, a.case_code)
    case = case or (batch.case_of(previous) if previous is not None else None)
    taken = batch.by_code.get(a.case_code) if case is None and a.case_code else None
    if case is None and a.collection_point == "intake" and a.case_code and taken is None:
        case = Case(
            project_id=a.project_id,
            case_code=a.case_code,
            entity_uuid=a.entity_uuid or str(uuid.uuid4()),
            casework_type=a.casework_type,
            office=a.office,
            flags=[],
        )
        batch.session.add(case)
        batch._index(case)
        _adopt_orphans(batch, case)
    left: Case | None = None  # the case the replaced version leaves, to be recomputed
    if previous is not None and previous.state != AssessmentState.SUPERSEDED:
        left = _replace_by_edit(batch, previous, a)
    if case is None:
        a.state = AssessmentState.ORPHAN
        batch.result.orphans += 1
        batch.orphans.append(a)
        item = batch.review("orphan", sub.id, assessment=a, summary=_orphan_summary(a, taken))
        if item is not None:
            batch.orphan_items[a] = item
        if change is not None:
            batch.book.hold_orphan(change)
    else:
        a.case = case
        if (
            change is not None
            and a.entity_uuid in batch.merged
            and case.entity_uuid != a.entity_uuid
        ):
            # made on the tablet's own copy, merged into this case: not an update of its entity
            change = None
        _place(batch, a, case)
        if previous is not None and previous.collection_point == "intake":
            _rename_by_intake_edit(batch, case, a)
    if left is not None:
        _promote_waiting(batch, left, previous)
        if left is not case:
            _refresh(batch.session, left, _ordered(batch.active[left], batch.seq),
                     batch.form_version, batch.book)  # fmt: skip
    if case is not None:
        _refresh(
            batch.session, case, _ordered(batch.active[case], batch.seq), batch.form_version,
            batch.book, change,
        )  # fmt: skip


def _rename_by_intake_edit(batch: _Batch, case: Case, edit: Assessment) -> None:
    """The edit of a case's intake corrects its case code (mistyped on the tablet): the case
    takes it, unless another case has that code already."""
    code = edit.case_code
    if (
        edit.state != AssessmentState.ACTIVE
        or edit.collection_point != "intake"
        or not code
        or code == case.case_code
        or not (case.entity_uuid and edit.entity_uuid == case.entity_uuid)
        or batch.by_code.get(code) not in (None, case)
    ):
        return
    if batch.by_code.get(case.case_code) is case:
        del batch.by_code[case.case_code]
    batch.audit.append(("case.rename", f"submission:{edit.submission_id}"))
    case.case_code = code
    batch.by_code[code] = case


def _replace_by_edit(batch: _Batch, previous: Assessment, edit: Assessment) -> Case | None:
    """``edit`` replaces ``previous`` (active, or waiting in a conflict): ``previous`` is
    history and leaves its case's trend; a conflict item about it is settled (the edit is
    placed afresh, so it competes again only if it still clashes). Returns the case it left."""
    case = batch.case_of(previous)
    if case is not None:
        batch.active.setdefault(case, [])
        if previous in batch.active[case]:
            batch.active[case].remove(previous)
    was_conflict = previous.state == AssessmentState.CONFLICT
    batch.supersede(previous, edit)
    if was_conflict:
        _settle_conflict_item(batch, previous, "superseded_by_edit")
    return case


def _settle_conflict_item(batch: _Batch, a: Assessment, resolution: str) -> None:
    """Resolve the open conflict item about ``a`` (made in this batch or before) as the worker."""
    items = [batch.conflict_items.pop(a)] if a in batch.conflict_items else []
    if not items and a.id is not None:
        items = list(
            batch.session.scalars(
                select(ReviewItem).where(
                    ReviewItem.kind == "conflict",
                    ReviewItem.assessment_id == a.id,
                    ReviewItem.resolved_at.is_(None),
                )
            )
        )
    for item in items:
        if item.resolved_at is None:
            item.resolved_at = dt.datetime.now(dt.UTC)
            item.resolution, item.resolved_by = resolution, "worker"


def _promote_waiting(batch: _Batch, case: Case, gone: Assessment) -> None:
    """An edit moved ``gone`` away from its collection point and date: an assessment that
    waited in a conflict with it has nothing left to compete with, and counts (its conflict
    item settled). With several waiting, they still compete with one another: left for review.
    """
    if gone.collection_point is None or gone.assessment_date is None:
        return
    if _clash(gone, batch.active[case]) is not None:
        return  # the slot still has an active assessment (the edit itself, say)
    waiting = {
        id(w): w
        for w in batch.conflict_items
        if w.state == AssessmentState.CONFLICT and batch.case_of(w) is case
    }
    if case.id is not None:
        with batch.session.no_autoflush:
            for w, form_version_id in batch.session.execute(
                select(Assessment, Submission.form_version_id)
                .join(Submission, Submission.id == Assessment.submission_id)
                .where(Assessment.case_id == case.id, Assessment.state == AssessmentState.CONFLICT)
            ):
                waiting.setdefault(id(w), w)
                batch.form_version.setdefault(w.submission_id, form_version_id)
    same_slot = [
        w
        for w in waiting.values()
        if w.state == AssessmentState.CONFLICT  # as now, not as last flushed
        and w is not gone
        and w.collection_point == gone.collection_point
        and w.assessment_date == gone.assessment_date
    ]
    if len(same_slot) != 1:
        return
    [w] = same_slot
    w.state = AssessmentState.ACTIVE
    batch.active[case].append(w)
    _settle_conflict_item(batch, w, "clash_gone")


def _supersede_orphan(batch: _Batch, orphan: Assessment, edit: Assessment) -> None:
    """An orphan's edit arrived: the orphan is history, its review item settled; the edit
    takes its place (joining the case, or waiting as an orphan itself)."""
    batch.supersede(orphan, edit)
    batch.orphans = [o for o in batch.orphans if o is not orphan]
    item = batch.orphan_items.pop(orphan, None)
    if item is None and orphan.id is not None:
        item = batch.session.scalar(
            select(ReviewItem).where(
                ReviewItem.kind == "orphan",
                ReviewItem.assessment_id == orphan.id,
                ReviewItem.resolved_at.is_(None),
            )
        )
    if item is not None and item.resolved_at is None:
        item.resolved_at = dt.datetime.now(dt.UTC)
        item.resolution, item.resolved_by = "superseded_by_edit", "worker"


def _orphan_summary(a: Assessment, taken: Case | None) -> str:
    point, code = a.collection_point or "follow-up", a.case_code or a.entity_uuid or "?"
    if taken is None:
        return (
            f"A {point} assessment of {a.assessment_date} names case {code}, which this server "
            "does not know."
        )
    return (
        f"A {point} assessment of {a.assessment_date} names case code {code} under another case "
        f"id than the case {code} on this server (intake {taken.intake_date or 'not dated'}): "
        "two survivors given one code, or one survivor registered twice. Link it to the case if "
        "it is the same survivor; otherwise open a new case for it with a new code."
    )


def _clash(a: Assessment, active: list[Assessment]) -> Assessment | None:
    """The active assessment ``a`` competes with: same collection point and date."""
    if a.collection_point is None or a.assessment_date is None:
        return None
    return next(
        (
            other
            for other in active
            if other is not a
            and other.collection_point == a.collection_point
            and other.assessment_date == a.assessment_date
        ),
        None,
    )


def _conflict_summary(case: Case, a: Assessment) -> str:
    return (
        f"Case {case.case_code}: two different {a.collection_point} assessments dated "
        f"{a.assessment_date}. Keep one."
    )


def _verdict(a: Assessment, active: list[Assessment]) -> tuple[str, Assessment | None]:
    """How ``a`` joins a case whose active assessments are ``active``: ``"active"``,
    ``"duplicate"`` of the clashing one (the same ratings sent twice: ignored) or
    ``"conflict"`` with it (same collection point and date, other ratings: for review).
    The one rule for the worker's batches (:func:`_place`) and for links made outside them
    (:func:`settle_in_case`)."""
    clash = _clash(a, active)
    if clash is None:
        return "active", None
    return ("duplicate" if clash.ratings == a.ratings else "conflict"), clash


def _place(batch: _Batch, a: Assessment, case: Case) -> None:
    """``a`` joins the case: active, a duplicate of the one it repeats, or a conflict."""
    verdict, clash = _verdict(a, batch.active[case])
    if verdict == "active":
        a.state = AssessmentState.ACTIVE
        batch.active[case].append(a)
    elif verdict == "duplicate":
        batch.supersede(a, clash)
        a.flags = [*a.flags, "duplicate"]
    else:
        a.state = AssessmentState.CONFLICT
        batch.result.conflicts += 1
        item = batch.review(
            "conflict", a.submission_id, assessment=a, case=case,
            summary=_conflict_summary(case, a),
        )  # fmt: skip
        if item is not None:
            batch.conflict_items[a] = item


def settle_in_case(session: Session, a: Assessment, case: Case) -> str:
    """Put an assessment an admin or the worker linked into its case, outside a batch.

    Returns ``"active"``, ``"duplicate"`` (it repeats an active assessment: superseded by it) or
    ``"conflict"`` (it differs from one with the same collection point and date: for review).
    """
    a.case = case
    active = list(
        session.scalars(
            select(Assessment).where(
                Assessment.case_id == case.id,
                Assessment.state == AssessmentState.ACTIVE,
                Assessment.id != a.id,
            )
        )
    )
    verdict, clash = _verdict(a, active)
    if verdict == "active":
        a.state = AssessmentState.ACTIVE
        return verdict
    if verdict == "duplicate":
        a.state, a.superseded_by_id = AssessmentState.SUPERSEDED, clash.id
        a.flags = [*a.flags, "duplicate"]
        return verdict
    a.state = AssessmentState.CONFLICT
    if (
        session.scalar(
            select(ReviewItem.id).where(
                ReviewItem.kind == "conflict", ReviewItem.submission_id == a.submission_id
            )
        )
        is None
    ):
        session.add(
            ReviewItem(
                project_id=case.project_id,
                kind="conflict",
                submission_id=a.submission_id,
                assessment=a,
                case=case,
                summary=_conflict_summary(case, a),
            )
        )
    return "conflict"


def merge_device_entity(session: Session, linked: Assessment, case: Case, *, actor: str) -> None:
    """An admin linked ``linked`` into ``case`` although its tablet gave the survivor another
    entity id (registered twice): that id is retired, so the integrity API tells the tablet to
    drop its copy, and the tablet's other assessments of that copy, waiting as orphans, join
    the case too (those it sends later are routed by :meth:`_Batch.find_case`)."""
    if not linked.entity_uuid or not case.entity_uuid or linked.entity_uuid == case.entity_uuid:
        return
    book = EntityBook(session, case.project_id)
    book.retire(linked.entity_uuid, case)
    audit.record_many(session, actor, book.audit)
    orphans = session.scalars(
        select(Assessment)
        .where(
            Assessment.project_id == case.project_id,
            Assessment.state == AssessmentState.ORPHAN,
            Assessment.entity_uuid == linked.entity_uuid,
            Assessment.id != linked.id,
        )
        .order_by(Assessment.id)
    ).all()
    if not orphans:
        return
    items = {
        item.assessment_id: item
        for item in session.scalars(
            select(ReviewItem).where(
                ReviewItem.kind == "orphan",
                ReviewItem.assessment_id.in_([o.id for o in orphans]),
                ReviewItem.resolved_at.is_(None),
            )
        )
    }
    for orphan in orphans:
        _link_orphan(orphan, case, items.get(orphan.id))
        settle_in_case(session, orphan, case)


def _same_case(case: Case, entity_uuid: str | None, code: str | None) -> bool:
    """Whether an assessment naming ``entity_uuid``/``code`` belongs to ``case``: by the case
    id where both have one (a code alone never joins another survivor's case), else by code."""
    if entity_uuid and case.entity_uuid:
        return entity_uuid == case.entity_uuid
    return code is not None and code == case.case_code


def _adopt_orphans(batch: _Batch, case: Case) -> None:
    """Follow-ups that synced before their intake (offline devices) join the new case."""
    keep: list[Assessment] = []
    for orphan in batch.orphans:
        if orphan.state != AssessmentState.ORPHAN or not _same_case(
            case, orphan.entity_uuid, orphan.case_code
        ):
            keep.append(orphan)
            continue
        _link_orphan(orphan, case, batch.orphan_items.get(orphan))
        _place(batch, orphan, case)
    batch.orphans = keep


def _link_orphan(orphan: Assessment, case: Case, item: ReviewItem | None) -> None:
    """An orphan joins its case (the caller places it: :func:`_place`, :func:`settle_in_case`);
    its open review item is resolved as linked by the worker."""
    orphan.case = case
    if item is not None and item.resolved_at is None:
        item.resolved_at = dt.datetime.now(dt.UTC)
        item.resolution = "auto_linked"
        item.resolved_by = "worker"
        item.case = case


def _ordered(rows: list[Assessment], seq: dict[Assessment, int]) -> list[Assessment]:
    """By assessment date (undated last, as PostgreSQL sorts NULL), on one date the intake
    first and the closure last (:func:`day_rank`), then arrival."""
    return sorted(
        rows,
        key=lambda r: (
            r.assessment_date is None,
            r.assessment_date or dt.date.min,
            day_rank(r.collection_point),
            r.id if r.id is not None else 2**62 + seq.get(r, 0),
        ),
    )


def add_months(day: dt.date, months: int) -> dt.date:
    """``day`` moved ``months`` calendar months on, as a case worker counts: 15 January + 6 is
    15 July; 31 August + 6 is the last day of February."""
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return day.replace(year=year, month=month, day=min(day.day, monthrange(year, month)[1]))


def refresh_case(
    session: Session,
    case: Case,
    *,
    forced: EntityBacklog | None = None,
    actor: str = "worker",
    today: dt.date | None = None,
) -> None:
    """Recompute a case's state from its active assessments, ordered by assessment date.

    Used outside the worker's batches: an admin linked an orphan or settled a conflict, or a
    held entity update waited too long and is applied anyway (``forced``).
    """
    session.flush()
    if session.get_bind().dialect.name == "postgresql":  # as a worker's batch locks it
        session.execute(select(Case.id).where(Case.id == case.id).with_for_update())
    rows = session.execute(
        select(Assessment, Submission.form_version_id)
        .join(Submission, Submission.id == Assessment.submission_id)
        .where(Assessment.case_id == case.id, Assessment.state == AssessmentState.ACTIVE)
    ).all()
    book = EntityBook(session, case.project_id)
    if not case.entity_uuid:
        case.entity_uuid = str(uuid.uuid4())
    book.load({case.entity_uuid})
    _refresh(
        session,
        case,
        _ordered([a for a, _ in rows], {}),
        {a.submission_id: fv for a, fv in rows},
        book,
        forced=forced,
        today=today,
    )
    audit.record_many(session, actor, book.audit)


def _refresh(
    session: Session,
    case: Case,
    rows: list[Assessment],
    form_version: dict[int, int],
    book: EntityBook,
    change: EntityUpdate | None = None,
    *,
    forced: EntityBacklog | None = None,
    today: dt.date | None = None,
) -> None:
    """Set the case's state from ``rows``, its active assessments in order (no query), then
    bring its entity in the ``cases`` list up to date."""
    today = today or server.db.today()
    case.assessment_count = len(rows)
    flags: list[str] = [f for f in (case.flags or []) if f.startswith("entity_")]
    if not rows:  # nothing active is left (an admin's decision): the list shows that too
        case.latest_scores, case.latest_date, case.next_due, case.closure_ready = (
            {},
            None,
            None,
            False,
        )
        case.flags = flags
        case.updated_at = dt.datetime.now(dt.UTC)
        _sync_entity(case, None, book, change, forced)
        return
    _rebase(session, rows, form_version)
    first, latest = rows[0], rows[-1]
    intake = next((r for r in rows if r.collection_point == "intake"), first)
    case.intake_date = intake.assessment_date
    case.intake_scores = intake.scores
    case.latest_date = latest.assessment_date
    case.latest_scores = latest.scores
    case.casework_type = latest.casework_type or case.casework_type
    case.office = latest.office or case.office
    scorer = version_info(session, form_version[latest.submission_id]).scorer
    case.closure_ready = scorer.closure_ready(latest.scores)
    # each domain against the last time it was scored (one rated all "not applicable" or
    # "not assessed" in between hides no drop)
    before: dict[str, float | None] = {}
    for r in rows[:-1]:
        before.update((d, v) for d, v in (r.scores or {}).items() if v is not None)
    if scorer.regressed(before, latest.scores):
        flags.append("regression")
    if any(r.collection_point == "closure" for r in rows):
        case.status = CaseStatus.CLOSED
        case.closed_at = next(
            r.assessment_date for r in reversed(rows) if r.collection_point == "closure"
        )
        case.next_due = None
    else:
        case.status = CaseStatus.OPEN
        case.closed_at = None
        # intake + 6 months, then a year after each scheduled review; ad hoc visits do not
        # move the schedule
        scheduled = [r for r in rows if r.collection_point in SCHEDULED and r.assessment_date]
        last = scheduled[-1] if scheduled else latest
        if last.assessment_date is not None:
            first_review = all(r.collection_point == "intake" for r in scheduled)
            months = FIRST_REVIEW_MONTHS if first_review else REVIEW_MONTHS
            case.next_due = add_months(last.assessment_date, months)
            if case.next_due < today:
                flags.append("overdue")
    if any(f.startswith("survivor_gap") for f in latest.flags):
        flags.append("survivor_gap")
    case.flags = sorted(set(flags))
    case.updated_at = dt.datetime.now(dt.UTC)
    _sync_entity(case, latest.collection_point, book, change, forced)


_CURRENT_KEY = "kintsugi.current_version_of"


def _current_of(session: Session, form_version_id: int) -> _VersionInfo | None:
    """:func:`_current_versions` for the form that ``form_version_id`` belongs to (cached for
    the session: one unit of work)."""
    cache: dict[int, _VersionInfo | None] = session.info.setdefault(_CURRENT_KEY, {})
    if form_version_id not in cache:
        form_id = session.scalar(
            select(FormVersion.form_id).where(FormVersion.id == form_version_id)
        )
        cache[form_version_id] = _current_versions(session, {form_id}).get(form_id)
    return cache[form_version_id]


def _survivor_gaps(
    survivor_view: dict[str, Any] | None, scores: dict[str, float | None], scorer: Scorer
) -> list[str]:
    """``survivor_gap:<domain>`` flags: where the survivor's own rating and the practitioner's
    domain score are ``scorer.survivor_gap`` points apart or more."""
    return [
        f"survivor_gap:{domain}"
        for domain, view in (survivor_view or {}).items()
        if view is not None
        and scores.get(domain) is not None
        and abs(int(view) - scores[domain]) >= scorer.survivor_gap
    ]


def _rebase(session: Session, rows: list[Assessment], form_version: dict[int, int]) -> None:
    """Put assessments still on an older instrument's subdomains (reconciled before the
    current version was published) on the current one's, through its declared version map,
    so the trend and the change since intake compare like with like."""
    current = _current_of(session, form_version[rows[-1].submission_id])
    if current is None or current.report is None or current.scorer is None:
        return
    version = (current.report.get("instrument") or {}).get("version")
    known = {s for subs in current.scorer.domains.values() for s in subs}
    for r in rows:
        if r.instrument_version == version or not set(r.ratings or {}) - known:
            continue  # on the current basis already
        mapped = _canonical(r.ratings, current.report, r.instrument_version)
        if mapped is None:
            continue  # no declared map: kept as scored
        r.ratings, r.scores = mapped, current.scorer.score(mapped)
        gaps = _survivor_gaps(r.survivor_view, r.scores, current.scorer)
        r.flags = [*(f for f in r.flags or [] if not f.startswith("survivor_gap:")), *gaps]


def _sync_entity(
    case: Case,
    last_point: str | None,
    book: EntityBook,
    change: EntityUpdate | None,
    forced: EntityBacklog | None,
) -> None:
    if not case.entity_uuid:
        case.entity_uuid = str(uuid.uuid4())
    props = case_properties(case, last_point)
    if forced is not None:
        book.release_forced(case, forced, props)
    else:
        book.sync(case, props, change)
