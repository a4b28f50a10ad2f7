"""Publishing what ``kintsugi compile`` wrote, as the README's pipeline says: compile, then publish.

``kintsugi compile --out build/`` writes ``<form_id>.xml`` and, beside it, the
``<form_id>.report.json`` the server scores with (domains, scoring, the ``cases`` columns).
``kintsugi forms publish --project ID build/<form_id>.xml`` (and the API's XForm upload) must
publish the form with that report; without it the server stores submissions but never scores
them into cases, and the ``cases`` list on phones has no columns.
"""

from __future__ import annotations

import csv
import io
import json

from sqlalchemy import func, select

from server.models import FormVersion, ProjectKey
from server.models_cases import Assessment
from tests.admin.conftest import HTTPS, PASSWORD, basic
from tests.cases.fieldwork import instance_xml, ratings_for
from tests.server.collect import CollectActions

CONTEXT = "kenya-police-abuse"


def _ok(result):
    assert result.exit_code == 0, result.output
    return result.output


def _compile(runner, out_dir, *extra: str):
    _ok(runner.invoke("compile", "--context", CONTEXT, "--out", str(out_dir), *extra))
    (xml,) = out_dir.glob("*.xml")
    return xml, json.loads(xml.with_suffix(".report.json").read_text())


def test_forms_publish__compiled_file__report_beside_it__submissions_become_cases(
    runner, client, db_session, tmp_path
):
    """Should publish build/<form_id>.xml with its report: list columns served, intake scored."""
    xml_path, report = _compile(runner, tmp_path / "build")
    pid = _ok(runner.invoke("projects", "create", "Mombasa aftercare")).strip()

    _ok(runner.invoke("forms", "publish", "--project", pid, str(xml_path)))

    url = _ok(runner.invoke("app-users", "create", "--project", pid, "Tablet 1")).strip()
    collect = CollectActions(client, url.removeprefix("http://localhost"))
    resp = collect.get(f"{collect.base}/forms/{report['form_id']}/attachments/cases.csv")
    header = next(csv.reader(io.StringIO(resp.get_data(as_text=True))))
    assert header == ["name", "label", "__version", *report["entity_list"]["properties"]]
    _iid, xml = instance_xml(
        report, case_code="MB-0001", point="intake", date="2026-10-01",
        ratings=ratings_for(report, "3"), entity_id="7a1c3b7e-0000-4000-8000-000000000001",
    )  # fmt: skip
    assert collect.submit(xml).status_code == 201
    out = _ok(runner.invoke("reconcile", "--project", pid, "--once"))
    assert "processed 1: 1 assessments" in out
    db_session.expire_all()
    assert db_session.scalar(select(func.count()).select_from(Assessment)) == 1


def test_forms_publish__report_of_another_form__refused_naming_both(runner, tmp_path):
    """Should refuse a --report compiled for another form, and publish nothing."""
    xml_path, _report = _compile(runner, tmp_path / "build")
    other = tmp_path / "other"
    _ok(runner.invoke("compile", "--context", "guatemala-vawc", "--out", str(other)))
    (other_report,) = other.glob("*.report.json")
    pid = _ok(runner.invoke("projects", "create", "P")).strip()

    result = runner.invoke(
        "forms", "publish", "--project", pid, str(xml_path), "--report", str(other_report)
    )

    assert result.exit_code == 1
    assert "aso_gt_vawc" in result.output and "aso_ke_pap" in result.output
    assert _ok(runner.invoke("forms", "list", "--project", pid)).strip() == ""


def test_forms_publish__compiled_file_without_report__warns_it_will_not_be_scored(runner, tmp_path):
    """Should say that without its report the form's submissions will not become cases."""
    xml_path, _report = _compile(runner, tmp_path / "build")
    xml_path.with_suffix(".report.json").unlink()
    pid = _ok(runner.invoke("projects", "create", "P")).strip()

    out = _ok(runner.invoke("forms", "publish", "--project", pid, str(xml_path)))

    assert "report" in out and "not be scored" in out


def test_forms_publish__compiled_for_another_key__says_which_keys_and_what_to_do(
    runner, db_session, tmp_path
):
    """Should name the form's and the project's key fingerprints and the command that works."""
    secret = tmp_path / "pass"
    secret.write_text("a long fictional passphrase\n")
    _ok(runner.invoke("keys", "generate", "--out", str(tmp_path / "k"), "--passphrase-file", str(secret)))  # fmt: skip
    xml_path, _report = _compile(
        runner, tmp_path / "build", "--public-key", str(tmp_path / "k" / "public.pem")
    )
    pid = _ok(runner.invoke("projects", "create", "S", "--passphrase-file", str(secret))).strip()

    result = runner.invoke("forms", "publish", "--project", pid, str(xml_path))

    assert result.exit_code == 1
    project_fp = db_session.scalars(select(ProjectKey.fingerprint)).one()
    assert project_fp in result.output
    assert f"kintsugi forms publish --project {pid} --context {CONTEXT}" in result.output


def test_api_publish__xform_with_report_part__stored_with_its_report(
    app, runner, client, db_session, tmp_path
):
    """Should accept the compiler's report as a 'report' part next to the 'xform' upload."""
    from server.services.users import create_web_user

    xml_path, report = _compile(runner, tmp_path / "build")
    pid = _ok(runner.invoke("projects", "create", "P")).strip()
    with app.extensions["kintsugi.db"].sessionmaker() as s:
        create_web_user(s, "lead", PASSWORD, role="admin", realm=app.config["DIGEST_REALM"],
                        method=app.config["PASSWORD_HASH_METHOD"])  # fmt: skip
        s.commit()

    resp = client.post(
        f"/api/v1/projects/{pid}/forms",
        base_url=HTTPS,
        headers=basic("lead"),
        data={
            "xform": (io.BytesIO(xml_path.read_bytes()), xml_path.name),
            "report": (io.BytesIO(xml_path.with_suffix(".report.json").read_bytes()), "r.json"),
        },
    )

    assert resp.status_code == 201, resp.get_json()
    stored = db_session.scalars(select(FormVersion.report)).one()
    assert stored is not None and stored["entity_list"] == report["entity_list"]
