# ruff: noqa: F811 (the shared ``field`` and ``world`` fixtures are imported from the conftests)
"""Locking on request reaches the reconciliation worker; idle locks; retrying quarantine.

As admins do it: ``kintsugi lock | unlock | reconcile | submissions retry``, the admin API and
pages, and the long-running worker as its own process.
"""

from __future__ import annotations

import signal
import time
from typing import Any

from sqlalchemy import select

from server.models import AuditLog, FormVersion, Project, Submission
from server.models_cases import Assessment, ReviewItem
from tests.admin.conftest import Api, login, page_csrf, world  # noqa: F401 (the fixture)
from tests.cases.conftest import PASSPHRASE, field  # noqa: F401 (the fixture)
from tests.cases.fieldwork import ratings_for, start_worker, wait_until


def _audit(db_session, action: str, actor: str | None = None) -> list[AuditLog]:
    db_session.expire_all()
    stmt = select(AuditLog).where(AuditLog.action == action).order_by(AuditLog.id)
    if actor is not None:
        stmt = stmt.where(AuditLog.actor == actor)
    return list(db_session.scalars(stmt))


def _send(field, n: int) -> str:
    instance_id, _, _ = field.send(
        case_code=f"KE-{700 + n:04d}",
        point="intake",
        date=f"2026-03-{n + 1:02d}",
        ratings=ratings_for(field.report, "2"),
        entity_id=f"3f1c2d4e-5a6b-4c7d-8e9f-{n:012d}",
    )
    return instance_id


def _status(db_session, instance_id: str) -> str:
    db_session.expire_all()
    return db_session.scalar(select(Submission.status).where(Submission.instance_id == instance_id))


def _once(runner, field) -> Any:
    return runner.invoke(
        "reconcile", "--project", str(field.project_id), "--passphrase-file",
        str(field.passphrase_file), "--once",
    )  # fmt: skip


def test_lock_cli__worker_waits_without_unlocking__until_admin_unlock(field, runner, db_session):
    """Should keep encrypted submissions pending while an admin lock is in force (the worker
    does not unlock from its passphrase file), and decrypt them once an admin unlocks."""
    instance_id = _send(field, 1)
    runner.env["KINTSUGI_KEY_IDLE_SECONDS"] = "1234"

    locked = runner.invoke("lock", "--project", str(field.project_id))
    assert locked.exit_code == 0, locked.output
    assert "key locked" in locked.output
    db_session.expire_all()
    project = db_session.get(Project, field.project_id)
    assert project.key_locked_at is not None and project.key_lock_generation == 1
    assert [(a.actor, a.details) for a in _audit(db_session, "key.lock")] == [
        ("cli", {"was_unlocked": False, "everywhere": True})
    ]

    waiting = _once(runner, field)
    assert waiting.exit_code == 0, waiting.output
    assert f"project {field.project_id}: key locked by an admin at" in waiting.output
    assert "processed 0: 0 assessments" in waiting.output
    assert "1 encrypted submission(s) left pending: the key is locked" in waiting.output
    assert _status(db_session, instance_id) == "pending_decryption"
    assert _audit(db_session, "key.unlock", "worker") == []

    unlocked = runner.invoke(
        "unlock", "--project", str(field.project_id), "--passphrase-file",
        str(field.passphrase_file),
    )  # fmt: skip
    assert unlocked.exit_code == 0, unlocked.output
    assert "admin lock of" in unlocked.output and "is lifted" in unlocked.output
    db_session.expire_all()
    assert db_session.get(Project, field.project_id).key_locked_at is None
    assert [
        a.details.get("lifted_admin_lock") for a in _audit(db_session, "key.unlock", "cli")
    ] == [True]

    done = _once(runner, field)
    assert "processed 1: 1 assessments, 0 quarantined" in done.output, done.output
    assert _status(db_session, instance_id) == "decrypted"
    worker_unlocks = _audit(db_session, "key.unlock", "worker")
    assert [a.details["idle_seconds"] for a in worker_unlocks] == [
        1234
    ]  # KINTSUGI_KEY_IDLE_SECONDS


def test_worker__admin_locks_through_api__forgets_key_then_resumes_after_unlock(
    field, world, client, runner, db_session, tmp_path
):
    """Should make the running worker forget its key before its next batch when an admin locks
    through the API, leave new submissions pending, and decrypt them after an API unlock."""
    admin = Api(client, "admin")
    pid = field.project_id
    log_path = tmp_path / "worker.out"
    worker = start_worker(runner, field, log_path)
    try:
        wait_until(lambda: len(_audit(db_session, "key.unlock", "worker")) == 1)
        first = _send(field, 2)
        wait_until(lambda: _status(db_session, first) == "decrypted")

        locked = admin("POST", f"/projects/{pid}/key/lock")
        assert locked.status_code == 200
        assert locked.get_json()["locked_by_admin_at"] is not None
        wait_until(lambda: _audit(db_session, "key.lock", "worker") != [])
        assert [a.details for a in _audit(db_session, "key.lock", "worker")] == [
            {"reason": "locked by an admin", "was_unlocked": True}
        ]
        second = _send(field, 3)
        time.sleep(1.5)  # several polls
        assert _status(db_session, second) == "pending_decryption"
        assert len(_audit(db_session, "key.unlock", "worker")) == 1  # no silent re-unlock
        assert admin("GET", f"/projects/{pid}/key").get_json()["pending_backlog"] == 1

        resumed = admin("POST", f"/projects/{pid}/key/unlock", json={"passphrase": PASSPHRASE})
        assert resumed.get_json()["locked_by_admin_at"] is None
        wait_until(lambda: _status(db_session, second) == "decrypted")
        assert len(_audit(db_session, "key.unlock", "worker")) == 2
    finally:
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(30)
    log = log_path.read_text()
    assert code == 0, log
    assert f"project {pid}: key locked by an admin at" in log
    assert "(this worker forgot it)" in log
    assert f"project {pid}: an admin unlocked the key; decrypting again" in log
    assert PASSPHRASE not in log
    db_session.expire_all()
    assert db_session.query(Assessment).count() == 2
    # the worker forgot the key when it stopped (this process only: no admin lock)
    assert _audit(db_session, "key.lock", "worker")[-1].details == {"was_unlocked": True}
    assert db_session.get(Project, pid).key_locked_at is None


def test_idle_lock__web_unlock__forgotten_after_key_idle_seconds_and_audited(
    field, world, make_app, db_session
):
    """Should take the web tier's idle time from KEY_IDLE_SECONDS and audit the idle lock."""
    api = Api(make_app(KEY_IDLE_SECONDS=1).test_client(), "admin")
    pid = field.project_id
    ok = api("POST", f"/projects/{pid}/key/unlock", json={"passphrase": PASSPHRASE})
    assert ok.get_json()["unlocked"] is True
    assert _audit(db_session, "key.unlock")[-1].details["idle_seconds"] == 1
    wait_until(lambda: _audit(db_session, "key.lock") != [], timeout=10)
    (row,) = _audit(db_session, "key.lock")
    assert (row.actor, row.target) == ("idle-timeout", f"project:{pid}")
    assert row.details["reason"] == "idle" and row.details["idle_seconds"] == 1
    assert api("GET", f"/projects/{pid}/key").get_json()["unlocked"] is False


def test_key_page__unlock_and_lock__honest_messages(field, world, client, db_session):
    """Should say who decrypts the backlog (the worker, not the page) and what a lock does."""
    _send(field, 4)
    pid = field.project_id
    login(client, "admin")
    token = page_csrf(client, f"/admin/projects/{pid}/key")
    ok = client.post(
        f"/admin/projects/{pid}/key/unlock", data={"csrf_token": token, "passphrase": PASSPHRASE},
        follow_redirects=True,
    )  # fmt: skip
    assert [r.status_code for r in ok.history] == [302]  # a reload does not post again
    page = ok.data.decode()
    assert "Key unlocked. 1 submission(s) wait for decryption" in page
    assert "the reconciliation worker (kintsugi reconcile) decrypts them" in page
    assert "will now be decrypted" not in page
    locked = client.post(
        f"/admin/projects/{pid}/key/lock", data={"csrf_token": token}, follow_redirects=True
    )
    page = locked.data.decode()
    assert "Key locked everywhere" in page
    assert "locked by an admin</span> since" in page
    assert _audit(db_session, "key.lock")[-1].details == {"was_unlocked": True, "everywhere": True}


def test_retry__quarantined_via_api_and_cli__reprocessed_and_requarantined_with_fresh_item(
    field, world, client, runner, db_session
):
    """Should put a quarantined submission back in the queue (API, review page, CLI), resolve
    its item as retry, audit it, and let a failing retry be quarantined again with a new item."""
    bad = _send(field, 5)
    version = db_session.scalar(select(FormVersion))
    real_fp, version.key_fingerprint = version.key_fingerprint, "sha256:" + "0" * 64
    db_session.commit()
    assert "1 quarantined" in _once(runner, field).output
    manager = Api(client, "admin")
    pid = field.project_id
    (item,) = manager("GET", f"/projects/{pid}/review-queues").get_json()["quarantined"]

    login(client, "admin")
    review_page = client.get(f"/admin/projects/{pid}/review").data.decode()
    assert '<option value="retry">retry (back to the worker)</option>' in review_page

    resp = manager(
        "POST", f"/projects/{pid}/review-items/{item['id']}/resolve", json={"action": "retry"}
    )
    assert resp.status_code == 204, resp.get_data(as_text=True)
    db_session.expire_all()
    sub = db_session.scalar(select(Submission).where(Submission.instance_id == bad))
    assert (sub.status, sub.quarantine_reason) == ("pending_decryption", None)
    row = db_session.get(ReviewItem, item["id"])
    assert (row.resolution, row.resolved_by) == ("retry", "web:admin")
    assert [(a.actor, a.target, a.details) for a in _audit(db_session, "submission.retry")] == [
        ("web:admin", f"submission:{sub.id}", {"status": "pending_decryption"})
    ]
    assert manager("GET", f"/projects/{pid}/review-queues").get_json()["quarantined"] == []

    again = _once(runner, field)  # still no matching key: quarantined again, a fresh item
    assert "processed 1: 0 assessments, 1 quarantined" in again.output
    (fresh,) = manager("GET", f"/projects/{pid}/review-queues").get_json()["quarantined"]
    assert fresh["id"] != item["id"]
    assert _status(db_session, bad) == "quarantined"

    version.key_fingerprint = real_fp  # fixed: retry from the command line
    db_session.commit()
    retried = runner.invoke("submissions", "retry", "--project", str(pid), "--instance-id", bad)
    assert retried.exit_code == 0, retried.output
    assert f"{bad}: pending_decryption" in retried.output
    db_session.expire_all()
    assert db_session.get(ReviewItem, fresh["id"]).resolution == "retry"
    assert "processed 1: 1 assessments, 0 quarantined" in _once(runner, field).output
    assert _status(db_session, bad) == "decrypted"

    refused = runner.invoke("submissions", "retry", "--project", str(pid), "--instance-id", bad)
    assert refused.exit_code == 1
    assert "is not quarantined (it is decrypted)" in refused.output
    dismiss_only = manager(
        "POST", f"/projects/{pid}/review-items/{fresh['id']}/resolve", json={"action": "retry"}
    )
    assert dismiss_only.status_code == 404  # already resolved
