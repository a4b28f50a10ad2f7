"""The reconciliation worker killed with SIGKILL mid-run: the next run finishes every pending
submission, and each one becomes exactly one assessment (no double counting, none lost)."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import load_der_public_key
from sqlalchemy import func, select

from server.blobs import make_blob_store
from server.models import Submission, SubmissionStatus
from server.models_cases import Assessment, Case
from server.services.projects import create_project
from server.services.publishing import publish_context
from server.services.users import create_app_user
from tests.cases.fieldwork import encrypted_upload, instance_xml, ratings_for
from tests.server.collect import CollectActions

pytestmark = pytest.mark.slow
PASSPHRASE = "fictional passphrase for the worker test"
N = 40


def _counts(app) -> tuple[int, int, int]:
    with app.extensions["kintsugi.db"].sessionmaker() as s:
        done = s.scalar(
            select(func.count())
            .select_from(Submission)
            .where(Submission.status != SubmissionStatus.PENDING_DECRYPTION.value)
        )
        assessments = s.scalar(select(func.count()).select_from(Assessment))
        cases = s.scalar(select(func.count()).select_from(Case))
    return done, assessments, cases


def test_worker_sigkill_mid_reconciliation__rerun__every_submission_exactly_once(
    app, client, app_config, tmp_path
):
    """Should, after a SIGKILL part-way, finish the backlog on re-run with one assessment and
    one case per intake, nothing pending and nothing counted twice."""
    with app.extensions["kintsugi.db"].sessionmaker() as s:
        project = create_project(s, "Worker office", passphrase=PASSPHRASE.encode())
        _, token = create_app_user(s, project, "Tablet")
        version, _ = publish_context(
            s, make_blob_store(app.config, s), project, app.config, "kenya-police-abuse"
        )
        s.commit()
        pid, report, key_b64 = project.id, version.report, project.active_key.public_key_b64
    public = load_der_public_key(base64.b64decode(key_b64))
    collect = CollectActions(client, f"/v1/key/{token}/projects/{pid}")
    ratings = ratings_for(report, "3")
    for i in range(N):
        iid, xml = instance_xml(report, case_code=f"WK-{i:04d}", point="intake",
                                date="2026-03-01", ratings=ratings, entity_id=str(uuid.uuid4()))  # fmt: skip
        manifest, files = encrypted_upload(report, public, iid, xml)
        assert collect.submit(manifest, files).status_code == 201
    pw = tmp_path / "pass.txt"
    pw.write_text(PASSPHRASE + "\n")
    os.chmod(pw, 0o600)
    env = {**os.environ, "KINTSUGI_DATABASE_URL": app_config["DATABASE_URL"],
           "KINTSUGI_DATA_DIR": app_config["DATA_DIR"], "KINTSUGI_VAR_DIR": app_config["VAR_DIR"],
           "KINTSUGI_SECRET_KEY": app_config["SECRET_KEY"], "KINTSUGI_ENV": "testing"}  # fmt: skip
    cmd = [str(Path(sys.executable).parent / "kintsugi"), "reconcile", "--project", str(pid),
           "--passphrase-file", str(pw)]  # fmt: skip
    worker = subprocess.Popen([*cmd, "--interval", "1", "--batch", "5"], env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            done, _, _ = _counts(app)
            if done > 0 or worker.poll() is not None:
                break
            time.sleep(0.005)
    finally:
        os.killpg(worker.pid, signal.SIGKILL)  # mid-run: no chance to clean up
        worker.wait(timeout=30)
    done_at_kill, _, _ = _counts(app)
    assert done_at_kill < N, "the worker finished before the kill; raise N"
    print(f"\nfigure: worker SIGKILLed with {done_at_kill}/{N} reconciled")
    rerun = subprocess.run([*cmd, "--once"], env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert PASSPHRASE not in rerun.stdout + rerun.stderr
    done, assessments, cases = _counts(app)
    assert (done, assessments, cases) == (N, N, N)
    with app.extensions["kintsugi.db"].sessionmaker() as s:
        per_sub = s.execute(
            select(Assessment.submission_id, func.count()).group_by(Assessment.submission_id)
        ).all()
        assert len(per_sub) == N and {c for _, c in per_sub} == {1}
        statuses = set(s.scalars(select(Submission.status)))
        assert statuses == {SubmissionStatus.DECRYPTED.value}, statuses
    again = subprocess.run([*cmd, "--once"], env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and _counts(app) == (N, N, N)
