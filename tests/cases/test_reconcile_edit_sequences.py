"""Edits (deprecatedID) in the messy orders field work produces, checked as an admin sees them.

Collect-encrypted uploads, ``kintsugi reconcile --once``, and the admin API (case detail and
review queues). Expected states, counts and scores are worked out in each test.
"""

from __future__ import annotations

import csv
import io
import uuid

from tests.cases.fieldwork import ratings_for


def _case_by_code(admin_api, code: str) -> dict | None:
    items = admin_api("GET", f"/cases?q={code}").get_json()["items"]
    found = [c for c in items if c["label"] == code]
    if not found:
        return None
    return admin_api("GET", f"/cases/{found[0]['id']}").get_json()


def _active(detail: dict) -> list[tuple[str, str, float]]:
    return [
        (a["kind"], a["date"], a["domain_scores"]["SAF"])
        for a in detail["assessments"]
        if a["state"] == "active"
    ]


def _by_instance(detail: dict) -> dict[str, str]:
    return {a["instance_id"]: a["state"] for a in detail["assessments"]}


def test_edit_of_an_assessment_in_conflict__the_edit_stays_in_review_not_merged(
    field, reconcile, admin_api
):
    """Should keep an edit of the losing side of an open conflict in the conflict queue (it
    still competes with the other 6-month of that date), never as a second active 6-month."""
    r, ent = field.report, str(uuid.uuid4())
    field.send(case_code="KE-0801", point="intake", date="2026-01-10", entity_id=ent,
               ratings=ratings_for(r, "1"))  # fmt: skip
    field.send(case_code="KE-0801", point="six_month", date="2026-07-10", entity_id=ent,
               ratings=ratings_for(r, "2"))  # fmt: skip
    rival, *_ = field.send(case_code="KE-0801", point="six_month", date="2026-07-10",
                           entity_id=ent, ratings=ratings_for(r, "3"))  # fmt: skip
    reconcile()
    [item] = admin_api("GET", "/review-queues").get_json()["conflicts"]
    assert "KE-0801" in item["summary"]

    edit, *_ = field.send(case_code="KE-0801", point="six_month", date="2026-07-10",
                          entity_id=ent, ratings=ratings_for(r, "4"), deprecated_id=rival)  # fmt: skip
    reconcile()

    detail = _case_by_code(admin_api, "KE-0801")
    # the first 6-month stays the one counted until an admin decides
    assert _active(detail) == [("intake", "2026-01-10", 1.0), ("six_month", "2026-07-10", 2.0)]
    assert detail["assessment_count"] == 2 and detail["latest_scores"]["SAF"] == 2.0
    states = _by_instance(detail)
    assert states[rival] == "superseded" and states[edit] == "conflict"
    # one open conflict for the case, and it is about the edit (the live version)
    [item] = admin_api("GET", "/review-queues").get_json()["conflicts"]
    edit_row = next(a for a in detail["assessments"] if a["instance_id"] == edit)
    assert item["assessment_id"] == edit_row["id"]
    resp = admin_api("POST", f"/review-items/{item['id']}/resolve", json={"action": "keep"})
    assert resp.status_code == 204, resp.data
    detail = _case_by_code(admin_api, "KE-0801")
    assert _active(detail) == [("intake", "2026-01-10", 1.0), ("six_month", "2026-07-10", 4.0)]
    assert _by_instance(detail)[rival] == "superseded"


def test_edit_moving_the_conflicting_date__the_conflict_settles_itself(field, reconcile, admin_api):
    """Should clear a conflict when an edit of its losing side corrects the date (it was an
    ad hoc visit keyed as the 6-month): both count, no item is left for the admin."""
    r, ent = field.report, str(uuid.uuid4())
    field.send(case_code="KE-0802", point="intake", date="2026-01-10", entity_id=ent,
               ratings=ratings_for(r, "1"))  # fmt: skip
    field.send(case_code="KE-0802", point="six_month", date="2026-07-10", entity_id=ent,
               ratings=ratings_for(r, "2"))  # fmt: skip
    rival, *_ = field.send(case_code="KE-0802", point="six_month", date="2026-07-10",
                           entity_id=ent, ratings=ratings_for(r, "3"))  # fmt: skip
    reconcile()
    assert len(admin_api("GET", "/review-queues").get_json()["conflicts"]) == 1

    field.send(case_code="KE-0802", point="six_month", date="2026-08-20", entity_id=ent,
               ratings=ratings_for(r, "3"), deprecated_id=rival)  # fmt: skip
    reconcile()

    detail = _case_by_code(admin_api, "KE-0802")
    assert _active(detail) == [
        ("intake", "2026-01-10", 1.0),
        ("six_month", "2026-07-10", 2.0),
        ("six_month", "2026-08-20", 3.0),
    ]
    assert admin_api("GET", "/review-queues").get_json()["conflicts"] == []


def test_edit_moving_onto_another_assessments_date__conflict_for_review(
    field, reconcile, admin_api
):
    """Should not silently keep two different 6-month assessments of one date when an edit
    corrects the date of one onto the other's."""
    r, ent = field.report, str(uuid.uuid4())
    field.send(case_code="KE-0803", point="intake", date="2026-01-10", entity_id=ent,
               ratings=ratings_for(r, "1"))  # fmt: skip
    field.send(case_code="KE-0803", point="six_month", date="2026-07-10", entity_id=ent,
               ratings=ratings_for(r, "2"))  # fmt: skip
    other, *_ = field.send(case_code="KE-0803", point="six_month", date="2026-07-30",
                           entity_id=ent, ratings=ratings_for(r, "3"))  # fmt: skip
    reconcile()
    assert admin_api("GET", "/review-queues").get_json()["conflicts"] == []

    edit, *_ = field.send(case_code="KE-0803", point="six_month", date="2026-07-10",
                          entity_id=ent, ratings=ratings_for(r, "3"), deprecated_id=other)  # fmt: skip
    reconcile()

    detail = _case_by_code(admin_api, "KE-0803")
    assert _active(detail) == [("intake", "2026-01-10", 1.0), ("six_month", "2026-07-10", 2.0)]
    assert _by_instance(detail)[other] == "superseded"
    assert _by_instance(detail)[edit] == "conflict"
    [item] = admin_api("GET", "/review-queues").get_json()["conflicts"]
    assert "KE-0803" in item["summary"]


def test_edit_naming_another_case__moves_the_assessment_to_that_case(field, reconcile, admin_api):
    """Should move an assessment to the case its edit names (the worker picked the wrong
    survivor on the tablet and corrected it): the first case is back to its intake alone."""
    r, wrong, right = field.report, str(uuid.uuid4()), str(uuid.uuid4())
    field.send(case_code="KE-0804", point="intake", date="2026-01-10", entity_id=wrong,
               ratings=ratings_for(r, "1"))  # fmt: skip
    field.send(case_code="KE-0805", point="intake", date="2026-01-12", entity_id=right,
               ratings=ratings_for(r, "2"))  # fmt: skip
    slip, *_ = field.send(case_code="KE-0804", point="six_month", date="2026-07-12",
                          entity_id=wrong, ratings=ratings_for(r, "4"))  # fmt: skip
    reconcile()
    assert _case_by_code(admin_api, "KE-0804")["assessment_count"] == 2

    field.send(case_code="KE-0805", point="six_month", date="2026-07-12", entity_id=right,
               ratings=ratings_for(r, "4"), deprecated_id=slip)  # fmt: skip
    reconcile()

    first = _case_by_code(admin_api, "KE-0804")
    assert _active(first) == [("intake", "2026-01-10", 1.0)]
    assert first["assessment_count"] == 1 and first["latest_scores"]["SAF"] == 1.0
    assert first["next_due"] == "2026-07-10"  # intake + 6 months again
    assert all(v is None for v in first["change_since_intake"].values())
    second = _case_by_code(admin_api, "KE-0805")
    assert _active(second) == [("intake", "2026-01-12", 2.0), ("six_month", "2026-07-12", 4.0)]
    assert second["change_since_intake"]["SAF"] == 2.0
    assert second["next_due"] == "2027-07-12"


def test_chain_of_edits_uploaded_backwards__only_the_last_edit_counts(field, reconcile, admin_api):
    """Should keep only the last edit of a chain (A, B edits A, C edits B) that synced in
    reverse order: A, arriving last, is history, not a second 6-month or a conflict."""
    r, ent = field.report, str(uuid.uuid4())
    field.send(case_code="KE-0806", point="intake", date="2026-01-10", entity_id=ent,
               ratings=ratings_for(r, "1"))  # fmt: skip
    reconcile()
    a = field.encrypt(case_code="KE-0806", point="six_month", date="2026-07-01", entity_id=ent,
                      ratings=ratings_for(r, "2"))  # fmt: skip
    b = field.encrypt(case_code="KE-0806", point="six_month", date="2026-07-02", entity_id=ent,
                      ratings=ratings_for(r, "3"), deprecated_id=a[0])  # fmt: skip
    c = field.encrypt(case_code="KE-0806", point="six_month", date="2026-07-02", entity_id=ent,
                      ratings=ratings_for(r, "4"), deprecated_id=b[0])  # fmt: skip
    for upload in (c, b, a):
        field.post(*upload[1:])
        reconcile()

    detail = _case_by_code(admin_api, "KE-0806")
    assert _active(detail) == [("intake", "2026-01-10", 1.0), ("six_month", "2026-07-02", 4.0)]
    states = _by_instance(detail)
    assert (states[a[0]], states[b[0]], states[c[0]]) == ("superseded", "superseded", "active")
    assert detail["latest_scores"]["SAF"] == 4.0 and detail["change_since_intake"]["SAF"] == 3.0
    assert admin_api("GET", "/review-queues").get_json()["conflicts"] == []


def test_edit_moving_the_counted_side_away__the_waiting_one_counts(field, reconcile, admin_api):
    """Should count the assessment that waited in a conflict once an edit moves the one it
    competed with to another date: both are in the trend, no conflict is left to work."""
    r, ent = field.report, str(uuid.uuid4())
    field.send(case_code="KE-0807", point="intake", date="2026-01-10", entity_id=ent,
               ratings=ratings_for(r, "1"))  # fmt: skip
    counted, *_ = field.send(case_code="KE-0807", point="ad_hoc", date="2026-03-10",
                             entity_id=ent, ratings=ratings_for(r, "2"))  # fmt: skip
    waiting, *_ = field.send(case_code="KE-0807", point="ad_hoc", date="2026-03-10",
                             entity_id=ent, ratings=ratings_for(r, "3"))  # fmt: skip
    reconcile()
    assert _by_instance(_case_by_code(admin_api, "KE-0807"))[waiting] == "conflict"

    field.send(case_code="KE-0807", point="ad_hoc", date="2026-02-10", entity_id=ent,
               ratings=ratings_for(r, "2"), deprecated_id=counted)  # fmt: skip
    reconcile()

    detail = _case_by_code(admin_api, "KE-0807")
    assert _active(detail) == [
        ("intake", "2026-01-10", 1.0),
        ("ad_hoc", "2026-02-10", 2.0),
        ("ad_hoc", "2026-03-10", 3.0),
    ]
    assert detail["latest_scores"]["SAF"] == 3.0 and detail["change_since_intake"]["SAF"] == 2.0
    assert admin_api("GET", "/review-queues").get_json()["conflicts"] == []


def _served(field) -> dict[str, dict[str, str]]:
    """The cases list as a device downloads it, by entity id."""
    resp = field.collect.get(
        f"{field.collect.base}/forms/{field.report['form_id']}/attachments/cases.csv"
    )
    assert resp.status_code == 200
    return {r["name"]: r for r in csv.DictReader(io.StringIO(resp.get_data(as_text=True)))}


def test_edit_of_an_intake_correcting_the_case_code__the_case_takes_the_new_code(
    field, reconcile, admin_api
):
    """Should rename the case when the intake's edit corrects a mistyped case code: the
    caseload finds it under the right code, and devices get the corrected code."""
    r, ent = field.report, str(uuid.uuid4())
    typo, *_ = field.send(case_code="KE-09O1", point="intake", date="2026-01-10",
                          entity_id=ent, ratings=ratings_for(r, "1"))  # fmt: skip
    reconcile()
    assert _served(field)[ent]["label"] == "KE-09O1"

    field.send(case_code="KE-0901", point="intake", date="2026-01-10", entity_id=ent,
               ratings=ratings_for(r, "1"), deprecated_id=typo)  # fmt: skip
    field.send(case_code="KE-0901", point="six_month", date="2026-07-10", entity_id=ent,
               ratings=ratings_for(r, "2"), base_version=2)  # fmt: skip
    reconcile()

    assert _case_by_code(admin_api, "KE-09O1") is None
    detail = _case_by_code(admin_api, "KE-0901")
    assert _active(detail) == [("intake", "2026-01-10", 1.0), ("six_month", "2026-07-10", 2.0)]
    assert detail["entity_uuid"] == ent and detail["change_since_intake"]["SAF"] == 1.0
    row = _served(field)[ent]
    assert row["label"] == "KE-0901" and row["case_code"] == "KE-0901"
    assert admin_api("GET", "/review-queues").get_json()["orphans"] == []


def test_intake_follow_up_its_edit_and_an_annual_in_one_run__each_step_as_worked_out(
    field, reconcile, admin_api, db_session
):
    """Should reconcile a case's intake, 6-month, the 6-month's edit and the annual, all
    synced before one worker pass (one batch), to what each step gives on its own: the edit
    replaces the 6-month, the case's state comes from the last assessment, and the list
    served to devices has one version per step, each with the case as it stood then."""
    from sqlalchemy import select

    from server.models import Entity, EntityVersion, Submission

    r, ent = field.report, str(uuid.uuid4())
    intake, *_ = field.send(case_code="KE-0810", point="intake", date="2026-01-10",
                            entity_id=ent, ratings=ratings_for(r, "1"))  # fmt: skip
    six, *_ = field.send(case_code="KE-0810", point="six_month", date="2026-07-10",
                         entity_id=ent, ratings=ratings_for(r, "2"), base_version=1)  # fmt: skip
    edit, *_ = field.send(case_code="KE-0810", point="six_month", date="2026-07-12",
                          entity_id=ent, ratings=ratings_for(r, "3"), base_version=1,
                          deprecated_id=six)  # fmt: skip
    annual, *_ = field.send(case_code="KE-0810", point="annual", date="2027-07-15",
                            entity_id=ent, ratings=ratings_for(r, "4"), base_version=3)  # fmt: skip
    assert "processed 4: 4 assessments" in reconcile()

    detail = _case_by_code(admin_api, "KE-0810")
    assert _active(detail) == [
        ("intake", "2026-01-10", 1.0),
        ("six_month", "2026-07-12", 3.0),
        ("annual", "2027-07-15", 4.0),
    ]
    assert _by_instance(detail) == {
        intake: "active", six: "superseded", edit: "active", annual: "active"
    }  # fmt: skip
    assert detail["assessment_count"] == 3 and detail["latest_scores"]["SAF"] == 4.0
    assert detail["change_since_intake"]["SAF"] == 3.0
    assert detail["next_due"] == "2028-07-15"  # the annual + a year
    queues = admin_api("GET", "/review-queues").get_json()
    assert queues["conflicts"] == [] and queues["orphans"] == []

    row = _served(field)[ent]
    assert (row["label"], row["__version"]) == ("KE-0810", "4")
    assert (row["last_assessment_date"], row["last_collection_point"]) == ("2027-07-15", "annual")
    # v1 the intake's create, v2 the 6-month's update, v3 the server's version of the edit
    # (Central does not process an edit's entity block again), v4 the annual's update
    entity = db_session.scalar(select(Entity).where(Entity.uuid == ent))
    versions = db_session.scalars(
        select(EntityVersion)
        .where(EntityVersion.entity_id == entity.id)
        .order_by(EntityVersion.version)
    ).all()
    assert [(v.version, v.source, v.base_version, v.conflict) for v in versions] == [
        (1, "submission", None, None),
        (2, "submission", 1, None),
        (3, "server", None, None),
        (4, "submission", 3, None),
    ]
    assert [v.data["last_assessment_date"] for v in versions] == [
        "2026-01-10", "2026-07-10", "2026-07-12", "2027-07-15"
    ]  # fmt: skip
    assert [v.data["score_SAF"] for v in versions] == ["1.00", "2.00", "3.00", "4.00"]
    statuses = db_session.scalars(
        select(Submission.status).where(Submission.instance_id.in_([intake, six, edit, annual]))
    ).all()
    assert statuses == ["decrypted"] * 4
