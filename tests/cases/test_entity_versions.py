"""Central's entity version model for the ``cases`` list, as devices upload out of order.

Each test posts Collect-encrypted submissions whose ``meta/entity`` blocks carry what Collect
writes for offline entities (openrosa.md §11.4: ``baseVersion``, ``trunkVersion``,
``branchId``), reconciles with the CLI, and checks what devices then download (``cases.csv``),
the version history, and the review queue an admin works through the API. Expected versions
and conflicts are worked out by hand in each test from Central's rules (§11.5).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import uuid

from sqlalchemy import select, update

from server.models import AuditLog, Entity, EntityBacklog, EntityVersion
from server.models_cases import Case, ReviewItem
from tests.cases.fieldwork import ratings_for


def _served(field) -> dict[str, dict[str, str]]:
    """The cases list as a device downloads it, by entity id."""
    resp = field.collect.get(
        f"{field.collect.base}/forms/{field.report['form_id']}/attachments/cases.csv"
    )
    assert resp.status_code == 200
    return {r["name"]: r for r in csv.DictReader(io.StringIO(resp.get_data(as_text=True)))}


def _history(db_session, entity_id: str) -> list[tuple]:
    db_session.expire_all()
    entity = db_session.scalar(select(Entity).where(Entity.uuid == entity_id))
    rows = db_session.scalars(
        select(EntityVersion)
        .where(EntityVersion.entity_id == entity.id)
        .order_by(EntityVersion.version)
    )
    return [(v.version, v.source, v.base_version, v.branch_id, v.conflict) for v in rows]


def _case(db_session, code: str) -> Case:
    db_session.expire_all()
    return db_session.scalar(select(Case).where(Case.case_code == code))


def test_offline_branch__uploaded_backwards__applied_in_the_devices_order(
    field, reconcile, db_session
):
    """Should hold updates whose predecessor has not arrived, then apply the whole branch in
    order with no conflict: versions 1, 2, 3 exactly as the device numbered them."""
    r, ent, branch = field.report, str(uuid.uuid4()), str(uuid.uuid4())
    common = {"case_code": "KE-0601", "entity_id": ent, "branch_id": branch}
    # one device, offline for a year: intake (its version 1), 6-month (based on 1), annual (on 2)
    intake = field.encrypt(point="intake", date="2026-01-05", ratings=ratings_for(r, "1"), **common)
    six = field.encrypt(point="six_month", date="2026-07-05", ratings=ratings_for(r, "2"),
                        base_version=1, **common)  # fmt: skip
    annual = field.encrypt(point="annual", date="2027-01-05", ratings=ratings_for(r, "3"),
                           base_version=2, **common)  # fmt: skip

    field.post(*annual[1:])  # the annual arrives first: no case yet, its update waits
    reconcile()
    assert ent not in _served(field)
    held = db_session.scalars(select(EntityBacklog)).all()
    assert [(h.entity_uuid, h.branch_id, h.branch_base_version) for h in held] == [(ent, branch, 2)]

    field.post(*intake[1:])  # the intake creates the case (version 1); the annual still waits
    reconcile()
    row = _served(field)[ent]
    assert row["__version"] == "1"
    case = _case(db_session, "KE-0601")
    assert case.assessment_count == 2  # the annual is in the case at once...
    assert "entity_update_held" in case.flags  # ...only its list version waits
    # every version serves the case as the server knows it, held assessment included
    assert row["last_assessment_date"] == "2027-01-05"

    field.post(*six[1:])  # its predecessor: 6-month, then the held annual, in that order
    reconcile()
    row = _served(field)[ent]
    assert row["__version"] == "3"
    assert row["last_assessment_date"] == "2027-01-05"
    assert row["last_collection_point"] == "annual"
    assert _history(db_session, ent) == [
        (1, "submission", None, branch, None),
        (2, "submission", 1, branch, None),
        (3, "submission", 2, branch, None),
    ]
    assert db_session.scalars(select(EntityBacklog)).all() == []
    case = _case(db_session, "KE-0601")
    assert not [f for f in case.flags if f.startswith("entity_")]
    assert (
        db_session.scalars(select(ReviewItem).where(ReviewItem.kind == "entity_conflict")).all()
        == []
    )
    actions = db_session.scalars(select(AuditLog.action)).all()
    assert "entity.backlog.hold" in actions and "entity.backlog.reprocess" in actions


def test_parallel_updates__hard_then_resolved_through_the_api(
    field, reconcile, db_session, admin_api
):
    """Two devices update the case from version 1: the second is a hard conflict (both changed
    the last assessment date and scores), applied all the same; an admin marks it resolved."""
    r, ent, first = field.report, str(uuid.uuid4()), str(uuid.uuid4())
    field.send(case_code="KE-0602", point="intake", date="2026-01-05", entity_id=ent,
               ratings=ratings_for(r, "1"), branch_id=first)  # fmt: skip
    reconcile()
    # both tablets downloaded version 1 (Collect: trunk = base = 1, a fresh branch each)
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    field.send(case_code="KE-0602", point="six_month", date="2026-07-05", entity_id=ent,
               ratings=ratings_for(r, "2"), base_version=1, trunk_version=1, branch_id=a)  # fmt: skip
    field.send(case_code="KE-0602", point="annual", date="2027-01-07", entity_id=ent,
               ratings=ratings_for(r, "4"), base_version=1, trunk_version=1, branch_id=b)  # fmt: skip
    reconcile()

    assert _history(db_session, ent) == [
        (1, "submission", None, first, None),
        (2, "submission", 1, a, None),
        (3, "submission", 1, b, "hard"),
    ]
    db_session.expire_all()
    version3 = db_session.scalar(select(EntityVersion).where(EntityVersion.version == 3))
    # changed on the server since version 1 and sent differently by tablet B
    scores = [f"score_{d['id']}" for d in r["domains"]]
    assert version3.conflicting_properties == sorted(
        ["last_assessment_date", "last_collection_point", *scores]
    )
    row = _served(field)[ent]
    assert row["__version"] == "3" and row["last_assessment_date"] == "2027-01-07"
    case = _case(db_session, "KE-0602")
    assert "entity_conflict" in case.flags

    queues = admin_api("GET", "/review-queues").get_json()
    [item] = queues["entity_conflicts"]
    assert "KE-0602" in item["summary"] and "hard conflict" in item["summary"]
    assert "last_assessment_date" in item["summary"]
    resp = admin_api("POST", f"/review-items/{item['id']}/resolve", json={"action": "resolve"})
    assert resp.status_code == 204, resp.data
    assert admin_api("GET", "/review-queues").get_json()["entity_conflicts"] == []
    db_session.expire_all()
    assert db_session.scalar(select(Entity).where(Entity.uuid == ent)).conflict is None
    assert "entity_conflict" not in _case(db_session, "KE-0602").flags
    assert "entity.update.resolve" in db_session.scalars(select(AuditLog.action)).all()


def test_parallel_update__same_values__soft_and_never_downgraded(field, reconcile, db_session):
    """A second tablet sending the very assessment the first sent is a soft conflict (parallel
    update, nothing differs); a later hard conflict stays hard after another soft one."""
    r, ent = field.report, str(uuid.uuid4())
    field.send(case_code="KE-0603", point="intake", date="2026-01-05", entity_id=ent,
               ratings=ratings_for(r, "1"))  # fmt: skip
    reconcile()
    same = {"case_code": "KE-0603", "point": "six_month", "date": "2026-07-05", "entity_id": ent,
            "ratings": ratings_for(r, "2"), "base_version": 1, "trunk_version": 1}  # fmt: skip
    field.send(**same, branch_id=str(uuid.uuid4()))
    field.send(**same, branch_id=str(uuid.uuid4()))  # the same visit keyed in on a 2nd tablet
    reconcile()
    assert [h[4] for h in _history(db_session, ent)] == [None, None, "soft"]
    db_session.expire_all()
    assert (
        db_session.scalar(
            select(EntityVersion).where(EntityVersion.version == 3)
        ).conflicting_properties
        == []
    )
    field.send(case_code="KE-0603", point="annual", date="2027-01-05", entity_id=ent,
               ratings=ratings_for(r, "4"), base_version=1, trunk_version=1,
               branch_id=str(uuid.uuid4()))  # fmt: skip
    reconcile()
    db_session.expire_all()
    assert db_session.scalar(select(Entity).where(Entity.uuid == ent)).conflict == "hard"
    field.send(**{**same, "date": "2026-07-06"}, branch_id=str(uuid.uuid4()))
    reconcile()
    db_session.expire_all()
    assert db_session.scalar(select(Entity).where(Entity.uuid == ent)).conflict == "hard"
    kinds = db_session.scalars(
        select(ReviewItem.summary).where(ReviewItem.kind == "entity_conflict")
    ).all()
    assert len(kinds) == 3 and sum("soft conflict" in k for k in kinds) == 1


def test_held_update__predecessor_never_arrives__forced_after_the_backlog_days(
    field, reconcile, db_session
):
    """Should apply a held update against the latest version once it has waited longer than
    ENTITY_BACKLOG_DAYS (its predecessor was lost with a broken tablet)."""
    r, ent, branch = field.report, str(uuid.uuid4()), str(uuid.uuid4())
    field.send(case_code="KE-0604", point="intake", date="2026-01-05", entity_id=ent,
               ratings=ratings_for(r, "1"))  # fmt: skip
    reconcile()
    # the tablet downloaded version 1 and made two offline updates; the first never arrives
    field.send(case_code="KE-0604", point="annual", date="2027-01-05", entity_id=ent,
               ratings=ratings_for(r, "3"), base_version=2, trunk_version=1, branch_id=branch)  # fmt: skip
    reconcile()
    assert _served(field)[ent]["__version"] == "1"
    assert "entity_update_held" in _case(db_session, "KE-0604").flags
    reconcile()  # not yet five days: still waiting
    assert _served(field)[ent]["__version"] == "1"

    db_session.execute(
        update(EntityBacklog).values(held_at=dt.datetime.now(dt.UTC) - dt.timedelta(days=6))
    )
    db_session.commit()
    reconcile()
    row = _served(field)[ent]
    assert row["__version"] == "2" and row["last_assessment_date"] == "2027-01-05"
    [*_, forced] = _history(db_session, ent)
    assert forced == (2, "forced", 1, branch, None)  # based on the latest; nobody interrupted
    assert "entity_update_held" not in _case(db_session, "KE-0604").flags
    assert "entity.backlog.force" in db_session.scalars(select(AuditLog.action)).all()


def test_update_errors__audited_and_nothing_lost(field, reconcile, db_session):
    """An update naming a version that never existed (no branch), or a trunk beyond the
    server's version, is not applied as such: audited as entity.error, while the assessment
    counts and the list still serves the case's new state (a server version)."""
    r, ent = field.report, str(uuid.uuid4())
    field.send(case_code="KE-0605", point="intake", date="2026-01-05", entity_id=ent,
               ratings=ratings_for(r, "1"))  # fmt: skip
    reconcile()
    field.send(case_code="KE-0605", point="six_month", date="2026-07-05", entity_id=ent,
               ratings=ratings_for(r, "2"), base_version=7)  # fmt: skip
    reconcile()
    field.send(case_code="KE-0605", point="annual", date="2027-01-05", entity_id=ent,
               ratings=ratings_for(r, "3"), base_version=1, trunk_version=9,
               branch_id=str(uuid.uuid4()))  # fmt: skip
    reconcile()
    assert [(v, src) for v, src, *_ in _history(db_session, ent)] == [
        (1, "submission"),
        (2, "server"),
        (3, "server"),
    ]
    assert _case(db_session, "KE-0605").assessment_count == 3
    assert _served(field)[ent]["last_assessment_date"] == "2027-01-05"
    errors = db_session.scalars(select(AuditLog).where(AuditLog.action == "entity.error")).all()
    assert len(errors) == 2
    reasons = sorted(e.details["reason"] for e in errors)
    assert "version 7 of the case entity does not exist" in reasons[1]
    assert "trunkVersion 9 is beyond the server's version" in reasons[0]


def test_nothing_active_left__the_list_serves_the_emptied_case(field, reconcile, db_session):
    """Should give the entity a new version when an admin's decision leaves a case with no
    active assessment, so devices stop showing scores the server no longer stands behind."""
    from server.models_cases import Assessment, AssessmentState
    from server.services.reconcile import refresh_case

    r, ent = field.report, str(uuid.uuid4())
    field.send(case_code="KE-0606", point="intake", date="2026-01-05", entity_id=ent,
               ratings=ratings_for(r, "2"))  # fmt: skip
    reconcile()
    before = _served(field)[ent]
    assert before["__version"] == "1" and before["last_assessment_date"] == "2026-01-05"
    db_session.execute(update(Assessment).values(state=AssessmentState.SUPERSEDED))
    refresh_case(db_session, _case(db_session, "KE-0606"), actor="test")
    db_session.commit()
    after = _served(field)[ent]
    assert after["__version"] == "2" and after["case_code"] == "KE-0606"
    assert after["last_assessment_date"] == "" and after["last_collection_point"] == ""
    assert not any(v for k, v in after.items() if k.startswith("score_"))
    assert _history(db_session, ent)[-1][:2] == (2, "server")
    assert _case(db_session, "KE-0606").assessment_count == 0
