"""End to end: compile, publish to an encrypted project, Collect-encrypted uploads over HTTP,
unlock, reconcile with the CLI, and check every case against values computed here."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select

from server.blobs import make_blob_store
from server.models import AuditLog, Entity, Submission
from server.models_cases import Assessment, Case
from server.services import cases as case_services
from server.services import custody
from tests.cases.conftest import PASSPHRASE
from tests.cases.fieldwork import expected_scores, ratings_for


def _case(db_session, pid, code) -> Case:
    return db_session.scalar(select(Case).where(Case.project_id == pid, Case.case_code == code))


def test_reconcile__field_season__cases_scores_order_flags_and_queues(
    field, runner, db_session, client
):
    """Should reconcile intake, late and out-of-order follow-ups, an edit, duplicates, a conflict,
    an orphan, a tampered upload and a device-score mismatch exactly as computed here."""
    r = field.report
    ent = str(uuid.uuid4())
    intake = ratings_for(
        r, {"SAF": "1", "LEG": "2", "MEN": "2", "ECO": "1", "SOC": "2", "PHY": "2"}
    )
    intake["SAF3"] = "99"  # not assessed: never counts
    six = ratings_for(r, {"SAF": "2", "LEG": "3", "MEN": "3", "ECO": "2", "SOC": "3", "PHY": "3"})
    annual = ratings_for(r, "3")
    annual_fixed = ratings_for(r, "4")
    annual_fixed["MEN1"] = "3"

    # the 6-month follow-up syncs BEFORE the intake (offline device)
    field.send(case_code="KE-0001", point="six_month", date="2026-07-10", ratings=six, entity_id=ent,
               survivor_view={"SAF": "4"})  # fmt: skip
    field.send(
        case_code="KE-0001", point="intake", date="2026-01-10", ratings=intake, entity_id=ent
    )
    annual_id, manifest, files = field.send(case_code="KE-0001", point="annual", date="2027-01-15",
                                            ratings=annual, entity_id=ent, base_version=2)  # fmt: skip
    # Collect resends the same annual: identical bytes -> 201, nothing new
    field.post(manifest, files)
    # an edit of the annual supersedes it
    field.send(case_code="KE-0001", point="annual", date="2027-01-15", ratings=annual_fixed, entity_id=ent,
               deprecated_id=annual_id, base_version=3)  # fmt: skip
    # a different 6-month assessment of the same case and date: a conflict for review
    conflicting = ratings_for(r, "1")
    field.send(
        case_code="KE-0001",
        point="six_month",
        date="2026-07-10",
        ratings=conflicting,
        entity_id=ent,
    )
    # a follow-up for a case nobody registered: orphan
    field.send(
        case_code="KE-0999",
        point="six_month",
        date="2026-05-01",
        ratings=six,
        entity_id=str(uuid.uuid4()),
    )
    # a second case whose device scores disagree with the ratings
    ent2 = str(uuid.uuid4())
    second = ratings_for(r, "3")
    wrong = expected_scores(r, second) | {"SAF": 1.0}
    field.send(case_code="KE-0002", point="intake", date="2026-02-01", ratings=second, entity_id=ent2,
               device_scores=wrong, notes={"MEN": "fictional sensitive note"})  # fmt: skip

    # a third case: its 6-month shows safety dropping by 2 (a regression), keyed in twice
    ent3 = str(uuid.uuid4())
    field.send(case_code="KE-0003", point="intake", date="2026-02-01", ratings=ratings_for(r, "3"),
               entity_id=ent3)  # fmt: skip
    drop = ratings_for(r, {"SAF": "1"})
    for _ in range(2):  # the same assessment under two instanceIDs: a duplicate, not a conflict
        field.send(case_code="KE-0003", point="six_month", date="2026-08-01", ratings=drop,
                   entity_id=ent3, base_version=1)  # fmt: skip

    with db_session.bind.connect() as conn:
        pending = conn.execute(select(Submission.status)).scalars().all()
    assert pending.count("pending_decryption") == 10

    # while locked nothing happens; the backlog is visible
    assert case_services.pending_backlog(db_session, field.project_id) == 10

    result = runner.invoke("reconcile", "--project", str(field.project_id), "--passphrase-file",
                           str(field.passphrase_file), "--once")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "processed 10" in result.output
    assert PASSPHRASE not in result.output

    db_session.expire_all()
    case = _case(db_session, field.project_id, "KE-0001")
    detail = case_services.get_case(db_session, case.id)
    active = [a for a in detail.assessments if a.state == "active"]
    # ordered by assessment date, not arrival; the edit replaced the annual
    assert [(a.kind, a.date.isoformat()) for a in active] == [
        ("intake", "2026-01-10"), ("six_month", "2026-07-10"), ("annual", "2027-01-15")
    ]  # fmt: skip
    states = sorted(a.state for a in detail.assessments)
    assert states == ["active", "active", "active", "conflict", "superseded"]
    for a, ratings in zip(active, (intake, six, annual_fixed), strict=True):
        want = expected_scores(r, ratings)
        for domain, value in want.items():
            assert a.domain_scores[domain] == pytest.approx(value), (a.kind, domain)
    # intake SAF: SAF1=1, SAF2=1, SAF3 not assessed -> mean of two = 1.0
    assert active[0].domain_scores["SAF"] == 1.0
    # the survivor rated safety 4 against a practitioner 2.0 at six months: a gap of 2
    assert active[1].survivor_gaps == ["SAF"]
    # latest = annual_fixed: every domain >= 3.0 -> closure-ready by the default rule
    assert detail.closure_ready is True
    assert detail.change_since_intake["SAF"] == pytest.approx(4.0 - 1.0)
    assert detail.next_due == "2028-01-15"
    assert [p[0].isoformat() for p in detail.series["SAF"]] == [
        "2026-01-10",
        "2026-07-10",
        "2027-01-15",
    ]

    queues = case_services.review_queues(db_session, field.project_id)
    assert len(queues["conflicts"]) == 1 and "KE-0001" in queues["conflicts"][0].summary
    assert len(queues["orphans"]) == 1 and "KE-0999" in queues["orphans"][0].summary
    assert (
        len(queues["score_mismatches"]) == 1 and "KE-0002" in queues["score_mismatches"][0].summary
    )
    assert queues["quarantined"] == []
    # the case list: the conflicting 6-month came from a device at version 1 while the server
    # had moved on (hard: it sent other scores); the duplicate one sent what the server had
    # (soft)
    entity_items = sorted(i.summary for i in queues["entity_conflicts"])
    assert len(entity_items) == 2
    assert "KE-0001: hard conflict" in entity_items[0]
    assert "KE-0003: soft conflict" in entity_items[1]

    third = _case(db_session, field.project_id, "KE-0003")
    assert "regression" in third.flags and third.assessment_count == 2
    third_rows = case_services.get_case(db_session, third.id).assessments
    assert sorted(a.state for a in third_rows) == ["active", "active", "superseded"]
    # KE-0002 had its intake on 2026-02-01 and nothing since: its 6-month review is overdue
    second_case = case_services.get_case(
        db_session, _case(db_session, field.project_id, "KE-0002").id
    )
    assert second_case.next_due == "2026-08-01" and second_case.due == "overdue"
    assert "overdue" in second_case.flags and second_case.change_since_intake["SAF"] is None

    # the cases entity list served to devices carries the latest state, with a version
    entity = db_session.scalar(select(Entity).where(Entity.uuid == ent))
    # v1 the intake's create; the annual and its edit named versions the device never had
    # (server versions 2 and 3, audited as entity.error); the conflicting 6-month applied as 4
    assert entity.label == "KE-0001" and entity.version == 4 and entity.conflict == "hard"
    assert entity.properties["last_assessment_date"] == "2027-01-15"
    assert entity.properties["score_SAF"] == "4.00"

    # nothing of the free text is stored; decrypting it on demand is audited
    row = db_session.scalar(select(Assessment).where(Assessment.case_code == "KE-0002"))
    assert row.has_notes and "fictional sensitive note" not in repr(row.__dict__)
    custody.unlock_project(db_session, field.project_id, PASSPHRASE.encode(), actor="admin")
    notes = case_services.decrypt_notes_on_demand(
        db_session, row.id, actor="admin", store=make_blob_store(runner_config(runner), db_session)
    )
    assert notes == {"MEN note": "fictional sensitive note"}
    db_session.commit()
    actions = db_session.scalars(select(AuditLog.action)).all()
    assert {"key.unlock", "submission.decrypt", "notes.decrypt", "key.lock"} <= set(actions)

    # re-running is idempotent
    last_id = db_session.scalar(select(Assessment.id).order_by(Assessment.id.desc()))
    again = runner.invoke("reconcile", "--project", str(field.project_id), "--passphrase-file",
                          str(field.passphrase_file), "--once")  # fmt: skip
    assert "processed 0" in again.output
    assert db_session.scalar(select(Assessment.id).order_by(Assessment.id.desc())) == last_id


def runner_config(runner) -> dict:
    env = runner.env
    return {"BLOB_BACKEND": "postgres" if env["KINTSUGI_DATABASE_URL"].startswith("postgresql") else "local",
            "DATA_DIR": env["KINTSUGI_DATA_DIR"]}  # fmt: skip


def test_reconcile__tampered_upload__quarantined_never_counted(field, runner, db_session):
    """Should quarantine an upload whose ciphertext was altered, with the reason, and count nothing."""
    r = field.report
    instance_id, manifest, files = field.encrypt(
        case_code="KE-0100", point="intake", date="2026-03-01", ratings=ratings_for(r, "2"),
        entity_id=str(uuid.uuid4()),
    )  # fmt: skip
    blob = bytearray(files["submission.xml.enc"])
    blob[20] ^= 0x01  # CFB: decrypts without a padding error; only the signature catches it
    files["submission.xml.enc"] = bytes(blob)
    field.post(manifest, files)
    result = runner.invoke("reconcile", "--project", str(field.project_id), "--passphrase-file",
                           str(field.passphrase_file), "--once")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "1 quarantined" in result.output
    db_session.expire_all()
    sub = db_session.scalar(select(Submission).where(Submission.instance_id == instance_id))
    assert sub.status == "quarantined" and "signature invalid" in sub.quarantine_reason
    assert db_session.scalar(select(Case.id)) is None
    queues = case_services.review_queues(db_session, field.project_id)
    assert len(queues["quarantined"]) == 1


def test_reconcile__wrong_passphrase__nothing_processed(field, runner, db_session, tmp_path):
    """Should refuse a wrong passphrase clearly and leave submissions pending."""
    r = field.report
    field.send(case_code="KE-0200", point="intake", date="2026-03-01", ratings=ratings_for(r, "2"),
               entity_id=str(uuid.uuid4()))  # fmt: skip
    bad = tmp_path / "bad.txt"
    bad.write_text("not the passphrase at all")
    result = runner.invoke(
        "reconcile", "--project", str(field.project_id), "--passphrase-file", str(bad), "--once"
    )
    assert result.exit_code == 1
    assert "does not unlock" in result.output and "Traceback" not in result.output
    db_session.expire_all()
    assert db_session.scalar(select(Submission.status)) == "pending_decryption"
