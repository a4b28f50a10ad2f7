"""Reconciliation rules where a silent merge or a wrong date would mislead case work.

Collect-encrypted uploads, the reconcile CLI, and the admin API, as the users touch them;
expected dates and states worked out in each test.
"""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from sqlalchemy import select

from server.models import Submission
from server.models_cases import Assessment, Case
from tests.cases.fieldwork import ratings_for


def _case(db_session, code: str) -> Case | None:
    db_session.expire_all()
    return db_session.scalar(select(Case).where(Case.case_code == code))


def _states(db_session, case: Case) -> list[tuple[str, str]]:
    rows = db_session.scalars(
        select(Assessment).where(Assessment.case_id == case.id).order_by(Assessment.id)
    )
    return [(a.collection_point, a.state) for a in rows]


def test_one_code_two_survivors__second_waits_for_review_then_gets_its_own_case(
    field, reconcile, admin_api, db_session
):
    """Should never merge two survivors registered under one code: the second intake (another
    case id) and its follow-up wait as orphans; an admin opens a case with a new code, and the
    follow-up joins it."""
    r, first, second = field.report, str(uuid.uuid4()), str(uuid.uuid4())
    field.send(case_code="KE-0701", point="intake", date="2026-01-10", entity_id=first,
               ratings=ratings_for(r, "1"))  # fmt: skip
    field.send(case_code="KE-0701", point="intake", date="2026-03-02", entity_id=second,
               ratings=ratings_for(r, "4"))  # fmt: skip
    field.send(case_code="KE-0701", point="six_month", date="2026-09-02", entity_id=second,
               ratings=ratings_for(r, "3"))  # fmt: skip
    reconcile()

    case = _case(db_session, "KE-0701")
    assert case.entity_uuid == first and case.assessment_count == 1
    assert case.intake_date == dt.date(2026, 1, 10) and not case.closure_ready
    orphans = admin_api("GET", "/review-queues").get_json()["orphans"]
    assert len(orphans) == 2
    intake_item = next(i for i in orphans if "intake" in i["summary"])
    assert "another case id" in intake_item["summary"]

    resp = admin_api("POST", f"/review-items/{intake_item['id']}/resolve",
                     json={"action": "create_case"})  # fmt: skip
    assert resp.status_code == 400 and "already a case" in resp.get_json()["message"]
    resp = admin_api("POST", f"/review-items/{intake_item['id']}/resolve",
                     json={"action": "create_case", "case_code": "KE-0702"})  # fmt: skip
    assert resp.status_code == 204, resp.data

    new = _case(db_session, "KE-0702")
    assert new.entity_uuid == second
    assert sorted(_states(db_session, new)) == [("intake", "active"), ("six_month", "active")]
    assert new.intake_date == dt.date(2026, 3, 2) and new.latest_date == dt.date(2026, 9, 2)
    assert _case(db_session, "KE-0701").assessment_count == 1
    assert admin_api("GET", "/review-queues").get_json()["orphans"] == []


def test_edit_synced_before_its_original__original_is_history(field, reconcile, db_session):
    """Should supersede an original that arrives after its edit, whether the edit corrected
    the date (no extra trend point) or not (no spurious conflict)."""
    r, ent = field.report, str(uuid.uuid4())
    field.send(case_code="KE-0710", point="intake", date="2026-01-10", entity_id=ent,
               ratings=ratings_for(r, "1"))  # fmt: skip
    reconcile()
    wrong_date = field.encrypt(case_code="KE-0710", point="six_month", date="2026-07-01",
                               entity_id=ent, ratings=ratings_for(r, "2"))  # fmt: skip
    fixed = field.encrypt(case_code="KE-0710", point="six_month", date="2026-07-03",
                          entity_id=ent, ratings=ratings_for(r, "2"), deprecated_id=wrong_date[0])  # fmt: skip
    same_day = field.encrypt(case_code="KE-0710", point="annual", date="2027-07-03",
                             entity_id=ent, ratings=ratings_for(r, "3"))  # fmt: skip
    same_day_fix = field.encrypt(case_code="KE-0710", point="annual", date="2027-07-03",
                                 entity_id=ent, ratings=ratings_for(r, "4"), deprecated_id=same_day[0])  # fmt: skip
    for upload in (fixed, same_day_fix):  # the edits first
        field.post(*upload[1:])
    reconcile()
    for upload in (wrong_date, same_day):  # then the originals, late
        field.post(*upload[1:])
    reconcile()

    case = _case(db_session, "KE-0710")
    by_iid = {
        a.instance_id: a
        for a in db_session.scalars(select(Assessment).where(Assessment.case_id == case.id))
    }
    assert by_iid[wrong_date[0]].state == "superseded"
    assert by_iid[wrong_date[0]].superseded_by_id == by_iid[fixed[0]].id
    assert by_iid[same_day[0]].state == "superseded"
    assert case.assessment_count == 3  # intake, the fixed 6-month, the fixed annual
    assert case.latest_scores["SAF"] == 4.0
    assert not db_session.scalars(select(Assessment).where(Assessment.state == "conflict")).all()


def test_ad_hoc_visit__does_not_move_the_review_schedule(field, reconcile, db_session):
    """Should keep the next review at intake + 6 months after an ad hoc visit, then a year
    after the 6-month review."""
    r, ent = field.report, str(uuid.uuid4())
    field.send(case_code="KE-0720", point="intake", date="2026-01-10", entity_id=ent,
               ratings=ratings_for(r, "2"))  # fmt: skip
    field.send(case_code="KE-0720", point="ad_hoc", date="2026-02-10", entity_id=ent,
               ratings=ratings_for(r, "2"))  # fmt: skip
    reconcile()
    assert _case(db_session, "KE-0720").next_due == dt.date(2026, 7, 10)
    field.send(case_code="KE-0720", point="six_month", date="2026-07-15", entity_id=ent,
               ratings=ratings_for(r, "3"))  # fmt: skip
    field.send(case_code="KE-0720", point="ad_hoc", date="2026-09-01", entity_id=ent,
               ratings=ratings_for(r, "3"))  # fmt: skip
    reconcile()
    assert _case(db_session, "KE-0720").next_due == dt.date(2027, 7, 15)


@pytest.mark.parametrize(
    ("intake", "six_month_due", "review", "annual_due"),
    [
        # the same day of the month, as a case worker counts "6 months" and "a year"
        ("2026-01-15", "2026-07-15", "2026-07-20", "2027-07-20"),
        # a day the later month lacks: its last day, never the next month
        ("2027-08-31", "2028-02-29", "2028-02-29", "2029-02-28"),
        ("2026-03-31", "2026-09-30", "2027-02-28", "2028-02-28"),
        # across a leap day a year is still a year (2027-07-10 + 365 days was 2028-07-09)
        ("2027-01-10", "2027-07-10", "2027-07-10", "2028-07-10"),
    ],
)
def test_review_schedule__calendar_months__as_the_case_worker_counts_them(
    field, reconcile, admin_api, db_session, intake, six_month_due, review, annual_due
):
    """Should put the 6-month review on the same day six months on, and each yearly review on
    the same day a year on, shortened to the month's last day where the month is shorter; the
    API shows the same date."""
    r, ent, code = field.report, str(uuid.uuid4()), "KE-0730"
    field.send(case_code=code, point="intake", date=intake, entity_id=ent,
               ratings=ratings_for(r, "2"))  # fmt: skip
    reconcile()
    assert _case(db_session, code).next_due == dt.date.fromisoformat(six_month_due)
    field.send(case_code=code, point="six_month", date=review, entity_id=ent,
               ratings=ratings_for(r, "3"))  # fmt: skip
    reconcile()
    case = _case(db_session, code)
    assert case.next_due == dt.date.fromisoformat(annual_due)
    assert admin_api("GET", f"/cases/{case.id}").get_json()["next_due"] == annual_due


@pytest.mark.parametrize("same", [False, True])
def test_linking_an_orphan__same_point_and_date__conflict_or_duplicate(
    field, reconcile, admin_api, db_session, same
):
    """Should not silently merge an orphan an admin links into a case that already has an
    assessment for the same collection point and date: a conflict when they differ, a
    superseded duplicate when they are the same."""
    r, ent, stray = field.report, str(uuid.uuid4()), str(uuid.uuid4())
    field.send(case_code="KE-0730", point="intake", date="2026-01-10", entity_id=ent,
               ratings=ratings_for(r, "1"))  # fmt: skip
    field.send(case_code="KE-0730", point="six_month", date="2026-07-01", entity_id=ent,
               ratings=ratings_for(r, "3"))  # fmt: skip
    # keyed in on a tablet that picked no case: another id and a mistyped code
    field.send(case_code="KE-0370", point="six_month", date="2026-07-01", entity_id=stray,
               ratings=ratings_for(r, "3" if same else "2"))  # fmt: skip
    reconcile()
    case = _case(db_session, "KE-0730")
    [orphan] = admin_api("GET", "/review-queues").get_json()["orphans"]
    resp = admin_api("POST", f"/review-items/{orphan['id']}/resolve",
                     json={"action": "link", "case_id": case.id})  # fmt: skip
    assert resp.status_code == 204, resp.data

    case = _case(db_session, "KE-0730")
    states = sorted(_states(db_session, case))
    conflicts = admin_api("GET", "/review-queues").get_json()["conflicts"]
    if same:
        assert states == [("intake", "active"), ("six_month", "active"),
                          ("six_month", "superseded")]  # fmt: skip
        assert conflicts == []
    else:
        assert states == [("intake", "active"), ("six_month", "active"),
                          ("six_month", "conflict")]  # fmt: skip
        assert len(conflicts) == 1 and "KE-0730" in conflicts[0]["summary"]
    assert case.assessment_count == 2 and case.latest_scores["SAF"] == 3.0


def test_plaintext_to_encrypted_form__waits_for_the_key_then_counts_and_is_queued(
    field, reconcile, admin_api, db_session
):
    """Should treat an assessment a tablet sent unencrypted like an encrypted one once the
    server encrypted it on arrival: pending until the key is unlocked, then in its case, and
    in the plaintext-for-encrypted-form queue for an admin to follow up with the device."""
    from tests.cases.fieldwork import instance_xml

    r, ent = field.report, str(uuid.uuid4())
    iid, xml = instance_xml(r, case_code="KE-0740", point="intake", date="2026-01-10",
                            entity_id=ent, ratings=ratings_for(r, "2"),
                            notes={"SAF": "fictional note sent in the clear"})  # fmt: skip
    assert field.collect.submit(xml).status_code == 201
    db_session.expire_all()
    sub = db_session.scalar(select(Submission).where(Submission.instance_id == iid))
    assert sub.encrypted and sub.status == "pending_decryption"
    reconcile()
    case = _case(db_session, "KE-0740")
    assert case.assessment_count == 1 and case.latest_scores["SAF"] == 2.0
    [item] = admin_api("GET", "/review-queues").get_json()["plaintext_for_encrypted_form"]
    assert iid in item["summary"]


def test_split_plaintext_to_encrypted_form__encrypted_when_complete_then_counts(
    field, reconcile, admin_api, db_session
):
    """Should encrypt an assessment a tablet sent unencrypted in two POSTs (*isIncomplete*)
    once the last one arrived, files included, then reconcile it like any encrypted one: its
    signature holds, it joins its case, and it is queued for an admin to follow up."""
    from tests.cases.fieldwork import instance_xml

    r, ent = field.report, str(uuid.uuid4())
    iid, xml = instance_xml(r, case_code="KE-0741", point="intake", date="2026-01-11",
                            entity_id=ent, ratings=ratings_for(r, "2"),
                            notes={"SAF": "fictional note sent in the clear"})  # fmt: skip
    # files the instance names (as a form with an audit log and a photo question would)
    files = {"audit.csv": b"event,node,start\nform start,,1736935200123\n", "p.jpg": b"\xff\xd8jpg"}
    meta_end = xml.index(b"</instanceID>") + len(b"</instanceID>")
    xml = xml[:meta_end] + b"<audit>audit.csv</audit><photo>p.jpg</photo>" + xml[meta_end:]
    resp = field.collect.submit(xml, {"audit.csv": files["audit.csv"]}, incomplete=True)
    assert resp.status_code == 201
    reconcile()  # an incomplete upload is not claimed
    assert _case(db_session, "KE-0741") is None
    assert field.collect.submit(xml, {"p.jpg": files["p.jpg"]}).status_code == 201
    db_session.expire_all()
    sub = db_session.scalar(select(Submission).where(Submission.instance_id == iid))
    assert sub.encrypted and sub.status == "pending_decryption"
    assert sorted(a.name for a in sub.attachments) == [
        "audit.csv.enc",
        "p.jpg.enc",
        "submission.xml.enc",
    ]

    reconcile()
    db_session.expire_all()
    assert db_session.get(Submission, sub.id).status == "decrypted"  # signature valid
    case = _case(db_session, "KE-0741")
    assert case.assessment_count == 1 and case.latest_scores["SAF"] == 2.0
    [item] = admin_api("GET", "/review-queues").get_json()["plaintext_for_encrypted_form"]
    assert iid in item["summary"]


@pytest.mark.parametrize("runs", ["one run", "a run after each upload"])
def test_edit_of_an_orphan__replaces_it__one_assessment_joins_the_case(
    field, reconcile, admin_api, db_session, runs
):
    """Should supersede an orphan by its edit (date and ratings corrected), so that when the
    intake arrives only the edit joins the case, and no orphan is left for an admin."""
    r, ent = field.report, str(uuid.uuid4())
    original, *_ = field.send(case_code="KE-0760", point="six_month", date="2026-07-05",
                              entity_id=ent, ratings=ratings_for(r, "2"))  # fmt: skip
    if runs != "one run":
        reconcile()
    edit, *_ = field.send(case_code="KE-0760", point="six_month", date="2026-07-06",
                          entity_id=ent, ratings=ratings_for(r, "3"), deprecated_id=original)  # fmt: skip
    if runs != "one run":
        reconcile()
    field.send(case_code="KE-0760", point="intake", date="2026-01-05", entity_id=ent,
               ratings=ratings_for(r, "1"))  # fmt: skip
    reconcile()

    case = _case(db_session, "KE-0760")
    assert case.assessment_count == 2 and case.latest_date == dt.date(2026, 7, 6)
    assert case.latest_scores["SAF"] == 3.0
    by_iid = {
        a.instance_id: a
        for a in db_session.scalars(select(Assessment).where(Assessment.case_code == "KE-0760"))
    }
    assert by_iid[original].state == "superseded"
    assert by_iid[original].superseded_by_id == by_iid[edit].id
    assert admin_api("GET", "/review-queues").get_json()["orphans"] == []


def test_same_day_intake_and_visit__intake_first_whatever_arrived_first(
    field, reconcile, db_session, admin_api
):
    """Should take an intake as the first assessment of its date and an ad hoc visit the same
    day as the later one, also when the visit synced first (it waited as an orphan): the
    latest scores follow the visit, not the arrival order (a change since intake is only
    measured on a later date)."""
    r, ent = field.report, str(uuid.uuid4())
    field.send(case_code="KE-0721", point="ad_hoc", date="2026-03-05", entity_id=ent,
               ratings=ratings_for(r, "3"))  # fmt: skip
    field.send(case_code="KE-0721", point="intake", date="2026-03-05", entity_id=ent,
               ratings=ratings_for(r, "1"))  # fmt: skip
    reconcile()
    case = _case(db_session, "KE-0721")
    assert case.intake_scores["SAF"] == 1.0 and case.latest_scores["SAF"] == 3.0
    detail = admin_api("GET", f"/cases/{case.id}").get_json()
    assert [a["kind"] for a in detail["assessments"]] == ["intake", "ad_hoc"]
    assert detail["change_since_intake"]["SAF"] is None


def test_migration_0010__dates_of_the_day_count_rule__move_to_calendar_months(
    app, field, reconcile, db_session
):
    """Should move the next review of cases reconciled under the old rule (182 or 365 days on)
    to the calendar date, leave a date that rule did not make alone, and give the old dates
    back on downgrade."""
    from server import db

    r, url = field.report, app.config["DATABASE_URL"]
    plan = {  # code: (assessments, calendar due, day-count due)
        "KE-0741": ([("intake", "2026-01-15")], "2026-07-15", "2026-07-16"),
        "KE-0742": ([("intake", "2027-01-10"), ("six_month", "2027-07-10")],
                    "2028-07-10", "2028-07-09"),
        "KE-0743": ([("intake", "2026-03-01"), ("ad_hoc", "2026-04-01")],
                    "2026-09-01", "2026-08-30"),
    }  # fmt: skip
    for code, (steps, _, _) in plan.items():
        ent = str(uuid.uuid4())
        for point, date in steps:
            field.send(case_code=code, point=point, date=date, entity_id=ent,
                       ratings=ratings_for(r, "2"))  # fmt: skip
    reconcile()
    # a date no rule made (set by hand): neither direction touches it
    _case(db_session, "KE-0743").next_due = dt.date(2026, 10, 1)
    db_session.commit()
    plan["KE-0743"] = (plan["KE-0743"][0], "2026-10-01", "2026-10-01")

    def dues() -> dict[str, str]:
        return {code: _case(db_session, code).next_due.isoformat() for code in plan}

    assert dues() == {code: calendar for code, (_, calendar, _) in plan.items()}
    db_session.close()
    db.downgrade(url, "0009")
    assert dues() == {code: days for code, (_, _, days) in plan.items()}
    db_session.close()
    db.upgrade(url)
    assert dues() == {code: calendar for code, (_, calendar, _) in plan.items()}
