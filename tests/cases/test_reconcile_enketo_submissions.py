"""Web-form (Enketo) submissions to an encrypted project, posted as the browser sends them
through enketo-express, then reconciled with ``kintsugi reconcile --once`` or decrypted with
``kintsugi decrypt``."""

from __future__ import annotations

import base64
import uuid

from cryptography.hazmat.primitives.serialization import load_der_public_key
from sqlalchemy import select

from server.models import Project, Submission
from server.models_cases import Assessment
from tests.cases.fieldwork import instance_xml, ratings_for
from tests.server.collect import openrosa_message
from tests.sync_protocol.producers import encrypt_like_enketo, enketo_multipart

NOTE = "Amélie a peur de rentrer — ሰላም 😀"


def _enketo_record(field, db_session, case_code: str, *, legacy: bool, media=()):
    """(instanceID, manifest, files) of an intake filled in Enketo with a non-ASCII note."""
    r = field.report
    instance_id, xml = instance_xml(
        r, case_code=case_code, point="intake", date="2026-03-01", ratings=ratings_for(r, "2"),
        entity_id=str(uuid.uuid4()), notes={r["domains"][0]["id"]: NOTE},
    )  # fmt: skip
    # Enketo's record XML is a serialised DOM string: no XML declaration
    text = xml.decode("utf-8")
    if text.startswith("<?xml"):
        text = text[text.index("?>") + 2 :]
    key_b64 = db_session.get(Project, field.project_id).active_key.public_key_b64
    manifest, files = encrypt_like_enketo(
        text, load_der_public_key(base64.b64decode(key_b64)), form_id=r["form_id"],
        version=r["version"], instance_id=instance_id, media=media, legacy_md5=legacy,
    )  # fmt: skip
    return instance_id, manifest, files


def _post(field, manifest, files):
    body, ctype = enketo_multipart(manifest, files)
    resp = field.collect.post_raw(body, ctype)
    assert resp.status_code == 201, openrosa_message(resp)
    return resp


def _sub(db_session, instance_id) -> Submission:
    db_session.expire_all()
    return db_session.scalar(select(Submission).where(Submission.instance_id == instance_id))


def test_reconcile__enketo_before_aug_2025_unicode_note__reconciled_not_quarantined(
    field, reconcile, db_session
):
    """Should reconcile an intake Enketo encrypted before its August 2025 fix (MD5s over the
    JavaScript string), instead of quarantining it as 'signature invalid'."""
    instance_id, manifest, files = _enketo_record(field, db_session, "KE-0700", legacy=True)
    _post(field, manifest, files)
    output = reconcile()
    sub = _sub(db_session, instance_id)
    assert sub.status != "quarantined", sub.quarantine_reason
    assert "quarantined" not in output or "0 quarantined" in output
    assert db_session.scalar(select(Assessment).where(Assessment.case_code == "KE-0700"))


def test_reconcile__enketo_batches_with_media__reconciled(field, reconcile, db_session):
    """Should put together a large Enketo record sent as two POSTs that each repeat the
    manifest (no *isIncomplete*), with a user-named file, and reconcile it."""
    scan = b"%PDF-1.4 fictional scan " * 500
    instance_id, manifest, files = _enketo_record(
        field, db_session, "KE-0701", legacy=False, media=[("Rapport médical-12_30_05.pdf", scan)]
    )
    media_name = "Rapport médical-12_30_05.pdf.enc"
    _post(field, manifest, {media_name: files[media_name]})
    assert _sub(db_session, instance_id).complete is False
    _post(field, manifest, {"submission.xml.enc": files["submission.xml.enc"]})
    assert _sub(db_session, instance_id).complete is True
    reconcile()
    sub = _sub(db_session, instance_id)
    assert sub.status != "quarantined", sub.quarantine_reason
    assert db_session.scalar(select(Assessment).where(Assessment.case_code == "KE-0701"))


def test_decrypt_cli__enketo_before_aug_2025__valid_and_written(field, db_session, tmp_path):
    """Should decrypt a pre-fix Enketo submission directory with ``kintsugi decrypt`` (the
    Briefcase-like path, which streams files) and call its signature valid."""
    from click.testing import CliRunner

    from server.cli import main
    from server.models import ProjectKey

    instance_id, manifest, files = _enketo_record(field, db_session, "KE-0702", legacy=True)
    src = tmp_path / "in" / "enketo-1"
    src.mkdir(parents=True)
    (src / "submission.xml").write_bytes(manifest)
    for name, data in files.items():
        (src / name).write_bytes(data)
    key = tmp_path / "key.pem"
    key.write_bytes(db_session.scalars(select(ProjectKey)).one().encrypted_private_pem)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main, ["decrypt", str(src), "--key", str(key), "--passphrase-file",
               str(field.passphrase_file), "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    written = (out / instance_id.removeprefix("uuid:") / "submission.xml").read_text("utf-8")
    assert NOTE in written


def test_enketo__csrf_form_field__not_flagged_as_extra_files(field, db_session):
    """Should not flag an Enketo upload as 'carried extra files' for the CSRF token Enketo adds
    as a plain form field; a stray file part still is flagged."""
    instance_id, manifest, files = _enketo_record(field, db_session, "KE-0703", legacy=False)
    _post(field, manifest, files)  # the browser body carries a __csrf text field
    assert _sub(db_session, instance_id).flags == []
    other_id, manifest, files = _enketo_record(field, db_session, "KE-0704", legacy=False)
    _post(field, manifest, {**files, "leftover.jpg": b"\xff\xd8 plaintext"})
    assert _sub(db_session, other_id).flags == ["discarded_unexpected_parts"]


def test_enketo__user_file_name_with_double_dot__accepted_and_reconciled(
    field, reconcile, db_session
):
    """Should take a file the user picked in the browser whose name holds '..' but no path
    (Enketo keeps the picked name and adds '-HH_MM_SS'), instead of refusing the upload."""
    instance_id, manifest, files = _enketo_record(
        field, db_session, "KE-0705", legacy=False,
        media=[("Certificat v1..2-09_15_00.pdf", b"%PDF fictional certificate")],
    )  # fmt: skip
    _post(field, manifest, files)
    reconcile()
    sub = _sub(db_session, instance_id)
    assert sub.status != "quarantined", sub.quarantine_reason
    assert "Certificat v1..2-09_15_00.pdf.enc" in {a.name for a in sub.attachments}
