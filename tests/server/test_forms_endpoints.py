"""Form list, form download, manifest, media, entity lists and integrity as Collect reads them."""

from __future__ import annotations

import csv
import hashlib
import io
import uuid

from defusedxml import ElementTree
from sqlalchemy import select

from server.db import utcnow
from server.models import Entity, Form
from tests.server.conftest import publish
from tests.server.forms import xform

NS_LIST = "{http://openrosa.org/xforms/xformsList}"
NS_MAN = "{http://openrosa.org/xforms/xformsManifest}"


def _assert_openrosa_xml(resp):
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "text/xml; charset=utf-8"
    assert resp.headers["X-OpenRosa-Version"] == "1.0"
    assert "Last-Modified" not in resp.headers
    assert "max-age" not in resp.headers.get("Cache-Control", "")


def _entries(resp):
    root = ElementTree.fromstring(resp.data)
    assert root.tag == f"{NS_LIST}xforms"
    return [{c.tag.replace(NS_LIST, ""): (c.text or "") for c in x} for x in root]


def test_form_list__hash_is_md5_of_downloaded_bytes(app, field):
    """Should list each open form with the md5 of exactly the bytes served at downloadUrl."""
    publish(app, field.project_id, xform())
    resp = field.collect.form_list()
    _assert_openrosa_xml(resp)
    [entry] = _entries(resp)
    assert entry["formID"] == "household" and entry["name"] == "Household visit"
    assert entry["version"] == "1"
    assert entry["downloadUrl"].startswith(f"http://localhost{field.base}/forms/household.xml")
    assert "manifestUrl" not in entry  # no attachments
    body = field.collect.get(entry["downloadUrl"])
    assert body.status_code == 200
    assert entry["hash"] == "md5:" + hashlib.md5(body.data, usedforsecurity=False).hexdigest()


def test_form_list__new_version__listed_and_old_still_downloadable(app, field):
    """Should list the newest version and keep every published version downloadable by hash."""
    publish(app, field.project_id, xform(version="1"))
    [old] = _entries(field.collect.form_list())
    publish(app, field.project_id, xform(version="2"))
    [new] = _entries(field.collect.form_list())
    assert new["version"] == "2" and new["hash"] != old["hash"]
    old_bytes = field.collect.get(old["downloadUrl"]).data
    assert b'version="1"' in old_bytes


def test_form_list__closed_and_closing_forms__hidden(app, field, db_session):
    """Should hide forms that are not open (Central behaviour)."""
    publish(app, field.project_id, xform("a"))
    publish(app, field.project_id, xform("b"))
    publish(app, field.project_id, xform("c"))
    for form in db_session.scalars(select(Form)):
        form.state = {"a": "open", "b": "closing", "c": "closed"}[form.xml_form_id]
    db_session.commit()
    assert [e["formID"] for e in _entries(field.collect.form_list())] == ["a"]


def test_form_list__app_user_form_scope__filters(app, client, field):
    """Should show a scoped app user only its forms."""
    from server.models import Project
    from server.services.users import create_app_user

    publish(app, field.project_id, xform("a"))
    publish(app, field.project_id, xform("b"))
    with app.extensions["kintsugi.db"].sessionmaker() as s:
        _, token = create_app_user(s, s.get(Project, field.project_id), "scoped", forms=["b"])
        s.commit()
    resp = client.get(f"/v1/key/{token}/projects/{field.project_id}/formList")
    assert [e["formID"] for e in _entries(resp)] == ["b"]


def test_form_list__formid_filter_and_unknown_params__tolerated(app, field):
    """Should honour formID and ignore verbose/listAllVersions/deviceID."""
    publish(app, field.project_id, xform("a"))
    publish(app, field.project_id, xform("b"))
    resp = field.collect.get(f"{field.base}/formList?formID=b&verbose=true&listAllVersions=true")
    assert [e["formID"] for e in _entries(resp)] == ["b"]


def _manifest(field, entry):
    resp = field.collect.get(entry["manifestUrl"])
    _assert_openrosa_xml(resp)
    root = ElementTree.fromstring(resp.data)
    assert root.tag == f"{NS_MAN}manifest"
    return [(m.get("type"), {c.tag.replace(NS_MAN, ""): c.text for c in m}) for m in root]


def test_manifest__media_file__true_md5_and_download(app, field):
    """Should list media with the md5 of the bytes served."""
    logo = b"\x89PNG fictional logo"
    publish(app, field.project_id, xform(media=("logo.png",)), attachments={"logo.png": logo})
    [entry] = _entries(field.collect.form_list())
    [(kind, media)] = _manifest(field, entry)
    assert kind is None and media["filename"] == "logo.png"
    assert media["hash"] == "md5:" + hashlib.md5(logo, usedforsecurity=False).hexdigest()
    assert field.collect.get(media["downloadUrl"]).data == logo


def test_entity_list__manifest_csv_integrity(app, field, db_session):
    """Should serve cases.csv as an entity list whose hash changes with the list."""
    publish(
        app,
        field.project_id,
        xform("followup", entity_list="cases"),
        report={"entity_list": {"dataset": "cases", "properties": ["district", "age"]}},
    )
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    db_session.add_all(
        [
            Entity(
                project_id=field.project_id,
                dataset="cases",
                uuid=a,
                label="Case A",
                version=1,
                properties={"district": "North", "age": 31},
            ),
            Entity(
                project_id=field.project_id,
                dataset="cases",
                uuid=b,
                label="Case B",
                version=2,
                properties={"district": "South, East"},
            ),
        ]
    )
    db_session.commit()
    [entry] = _entries(field.collect.form_list())
    [(kind, media)] = _manifest(field, entry)
    assert kind == "entityList" and media["filename"] == "cases.csv"
    assert media["integrityUrl"].endswith("/datasets/cases/integrity")
    resp = field.collect.get(media["downloadUrl"])
    assert resp.status_code == 200
    rows = list(csv.reader(io.StringIO(resp.data.decode())))
    assert rows == [
        ["name", "label", "__version", "district", "age"],
        [a, "Case A", "1", "North", "31"],
        [b, "Case B", "2", "South, East", ""],
    ]
    # A change to the list changes the manifest hash (Collect then downloads it again).
    ent = db_session.scalar(select(Entity).where(Entity.uuid == b))
    ent.deleted_at = utcnow()
    db_session.commit()
    [(_, media2)] = _manifest(field, entry)
    assert media2["hash"] != media["hash"]
    # integrity: ids arrive comma-separated, the comma percent-encoded
    resp = field.collect.get(f"{media['integrityUrl']}?id={a}%2C{b}%2Cunknown")
    _assert_openrosa_xml(resp)
    root = ElementTree.fromstring(resp.data)
    states = {e.get("id"): e.find("deleted").text for e in root.find("entities")}
    assert states == {a: "false", b: "true"}


def test_form_download__unknown_form__404_message(field):
    """Should answer 404 with an OpenRosaResponse."""
    resp = field.collect.get(f"{field.base}/forms/nothing.xml")
    assert resp.status_code == 404
    assert b"<message" in resp.data
