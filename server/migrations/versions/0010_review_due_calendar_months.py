"""Next review dates in calendar months.

``cases.next_due`` was the last scheduled assessment's date plus 182 days (the first review) or
365 days (each later one). It is now the same day 6 or 12 calendar months on, or that month's
last day where it is shorter (15 January -> 15 July; 31 August -> 28/29 February), as a case
worker counts. This rewrites the stored dates of open cases that the old rule produced, so the
caseload's due and overdue filters agree with a case recomputed after the upgrade. A date the
old rule did not produce (none should exist) is left as it is.

Both rules are written out here as they stood at this revision, not imported: a later change to
the service must not change what this migration did.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-27
"""

from __future__ import annotations

import datetime as dt
from calendar import monthrange

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_cases = sa.table(
    "cases",
    sa.column("id", sa.Integer),
    sa.column("status", sa.String),
    sa.column("next_due", sa.Date),
)
_assessments = sa.table(
    "assessments",
    sa.column("case_id", sa.Integer),
    sa.column("state", sa.String),
    sa.column("collection_point", sa.String),
    sa.column("assessment_date", sa.Date),
)
_SCHEDULED = ("intake", "six_month", "annual")


def _in_days(day: dt.date, first: bool) -> dt.date:
    return day + dt.timedelta(days=182 if first else 365)


def _in_months(day: dt.date, first: bool) -> dt.date:
    index = day.month - 1 + (6 if first else 12)
    year, month = day.year + index // 12, index % 12 + 1
    return day.replace(year=year, month=month, day=min(day.day, monthrange(year, month)[1]))


def _reschedule(old_rule, new_rule) -> None:
    a = _assessments
    scheduled = a.c.collection_point.in_(_SCHEDULED)
    rows = op.get_bind().execute(
        sa.select(
            _cases.c.id,
            _cases.c.next_due,
            sa.func.max(sa.case((scheduled, a.c.assessment_date))),
            sa.func.max(sa.case((a.c.collection_point.in_(_SCHEDULED[1:]), 1), else_=0)),
            sa.func.max(a.c.assessment_date),
        )
        .join(a, a.c.case_id == _cases.c.id)
        .where(_cases.c.status == "open", _cases.c.next_due.is_not(None), a.c.state == "active")
        .group_by(_cases.c.id, _cases.c.next_due)
    )
    changes = []
    for case_id, due, last_scheduled, reviewed, latest in rows:
        # the schedule counts from the last scheduled assessment (from the latest one when
        # there is none); the first review is 6 months on, every later one a year
        last = last_scheduled or latest
        first = not reviewed
        if last is not None and due == old_rule(last, first):
            changes.append({"case_id": case_id, "due": new_rule(last, first)})
    if changes:
        op.get_bind().execute(
            _cases.update().where(_cases.c.id == sa.bindparam("case_id")),
            [{"case_id": c["case_id"], "next_due": c["due"]} for c in changes],
        )


def upgrade() -> None:
    _reschedule(_in_days, _in_months)


def downgrade() -> None:
    _reschedule(_in_months, _in_days)
