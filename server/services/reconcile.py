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
5. update the ``cases`` entity list served to devices (a new version whenever the case changes).

Claiming is safe with several workers on PostgreSQL (``FOR UPDATE SKIP LOCKED``); on SQLite one
worker runs at a time (SQLite serialises writers). Every write for one submission happens in
one transaction keyed by the submission id, so a worker killed midway leaves it pending and
the re-run processes it exactly once. Free-text notes are never written to the database.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import exists, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from form_compiler.instance import read_assessment
from form_compiler.scoring import Scorer
from server.blobs import make_blob_store, read_all
from server.errors import CustodyError, KeyLockedError, UnusableSubmissionError
from server.models import Entity, Form, FormVersion, Submission, SubmissionAttachment
from server.models_cases import Assessment, AssessmentState, Case, CaseStatus, ReviewItem
from server.services import audit, custody
from sync_protocol.crypto import SignatureStatus, decrypt_submission
from sync_protocol.envelope import EncryptedEnvelope, PlainInstance, parse_submission
from sync_protocol.errors import ProtocolError

log = logging.getLogger(__name__)

__all__ = ["ReconcileResult", "reconcile_pending", "reconcile_submission", "refresh_case"]

PENDING = "pending_decryption"
RECEIVED = "received"
DECRYPTED = "decrypted"
RECONCILED = "reconciled"  # a plaintext submission that has been processed
QUARANTINED = "quarantined"
SCORE_TOLERANCE = 0.005
SIX_MONTHS = dt.timedelta(days=182)
ONE_YEAR = dt.timedelta(days=365)


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
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass(frozen=True)
class _VersionInfo:
    project_id: int
    fingerprint: str | None
    report: dict[str, Any] | None
    scorer: Scorer | None


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
    batch: int = 20,
    actor: str = "worker",
    write_lock: AbstractContextManager[Any] | None = None,
) -> ReconcileResult:
    """Process pending submissions of a project until none is left (or ``limit``).

    Each batch is one transaction (claimed rows stay locked on PostgreSQL until it commits).
    Stops early, leaving submissions pending, when the project key is locked.

    :param write_lock: ``server.db.write_lock(app)``: on SQLite the one lock every writer
        (uploads included) takes, so a worker never makes an upload wait on "database is locked"
    """
    total = ReconcileResult()
    while limit is None or total.processed < limit:
        size = batch if limit is None else min(batch, limit - total.processed)
        with write_lock or nullcontext(), session_factory() as session:
            claimed = _claim(session, project_id, size)
            if not claimed:
                break
            result = ReconcileResult()
            store = make_blob_store(config, session)
            for sub in claimed:
                try:
                    with session.begin_nested():
                        reconcile_submission(session, store, sub, result=result, actor=actor)
                except KeyLockedError:
                    result.skipped_locked += 1
                    break
                except SQLAlchemyError:
                    raise  # the database itself failed: the batch rolls back, rows stay pending
                except Exception as err:  # one bad submission must not stall the queue
                    # only the type: an exception's text may quote a decrypted answer
                    log.error("reconciling submission %s failed: %s", sub.id, type(err).__name__)
                    with session.begin_nested():
                        _quarantine(
                            session, sub, project_id,
                            f"reconciliation failed unexpectedly ({type(err).__name__}); "
                            "see the server log, then re-queue it",
                            result,
                        )  # fmt: skip
            session.commit()
        total.add(result)
        if result.skipped_locked or result.processed == 0:
            break
    return total


def _files(session: Session, store: Any, sub: Submission) -> dict[str, bytes]:
    rows = session.scalars(
        select(SubmissionAttachment).where(
            SubmissionAttachment.submission_id == sub.id, SubmissionAttachment.present.is_(True)
        )
    )
    return {row.name: read_all(store, row.blob_key) for row in rows if row.blob_key}


def _quarantine(
    session: Session, sub: Submission, project_id: int, reason: str, result: ReconcileResult
) -> None:
    sub.status = QUARANTINED
    sub.quarantine_reason = reason
    sub.updated_at = dt.datetime.now(dt.UTC)
    _review(
        session,
        project_id,
        "quarantined",
        sub.id,
        summary=f"Submission {sub.instance_id}: {reason}",
    )
    result.quarantined += 1


def _review(
    session: Session,
    project_id: int,
    kind: str,
    submission_id: int | None,
    *,
    summary: str,
    assessment_id: int | None = None,
    case_id: int | None = None,
) -> None:
    existing = session.scalar(
        select(ReviewItem).where(ReviewItem.kind == kind, ReviewItem.submission_id == submission_id)
    )
    if existing is None:
        session.add(
            ReviewItem(
                project_id=project_id,
                kind=kind,
                submission_id=submission_id,
                assessment_id=assessment_id,
                case_id=case_id,
                summary=summary,
            )
        )


def plaintext_of(session: Session, store: Any, sub: Submission, project_id: int) -> bytes:
    """The submission's plaintext instance XML (decrypting with the unlocked key if needed).

    :raises KeyLockedError: the project key is locked
    :raises UnusableSubmissionError: undecryptable, or the signature is not VALID
    """
    raw = read_all(store, sub.xml_blob_key)
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
    fingerprint = version_info(session, sub.form_version_id).fingerprint
    if not fingerprint:
        raise UnusableSubmissionError("the form version has no encryption key on record")
    try:
        key = custody.get_private_key(project_id, fingerprint)
    except KeyLockedError:
        raise  # waits as pending until an admin unlocks
    except CustodyError as err:  # no key of the project has that fingerprint
        raise UnusableSubmissionError(str(err)) from err
    try:
        decrypted = decrypt_submission(envelope, key, _files(session, store, sub))
    except ProtocolError as err:
        raise UnusableSubmissionError(f"cannot be decrypted: {err}") from err
    if decrypted.signature is SignatureStatus.INVALID:
        raise UnusableSubmissionError(
            "signature invalid: the files were altered or do not belong together"
        )
    if decrypted.signature is SignatureStatus.CANNOT_VERIFY:
        raise UnusableSubmissionError(
            "signature cannot be verified (a file is missing or no signature)"
        )
    return decrypted.xml


def _date(text: str | None) -> dt.date | None:
    try:
        return dt.date.fromisoformat(text[:10]) if text else None
    except ValueError:
        return None


def _canonical(
    ratings: dict[str, Any], report: dict[str, Any], instrument_version: str | None
) -> dict[str, Any]:
    """Ratings keyed by current subdomain ids, through the declared version map."""
    mapping = (
        (report.get("version_map") or {}).get(instrument_version or "", {}).get("subdomains", {})
    )
    out: dict[str, Any] = {}
    for key, value in ratings.items():
        target = mapping.get(key, key)
        for t in target if isinstance(target, list) else [target]:
            out.setdefault(t, value)
    return out


def reconcile_submission(
    session: Session, store: Any, sub: Submission, *, result: ReconcileResult, actor: str = "worker"
) -> None:
    """Reconcile one submission (inside the caller's transaction). Idempotent per submission."""
    info = version_info(session, sub.form_version_id)
    project_id = info.project_id
    result.processed += 1
    if session.scalar(select(exists().where(Assessment.submission_id == sub.id))):
        sub.status = DECRYPTED if sub.encrypted else RECONCILED
        return
    try:
        xml = plaintext_of(session, store, sub, project_id)
        instance = parse_submission(xml)
        if not isinstance(instance, PlainInstance):
            raise UnusableSubmissionError("the decrypted data is not a form instance")
        if instance.instance_id != sub.instance_id:
            raise UnusableSubmissionError("the decrypted instanceID differs from the manifest's")
    except UnusableSubmissionError as q:
        _quarantine(session, sub, project_id, q.reason, result)
        audit.record(session, actor, "submission.quarantine", f"submission:{sub.id}")
        return
    except ProtocolError as err:
        _quarantine(
            session, sub, project_id, f"the decrypted instance cannot be read: {err}", result
        )
        return
    if sub.encrypted:
        audit.record(session, actor, "submission.decrypt", f"submission:{sub.id}")
    sub.status = DECRYPTED if sub.encrypted else RECONCILED
    sub.deprecated_id = sub.deprecated_id or instance.deprecated_id
    sub.updated_at = dt.datetime.now(dt.UTC)
    if "plaintext_for_encrypted_form" in (sub.flags or []):
        _review(
            session, project_id, "plaintext_for_encrypted_form", sub.id,
            summary=f"Submission {sub.instance_id} arrived unencrypted for a form that requires encryption.",
        )  # fmt: skip
    report, scorer = info.report, info.scorer
    if report is None or scorer is None:
        return  # not an instrument form: stored, nothing to score
    data = read_assessment(instance.root, report)
    if data.consent != "yes":
        return  # consent refused (or not recorded): only that is kept
    ratings = _canonical(data.ratings, report, data.instrument_version)
    scores = scorer.score(ratings)
    flags: list[str] = []
    for domain, score in scores.items():
        device = data.device_scores.get(domain)
        if (score is None) != (device is None) or (
            score is not None and device is not None and abs(score - device) > SCORE_TOLERANCE
        ):
            flags.append(f"score_mismatch:{domain}")
    for domain, view in data.survivor_view.items():
        if (
            view is not None
            and scores.get(domain) is not None
            and abs(int(view) - scores[domain]) >= scorer.survivor_gap
        ):
            flags.append(f"survivor_gap:{domain}")
    assessment = Assessment(
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
    )
    session.add(assessment)
    session.flush()
    result.assessments += 1
    if any(f.startswith("score_mismatch") for f in flags):
        result.mismatches += 1
        _review(
            session, project_id, "score_mismatch", sub.id, assessment_id=assessment.id,
            summary=f"{data.case_code or '?'} {data.assessment_date or ''}: device scores differ from the server's "
            f"({', '.join(f.split(':')[1] for f in flags if f.startswith('score_mismatch'))})",
        )  # fmt: skip
    _attach_to_case(session, assessment, instance, result)


def _find_case(
    session: Session, project_id: int, entity_uuid: str | None, case_code: str | None
) -> Case | None:
    if entity_uuid:
        case = session.scalar(
            select(Case).where(Case.project_id == project_id, Case.entity_uuid == entity_uuid)
        )
        if case is not None:
            return case
    if case_code:
        return session.scalar(
            select(Case).where(Case.project_id == project_id, Case.case_code == case_code)
        )
    return None


def _attach_to_case(
    session: Session, a: Assessment, instance: PlainInstance, result: ReconcileResult
) -> None:
    project_id = a.project_id
    previous = None
    if a.deprecated_id:
        previous = session.scalar(
            select(Assessment).where(
                Assessment.project_id == project_id, Assessment.instance_id == a.deprecated_id
            )
        )
    case = (
        session.get(Case, previous.case_id) if previous is not None and previous.case_id else None
    )
    case = case or _find_case(session, project_id, a.entity_uuid, a.case_code)
    if case is None and a.collection_point == "intake" and a.case_code:
        case = Case(
            project_id=project_id,
            case_code=a.case_code,
            entity_uuid=a.entity_uuid or str(uuid.uuid4()),
            casework_type=a.casework_type,
            office=a.office,
        )
        session.add(case)
        session.flush()
        _adopt_orphans(session, case)
    if case is None:
        a.state = AssessmentState.ORPHAN
        result.orphans += 1
        _review(
            session, project_id, "orphan", a.submission_id, assessment_id=a.id,
            summary=f"A {a.collection_point or 'follow-up'} assessment of {a.assessment_date} names case "
            f"{a.case_code or a.entity_uuid or '?'}, which this server does not know.",
        )  # fmt: skip
        return
    a.case_id = case.id
    if previous is not None and previous.state != AssessmentState.SUPERSEDED:
        previous.state = AssessmentState.SUPERSEDED
        previous.superseded_by_id = a.id
    else:
        clash = session.scalar(
            select(Assessment).where(
                Assessment.case_id == case.id,
                Assessment.id != a.id,
                Assessment.state == AssessmentState.ACTIVE,
                Assessment.collection_point == a.collection_point,
                Assessment.assessment_date == a.assessment_date,
            )
        )
        if clash is not None:
            if clash.ratings == a.ratings:
                a.state = AssessmentState.SUPERSEDED  # the same assessment sent twice: ignored
                a.superseded_by_id = clash.id
                a.flags = [*a.flags, "duplicate"]
            else:
                a.state = AssessmentState.CONFLICT
                result.conflicts += 1
                _review(
                    session, project_id, "conflict", a.submission_id, assessment_id=a.id, case_id=case.id,
                    summary=f"Case {case.case_code}: two different {a.collection_point} assessments dated "
                    f"{a.assessment_date}. Keep one.",
                )  # fmt: skip
    entity = next((e for e in instance.entities if e.dataset == "cases"), None)
    refresh_case(session, case, entity_base_version=entity.base_version if entity else None)


def _adopt_orphans(session: Session, case: Case) -> None:
    """Follow-ups that synced before their intake (offline devices) join the new case."""
    orphans = session.scalars(
        select(Assessment).where(
            Assessment.project_id == case.project_id,
            Assessment.state == AssessmentState.ORPHAN,
            (Assessment.entity_uuid == case.entity_uuid) | (Assessment.case_code == case.case_code),
        )
    ).all()
    for orphan in orphans:
        orphan.case_id = case.id
        orphan.state = AssessmentState.ACTIVE
        item = session.scalar(
            select(ReviewItem).where(
                ReviewItem.kind == "orphan", ReviewItem.assessment_id == orphan.id
            )
        )
        if item is not None and item.resolved_at is None:
            item.resolved_at = dt.datetime.now(dt.UTC)
            item.resolution = "auto_linked"
            item.resolved_by = "worker"
            item.case_id = case.id


def refresh_case(
    session: Session,
    case: Case,
    *,
    entity_base_version: str | None = None,
    today: dt.date | None = None,
) -> None:
    """Recompute a case's state from its active assessments, ordered by assessment date."""
    today = today or dt.date.today()
    rows = list(
        session.scalars(
            select(Assessment)
            .where(Assessment.case_id == case.id, Assessment.state == AssessmentState.ACTIVE)
            .order_by(Assessment.assessment_date, Assessment.id)
        )
    )
    case.assessment_count = len(rows)
    flags: list[str] = [f for f in (case.flags or []) if f.startswith("entity_")]
    if not rows:
        case.latest_scores, case.latest_date, case.next_due, case.closure_ready = (
            {},
            None,
            None,
            False,
        )
        case.flags = flags
        return
    first, latest = rows[0], rows[-1]
    intake = next((r for r in rows if r.collection_point == "intake"), first)
    case.intake_date = intake.assessment_date
    case.intake_scores = intake.scores
    case.latest_date = latest.assessment_date
    case.latest_scores = latest.scores
    case.casework_type = latest.casework_type or case.casework_type
    case.office = latest.office or case.office
    # from the identity map when the worker claimed it (no query; a query here would also
    # autoflush the case half-updated, costing a second UPDATE per submission)
    scorer = version_info(
        session, session.get(Submission, latest.submission_id).form_version_id
    ).scorer
    case.closure_ready = scorer.closure_ready(latest.scores)
    if len(rows) >= 2:
        before = rows[-2].scores
        if any(
            before.get(d) is not None
            and latest.scores.get(d) is not None
            and before[d] - latest.scores[d] >= scorer.regression_drop
            for d in latest.scores
        ):
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
        if latest.assessment_date is not None:
            step = SIX_MONTHS if len(rows) == 1 else ONE_YEAR
            case.next_due = latest.assessment_date + step
            if case.next_due < today:
                flags.append("overdue")
    if any(f.startswith("survivor_gap") for f in latest.flags):
        flags.append("survivor_gap")
    case.flags = sorted(set(flags))
    case.updated_at = dt.datetime.now(dt.UTC)
    _sync_entity(session, case, entity_base_version, latest.collection_point)


def _sync_entity(
    session: Session, case: Case, base_version: str | None, last_point: str | None = None
) -> None:
    """Write the case into the ``cases`` entity list with a new version when it changed.

    A closed case leaves the list devices download (its row is marked deleted, so the
    integrity endpoint tells devices to drop it); a case reopened comes back with a new version.
    """
    now = dt.datetime.now(dt.UTC)
    closed = case.status == CaseStatus.CLOSED
    if not case.entity_uuid:
        case.entity_uuid = str(uuid.uuid4())
    props = {
        "case_code": case.case_code,
        "last_assessment_date": case.latest_date.isoformat() if case.latest_date else "",
        "last_collection_point": last_point or "",
        "casework_type": case.casework_type or "",
        "office": case.office or "",
        **{
            f"score_{d}": ("" if v is None else f"{v:.2f}")
            for d, v in (case.latest_scores or {}).items()
        },
    }
    entity = session.scalar(
        select(Entity).where(
            Entity.project_id == case.project_id,
            Entity.dataset == "cases",
            Entity.uuid == case.entity_uuid,
        )
    )
    if entity is None:
        session.add(
            Entity(
                project_id=case.project_id,
                dataset="cases",
                uuid=case.entity_uuid,
                label=case.case_code,
                version=1,
                properties=props,
                deleted_at=now if closed else None,
            )
        )
        return
    if base_version and base_version.isdigit() and int(base_version) < entity.version:
        # Central's "parallel update": an offline device worked from an older version. The
        # server state is recomputed from every assessment, so nothing is lost; flag it.
        case.flags = sorted({*case.flags, "entity_parallel_update"})
    reopened = entity.deleted_at is not None and not closed
    if entity.properties != props or entity.label != case.case_code or reopened:
        entity.properties = props
        entity.label = case.case_code
        entity.version += 1
        entity.deleted_at = None
        entity.updated_at = now
    if closed and entity.deleted_at is None:
        entity.deleted_at = now
        entity.updated_at = now
