"""Key custody through the admin API with the real custody service."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from server.models import AuditLog
from tests.admin.conftest import Api, World

PASS = "correct passphrase"


def _encrypted_project(app: Any, name: str = "Encrypted office") -> int:
    """An encrypted project; ``world``'s manager is its manager."""
    from server.models import WebUser
    from server.services.access import grant_project_role
    from server.services.projects import create_project

    with app.extensions["kintsugi.db"].sessionmaker() as s:
        p = create_project(s, name, passphrase=PASS.encode())
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


def test_unlock__repeated_wrong_passphrases__429_for_that_project_even_when_right(
    api: dict[str, Api], world: World, app: Any, db_session: Any
) -> None:
    """Should stop passphrase guessing through the API after the limit, whoever guesses."""
    from server.services import custody

    app.config["UNLOCK_FAIL_LIMIT"] = 3
    pid, other = _encrypted_project(app), _encrypted_project(app, "Second office")
    try:
        for _ in range(3):
            wrong = api["admin"]("POST", f"/projects/{pid}/key/unlock", json={"passphrase": "x"})
            assert wrong.status_code == 403
        refused = api["admin"]("POST", f"/projects/{pid}/key/unlock", json={"passphrase": PASS})
        assert refused.status_code == 429
        assert (
            "3 wrong passphrases for this project's key in the last 15 minutes"
            in (refused.get_json()["message"])
        )
        assert not custody.is_unlocked(pid)
        failed = db_session.scalars(
            select(AuditLog.target).where(AuditLog.action == "key.unlock_failed")
        ).all()
        assert failed == [f"project:{pid}"] * 3  # the refused attempt did not try the key

        # another project's key is not held back by this one's guesses
        ok = api["admin"]("POST", f"/projects/{other}/key/unlock", json={"passphrase": PASS})
        assert ok.status_code == 200 and custody.is_unlocked(other)
    finally:
        custody.lock_all()


def test_unlock_page__repeated_wrong_passphrases__429_page(
    client: Any, world: World, app: Any
) -> None:
    """Should refuse the admin page's unlock too once the project's key saw the limit."""
    from server.services import custody
    from tests.admin.conftest import login, page_csrf

    app.config["UNLOCK_FAIL_LIMIT"] = 2
    pid = _encrypted_project(app)
    login(client, "admin")
    token = page_csrf(client, f"/admin/projects/{pid}/key")
    try:
        for _ in range(2):
            bad = client.post(
                f"/admin/projects/{pid}/key/unlock", data={"csrf_token": token, "passphrase": "x"}
            )
            assert bad.status_code == 403 and b"does not unlock" in bad.data
        refused = client.post(
            f"/admin/projects/{pid}/key/unlock", data={"csrf_token": token, "passphrase": PASS}
        )
        assert refused.status_code == 429
        assert b"2 wrong passphrases for this project&#39;s key" in refused.data
        assert not custody.is_unlocked(pid)
    finally:
        custody.lock_all()
