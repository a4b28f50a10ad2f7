"""Log audit of the decrypting side: encrypted uploads, unlock, reconcile, notes on demand.

Every logger at DEBUG; no passphrase, free-text note, survivor comment or decrypted answer may
reach a log line (the upload/admin side is audited in tests/security/test_log_audit.py).
"""

from __future__ import annotations

import logging
import uuid

from server.blobs import make_blob_store
from server.models_cases import Assessment
from server.services import cases as case_services
from server.services import custody
from tests.cases.conftest import PASSPHRASE
from tests.cases.fieldwork import ratings_for
from tests.security.test_log_audit import _Capture  # the same capture as the upload-side audit

NOTE = "Audit note: river crossing near grandmother's house"
ASSESSOR_CODE = "Audit answer Sandpiper"


def test_reconcile_flow__debug_logs__no_passphrase_note_or_answer(
    field, runner, db_session, app_config, tmp_path
):
    """Should decrypt, reconcile and show notes without any secret or answer in the logs."""
    capture = _Capture()
    root = logging.getLogger()
    old = root.level
    root.addHandler(capture)
    root.setLevel(logging.DEBUG)
    try:
        r = field.report
        entity = str(uuid.uuid4())
        field.send(case_code="KE-0300", point="intake", date="2026-02-02", ratings=ratings_for(r, "2"),
                   entity_id=entity, notes={"SAF": NOTE, "MEN": ASSESSOR_CODE})  # fmt: skip
        bad = tmp_path / "wrong.txt"
        bad.write_text("an entirely wrong passphrase")
        runner.invoke(
            "reconcile", "--project", str(field.project_id), "--passphrase-file", str(bad), "--once"
        )
        result = runner.invoke("reconcile", "--project", str(field.project_id), "--passphrase-file",
                               str(field.passphrase_file), "--once")  # fmt: skip
        assert result.exit_code == 0, result.output
        db_session.expire_all()
        row = db_session.query(Assessment).one()
        custody.unlock_project(db_session, field.project_id, PASSPHRASE.encode(), actor="admin")
        config = {"BLOB_BACKEND": "postgres" if app_config["DATABASE_URL"].startswith("postgresql") else "local",
                  "DATA_DIR": app_config["DATA_DIR"]}  # fmt: skip
        notes = case_services.decrypt_notes_on_demand(
            db_session, row.id, actor="admin", store=make_blob_store(config, db_session)
        )
        assert NOTE in notes.values()  # the flow really decrypted the text
        custody.lock_project(db_session, field.project_id, actor="admin")
        db_session.commit()
    finally:
        root.removeHandler(capture)
        root.setLevel(old)
    text = "\n".join(capture.lines)
    assert capture.lines, "no log line was captured: the audit saw nothing"
    for secret in (PASSPHRASE, "an entirely wrong passphrase", NOTE, ASSESSOR_CODE):
        assert secret not in text, f"{secret[:8]}... leaked into the logs"
