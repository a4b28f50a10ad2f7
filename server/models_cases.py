"""Tables of the longitudinal case record, filled by the reconciliation worker.

Data minimisation: only what case work needs is stored in plaintext (case code, dates,
collection point, ratings, scores, flags). Free-text notes and media stay inside the encrypted
submission and are decrypted on demand while the project key is unlocked.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
    case,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from server.db import Base, utcnow


def day_rank(collection_point: str | None) -> int:
    """Order of assessments made on one date: the intake first, the closure last, others
    between (then by arrival), whatever order the devices sent them in."""
    return 0 if collection_point == "intake" else 2 if collection_point == "closure" else 1


def day_rank_sql(column: Any) -> Any:
    """:func:`day_rank` as an SQL expression of a collection-point ``column``."""
    return case((column == "intake", 0), (column == "closure", 2), else_=1)


class CaseStatus:
    OPEN = "open"
    CLOSED = "closed"


class AssessmentState:
    """Whether an assessment counts in the case's trend."""

    ACTIVE = "active"
    SUPERSEDED = "superseded"  # replaced by an edit (deprecatedID); kept as history
    CONFLICT = "conflict"  # same case, collection point and date as another: waits for review
    ORPHAN = "orphan"  # follow-up for a case the server does not know: waits for review


class Case(Base):
    """One survivor's case in a project, keyed by case code (and its entity id)."""

    __tablename__ = "cases"
    __table_args__ = (
        UniqueConstraint("project_id", "case_code"),
        Index("ix_cases_project_status", "project_id", "status"),
        # the caseload's order (next_due NULLS LAST, case_code) straight from the index
        Index("ix_cases_project_due_code", "project_id", "next_due", "case_code"),
        # substring search on PostgreSQL (pg_trgm; migration 0006 skips it where unavailable)
        Index(
            "ix_cases_case_code_trgm",
            "case_code",
            postgresql_using="gin",
            postgresql_ops={"case_code": "gin_trgm_ops"},
        ).ddl_if(dialect="postgresql"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    case_code: Mapped[str] = mapped_column(String(64))
    entity_uuid: Mapped[str | None] = mapped_column(String(36), index=True)
    casework_type: Mapped[str | None] = mapped_column(String(100))
    office: Mapped[str | None] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(16), default=CaseStatus.OPEN)
    intake_date: Mapped[dt.date | None] = mapped_column(Date)
    latest_date: Mapped[dt.date | None] = mapped_column(Date)
    next_due: Mapped[dt.date | None] = mapped_column(Date)
    closure_ready: Mapped[bool] = mapped_column(Boolean, default=False)
    latest_scores: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    intake_scores: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    flags: Mapped[list[str]] = mapped_column(JSON, default=list)
    assessment_count: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    closed_at: Mapped[dt.date | None] = mapped_column(Date)


class Assessment(Base):
    """One reconciled submission: ratings and scores, never free text."""

    __tablename__ = "assessments"
    __table_args__ = (
        Index("ix_assessments_case_date", "case_id", "assessment_date"),
        # an original that syncs after its edit finds the edit by it
        Index("ix_assessments_project_deprecated", "project_id", "deprecated_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"))
    submission_id: Mapped[int] = mapped_column(ForeignKey("submissions.id"), unique=True)
    instance_id: Mapped[str] = mapped_column(String(255), index=True)
    deprecated_id: Mapped[str | None] = mapped_column(String(255))
    superseded_by_id: Mapped[int | None] = mapped_column(ForeignKey("assessments.id"))
    state: Mapped[str] = mapped_column(String(16), default=AssessmentState.ACTIVE)
    case_code: Mapped[str | None] = mapped_column(String(64))
    entity_uuid: Mapped[str | None] = mapped_column(String(36))
    assessment_date: Mapped[dt.date | None] = mapped_column(Date)
    collection_point: Mapped[str | None] = mapped_column(String(32))
    casework_type: Mapped[str | None] = mapped_column(String(100))
    office: Mapped[str | None] = mapped_column(String(100))
    instrument_version: Mapped[str | None] = mapped_column(String(32))
    ratings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    scores: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    device_scores: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    survivor_view: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    has_notes: Mapped[bool] = mapped_column(Boolean, default=False)
    flags: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    # The reconciliation worker builds a whole batch of cases, assessments and review items in
    # memory and flushes once: these let the unit of work fill the foreign keys of rows that
    # have no id yet. Many-to-one only, no backrefs (nothing loads a collection by accident),
    # and none from the table to itself, which would make the unit of work reorder the inserts
    # (ids follow arrival order; ``superseded_by_id`` is filled after the flush).
    case: Mapped[Case | None] = relationship(foreign_keys=[case_id])


class ReviewItem(Base):
    """Something an admin must look at: orphans, conflicts, mismatches, quarantine, plaintext."""

    __tablename__ = "review_items"
    __table_args__ = (
        # one open item per kind and submission; a resolved one may recur (a retried
        # submission quarantined again gets a fresh item)
        Index(
            "uq_review_items_open_kind_submission",
            "kind",
            "submission_id",
            unique=True,
            sqlite_where=text("resolved_at IS NULL"),
            postgresql_where=text("resolved_at IS NULL"),
        ),
        Index("ix_review_items_project_open", "project_id", "resolved_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    kind: Mapped[str] = mapped_column(String(40))
    submission_id: Mapped[int | None] = mapped_column(ForeignKey("submissions.id"))
    assessment_id: Mapped[int | None] = mapped_column(ForeignKey("assessments.id"))
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"))
    summary: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[dt.datetime | None] = mapped_column()
    resolution: Mapped[str | None] = mapped_column(String(40))
    resolved_by: Mapped[str | None] = mapped_column(String(255))

    assessment: Mapped[Assessment | None] = relationship(foreign_keys=[assessment_id])
    case: Mapped[Case | None] = relationship(foreign_keys=[case_id])
