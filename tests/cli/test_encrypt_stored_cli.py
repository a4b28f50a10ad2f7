# ruff: noqa: F811 (the shared fixtures are imported from tests/cases/conftest)
"""``kintsugi submissions encrypt-stored`` as an admin types it.

A server from before encryption on arrival stored plaintext sent to an encrypted form as it
came: notes and media at rest in the clear, reconciled like any plaintext submission. The
command encrypts such submissions to their form version's key as Collect would have; they
then read exactly as an encrypted submission in the same state would.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select

from server.blobs import make_blob_store, read_all
from server.models import AuditLog, Blob, FormVersion, Submission
from server.models_cases import Assessment
from server.services import custody, submissions
from sync_protocol.crypto import SignatureStatus, decrypt_submission
from sync_protocol.envelope import EncryptedEnvelope, parse_submission
from tests.cases.conftest import PASSPHRASE, admin_api, field, reconcile  # noqa: F401
from tests.cases.fieldwork import instance_xml, ratings_for

NOTE = "fictional note sent in the clear"
# files the instance names (as a form with an audit log and a photo question would)
FILES = {
    "audit.csv": b"event,node,start\nform start,,1736935200123\nfictional audit row\n",
    "p.jpg": b"\xff\xd8\xff\xe0 fictional photo bytes sent in the clear \xff\xd9",
}


@pytest.fixture(params=["default blobs", "blob files"])
def app(request, make_app, backend):
    """The app, and on PostgreSQL also with its blobs in files (their deletion waits for the
    commit, unlike rows of the blobs table); SQLite's blobs are files already."""
    if request.param == "default blobs":
        return make_app()
    assert backend == "postgres"  # SQLite's blobs are files already (not collected there)
    return make_app(BLOB_BACKEND="local")


@pytest.fixture
def runner(runner, app):
    """The CLI with the app's blob backend."""
    runner.env = {**runner.env, "KINTSUGI_BLOB_BACKEND": app.config["BLOB_BACKEND"]}
    return runner


def _assessment_xml(field, code: str) -> tuple[str, bytes]:
    r = field.report
    iid, xml = instance_xml(r, case_code=code, point="intake", date="2026-01-10",
                            entity_id=str(uuid.uuid4()), ratings=ratings_for(r, "2"),
                            notes={"SAF": NOTE})  # fmt: skip
    meta_end = xml.index(b"</instanceID>") + len(b"</instanceID>")
    xml = xml[:meta_end] + b"<audit>audit.csv</audit><photo>p.jpg</photo>" + xml[meta_end:]
    return iid, xml


def _send_as_before_encryption_on_arrival(
    field, xml: bytes, files: dict[str, bytes], *, incomplete: bool = False
) -> None:
    """POST plaintext to the encrypted form the way the server stored it before it encrypted
    such uploads on arrival (as sent, flagged plaintext_for_encrypted_form): this reproduces
    a database written before that change. That server kept no plaintext to encrypt; with no
    ``Plaintext`` for the upload, ingest (prepare, the one-statement insert, the merge) takes
    exactly the path it took then."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(submissions, "Plaintext", lambda *args, **kwargs: None)
        resp = field.collect.submit(xml, files, incomplete=incomplete)
    assert resp.status_code == 201, resp.data


def _stored(app, db_session, iid: str) -> tuple[Submission, bytes, dict[str, bytes]]:
    db_session.expire_all()
    sub = db_session.scalar(select(Submission).where(Submission.instance_id == iid))
    store = make_blob_store(app.config, db_session)
    files = {a.name: read_all(store, a.blob_key) for a in sub.attachments if a.present}
    return sub, read_all(store, sub.xml_blob_key), files


def _old_state(app, db_session, iid: str, xml: bytes, files: dict[str, bytes]) -> list[str]:
    """Check the submission is stored as the old server stored it; its blob keys."""
    sub, stored_xml, stored = _stored(app, db_session, iid)
    assert not sub.encrypted and sub.flags == ["plaintext_for_encrypted_form"]
    assert stored_xml == xml and stored == files  # notes and media at rest in the clear
    return [sub.xml_blob_key, *(a.blob_key for a in sub.attachments)]


def _all_blobs(app, db_session) -> dict[str, bytes]:
    """Every blob in the store, whoever refers to it (files, or rows of the blobs table)."""
    if app.config["BLOB_BACKEND"] == "postgres":
        return {k: bytes(d) for k, d in db_session.execute(select(Blob.key, Blob.data))}
    root = Path(app.config["DATA_DIR"])
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _encrypt_stored(runner, field, *extra: str, exit_code: int = 0) -> str:
    result = runner.invoke("submissions", "encrypt-stored", "--project", str(field.project_id),
                           *extra)  # fmt: skip
    assert result.exit_code == exit_code, result.output
    return result.output


def _audit(db_session) -> list[AuditLog]:
    db_session.expire_all()
    return db_session.scalars(
        select(AuditLog).where(AuditLog.action == "submission.encrypt_stored")
    ).all()


def _decrypt_stored(app, db_session, field, iid: str):
    """Decrypt what is stored with the project key (unlocked in this process)."""
    sub, stored_xml, files = _stored(app, db_session, iid)
    envelope = parse_submission(stored_xml)
    assert isinstance(envelope, EncryptedEnvelope) and envelope.instance_id == iid
    fingerprint = db_session.get(FormVersion, sub.form_version_id).key_fingerprint
    return decrypt_submission(envelope, custody.get_private_key(field.project_id, fingerprint),
                              files)  # fmt: skip


def test_encrypt_stored__reconciled__keeps_its_assessment_notes_still_decrypt_on_demand(
    app, field, runner, reconcile, admin_api, db_session
):
    """Should encrypt a reconciled plaintext submission whole to its form's key: it keeps its
    assessment and becomes decrypted (as an encrypted reconciled one is), what is stored
    decrypts with a valid signature to exactly the bytes sent, no plaintext blob remains,
    its notes still decrypt on demand, Collect's resend is still the same submission, and
    the change is audited without any answer."""
    iid, xml = _assessment_xml(field, "KE-0801")
    _send_as_before_encryption_on_arrival(field, xml, FILES)
    plaintext_keys = _old_state(app, db_session, iid, xml, FILES)
    reconcile()
    sub, _, _ = _stored(app, db_session, iid)
    assert sub.status == "reconciled"
    [assessment] = db_session.scalars(select(Assessment)).all()
    before = (assessment.id, assessment.submission_id, assessment.case_id, assessment.state)

    out = _encrypt_stored(runner, field)
    pid = field.project_id
    assert out.strip() == f"project {pid}: 1 encrypted (1 reconciled: keep their assessments)"

    sub, stored_xml, files = _stored(app, db_session, iid)
    assert sub.encrypted and sub.complete and sub.status == "decrypted"
    assert set(sub.flags) == {"plaintext_for_encrypted_form", "encrypted_on_arrival"}
    assert sub.xml_sha256 == hashlib.sha256(xml).hexdigest()  # of what was sent
    assert sub.xml_size == len(stored_xml) and sub.instance_name is None
    assert sorted(files) == ["audit.csv.enc", "p.jpg.enc", "submission.xml.enc"]
    db_session.expire_all()
    [again] = db_session.scalars(select(Assessment)).all()
    assert (again.id, again.submission_id, again.case_id, again.state) == before

    store = make_blob_store(app.config, db_session)
    assert not any(store.exists(k) for k in plaintext_keys)
    for key, data in _all_blobs(app, db_session).items():  # form files and ciphertext only
        assert xml not in data and NOTE.encode() not in data, key
        assert all(m not in data for m in FILES.values()), key

    assert admin_api("POST", "/key/unlock", json={"passphrase": PASSPHRASE}).status_code == 200
    decrypted = _decrypt_stored(app, db_session, field, iid)
    assert decrypted.signature is SignatureStatus.VALID
    assert decrypted.xml == xml and decrypted.media == FILES
    resp = admin_api("POST", f"/assessments/{again.id}/notes")
    assert resp.status_code == 200, resp.data
    assert resp.get_json()["notes"] == {"SAF note": NOTE}

    blobs = _all_blobs(app, db_session)
    assert field.collect.submit(xml, FILES).status_code == 201  # Collect resends: a duplicate
    assert _stored(app, db_session, iid) == (sub, stored_xml, files)
    assert _all_blobs(app, db_session) == blobs
    assert db_session.scalar(select(func.count(Submission.id))) == 1

    [entry] = _audit(db_session)
    assert (entry.actor, entry.target) == ("cli", f"submission:{sub.id}")
    assert entry.details == {"status": "decrypted", "files": 2}
    assert NOTE not in out and NOTE not in json.dumps(entry.details)


def test_encrypt_stored__not_reconciled__waits_for_the_key_then_reconciles(
    app, field, runner, reconcile, admin_api, db_session
):
    """Should make a plaintext submission the worker has not reached yet wait for the key
    like any encrypted one; the worker then decrypts it (valid signature), it joins its case
    and is queued for an admin to follow up with the device."""
    iid, xml = _assessment_xml(field, "KE-0802")
    _send_as_before_encryption_on_arrival(field, xml, FILES)
    plaintext_keys = _old_state(app, db_session, iid, xml, FILES)

    out = _encrypt_stored(runner, field)
    assert out.strip() == (
        f"project {field.project_id}: 1 encrypted "
        "(1 not reconciled yet: wait for the key (kintsugi reconcile))"
    )
    sub, _, _ = _stored(app, db_session, iid)
    assert sub.encrypted and sub.status == "pending_decryption"
    assert "encrypted_on_arrival" in sub.flags
    store = make_blob_store(app.config, db_session)
    assert not any(store.exists(k) for k in plaintext_keys)
    assert [e.details["status"] for e in _audit(db_session)] == ["pending_decryption"]

    assert "processed 1: 1 assessments, 0 quarantined" in reconcile()
    sub, _, _ = _stored(app, db_session, iid)
    assert sub.status == "decrypted"  # decrypted with a valid signature, else quarantined
    [assessment] = db_session.scalars(select(Assessment)).all()
    assert assessment.submission_id == sub.id and assessment.case_code == "KE-0802"
    [item] = admin_api("GET", "/review-queues").get_json()["plaintext_for_encrypted_form"]
    assert iid in item["summary"]
    assert admin_api("POST", "/key/unlock", json={"passphrase": PASSPHRASE}).status_code == 200
    resp = admin_api("POST", f"/assessments/{assessment.id}/notes")
    assert resp.get_json()["notes"] == {"SAF note": NOTE}


def test_encrypt_stored__dry_run_then_run_then_again__counts_changes_nothing_then_no_op(
    app, field, runner, reconcile, db_session
):
    """Should, with --dry-run, count what it would encrypt (an incomplete upload apart) and
    change nothing; the run then encrypts exactly those, and a second run finds nothing."""
    first, xml1 = _assessment_xml(field, "KE-0803")
    _send_as_before_encryption_on_arrival(field, xml1, FILES)
    reconcile()
    second, xml2 = _assessment_xml(field, "KE-0804")
    _send_as_before_encryption_on_arrival(field, xml2, FILES)
    third, xml3 = _assessment_xml(field, "KE-0805")  # split; its last part never arrived
    _send_as_before_encryption_on_arrival(field, xml3, {"audit.csv": FILES["audit.csv"]},
                                          incomplete=True)  # fmt: skip
    field.send(case_code="KE-0806", point="intake", date="2026-01-12",
               entity_id=str(uuid.uuid4()), ratings=ratings_for(field.report, "3"))  # fmt: skip

    def snapshot():
        db_session.expire_all()
        rows = db_session.scalars(select(Submission).order_by(Submission.id)).all()
        return (
            [(s.instance_id, s.status, s.encrypted, s.complete, s.xml_blob_key, s.flags,
              sorted((a.name, a.blob_key) for a in s.attachments)) for s in rows],
            _all_blobs(app, db_session),
            db_session.scalar(select(func.count(AuditLog.id))),
        )  # fmt: skip

    before = snapshot()
    out = _encrypt_stored(runner, field, "--dry-run")
    assert out.strip() == (
        f"project {field.project_id} (dry run, nothing changed): 2 would be encrypted "
        "(1 not reconciled yet: wait for the key (kintsugi reconcile), "
        "1 reconciled: keep their assessments); 1 incomplete left in plaintext "
        "(last part never arrived; encrypted when the device sends it)"
    )
    assert snapshot() == before

    out = _encrypt_stored(runner, field)
    assert out.startswith(f"project {field.project_id}: 2 encrypted (1 not reconciled yet")
    assert "; 1 incomplete left in plaintext" in out
    db_session.expire_all()
    status = dict(db_session.execute(select(Submission.instance_id, Submission.status)).all())
    assert (status[first], status[second], status[third]) == (
        "decrypted", "pending_decryption", "received"
    )  # fmt: skip
    assert len(_audit(db_session)) == 2

    after = snapshot()
    out = _encrypt_stored(runner, field)
    assert "1 incomplete left in plaintext" in out and "0 encrypted" in out
    assert snapshot() == after  # a second run changes nothing
    assert len(_audit(db_session)) == 2


def test_encrypt_stored__split_upload_missing_its_last_part__left_alone_until_it_arrives(
    app, field, runner, db_session
):
    """Should leave an upload whose last part never arrived as it is (its envelope must cover
    files that are not here), and count it; when the device sends the rest, ingest
    encrypts the whole submission."""
    iid, xml = _assessment_xml(field, "KE-0807")
    _send_as_before_encryption_on_arrival(field, xml, {"audit.csv": FILES["audit.csv"]},
                                          incomplete=True)  # fmt: skip
    plaintext_keys = _old_state(app, db_session, iid, xml, {"audit.csv": FILES["audit.csv"]})
    blobs = _all_blobs(app, db_session)

    out = _encrypt_stored(runner, field)
    assert out.strip() == (
        f"project {field.project_id}: 0 encrypted; 1 incomplete left in plaintext "
        "(last part never arrived; encrypted when the device sends it)"
    )
    sub, _, _ = _stored(app, db_session, iid)
    assert not sub.encrypted and not sub.complete and sub.status == "received"
    assert _all_blobs(app, db_session) == blobs and _audit(db_session) == []

    assert field.collect.submit(xml, {"p.jpg": FILES["p.jpg"]}).status_code == 201
    sub, _, files = _stored(app, db_session, iid)
    assert sub.encrypted and sub.complete and sub.status == "pending_decryption"
    assert sorted(files) == ["audit.csv.enc", "p.jpg.enc", "submission.xml.enc"]
    store = make_blob_store(app.config, db_session)
    assert not any(store.exists(k) for k in plaintext_keys)
    assert "no submission stored in plaintext" in _encrypt_stored(runner, field)


def test_encrypt_stored__a_stored_file_is_missing__that_one_fails_the_others_go_on(
    app, field, runner, db_session
):
    """Should leave a submission whose stored file is missing untouched, name it with the
    reason (exit 1), and still encrypt the others."""
    broken, xml1 = _assessment_xml(field, "KE-0808")
    _send_as_before_encryption_on_arrival(field, xml1, FILES)
    fine, xml2 = _assessment_xml(field, "KE-0809")
    _send_as_before_encryption_on_arrival(field, xml2, FILES)
    sub, _, _ = _stored(app, db_session, broken)
    lost = next(a.blob_key for a in sub.attachments if a.name == "p.jpg")
    make_blob_store(app.config, db_session).delete(lost)
    db_session.commit()

    out = _encrypt_stored(runner, field, exit_code=1)
    assert f"{broken}: not encrypted: a file stored with it is missing from the blob store" in out
    assert "1 encrypted (1 not reconciled yet" in out
    assert "; 1 cannot be encrypted (listed above, fix and run again)" in out
    db_session.expire_all()
    broken_sub = db_session.get(Submission, sub.id)
    assert not broken_sub.encrypted and broken_sub.status == "received"  # rolled back
    store = make_blob_store(app.config, db_session)
    assert read_all(store, broken_sub.xml_blob_key) == xml1  # its plaintext blobs stay
    assert read_all(store, broken_sub.attachments[0].blob_key) == FILES["audit.csv"]
    assert _stored(app, db_session, fine)[0].encrypted


def test_encrypt_stored__unknown_project__exit_1_with_a_readable_message(runner, app):
    """Should refuse a project that does not exist."""
    result = runner.invoke("submissions", "encrypt-stored", "--project", "999")
    assert result.exit_code == 1
    assert "Project 999 does not exist on this server." in result.output
