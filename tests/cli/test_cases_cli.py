# ruff: noqa: F811 (the shared ``field`` fixture is imported from tests/cases/conftest)
"""``kintsugi unlock | reconcile | export cases`` as an admin types them (key custody at the CLI)."""

from __future__ import annotations

import csv
import io
import json
import time

from sqlalchemy import select

from server.models import AuditLog, FormVersion, ProjectKey, Submission
from server.models_cases import Assessment
from server.services import custody
from tests.cases.conftest import PASSPHRASE, field  # noqa: F401 (the fixture)
from tests.cases.fieldwork import ratings_for


def _audit(db_session, action: str) -> list[AuditLog]:
    db_session.expire_all()
    return db_session.scalars(select(AuditLog).where(AuditLog.action == action)).all()


def _no_secret_in_audit(db_session) -> None:
    for row in db_session.scalars(select(AuditLog)).all():
        assert PASSPHRASE not in json.dumps(row.details or {}), row.action


def test_unlock__right_passphrase__verified_audited_and_locked_again(field, runner, db_session):
    """Should confirm the passphrase, audit unlock and lock, and leave no key open."""
    result = runner.invoke(
        "unlock",
        "--project",
        str(field.project_id),
        "--passphrase-file",
        str(field.passphrase_file),
    )
    assert result.exit_code == 0, result.output
    assert "unlocks its keys" in result.output
    assert PASSPHRASE not in result.output
    assert [a.target for a in _audit(db_session, "key.unlock")] == [f"project:{field.project_id}"]
    assert len(_audit(db_session, "key.lock")) == 1
    assert not custody.is_unlocked(field.project_id)
    _no_secret_in_audit(db_session)


def test_unlock__wrong_passphrase__exit_1_and_failure_audited(field, runner, db_session, tmp_path):
    """Should refuse a wrong passphrase with a readable message and keep the failed attempt."""
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("not the passphrase\n")
    result = runner.invoke(
        "unlock", "--project", str(field.project_id), "--passphrase-file", str(wrong)
    )
    assert result.exit_code == 1
    assert "does not unlock" in result.output
    assert "not the passphrase" not in result.output
    assert len(_audit(db_session, "key.unlock_failed")) == 1
    assert _audit(db_session, "key.unlock") == []
    assert not custody.is_unlocked(field.project_id)


def test_unlock__empty_passphrase_file__usage_error(field, runner, tmp_path):
    """Should say the file is empty (exit 2) rather than try an empty passphrase."""
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    result = runner.invoke(
        "unlock", "--project", str(field.project_id), "--passphrase-file", str(empty)
    )
    assert result.exit_code == 2
    assert "empty" in result.output


def test_reconcile__after_key_rotation__old_submission_decrypts_with_historic_key(
    field, runner, app, db_session
):
    """Should keep every historic key: a device on the old form version still gets reconciled."""
    instance_id, _, _ = field.send(
        case_code="KE-0900",
        point="intake",
        date="2026-02-03",
        ratings=ratings_for(field.report, "2"),
        entity_id="8f1f5a52-5d0e-4c1e-9a52-0b3f3c1d2e90",
    )
    old_fp = db_session.scalar(select(FormVersion.key_fingerprint))
    with app.extensions["kintsugi.db"].sessionmaker() as s:
        new_fp = custody.rotate_project_key(s, field.project_id, PASSPHRASE.encode(), actor="admin")
        s.commit()
    assert new_fp != old_fp
    db_session.expire_all()
    key_rows = db_session.scalars(select(ProjectKey).order_by(ProjectKey.id)).all()
    assert [(k.fingerprint, k.active) for k in key_rows] == [(old_fp, False), (new_fp, True)]

    result = runner.invoke(
        "reconcile", "--project", str(field.project_id), "--passphrase-file",
        str(field.passphrase_file), "--once",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "processed 1: 1 assessments, 0 quarantined" in result.output
    db_session.expire_all()
    assert db_session.scalar(select(Submission.status)) == "decrypted"
    assert db_session.scalar(select(Assessment.instance_id)) == instance_id
    assert [a.details["fingerprint"] for a in _audit(db_session, "key.rotate")] == [new_fp]
    assert not custody.is_unlocked(field.project_id)  # the worker locks when it exits
    _no_secret_in_audit(db_session)


def test_custody__idle_timeout__locks_again_and_submissions_wait(field, app, db_session):
    """Should forget the key after the idle time; pending submissions then wait, none lost."""
    field.send(
        case_code="KE-0901",
        point="intake",
        date="2026-02-04",
        ratings=ratings_for(field.report, "3"),
        entity_id="0d7c4f0e-2b1a-4f7e-8a57-5a1d8c3b2f11",
    )
    from server.services.cases import pending_backlog
    from server.services.reconcile import reconcile_pending

    sessionmaker = app.extensions["kintsugi.db"].sessionmaker
    with sessionmaker() as s:
        custody.unlock_project(s, field.project_id, PASSPHRASE.encode(), actor="t", idle_seconds=0)
        s.commit()
    time.sleep(0.01)  # any elapsed time exceeds an idle limit of zero
    assert not custody.is_unlocked(field.project_id)
    result = reconcile_pending(sessionmaker, field.project_id, config=app.config)
    assert (result.assessments, result.skipped_locked) == (0, 1)
    db_session.expire_all()
    assert pending_backlog(db_session, field.project_id) == 1
    assert db_session.scalar(select(Submission.status)) == "pending_decryption"


def test_export_cases__nothing_reconciled__header_only(field, runner, tmp_path):
    """Should write the long-format header even for a project without assessments."""
    out = tmp_path / "cases.csv"
    result = runner.invoke("export", "cases", "--project", str(field.project_id), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "wrote 0 rows" in result.output
    header = next(csv.reader(io.StringIO(out.read_text())))
    assert {
        "case_code",
        "instance_id",
        "assessment_date",
        "collection_point",
        "domain",
        "score",
    } <= set(header)


def test_reconcile__no_key_matches_form_version__quarantined_and_worker_goes_on(
    field, runner, db_session
):
    """Should quarantine a submission no project key can open, and still process the rest."""
    bad_id, _, _ = field.send(
        case_code="KE-0902",
        point="intake",
        date="2026-02-05",
        ratings=ratings_for(field.report, "3"),
        entity_id="5b0e8a1c-61a4-4d7e-9f1e-2f7c9d0a4b21",
    )
    version = db_session.scalar(select(FormVersion))
    real_fp, version.key_fingerprint = version.key_fingerprint, "sha256:" + "0" * 64
    db_session.commit()
    result = runner.invoke(
        "reconcile", "--project", str(field.project_id), "--passphrase-file",
        str(field.passphrase_file), "--once",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "processed 1: 0 assessments, 1 quarantined" in result.output
    from server.services.cases import review_queues

    db_session.expire_all()
    quarantined = review_queues(db_session, field.project_id)["quarantined"]
    assert [q.summary for q in quarantined] == [
        f"Submission {bad_id}: No key of this project matches the key the form was encrypted with."
    ]
    version.key_fingerprint = real_fp  # a correctly keyed upload afterwards is still reconciled
    db_session.commit()
    field.send(
        case_code="KE-0903",
        point="intake",
        date="2026-02-06",
        ratings=ratings_for(field.report, "2"),
        entity_id="7c2d9e4f-1a3b-4c5d-8e6f-9a0b1c2d3e4f",
    )
    result = runner.invoke(
        "reconcile", "--project", str(field.project_id), "--passphrase-file",
        str(field.passphrase_file), "--once",
    )  # fmt: skip
    assert "processed 1: 1 assessments, 0 quarantined" in result.output
