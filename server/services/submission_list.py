"""The admin listing of a project's submissions: filters, count and page, all in SQL.

``flags`` is a JSON list. "Flagged" means a non-empty list, tested with
``json_array_length(flags) > 0``, a function both SQLite (JSON1, built in) and PostgreSQL (for
``json``) have, so the filter, the total and ``LIMIT``/``OFFSET`` all run in the database and a
page of flagged submissions is the right page however many unflagged ones lie between.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.orm import Session, contains_eager

from server.models import Form, Submission


@dataclass(slots=True)
class SubmissionPage:
    """One page of submissions (newest first) and how many match in all."""

    items: list[Submission]
    total: int


def flagged_clause() -> ColumnElement[bool]:
    """SQL condition: the submission carries at least one flag."""
    return func.json_array_length(Submission.flags) > 0


def _filtered(project_id: int, *, status: str | None, flagged: bool) -> Select:
    q = select(Submission).join(Submission.form).where(Form.project_id == project_id)
    if status:
        q = q.where(Submission.status == status)
    if flagged:
        q = q.where(flagged_clause())
    return q


def list_submissions(
    session: Session,
    project_id: int,
    *,
    status: str | None = None,
    flagged: bool = False,
    limit: int = 50,
    offset: int = 0,
) -> SubmissionPage:
    """Submissions of a project, newest first, filtered by status and/or flagged.

    :param status: one :class:`server.models.SubmissionStatus` value, or None for all
    :param flagged: only submissions with at least one flag
    """
    q = _filtered(project_id, status=status, flagged=flagged)
    total = session.scalar(select(func.count()).select_from(q.subquery())) or 0
    rows = session.scalars(
        # the form comes with the join already made (the listing shows its xmlFormId)
        q.options(contains_eager(Submission.form))
        .order_by(Submission.id.desc())
        .limit(limit)
        .offset(offset)
    ).all()
    return SubmissionPage(items=list(rows), total=int(total))
