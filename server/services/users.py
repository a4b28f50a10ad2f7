"""App users (device tokens) and web users (people)."""

from __future__ import annotations

import re
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from server import hotcache
from server.auth import generate_token, hash_token, set_password
from server.db import utcnow
from server.errors import NotFoundError, ProjectError
from server.models import AppUser, Project, Role, WebUser
from server.services import audit


def create_app_user(
    session: Session,
    project: Project,
    display_name: str,
    *,
    forms: list[str] | None = None,
    actor: str = "cli",
) -> tuple[AppUser, str]:
    """Create an app user; returns it and its token (shown once, only the hash is stored)."""
    if not display_name.strip():
        raise ProjectError("An app user needs a name.")
    token = generate_token()
    user = AppUser(
        project_id=project.id,
        display_name=display_name.strip(),
        token_hash=hash_token(token),
        form_scope=list(forms) if forms else None,
    )
    session.add(user)
    session.flush()
    audit.record(session, actor, "app_user.create", f"app_user:{user.id}", project=project.id)
    return user, token


def revoke_app_user(session: Session, user_id: int, *, actor: str = "cli") -> AppUser:
    """Revoke an app user's token (its URL stops working at once, 403)."""
    user = session.get(AppUser, user_id)
    if user is None:
        raise NotFoundError(f"App user {user_id} does not exist.")
    if user.revoked_at is None:
        user.revoked_at = utcnow()
        audit.record(session, actor, "app_user.revoke", f"app_user:{user.id}")
        hotcache.invalidate_on_commit(session)
    return user


def app_user_url(base_url: str, project_id: int, token: str) -> str:
    """The server URL to give Collect: ``<base>/v1/key/<token>/projects/<id>``."""
    return f"{base_url.rstrip('/')}/v1/key/{token}/projects/{project_id}"


def generate_password() -> str:
    """A random password for a new account (shown once)."""
    return secrets.token_urlsafe(15)


#: Printable ASCII only. okhttp-digest (Collect) writes the username as is into the Digest
#: ``Authorization`` header, and OkHttp refuses a header value with any character outside
#: tab and 0x20-0x7E (an exception on the device, not a sign-in prompt); RFC 7616's
#: ``username*`` is not implemented there. Passwords may be any Unicode (charset=UTF-8).
_COLLECT_SAFE_USERNAME = re.compile(r"[\x20-\x7e]+")


def create_web_user(
    session: Session,
    username: str,
    password: str,
    *,
    role: str = Role.VIEWER.value,
    email: str | None = None,
    realm: str,
    method: str = "scrypt",
    actor: str = "cli",
) -> WebUser:
    """Create a web user with a role (admin | manager | viewer)."""
    Role(role)
    username = username.strip()
    if not username or ":" in username:
        raise ProjectError("A username must be non-empty and contain no ':'.")
    if not _COLLECT_SAFE_USERNAME.fullmatch(username):
        raise ProjectError(
            f"The username {username!r} has characters ODK Collect cannot send (it only sends "
            "ASCII letters, digits, spaces and punctuation in the sign-in header): choose one "
            "without accents or other letters, e.g. 'jose' for 'josé'."
        )
    if session.scalar(select(WebUser.id).where(WebUser.username == username)) is not None:
        raise ProjectError(f"User {username!r} already exists.")
    user = WebUser(username=username, email=email, role=role, password_hash="")
    set_password(user, password, realm=realm, method=method)
    session.add(user)
    session.flush()
    audit.record(session, actor, "web_user.create", f"web_user:{user.id}", role=role)
    return user


def change_password(
    session: Session,
    user: WebUser,
    password: str,
    *,
    realm: str,
    method: str = "scrypt",
    actor: str = "cli",
) -> None:
    """Replace the password (and so the Digest HA1: old Digest credentials stop working)."""
    set_password(user, password, realm=realm, method=method)
    audit.record(session, actor, "web_user.password", f"web_user:{user.id}")
