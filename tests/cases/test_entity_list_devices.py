"""The ``cases`` list and its integrity API as Collect uses them, against what Central does.

Each docstring names the Collect or Central code the expected behaviour comes from.
"""

from __future__ import annotations

import uuid

import requests
from defusedxml import ElementTree

from server.models import Project
from server.services.users import create_app_user
from tests.cases.fieldwork import ratings_for
from tests.server.collect import CollectActions, collect_headers, with_device_id
from tests.server.conftest import publish
from tests.server.forms import xform

NS = "{http://openrosa.org/xforms/xformsManifest}"


def _integrity(collect, ids: list[str]) -> dict[str, str]:
    """What Collect's parseIntegrityResponse makes of the answer: id -> deleted."""
    resp = collect.get(f"{collect.base}/datasets/cases/integrity?id={'%2C'.join(ids)}")
    assert resp.status_code == 200, resp.data
    root = ElementTree.fromstring(resp.data)
    return {e.get("id"): e.findtext("deleted") for e in root.iter("entity")}


def _key(app, project_id: int) -> str:
    with app.extensions["kintsugi.db"].sessionmaker() as s:
        return s.get(Project, project_id).active_key.public_key_b64


def _entity_list_entry(collect, form_id: str) -> tuple[str, str]:
    """(hash, downloadUrl) of ``cases.csv`` in a form's manifest."""
    resp = collect.get(f"{collect.base}/forms/{form_id}/manifest")
    assert resp.status_code == 200, resp.data
    (media,) = [
        m for m in ElementTree.fromstring(resp.data) if m.findtext(f"{NS}filename") == "cases.csv"
    ]
    assert media.get("type") == "entityList"
    return media.findtext(f"{NS}hash"), media.findtext(f"{NS}downloadUrl")


def _registered_twice(field, reconcile, code: str) -> tuple[str, str]:
    """Tablet A registers a survivor (reconciled); tablet B registers the same survivor under
    the same code with its own entity id (sent, not reconciled). Returns both ids."""
    r, kept, copy = field.report, str(uuid.uuid4()), str(uuid.uuid4())
    field.send(case_code=code, point="intake", date="2026-01-10", entity_id=kept,
               ratings=ratings_for(r, "1"))  # fmt: skip
    reconcile()
    field.send(case_code=code, point="intake", date="2026-01-12", entity_id=copy,
               ratings=ratings_for(r, "2"))  # fmt: skip
    return kept, copy


def test_integrity__intake_linked_into_an_existing_case__device_copy_reported_deleted(
    field, reconcile, admin_api, db_session
):
    """A survivor registered twice (two tablets, one code, two entity ids): the second intake
    waits as an orphan and an admin links it into the existing case. The second tablet still
    holds its offline entity (Collect keeps OFFLINE entities missing from the CSV and drops them
    only when the integrity API says ``deleted=true``: LocalEntityUseCases.kt
    updateLocalEntitiesFromServer / cleanUpDeletedOfflineEntities). The server has decided that
    id will never exist, so it must say so; otherwise the phantom case stays in that tablet's
    case picker forever and every follow-up made on it lands in the orphan queue again."""
    from sqlalchemy import select

    from server.models_cases import Case

    kept, duplicate = _registered_twice(field, reconcile, "KE-0901")
    reconcile()
    [orphan] = admin_api("GET", "/review-queues").get_json()["orphans"]
    case_id = db_session.scalar(select(Case.id).where(Case.case_code == "KE-0901"))
    resp = admin_api("POST", f"/review-items/{orphan['id']}/resolve",
                     json={"action": "link", "case_id": case_id})  # fmt: skip
    assert resp.status_code == 204, resp.data

    states = _integrity(field.collect, [kept, duplicate])
    assert states.get(kept) == "false"
    assert states.get(duplicate) == "true", states
    rows = field.collect.get(
        f"{field.collect.base}/forms/{field.report['form_id']}/attachments/cases.csv"
    )
    assert duplicate not in rows.get_data(as_text=True)  # never served as a case
    from server.models import AuditLog

    db_session.expire_all()
    merged = db_session.scalars(select(AuditLog).where(AuditLog.action == "entity.merge")).all()
    assert [(m.actor, m.target) for m in merged] == [("web:lead", f"entity:{duplicate}")]


def test_integrity__app_user_without_a_form_using_the_list__refused(app, field, reconcile):
    """Central answers the integrity API only to someone with ``entity.list`` or read access to
    a form that uses the dataset (central-backend lib/resources/datasets.js, integrity route:
    ``Datasets.canReadForOpenRosa`` else ``insufficientRights``). Here any app user of the
    project, even one limited to an unrelated form, gets every case id and whether it was
    closed (no ``id`` parameter = all)."""
    r, ent = field.report, str(uuid.uuid4())
    field.send(case_code="KE-0902", point="intake", date="2026-01-10", entity_id=ent,
               ratings=ratings_for(r, "1"))  # fmt: skip
    reconcile()
    publish(app, field.project_id, xform("household", public_key=_key(app, field.project_id)))
    with app.extensions["kintsugi.db"].sessionmaker() as s:
        project = s.get(Project, field.project_id)
        _user, token = create_app_user(s, project, "Household tablet", forms=["household"])
        s.commit()
    other = CollectActions(field.collect.client, f"/v1/key/{token}/projects/{field.project_id}")
    resp = other.get(f"{other.base}/datasets/cases/integrity")
    assert ent not in resp.get_data(as_text=True)
    assert resp.status_code in (403, 404), resp.data


def test_entity_list__two_forms_use_cases_csv__one_hash_and_one_csv(app, field, reconcile):
    """Collect keeps ONE local list per name ("cases") with ONE hash, whatever form brought it
    (ServerFormUseCases.downloadMediaFiles: ``entitiesRepository.getList(name)``,
    ``mediaFile.hash != localEntityList.hash``; LocalEntityUseCases.updateLocalEntitiesFromServer
    replaces the stored hash and the properties). Central serves one CSV per dataset with the
    dataset's properties and a form-independent hash (lib/resources/forms.js streamAttachment,
    lib/model/query/datasets.js _computeHashResult). Here the hash and the columns depend on
    the form version's report, so a project with a second form using cases.csv (a referral
    form published as XML) gives the same list two hashes: every sync downloads and merges the
    list twice, and the columns are whichever form came last."""
    r, ent = field.report, str(uuid.uuid4())
    field.send(case_code="KE-0903", point="intake", date="2026-01-10", entity_id=ent,
               ratings=ratings_for(r, "1"))  # fmt: skip
    reconcile()
    publish(
        app,
        field.project_id,
        xform("referral", entity_list="cases", public_key=_key(app, field.project_id)),
    )
    c = field.collect
    hash_a, url_a = _entity_list_entry(c, r["form_id"])
    hash_b, url_b = _entity_list_entry(c, "referral")
    csv_a, csv_b = c.get(url_a), c.get(url_b)
    assert csv_a.status_code == csv_b.status_code == 200
    assert ent in csv_a.get_data(as_text=True) and ent in csv_b.get_data(as_text=True)
    assert hash_a == hash_b, "one entity list, two manifest hashes"
    assert csv_a.data == csv_b.data


def test_integrity__150_offline_cases__production_gunicorn_accepts_the_request(app_config, field):
    """Collect asks about every OFFLINE entity in one GET (OpenRosaClient.fetchDeletedStates:
    ``?id=`` + all ids joined with ``,``, sent as ``%2C``), and a failed integrity call fails
    the form update (ServerFormUseCases.downloadMediaFiles does not catch it). Entities stay
    OFFLINE on a tablet until the server's CSV lists them, i.e. until the intake is decrypted
    and reconciled (a manual ``kintsugi reconcile --passphrase-file`` for encrypted projects).
    gunicorn's default ``limit_request_line`` is 4094 bytes, so docker/gunicorn.conf.py refuses
    the request line once a tablet holds about 100 such cases (414, "Request Line is too
    large"); Central sits behind nginx (8 KiB) and node (16 KiB)."""
    from tests.reliability.server import Gunicorn

    ids = [str(uuid.uuid4()) for _ in range(150)]
    path = with_device_id(f"{field.collect.base}/datasets/cases/integrity?id={'%2C'.join(ids)}")
    with Gunicorn(app_config, workers=1) as server:
        resp = requests.get(server.url + path, headers=collect_headers(), timeout=30)
    assert resp.status_code == 200, (resp.status_code, resp.text[:300])


def test_merged_copy__tablet_follow_ups_before_and_after_the_link__join_the_case(
    field, reconcile, admin_api, db_session
):
    """A tablet goes on working on its own copy of a survivor registered twice until its next
    form update: a follow-up it sent before the admin linked its intake joins the case with
    that link, and one it sends afterwards joins the case by itself (not the orphan queue),
    without touching the case entity's versions as an update would."""
    from sqlalchemy import select

    from server.models import AuditLog
    from server.models_cases import Assessment, Case, ReviewItem

    r = field.report
    kept, copy = _registered_twice(field, reconcile, "KE-0910")
    # tablet B also made a 6-month review on its copy (its version 1)
    field.send(case_code="KE-0910", point="six_month", date="2026-07-12", entity_id=copy,
               ratings=ratings_for(r, "3"), base_version=1)  # fmt: skip
    reconcile()
    orphans = admin_api("GET", "/review-queues").get_json()["orphans"]
    assert len(orphans) == 2
    intake = next(o for o in orphans if "intake" in o["summary"])
    case_id = db_session.scalar(select(Case.id).where(Case.case_code == "KE-0910"))
    resp = admin_api("POST", f"/review-items/{intake['id']}/resolve",
                     json={"action": "link", "case_id": case_id})  # fmt: skip
    assert resp.status_code == 204, resp.data
    assert admin_api("GET", "/review-queues").get_json()["orphans"] == []
    db_session.expire_all()
    six = db_session.scalar(select(Assessment).where(Assessment.collection_point == "six_month"))
    assert (six.case_id, six.state) == (case_id, "active")
    item = db_session.scalar(select(ReviewItem).where(ReviewItem.assessment_id == six.id))
    assert item.resolution == "auto_linked"

    def entity_errors() -> int:
        return len(
            db_session.scalars(select(AuditLog).where(AuditLog.action == "entity.error")).all()
        )

    errors = entity_errors()  # B's create and update while its copy was unknown
    # before its form update, tablet B sends an annual review made on its copy (version 2)
    field.send(case_code="KE-0910", point="annual", date="2027-01-12", entity_id=copy,
               ratings=ratings_for(r, "4"), base_version=2)  # fmt: skip
    reconcile()
    assert admin_api("GET", "/review-queues").get_json()["orphans"] == []
    case = db_session.scalar(select(Case).where(Case.id == case_id))
    db_session.refresh(case)
    assert case.assessment_count == 4 and case.latest_date.isoformat() == "2027-01-12"
    assert not any(f.startswith("entity_") for f in case.flags)
    assert entity_errors() == errors  # not an update of the case entity: nothing to refuse
    row = field.collect.get(
        f"{field.collect.base}/forms/{r['form_id']}/attachments/cases.csv"
    ).get_data(as_text=True)
    assert copy not in row and "2027-01-12" in row
    assert _integrity(field.collect, [kept, copy]) == {kept: "false", copy: "true"}
