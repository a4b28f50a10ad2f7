"""Reading the case record: caseload, a case with its trend, review queues, aggregates.

These functions back the admin API and pages. They return plain dataclasses; free-text notes
are only available through :func:`decrypt_notes_on_demand`, while the key is unlocked, and
every such read is audited.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

import server.db
from form_compiler.instance import read_assessment
from server.errors import KeyLockedError, NotFoundError, ServerError
from server.models import Entity, Form, FormVersion, Submission, SubmissionStatus
from server.models_cases import Assessment as AssessmentRow
from server.models_cases import AssessmentState, Case, CaseStatus, day_rank_sql
from server.models_cases import ReviewItem as ReviewRow
from server.services import audit

__all__ = [
    "MIN_CELL",
    "Aggregates",
    "AssessmentView",
    "CaseDetail",
    "CaseSummary",
    "Cell",
    "ReviewItem",
    "aggregates",
    "decrypt_notes_on_demand",
    "get_case",
    "list_cases",
    "pending_backlog",
    "resolve_review_item",
    "retry_submission",
    "review_queues",
]

#: cells of the impact aggregates with fewer survivors than this are suppressed
MIN_CELL = 5
QUEUES = (
    "orphans",
    "conflicts",
    "entity_conflicts",
    "score_mismatches",
    "quarantined",
    "plaintext_for_encrypted_form",
)
_KIND_TO_QUEUE = {
    "orphan": "orphans",
    "conflict": "conflicts",
    "entity_conflict": "entity_conflicts",
    "score_mismatch": "score_mismatches",
    "quarantined": "quarantined",
    "plaintext_for_encrypted_form": "plaintext_for_encrypted_form",
}


@dataclass
class CaseSummary:
    """A caseload row."""

    id: int
    project_id: int
    label: str  # the case code
    office: str | None
    casework_type: str | None
    status: str  # open | closed
    next_due: str | None  # ISO date
    #: "due" (within 30 days) | "overdue" | None, worked out when read (not when reconciled)
    due: str | None
    closure_ready: bool
    assessment_count: int
    latest_scores: dict[str, float | None] = field(default_factory=dict)
    #: latest minus intake score per domain; None until there is an assessment after intake
    change_since_intake: dict[str, float | None] = field(default_factory=dict)
    #: the stored flags, with "overdue" as of the day read (it agrees with ``due``)
    flags: list[str] = field(default_factory=list)


@dataclass
class AssessmentView:
    """One assessment of a case (no free text)."""

    id: int
    date: dt.date | None
    kind: str | None  # collection point
    state: str
    domain_scores: dict[str, float | None]
    survivor_view: dict[str, str | None]
    survivor_gaps: list[str]
    flags: list[str]
    has_notes: bool
    instance_id: str


@dataclass
class CaseDetail(CaseSummary):
    """A case with its assessments (by date) and per-domain series."""

    assessments: list[AssessmentView] = field(default_factory=list)
    #: domain id -> [(date, score)] over the active assessments, in date order
    series: dict[str, list[tuple[dt.date | None, float | None]]] = field(default_factory=dict)
    entity_uuid: str | None = None
    intake_date: dt.date | None = None
    intake_scores: dict[str, float | None] = field(default_factory=dict)
    latest_date: dt.date | None = None


@dataclass
class ReviewItem:
    """Something waiting for an admin."""

    id: int
    kind: str
    summary: str
    case_id: int | None = None
    assessment_id: int | None = None
    submission_id: int | None = None
    created_at: dt.datetime | None = None


@dataclass
class Cell:
    """One aggregate value. A suppressed cell (see :func:`aggregates`) publishes neither its
    value nor its size: ``mean`` and ``n`` are None and ``suppressed`` is True."""

    label: str
    domain: str
    mean: float | None
    n: int | None
    suppressed: bool


@dataclass
class Aggregates:
    """Impact figures grouped by casework type and by office."""

    groups: dict[str, list[Cell]]
    closure_ready_share: list[Cell] = field(default_factory=list)
    days_to_closure: list[Cell] = field(default_factory=list)
    min_cell: int = MIN_CELL


def _due(case: Case, today: dt.date) -> str | None:
    if case.status != CaseStatus.OPEN or case.next_due is None:
        return None
    if case.next_due < today:
        return "overdue"
    return "due" if case.next_due <= today + dt.timedelta(days=30) else None


def _flags(case: Case, due: str | None) -> list[str]:
    """The case's flags with "overdue" as of today: the stored one was true on the day of the
    last reconciliation and goes stale as time passes."""
    flags = {f for f in case.flags or [] if f != "overdue"}
    if due == "overdue":
        flags.add("overdue")
    return sorted(flags)


def _followed_up(case: Case) -> bool:
    """Whether the case has an active assessment after its intake.

    Its latest assessment is the last by date, so this holds exactly when the latest is dated
    after the intake (without dates: when there are two assessments or more)."""
    if (case.assessment_count or 0) < 2:
        return False
    if case.latest_date is None or case.intake_date is None:
        return True
    return case.latest_date > case.intake_date


def _change(case: Case) -> dict[str, float | None]:
    """Latest minus intake per domain; all None while there is nothing after the intake (an
    intake compared with itself is no change, it is no measurement)."""
    followed_up = _followed_up(case)
    out = {}
    for domain, latest in (case.latest_scores or {}).items():
        base = (case.intake_scores or {}).get(domain)
        missing = not followed_up or latest is None or base is None
        out[domain] = None if missing else round(latest - base, 4)
    return out


def _summary(case: Case, today: dt.date) -> CaseSummary:
    due = _due(case, today)
    return CaseSummary(
        id=case.id,
        project_id=case.project_id,
        label=case.case_code,
        office=case.office,
        casework_type=case.casework_type,
        status=case.status,
        next_due=case.next_due.isoformat() if case.next_due else None,
        due=due,
        closure_ready=case.closure_ready,
        assessment_count=case.assessment_count,
        latest_scores=dict(case.latest_scores or {}),
        change_since_intake=_change(case),
        flags=_flags(case, due),
    )


def list_cases(
    session: Session,
    project_id: int,
    *,
    office: str | None = None,
    casework_type: str | None = None,
    status: str | None = None,
    due: str | None = None,
    closure_ready: bool | None = None,
    q: str | None = None,
    limit: int = 50,
    offset: int = 0,
    today: dt.date | None = None,
) -> tuple[list[CaseSummary], int]:
    """A page of the caseload and the total matching."""
    today = today or server.db.today()
    conds = [Case.project_id == project_id]
    if office:
        conds.append(Case.office == office)
    if casework_type:
        conds.append(Case.casework_type == casework_type)
    if status:
        conds.append(Case.status == status)
    if closure_ready is not None:  # True: closure-ready only; False: the others only
        conds.append(Case.closure_ready.is_(bool(closure_ready)))
    if q:
        pattern = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        conds.append(Case.case_code.ilike(f"%{pattern}%", escape="\\"))
    if due == "overdue":
        conds += [Case.status == CaseStatus.OPEN, Case.next_due < today]
    elif due == "due":  # within 30 days, as each row's ``due`` says ("overdue" is its own)
        conds += [
            Case.status == CaseStatus.OPEN,
            Case.next_due >= today,
            Case.next_due <= today + dt.timedelta(days=30),
        ]
    total = session.scalar(select(func.count()).select_from(Case).where(*conds)) or 0
    rows = session.scalars(
        select(Case)
        .where(*conds)
        .order_by(Case.next_due.asc().nulls_last(), Case.case_code)
        .limit(limit)
        .offset(offset)
    )
    return [_summary(c, today) for c in rows], total


def get_case(session: Session, case_id: int, *, today: dt.date | None = None) -> CaseDetail:
    """A case with every assessment (history included) and per-domain series of the active ones."""
    today = today or server.db.today()
    case = session.get(Case, case_id)
    if case is None:
        raise NotFoundError(f"Case {case_id} does not exist.")
    rows = list(
        session.scalars(
            select(AssessmentRow)
            .where(AssessmentRow.case_id == case_id)
            .order_by(
                AssessmentRow.assessment_date,
                day_rank_sql(AssessmentRow.collection_point),
                AssessmentRow.id,
            )
        )
    )
    base = _summary(case, today)
    detail = CaseDetail(
        **base.__dict__,
        entity_uuid=case.entity_uuid,
        intake_date=case.intake_date,
        intake_scores=dict(case.intake_scores or {}),
        latest_date=case.latest_date,
    )
    for row in rows:
        detail.assessments.append(
            AssessmentView(
                id=row.id,
                date=row.assessment_date,
                kind=row.collection_point,
                state=row.state,
                domain_scores=dict(row.scores or {}),
                survivor_view=dict(row.survivor_view or {}),
                survivor_gaps=[
                    f.split(":", 1)[1] for f in row.flags or [] if f.startswith("survivor_gap:")
                ],
                flags=list(row.flags or []),
                has_notes=row.has_notes,
                instance_id=row.instance_id,
            )
        )
        if row.state == AssessmentState.ACTIVE:
            for domain, score in (row.scores or {}).items():
                detail.series.setdefault(domain, []).append((row.assessment_date, score))
    return detail


def review_queues(session: Session, project_id: int) -> dict[str, list[ReviewItem]]:
    """Open review items by queue."""
    out: dict[str, list[ReviewItem]] = {q: [] for q in QUEUES}
    rows = session.execute(
        # an item naming an assessment only (a score mismatch) is about the case it is in
        select(ReviewRow, AssessmentRow.case_id)
        .outerjoin(AssessmentRow, AssessmentRow.id == ReviewRow.assessment_id)
        .where(ReviewRow.project_id == project_id, ReviewRow.resolved_at.is_(None))
        .order_by(ReviewRow.id)
    )
    for row, assessed_case_id in rows:
        out[_KIND_TO_QUEUE.get(row.kind, row.kind)].append(
            ReviewItem(
                row.id,
                row.kind,
                row.summary,
                row.case_id if row.case_id is not None else assessed_case_id,
                row.assessment_id,
                row.submission_id,
                row.created_at,
            )
        )
    return out


_ITEM_GONE = "That review item does not exist or is already resolved."


def resolve_review_item(
    session: Session,
    item_id: int,
    action: str,
    *,
    actor: str,
    case_id: int | None = None,
    project_id: int | None = None,
    case_code: str | None = None,
) -> None:
    """Work a review item.

    Actions: ``link`` (orphan -> existing ``case_id``), ``create_case`` (orphan -> a new case
    from its case code, or ``case_code`` when its code is another survivor's); a linked orphan
    that differs from an assessment of the case with the same collection point and date becomes
    a conflict for review, one that repeats it a superseded duplicate; ``keep`` (conflict: keep this assessment, supersede the other one),
    ``discard`` (conflict: keep the other one), ``resolve`` (entity conflict: Central's "mark
    as resolved": clears the case entity's conflict and every open conflict item of the case),
    ``dismiss`` (acknowledge: mismatch, quarantined, plaintext), ``retry`` (quarantined: the
    submission goes back to the reconciliation worker's queue, see :func:`retry_submission`).
    """
    from server.services.reconcile import (
        adopt_waiting_orphans,
        lock_cases,
        merge_device_entity,
        refresh_case,
        settle_in_case,
    )

    item = session.get(ReviewRow, item_id)
    if (
        item is None
        or item.resolved_at is not None
        or (project_id is not None and item.project_id != project_id)
    ):
        raise NotFoundError(_ITEM_GONE)
    assessment = session.get(AssessmentRow, item.assessment_id) if item.assessment_id else None
    if item.kind == "orphan" and action in ("link", "create_case"):
        if assessment is None:
            raise ServerError("This orphan has no assessment to link.", http_status=400)
        # a worker reconciling the tablet's next follow-up of this case at this moment would
        # not see the case made here, nor this the update it holds: one waits for the other
        lock_cases(
            session,
            item.project_id,
            {assessment.entity_uuid} - {None},
            {assessment.case_code, (case_code or "").strip()} - {None, ""},
        )
        session.refresh(item)  # as that worker left them, if it was first
        session.refresh(assessment)
        if item.resolved_at is not None:  # it adopted the orphan into the case it made
            raise NotFoundError(_ITEM_GONE)
        if action == "link":
            case = session.get(Case, case_id) if case_id else None
            if case is None or case.project_id != item.project_id:
                raise NotFoundError("Choose an existing case of this project.")
        else:
            code = (case_code or "").strip() or assessment.case_code
            if not code or len(code) > 64 or any(ch.isspace() for ch in code):
                raise ServerError(
                    "Give the new case a case code (no spaces, at most 64 characters).",
                    http_status=400,
                )
            if session.scalar(
                select(Case.id).where(Case.project_id == item.project_id, Case.case_code == code)
            ):
                raise ServerError(
                    f"Case code {code} is already a case of this project: link the assessment "
                    "to it if it is the same survivor, or give the new case another code.",
                    http_status=400,
                )
            case = Case(
                project_id=item.project_id,
                case_code=code,
                entity_uuid=assessment.entity_uuid,
                casework_type=assessment.casework_type,
                office=assessment.office,
            )
            session.add(case)
            session.flush()
        placed = settle_in_case(session, assessment, case)
        if action == "link":
            merge_device_entity(session, assessment, case, actor=actor)
        refresh_case(session, case, actor=actor)
        if action == "create_case":  # its other follow-ups may be waiting as orphans too
            adopt_waiting_orphans(session, item.project_id)
        if placed == "conflict":
            action = "link_conflict"  # resolved as linked; the conflict item is now open
    elif item.kind == "conflict" and action in ("keep", "discard"):
        if assessment is None or assessment.case_id is None:
            raise ServerError("This conflict has no assessment.", http_status=400)
        other = session.scalar(
            select(AssessmentRow).where(
                AssessmentRow.case_id == assessment.case_id,
                AssessmentRow.id != assessment.id,
                AssessmentRow.state == AssessmentState.ACTIVE,
                AssessmentRow.collection_point == assessment.collection_point,
                AssessmentRow.assessment_date == assessment.assessment_date,
            )
        )
        if action == "keep":
            assessment.state = AssessmentState.ACTIVE
            if other is not None:
                other.state, other.superseded_by_id = AssessmentState.SUPERSEDED, assessment.id
        else:
            assessment.state = AssessmentState.SUPERSEDED
            assessment.superseded_by_id = other.id if other is not None else None
        refresh_case(session, session.get(Case, assessment.case_id))
    elif item.kind == "entity_conflict" and action in ("resolve", "dismiss"):
        action = "resolve"
        _resolve_entity_conflict(session, item, actor)
    elif item.kind == "quarantined" and action == "retry":
        sub = session.get(Submission, item.submission_id) if item.submission_id else None
        if sub is None:
            raise ServerError("This item has no submission to retry.", http_status=400)
        retry_submission(session, sub, actor=actor, item=item)
    elif action != "dismiss":
        raise ServerError(f"'{action}' does not apply to a {item.kind} item.", http_status=400)
    item.resolved_at = dt.datetime.now(dt.UTC)
    item.resolution = action
    item.resolved_by = actor
    audit.record(
        session, actor, "review.resolve", f"review:{item.id}", kind=item.kind, resolution=action
    )


def retry_submission(
    session: Session, sub: Submission, *, actor: str, item: ReviewRow | None = None
) -> str:
    """Put a quarantined submission back in the reconciliation worker's queue (audited).

    It becomes ``pending_decryption`` (encrypted and complete) or ``received`` again, without
    its quarantine reason; the worker's next pass processes it, and should it fail again it is
    quarantined again with a fresh review item. ``item`` (its open quarantine item) is resolved
    by the caller; without one, the open item is resolved here as ``retry``. Returns the status.
    """
    if sub.status != SubmissionStatus.QUARANTINED.value:
        raise ServerError(
            f"Submission {sub.instance_id} is not quarantined (it is {sub.status}).",
            http_status=400,
        )
    now = dt.datetime.now(dt.UTC)
    encrypted_ready = sub.encrypted and sub.complete
    sub.status = (
        SubmissionStatus.PENDING_DECRYPTION if encrypted_ready else SubmissionStatus.RECEIVED
    ).value
    sub.quarantine_reason = None
    sub.updated_at = now
    if item is None:
        for row in session.scalars(
            select(ReviewRow).where(
                ReviewRow.kind == "quarantined",
                ReviewRow.submission_id == sub.id,
                ReviewRow.resolved_at.is_(None),
            )
        ):
            row.resolved_at, row.resolution, row.resolved_by = now, "retry", actor
            audit.record(
                session, actor, "review.resolve", f"review:{row.id}",
                kind=row.kind, resolution="retry",
            )  # fmt: skip
    audit.record(session, actor, "submission.retry", f"submission:{sub.id}", status=sub.status)
    return sub.status


def _resolve_entity_conflict(session: Session, item: ReviewRow, actor: str) -> None:
    """Clear the case entity's conflict (Central: the entity stays at its version; its
    ``updated_at`` moves so the list's hash changes) and the case's other open conflict items."""
    case = session.get(Case, item.case_id) if item.case_id else None
    if case is None:
        return
    entity = session.scalar(
        select(Entity).where(
            Entity.project_id == case.project_id,
            Entity.dataset == "cases",
            Entity.uuid == case.entity_uuid,
        )
    )
    now = dt.datetime.now(dt.UTC)
    if entity is not None and entity.conflict is not None:
        entity.conflict = None
        entity.updated_at = now
        audit.record(session, actor, "entity.update.resolve", f"entity:{entity.uuid}")
    case.flags = [f for f in case.flags or [] if f != "entity_conflict"]
    for other in session.scalars(
        select(ReviewRow).where(
            ReviewRow.case_id == case.id,
            ReviewRow.kind == "entity_conflict",
            ReviewRow.resolved_at.is_(None),
            ReviewRow.id != item.id,
        )
    ):
        other.resolved_at, other.resolution, other.resolved_by = now, "resolve", actor


def _protect(raw: list[tuple[str, str, float | None, int]], min_cell: int) -> list[Cell]:
    """Cells of one partition, ``(label, domain, value, n)``, with both suppression steps."""
    hidden = {i for i, (*_, n) in enumerate(raw) if n < min_cell}

    def exposed() -> bool:
        # the hidden cells together are the partition's total minus the shown ones: that must
        # neither be one group's figure (an empty group hides nothing) nor a group of < min_cell
        counted = [raw[i][3] for i in hidden if raw[i][3] > 0]
        return bool(counted) and (len(counted) == 1 or sum(counted) < min_cell)

    while exposed():  # hide the next smallest group that has survivors
        shown = [(n, label, i) for i, (label, _, _, n) in enumerate(raw) if i not in hidden and n]
        if not shown:
            break
        hidden.add(min(shown)[2])
    return [
        Cell(label, domain, None, None, True)
        if i in hidden
        else Cell(label, domain, value, n, False)
        for i, (label, domain, value, n) in enumerate(raw)
    ]


def aggregates(session: Session, project_id: int, *, min_cell: int = MIN_CELL) -> Aggregates:
    """Mean change since intake per domain, share closure-ready and days to closure, by group.

    Every cell counts survivors (cases). The mean change since intake counts only cases with an
    assessment after their intake (an intake alone is no change, not a change of 0); the share
    closure-ready counts every case with an assessment, the days to closure every closed case.

    Suppression, so that no survivor can be recognised or worked out:

    1. Primary: a cell with fewer than ``min_cell`` survivors is suppressed.
    2. Complementary: the groups of a dimension (casework type, office) split the same set of
       cases, whose size and total the other dimension gives away. So the suppressed cells of
       a partition (one dimension, one measure, and for the change one domain) together can be
       worked out from the shown ones: while they hold one group with survivors (an empty group
       hides nothing), or fewer than ``min_cell`` survivors in all, the next-smallest group
       with survivors (then by label) is suppressed too. No total row is published; one would
       be a cell like the others and follow the same rule.

    A suppressed cell publishes neither its value nor its n (both None).
    """
    cases = list(
        session.scalars(
            select(Case).where(Case.project_id == project_id, Case.assessment_count > 0)
        )
    )
    groups: dict[str, list[Cell]] = {"casework_type": [], "office": []}
    ready: list[Cell] = []
    closure_days: list[Cell] = []
    for dimension in ("casework_type", "office"):
        by: dict[str, list[Case]] = defaultdict(list)
        for c in cases:
            by[getattr(c, dimension) or "unknown"].append(c)
        by_domain: dict[str, list[tuple[str, str, float | None, int]]] = defaultdict(list)
        shares: list[tuple[str, str, float | None, int]] = []
        medians: list[tuple[str, str, float | None, int]] = []
        for label, members in sorted(by.items()):
            changes: dict[str, list[float]] = defaultdict(list)
            for c in members:
                for domain, value in _change(c).items():
                    if value is not None:
                        changes[domain].append(value)
            for domain in sorted({d for c in members for d in (c.latest_scores or {})}):
                values = changes.get(domain, [])
                mean = round(statistics.fmean(values), 3) if values else None
                by_domain[domain].append((label, domain, mean, len(values)))
            n = len(members)
            share = round(sum(1 for c in members if c.closure_ready) / n, 3)
            shares.append((f"{dimension}:{label}", "closure_ready_share", share, n))
            days = [
                (c.closed_at - c.intake_date).days for c in members if c.closed_at and c.intake_date
            ]
            median = float(statistics.median(days)) if days else None
            medians.append((f"{dimension}:{label}", "median_days_to_closure", median, len(days)))
        protected = {d: _protect(raw, min_cell) for d, raw in by_domain.items()}
        groups[dimension] = sorted(
            (cell for cells in protected.values() for cell in cells),
            key=lambda cell: (cell.label, cell.domain),
        )
        ready += _protect(shares, min_cell)
        closure_days += _protect(medians, min_cell)
    return Aggregates(
        groups=groups, closure_ready_share=ready, days_to_closure=closure_days, min_cell=min_cell
    )


def pending_backlog(session: Session, project_id: int) -> int:
    """Submissions of the project waiting for decryption."""
    return (
        session.scalar(
            select(func.count())
            .select_from(Submission)
            .join(Form, Form.id == Submission.form_id)
            .where(Form.project_id == project_id, Submission.status == "pending_decryption")
        )
        or 0
    )


def decrypt_notes_on_demand(
    session: Session, assessment_id: int, *, actor: str, store: Any = None
) -> dict[str, str]:
    """Decrypt an assessment's free-text notes (practitioner notes and survivor comments).

    Only while the project key is unlocked in this process; every read is audited. Nothing
    decrypted is stored.
    """
    from server.blobs import make_blob_store
    from server.services import custody
    from server.services.reconcile import plaintext_of
    from sync_protocol.envelope import parse_submission

    row = session.get(AssessmentRow, assessment_id)
    if row is None:
        raise NotFoundError(f"Assessment {assessment_id} does not exist.")
    if custody.honour_admin_lock(session, row.project_id, actor=actor).forgot:
        # kept whatever follows: the request now fails on the locked key and rolls back
        session.commit()
    sub = session.get(Submission, row.submission_id)
    if sub.encrypted and session.get(FormVersion, sub.form_version_id).key_fingerprint in (
        custody.unopened_keys(session, row.project_id)
    ):
        raise KeyLockedError(
            "This form uses the project key made when the key was rotated, after you unlocked "
            "it here: unlock the key again to read its notes."
        )
    if store is None:
        from flask import current_app

        store = make_blob_store(current_app.config, session)
    xml = plaintext_of(session, store, sub, row.project_id)
    version = session.get(FormVersion, sub.form_version_id)
    data = read_assessment(parse_submission(xml).root, version.report)
    audit.record(session, actor, "notes.decrypt", f"assessment:{assessment_id}")
    notes = {f"{d} note": text for d, text in data.notes.items()}
    notes.update({f"{d} survivor's words": text for d, text in data.survivor_comments.items()})
    return notes
