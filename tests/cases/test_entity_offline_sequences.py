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
