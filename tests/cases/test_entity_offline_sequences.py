"""Offline ``cases`` entity sequences Central's own tests enumerate, and field ones they miss.

Collect-encrypted uploads carrying what Collect writes for offline entities (openrosa.md
§11.4), ``kintsugi reconcile --once``, then what a device downloads through the form's
manifest (``cases.csv``: ``__version`` and properties), the entity conflict review queue, and
the case. Expected versions and conflicts are worked out by hand from Central's rules
(§11.5; central-backend ``lib/model/query/entities.js``, ``test/integration/api/
offline-entities.js``).
"""

from __future__ import annotations

import csv
import io
import uuid

from defusedxml import ElementTree
from sqlalchemy import select

from server.models import EntityBacklog
from tests.cases.fieldwork import ratings_for
from tests.cases.test_entity_versions import _case, _history

NS = "{http://openrosa.org/xforms/xformsManifest}"


def _downloaded(field) -> dict[str, dict[str, str]]:
    """The cases list as Collect gets it: the manifest's ``cases.csv`` entry, then its URL."""
    c = field.collect
    resp = c.get(f"{c.base}/forms/{field.report['form_id']}/manifest")
    assert resp.status_code == 200, resp.data
    (media,) = [
        m for m in ElementTree.fromstring(resp.data) if m.findtext(f"{NS}filename") == "cases.csv"
    ]
    resp = c.get(media.findtext(f"{NS}downloadUrl"))
    assert resp.status_code == 200, resp.data
    return {r["name"]: r for r in csv.DictReader(io.StringIO(resp.get_data(as_text=True)))}


def _entity_conflicts(admin_api) -> list[dict]:
    return admin_api("GET", "/review-queues").get_json()["entity_conflicts"]


def _intake(field, reconcile, code: str, ent: str) -> None:
    """A survivor registered and synced: version 1, which every tablet then downloads."""
    field.send(case_code=code, point="intake", date="2026-01-05", entity_id=ent,
               ratings=ratings_for(field.report, "1"))  # fmt: skip
    reconcile()
    assert _downloaded(field)[ent]["__version"] == "1"


def test_edit_of_a_synced_follow_up__served_at_once_and_no_conflict(
    field, reconcile, db_session, admin_api
):
    """A supervisor corrects a synced 6-month (an edit: deprecatedID, carrying the entity block
    the original had: based on version 1). Central never processes a submission's entity
    block twice (``_processSubmissionEvent``: the submission already made a version), so the
    correction is no conflict with the follow-up it corrects; the list serves the corrected
    scores at a new version."""
    r, ent, branch = field.report, str(uuid.uuid4()), str(uuid.uuid4())
    _intake(field, reconcile, "KE-0701", ent)
    follow = {"case_code": "KE-0701", "point": "six_month", "date": "2026-07-05",
              "entity_id": ent, "base_version": 1, "trunk_version": 1, "branch_id": branch}  # fmt: skip
    six, *_ = field.send(**follow, ratings=ratings_for(r, "2"))
    reconcile()
    assert _downloaded(field)[ent]["__version"] == "2"

    field.send(**follow, ratings=ratings_for(r, "4"), deprecated_id=six)
    reconcile()

    row = _downloaded(field)[ent]
    assert row["__version"] == "3"
    assert all(row[f"score_{d['id']}"] == "4.00" for d in r["domains"])
    assert _entity_conflicts(admin_api) == []
    assert [h[4] for h in _history(db_session, ent)] == [None, None, None]
    assert "entity_conflict" not in _case(db_session, "KE-0701").flags


def test_edit_of_a_held_follow_up__waits_with_it_then_the_branch_applies_cleanly(
    field, reconcile, db_session, admin_api
):
    """The annual of an offline branch arrives before the 6-month it builds on (held), and is
    corrected by an edit before the 6-month arrives. Central does not process a held
    submission again (``_checkHeldSubmission``); the branch then applies in the device's
    order, nothing stays held, and nobody is asked about a conflict."""
    r, ent, branch = field.report, str(uuid.uuid4()), str(uuid.uuid4())
    _intake(field, reconcile, "KE-0702", ent)
    common = {"case_code": "KE-0702", "entity_id": ent, "trunk_version": 1, "branch_id": branch}
    six = field.encrypt(point="six_month", date="2026-07-05", ratings=ratings_for(r, "2"),
                        base_version=1, **common)  # fmt: skip
    annual, *_ = field.send(point="annual", date="2027-01-05", ratings=ratings_for(r, "3"),
                            base_version=2, **common)  # fmt: skip
    reconcile()
    field.send(point="annual", date="2027-01-05", ratings=ratings_for(r, "4"), base_version=2,
               deprecated_id=annual, **common)  # fmt: skip
    reconcile()
    assert _downloaded(field)[ent]["__version"] == "1"  # still waiting for the 6-month

    field.post(*six[1:])
    reconcile()

    row = _downloaded(field)[ent]
    assert row["__version"] == "3" and row["last_collection_point"] == "annual"
    assert all(row[f"score_{d['id']}"] == "4.00" for d in r["domains"])
    db_session.expire_all()
    assert db_session.scalars(select(EntityBacklog)).all() == []
    assert not [f for f in _case(db_session, "KE-0702").flags if f.startswith("entity_")]
    assert _entity_conflicts(admin_api) == []


def _integrity(field, ids: list[str]) -> dict[str, str]:
    c = field.collect
    resp = c.get(f"{c.base}/datasets/cases/integrity?id={'%2C'.join(ids)}")
    assert resp.status_code == 200, resp.data
    return {
        e.get("id"): e.findtext("deleted") for e in ElementTree.fromstring(resp.data).iter("entity")
    }


def test_offline_create_and_two_updates__create_synced_last__applied_in_the_devices_order(
    field, reconcile, db_session, admin_api
):
    """Central's "two updates followed by delayed create": a tablet registers a survivor and
    makes two follow-ups offline (Collect: the create carries no branch; the updates carry
    baseVersion 1 then 2, no trunkVersion, the local branchId). The intake syncs last: both
    updates wait, then the create makes version 1 and releases 2 and 3 in order."""
    r, ent, branch = field.report, str(uuid.uuid4()), str(uuid.uuid4())
    common = {"case_code": "KE-0703", "entity_id": ent}
    intake = field.encrypt(point="intake", date="2026-01-05", ratings=ratings_for(r, "1"),
                           **common)  # fmt: skip
    field.send(point="six_month", date="2026-07-05", ratings=ratings_for(r, "2"),
               base_version=1, branch_id=branch, **common)  # fmt: skip
    field.send(point="annual", date="2027-01-05", ratings=ratings_for(r, "3"),
               base_version=2, branch_id=branch, **common)  # fmt: skip
    reconcile()
    assert ent not in _downloaded(field)
    field.post(*intake[1:])
    reconcile()

    row = _downloaded(field)[ent]
    assert row["__version"] == "3" and row["last_collection_point"] == "annual"
    assert [(v, src, base, b, c) for v, src, base, b, c in _history(db_session, ent)] == [
        (1, "submission", None, None, None),
        (2, "submission", 1, branch, None),
        (3, "submission", 2, branch, None),
    ]
    assert _entity_conflicts(admin_api) == []
    assert _case(db_session, "KE-0703").assessment_count == 3


def test_branch_interrupted_by_another_tablet__second_update_soft_despite_resolution(
    field, reconcile, db_session, admin_api
):
    """Central's "not contiguous with its trunk version ... despite earlier conflict
    resolution": tablet B syncs a visit based on version 1 while tablet A is offline with a
    branch from version 1. A's first update is a conflict (the server moved since its base);
    an admin resolves it; A's second update, contiguous with its first, is still a soft
    conflict because B interrupted A's branch."""
    r, ent = field.report, str(uuid.uuid4())
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    _intake(field, reconcile, "KE-0704", ent)
    common = {"case_code": "KE-0704", "entity_id": ent, "trunk_version": 1}
    field.send(point="ad_hoc", date="2026-03-01",
               ratings=ratings_for(r, "2"), base_version=1, branch_id=b, **common)  # fmt: skip
    reconcile()
    field.send(point="six_month", date="2026-07-05", ratings=ratings_for(r, "3"),
               base_version=1, branch_id=a, **common)  # fmt: skip
    reconcile()
    [item] = _entity_conflicts(admin_api)
    resp = admin_api("POST", f"/review-items/{item['id']}/resolve", json={"action": "resolve"})
    assert resp.status_code == 204, resp.data
    assert "entity_conflict" not in _case(db_session, "KE-0704").flags

    field.send(point="annual", date="2027-01-05", ratings=ratings_for(r, "4"),
               base_version=2, branch_id=a, **common)  # fmt: skip
    reconcile()
    assert [(v, base, c) for v, _, base, _, c in _history(db_session, ent)] == [
        (1, None, None),
        (2, 1, None),
        (3, 1, "hard"),
        (4, 3, "soft"),
    ]
    [item] = _entity_conflicts(admin_api)
    assert "soft conflict" in item["summary"]
    assert _downloaded(field)[ent]["__version"] == "4"


def test_two_updates_first_lost__forced_then_successor_follows(
    field, reconcile, db_session, runner
):
    """Central's "apply two updates when first update is missing": a tablet's 2nd and 3rd
    offline updates arrive, its 1st never does. Both wait; after the backlog days (moved by
    the config, not by waiting) the 2nd is applied against the latest version and the 3rd
    follows it in the branch, with no conflict (nobody else changed the case)."""
    r, ent, branch = field.report, str(uuid.uuid4()), str(uuid.uuid4())
    _intake(field, reconcile, "KE-0705", ent)
    common = {"case_code": "KE-0705", "entity_id": ent, "trunk_version": 1, "branch_id": branch}
    field.send(point="annual", date="2027-01-05", ratings=ratings_for(r, "3"), base_version=2,
               **common)  # fmt: skip
    field.send(point="ad_hoc", date="2027-06-05", ratings=ratings_for(r, "4"), base_version=3,
               **common)  # fmt: skip
    reconcile()
    assert _downloaded(field)[ent]["__version"] == "1"
    assert len(db_session.scalars(select(EntityBacklog)).all()) == 2

    runner.env["KINTSUGI_ENTITY_BACKLOG_DAYS"] = "0"  # every held update waited long enough
    reconcile()

    assert [(v, src, base, bb, c) for v, src, base, bb, c in _history(db_session, ent)] == [
        (1, "submission", None, None, None),
        (2, "forced", 1, branch, None),
        (3, "submission", 2, branch, None),
    ]
    db_session.expire_all()
    assert db_session.scalars(select(EntityBacklog)).all() == []
    row = _downloaded(field)[ent]
    assert row["__version"] == "3" and row["last_collection_point"] == "ad_hoc"
    assert not [f for f in _case(db_session, "KE-0705").flags if f.startswith("entity_")]


def test_follow_up_synced_after_the_closure__history_kept_case_gone_no_conflict_to_review(
    field, reconcile, db_session, admin_api
):
    """Tablet A closes a case; tablet B, offline since version 1, then syncs a 6-month made
    before the closure. The 6-month joins the case's history and the case stays closed: the
    list still leaves it out and the integrity API still says deleted, so both tablets drop
    it. Central refuses updates of a deleted entity (``entityDeleted``) and flags nothing: no
    device holds the case any more, so there is no list conflict for anyone to review."""
    r, ent = field.report, str(uuid.uuid4())
    _intake(field, reconcile, "KE-0706", ent)
    common = {"case_code": "KE-0706", "entity_id": ent, "base_version": 1, "trunk_version": 1}
    field.send(point="closure", date="2026-09-01", ratings=ratings_for(r, "4"),
               branch_id=str(uuid.uuid4()), **common)  # fmt: skip
    reconcile()
    assert ent not in _downloaded(field) and _integrity(field, [ent]) == {ent: "true"}

    field.send(point="six_month", date="2026-07-05", ratings=ratings_for(r, "2"),
               branch_id=str(uuid.uuid4()), **common)  # fmt: skip
    reconcile()

    assert ent not in _downloaded(field) and _integrity(field, [ent]) == {ent: "true"}
    case = _case(db_session, "KE-0706")
    assert case.assessment_count == 3 and case.status == "closed"
    assert _entity_conflicts(admin_api) == []
    assert "entity_conflict" not in case.flags


def test_intake_lost__admin_creates_the_case_from_an_orphan__branch_applies_without_waiting(
    field, reconcile, db_session, admin_api, runner
):
    """A tablet registers a survivor and makes two follow-ups offline, then its intake is lost
    (the form was deleted on the tablet). The follow-ups arrive as orphans; their list updates
    wait for the create they build on (baseVersion 1, then 2, in the tablet's branch). An
    admin creates the case from the 6-month: that create is version 1, which the first
    update builds on (Central: after a create, the held update with branchBaseVersion 1 is
    processed next). The updates must not sit in the backlog for the backlog days and then be
    forced as conflicts with versions the server made from those very follow-ups."""
    r, ent, branch = field.report, str(uuid.uuid4()), str(uuid.uuid4())
    common = {"case_code": "KE-0707", "entity_id": ent, "branch_id": branch}
    field.send(point="six_month", date="2026-07-05", ratings=ratings_for(r, "2"),
               base_version=1, **common)  # fmt: skip
    field.send(point="annual", date="2027-01-05", ratings=ratings_for(r, "3"), base_version=2,
               **common)  # fmt: skip
    reconcile()
    orphans = admin_api("GET", "/review-queues").get_json()["orphans"]
    assert len(orphans) == 2
    first = min(orphans, key=lambda o: o["id"])
    resp = admin_api("POST", f"/review-items/{first['id']}/resolve",
                     json={"action": "create_case", "case_code": "KE-0707"})  # fmt: skip
    assert resp.status_code == 204, resp.data

    case = _case(db_session, "KE-0707")
    assert case.assessment_count == 2
    assert not [f for f in case.flags if f.startswith("entity_")]
    db_session.expire_all()
    assert db_session.scalars(select(EntityBacklog)).all() == []
    assert _downloaded(field)[ent]["last_collection_point"] == "annual"
    # the admin's create, the tablet's two updates in its order, then the adopted annual
    assert [(v, src, base, c) for v, src, base, _, c in _history(db_session, ent)] == [
        (1, "server", None, None),
        (2, "submission", 1, None),
        (3, "submission", 2, None),
        (4, "server", None, None),
    ]

    runner.env["KINTSUGI_ENTITY_BACKLOG_DAYS"] = "0"  # whatever waits is forced now
    reconcile()
    assert _entity_conflicts(admin_api) == []
    assert not [f for f in _case(db_session, "KE-0707").flags if f.startswith("entity_")]
    assert _downloaded(field)[ent]["last_collection_point"] == "annual"


def test_intake_corrected_while_a_follow_up_waits__branch_applies_without_conflict(
    field, reconcile, db_session, admin_api
):
    """A tablet's annual arrives before the 6-month it builds on (held); meanwhile a supervisor
    corrects the intake (an edit). The correction changes the case, but it must not become a
    list version made from the held annual's state: that version would interrupt the tablet's
    branch and turn its perfectly ordered 6-month into a hard conflict with its own annual.
    Central makes no version for either (the edit is no entity update, the annual waits), so
    the branch applies with no conflict, and the list then serves everything."""
    r, ent, branch = field.report, str(uuid.uuid4()), str(uuid.uuid4())
    intake, *_ = field.send(case_code="KE-0708", point="intake", date="2026-01-05",
                            entity_id=ent, ratings=ratings_for(r, "1"))  # fmt: skip
    reconcile()
    common = {"case_code": "KE-0708", "entity_id": ent, "trunk_version": 1, "branch_id": branch}
    six = field.encrypt(point="six_month", date="2026-07-05", ratings=ratings_for(r, "2"),
                        base_version=1, **common)  # fmt: skip
    field.send(point="annual", date="2027-01-05", ratings=ratings_for(r, "3"), base_version=2,
               **common)  # fmt: skip
    reconcile()
    field.send(case_code="KE-0708", point="intake", date="2026-01-06", entity_id=ent,
               ratings=ratings_for(r, "1"), deprecated_id=intake)  # fmt: skip
    reconcile()
    field.post(*six[1:])
    reconcile()

    assert _entity_conflicts(admin_api) == []
    assert [(v, src, c) for v, src, _, _, c in _history(db_session, ent)] == [
        (1, "submission", None),
        (2, "submission", None),
        (3, "submission", None),
    ]
    row = _downloaded(field)[ent]
    assert row["__version"] == "3" and row["last_collection_point"] == "annual"
    assert _case(db_session, "KE-0708").intake_date.isoformat() == "2026-01-06"
