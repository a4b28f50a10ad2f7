"""A decrypted value longer than the case tables hold is quarantined with its reason, on
SQLite as on PostgreSQL, and the submissions queued behind it are reconciled."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select

from server.models import Submission
from server.models_cases import Case
from tests.cases.fieldwork import ratings_for


def test_reconcile__case_code_longer_than_stored__quarantined_and_queue_goes_on(
    field, reconcile, db_session
):
    """Should quarantine an intake whose case code is longer than the 64 characters kept (a
    context whose case-code pattern allows it), and reconcile the next intake. On PostgreSQL
    the INSERT failed: the batch rolled back and every retry stopped on the same submission."""
    r = field.report
    long_code = "KE-" + "0" * 70
    too_long, *_ = field.send(case_code=long_code, point="intake", date="2026-03-01",
                              ratings=ratings_for(r, "2"), entity_id=str(uuid.uuid4()))  # fmt: skip
    ok, *_ = field.send(case_code="KE-0301", point="intake", date="2026-03-02",
                        ratings=ratings_for(r, "3"), entity_id=str(uuid.uuid4()))  # fmt: skip
    out = reconcile()
    assert "1 quarantined" in out
    db_session.expire_all()
    bad = db_session.scalar(select(Submission).where(Submission.instance_id == too_long))
    assert bad.status == "quarantined"
    assert bad.quarantine_reason.startswith("its case code is 73 characters long, more than")
    assert long_code not in bad.quarantine_reason  # lengths, never the decrypted value
    assert db_session.scalars(select(Case.case_code)).all() == ["KE-0301"]
    good = db_session.scalar(select(Submission).where(Submission.instance_id == ok))
    assert good.status == "decrypted"


def test_reconcile__deprecated_id_longer_than_stored__quarantined(field, reconcile, db_session):
    """Should quarantine an edit whose decrypted deprecatedID cannot be stored (not 500 the batch)."""
    r = field.report
    ent = str(uuid.uuid4())
    field.send(case_code="KE-0302", point="intake", date="2026-03-01", entity_id=ent,
               ratings=ratings_for(r, "2"))  # fmt: skip
    edit, *_ = field.send(case_code="KE-0302", point="six_month", date="2026-09-01",
                          entity_id=ent, ratings=ratings_for(r, "3"),
                          deprecated_id="uuid:" + "f" * 300)  # fmt: skip
    assert "1 quarantined" in reconcile()
    db_session.expire_all()
    sub = db_session.scalar(select(Submission).where(Submission.instance_id == edit))
    assert sub.status == "quarantined"
    assert "deprecatedID is 305 characters long" in sub.quarantine_reason


@pytest.mark.postgres_only
def test_reconcile__value_the_database_refuses__quarantined_not_a_stalled_queue(
    field, reconcile, db_session, monkeypatch
):
    """Should quarantine a submission whose values PostgreSQL refuses for a reason no check
    foresaw (here: the length check switched off), and go on with the rest. Before, a
    DataError was taken for a database failure: the batch rolled back, the worker stopped,
    and the next run claimed the same submission first."""
    from server.services import reconcile as service

    monkeypatch.setattr(service, "_check_fits", lambda values: None)
    r = field.report
    too_long, *_ = field.send(case_code="KE-" + "1" * 70, point="intake", date="2026-03-01",
                              ratings=ratings_for(r, "2"), entity_id=str(uuid.uuid4()))  # fmt: skip
    ok, *_ = field.send(case_code="KE-0303", point="intake", date="2026-03-02",
                        ratings=ratings_for(r, "3"), entity_id=str(uuid.uuid4()))  # fmt: skip
    assert "1 quarantined" in reconcile()
    db_session.expire_all()
    bad = db_session.scalar(select(Submission).where(Submission.instance_id == too_long))
    assert bad.status == "quarantined"
    assert bad.quarantine_reason.startswith("a value in it does not fit the database (")
    assert "1" * 70 not in bad.quarantine_reason
    assert db_session.scalars(select(Case.case_code)).all() == ["KE-0303"]
    good = db_session.scalar(select(Submission).where(Submission.instance_id == ok))
    assert good.status == "decrypted"
