"""Key custody through the admin API with the real custody service."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from server.models import AuditLog
from tests.admin.conftest import Api, World

PASS = "correct passphrase"


def _encrypted_project(app: Any) -> int:
    """An encrypted project; ``world``'s manager is its manager."""
    from server.models import WebUser
    from server.services.access import grant_project_role
    from server.services.projects import create_project

    with app.extensions["kintsugi.db"].sessionmaker() as s:
        p = create_project(s, "Encrypted office", passphrase=PASS.encode())
        manager = s.scalar(select(WebUser).where(WebUser.username == "manager"))
        if manager is not None:
            grant_project_role(s, manager, p, "manager")
        s.commit()
        return p.id


def test_unlock_lock__admin__state_backlog_and_audit(
    api: dict[str, Api], world: World, app: Any, db_session: Any
) -> None:
    from server.services import custody

    pid = _encrypted_project(app)
    try:
        wrong = api["admin"]("POST", f"/projects/{pid}/key/unlock", json={"passphrase": "nope"})
        assert wrong.status_code == 403
        assert wrong.get_json()["error"] == "CUSTODY"
        assert "nope" not in wrong.get_data(as_text=True)
        assert not custody.is_unlocked(pid)
        actions = db_session.scalars(select(AuditLog.action)).all()
        assert "key.unlock_failed" in actions  # kept although the request failed

        ok = api["admin"]("POST", f"/projects/{pid}/key/unlock", json={"passphrase": PASS})
        assert ok.status_code == 200, ok.get_json()
        assert ok.get_json() | {"key_fingerprint": None} == {
            "encrypted": True, "unlocked": True, "pending_backlog": 0, "key_fingerprint": None,
            "locked_by_admin_at": None,
        }  # fmt: skip
        state = api["manager"]("GET", f"/projects/{pid}/key").get_json()
        assert state["unlocked"] is True

        locked = api["admin"]("POST", f"/projects/{pid}/key/lock")
        assert locked.get_json()["unlocked"] is False
        assert locked.get_json()["locked_by_admin_at"] is not None  # every process forgets it
        assert not custody.is_unlocked(pid)
        lock_rows = db_session.scalars(select(AuditLog).where(AuditLog.action == "key.lock")).all()
        assert [(a.actor, a.target, a.details) for a in lock_rows] == [
            ("web:admin", f"project:{pid}", {"was_unlocked": True, "everywhere": True})
        ]
    finally:
        custody.lock_all()
