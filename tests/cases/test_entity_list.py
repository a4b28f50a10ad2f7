"""The ``cases`` entity list as Collect downloads it after reconciliation (OpenRosa §4, §11)."""

from __future__ import annotations

import csv
import io

from tests.cases.fieldwork import expected_scores, ratings_for

OPEN_CASE = "3a9d1c7e-5b2f-4e8a-9c1d-7f6e5d4c3b2a"
CLOSED_CASE = "9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b"


def _cases_csv(field) -> tuple[list[dict[str, str]], str]:
    resp = field.collect.get(
        f"{field.collect.base}/forms/{field.report['form_id']}/attachments/cases.csv"
    )
    assert resp.status_code == 200, resp.data
    assert resp.headers["Content-Type"].startswith("text/csv")
    assert resp.headers["Content-Disposition"] == "attachment; filename*=UTF-8''cases.csv"
    return list(csv.DictReader(io.StringIO(resp.get_data(as_text=True)))), resp.headers["ETag"]


def test_cases_csv__reconciled_and_closed_cases__open_listed_closed_removed(field, runner):
    """Should list open cases with their latest state and drop closed ones (integrity: deleted)."""
    r = field.report
    first, latest = ratings_for(r, "2"), ratings_for(r, "3")
    field.send(case_code="KE-0501", point="intake", date="2026-03-01", ratings=first,
               entity_id=OPEN_CASE)  # fmt: skip
    field.send(case_code="KE-0501", point="six_month", date="2026-09-01", ratings=latest,
               entity_id=OPEN_CASE)  # fmt: skip
    field.send(case_code="KE-0502", point="intake", date="2026-03-02", ratings=first,
               entity_id=CLOSED_CASE)  # fmt: skip
    _before, empty_etag = _cases_csv(field)
    args = ["--project", str(field.project_id), "--passphrase-file", str(field.passphrase_file)]
    assert runner.invoke("reconcile", *args, "--once").exit_code == 0
    rows, etag = _cases_csv(field)
    assert etag != empty_etag  # the list changed, so must its hash
    assert {row["name"] for row in rows} == {OPEN_CASE, CLOSED_CASE}

    field.send(case_code="KE-0502", point="closure", date="2027-03-02", ratings=latest,
               entity_id=CLOSED_CASE)  # fmt: skip
    assert runner.invoke("reconcile", *args, "--once").exit_code == 0
    rows, after_close = _cases_csv(field)
    assert after_close != etag
    assert [row["name"] for row in rows] == [OPEN_CASE]
    row = rows[0]
    assert row["label"] == "KE-0501" and int(row["__version"]) >= 2
    assert row["case_code"] == "KE-0501"
    assert row["last_assessment_date"] == "2026-09-01"
    assert row["last_collection_point"] == "six_month"
    for domain, score in expected_scores(r, latest).items():
        assert float(row[f"score_{domain}"]) == score

    resp = field.collect.get(
        f"{field.collect.base}/datasets/cases/integrity?id={OPEN_CASE},{CLOSED_CASE}"
    )
    body = resp.get_data(as_text=True)
    assert resp.status_code == 200
    assert f'<entity id="{CLOSED_CASE}"><deleted>true</deleted>' in body
    assert f'<entity id="{OPEN_CASE}"><deleted>false</deleted>' in body

    # re-running reconciliation changes nothing the devices see
    assert runner.invoke("reconcile", *args, "--once").exit_code == 0
    assert _cases_csv(field)[1] == after_close


def _manifest_hash(field) -> str:
    """The ``cases.csv`` hash in the form's manifest, as Collect reads it (§4.1)."""
    from defusedxml import ElementTree

    resp = field.collect.get(f"{field.collect.base}/forms/{field.report['form_id']}/manifest")
    assert resp.status_code == 200, resp.data
    ns = "{http://openrosa.org/xforms/xformsManifest}"
    (media,) = [m for m in ElementTree.fromstring(resp.data) if m.get("type") == "entityList"]
    assert media.findtext(f"{ns}filename") == "cases.csv"
    return media.findtext(f"{ns}hash")


def _served_state(field) -> tuple[str, list[dict[str, str]]]:
    """(manifest hash, CSV rows); the CSV download's ETag is always that hash."""
    digest = _manifest_hash(field)
    rows, etag = _cases_csv(field)
    assert digest.startswith("md5:") and etag == f'"{digest[4:]}"'
    return digest, rows


def test_manifest_hash__every_change_to_the_list__moves_no_op_does_not(
    app, field, runner, db_session
):
    """Should change the list's manifest hash when a case is added, updated, closed, reopened
    or the columns change, and keep it over a reconciliation that changes nothing."""
    from sqlalchemy import select

    from server.models import FormVersion, Project
    from tests.server.conftest import publish
    from tests.server.forms import xform

    r = field.report
    args = ["--project", str(field.project_id), "--passphrase-file", str(field.passphrase_file)]

    def reconcile() -> None:
        result = runner.invoke("reconcile", *args, "--once")
        assert result.exit_code == 0, result.output

    seen: list[str] = []

    def changed() -> list[dict[str, str]]:
        digest, rows = _served_state(field)
        assert digest not in seen, "the list changed but its hash did not move"
        seen.append(digest)
        return rows

    assert changed() == []
    # added
    field.send(case_code="KE-0601", point="intake", date="2026-03-01",
               ratings=ratings_for(r, "2"), entity_id=OPEN_CASE)  # fmt: skip
    reconcile()
    assert [(row["name"], row["__version"]) for row in changed()] == [(OPEN_CASE, "1")]
    # a no-op run: same hash, same bytes
    reconcile()
    assert _served_state(field)[0] == seen[-1]
    # updated: a new version
    field.send(case_code="KE-0601", point="six_month", date="2026-09-01",
               ratings=ratings_for(r, "3"), entity_id=OPEN_CASE)  # fmt: skip
    reconcile()
    (row,) = changed()
    assert row["__version"] == "2" and row["last_collection_point"] == "six_month"
    # closed: the case leaves the list
    closure_id, _m, _f = field.send(case_code="KE-0601", point="closure", date="2027-03-01",
                                    ratings=ratings_for(r, "4"), entity_id=OPEN_CASE, base_version=2)  # fmt: skip
    reconcile()
    assert changed() == []
    reconcile()
    assert _served_state(field)[0] == seen[-1]
    # reopened: the closure is edited into an annual follow-up, and the case comes back
    field.send(case_code="KE-0601", point="annual", date="2027-03-01", ratings=ratings_for(r, "4"),
               entity_id=OPEN_CASE, deprecated_id=closure_id, base_version=2)  # fmt: skip
    reconcile()
    (row,) = changed()
    assert row["name"] == OPEN_CASE and row["last_collection_point"] == "annual"
    reconcile()
    assert _served_state(field)[0] == seen[-1]
    # the columns change: another form of the project declares one more property for the
    # list; it is added at the end, and no column goes (a property never leaves a list)
    version = db_session.scalars(select(FormVersion)).one()
    report = {**version.report, "entity_list": {**version.report["entity_list"]}}
    report["entity_list"]["properties"] = ["office", "referral_status"]
    columns = list(row)
    key = db_session.get(Project, field.project_id).active_key.public_key_b64
    referral = xform("referral", entity_list="cases", public_key=key)
    publish(app, field.project_id, referral, report=report)
    (row,) = changed()
    assert list(row) == [*columns, "referral_status"] and row["referral_status"] == ""


def test_state_hash__version_moves_without_updated_at__still_changes(field, runner, db_session):
    """Should not rely on ``updated_at`` alone: a worker whose clock (or batch start) is behind
    the newest row still moves the hash through the versions and the live set."""
    import datetime as dt

    from sqlalchemy import select, update

    from server.models import Entity, Project
    from server.services.entities import entity_list_state_hash

    r = field.report
    for code, ent in (("KE-0701", OPEN_CASE), ("KE-0702", CLOSED_CASE)):
        field.send(case_code=code, point="intake", date="2026-03-01",
                   ratings=ratings_for(r, "2"), entity_id=ent)  # fmt: skip
    args = ["--project", str(field.project_id), "--passphrase-file", str(field.passphrase_file)]
    assert runner.invoke("reconcile", *args, "--once").exit_code == 0
    project = db_session.get(Project, field.project_id)
    old = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    db_session.execute(update(Entity).values(updated_at=old))
    seen = {entity_list_state_hash(db_session, project, "cases")}

    def moved() -> None:
        digest = entity_list_state_hash(db_session, project, "cases")
        assert digest not in seen
        seen.add(digest)

    first = db_session.scalar(select(Entity).where(Entity.uuid == OPEN_CASE))
    first.version, first.properties = first.version + 1, {**first.properties, "office": "x"}
    db_session.flush()
    moved()
    second = db_session.scalar(select(Entity).where(Entity.uuid == CLOSED_CASE))
    second.deleted_at = old
    db_session.flush()
    moved()
    # one closed and the other reopened in the same run: the reopen makes a version
    second.deleted_at, second.version = None, second.version + 1
    first.deleted_at = old
    db_session.flush()
    moved()
    db_session.rollback()
