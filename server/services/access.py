"""Who may see and do what in which project: the one place project access is decided.

ODK Central's model: an **admin** is site-wide (every project, users, keys). Everyone else sees
only the projects they are assigned to, with a role per project: **manager** (forms, devices,
submissions, review, exports, decrypted notes) or **viewer** (caseload and aggregates). A web
user's own ``role`` column therefore only matters when it is ``admin``.

A caller without access to a project gets the same :class:`ForbiddenError` whether the project
exists or not, so project ids cannot be probed.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server.errors import ForbiddenError, NotFoundError, ProjectError
from server.models import Project, ProjectMembership, Role, WebUser
from server.services import audit

ADMIN, MANAGER, VIEWER = Role.ADMIN.value, Role.MANAGER.value, Role.VIEWER.value

#: admin > manager > viewer
ROLE_RANK = {VIEWER: 1, MANAGER: 2, ADMIN: 3}
#: the roles a web user can hold *in a project* (admins hold every project already)
PROJECT_ROLES = (MANAGER, VIEWER)


def rank(role: str | None) -> int:
    """The rank of ``role`` (0 for none)."""
    return ROLE_RANK.get(role or "", 0)


def is_admin(user: WebUser) -> bool:
    """True for a site-wide admin."""
    return user.role == ADMIN


def site_role(user: WebUser) -> str:
    """The role that counts outside projects: ``admin`` for admins, else ``viewer`` (any
    signed-in user); a non-admin's stored manager/viewer grants nothing by itself."""
    return ADMIN if is_admin(user) else VIEWER


def project_role(session: Session, user: WebUser, project_id: int) -> str | None:
    """``user``'s role in ``project_id``: ``admin`` for admins, the assigned role, or None."""
    if is_admin(user):
        return ADMIN
    return session.scalar(
        select(ProjectMembership.role).where(
            ProjectMembership.web_user_id == user.id, ProjectMembership.project_id == project_id
        )
    )


def require_project_role(session: Session, user: WebUser, project_id: int, role: str) -> str:
    """``user``'s role in the project, or ForbiddenError when it is below ``role``.

    The message is the same for a project the user is not in and one that does not exist.
    """
    held = project_role(session, user, project_id)
    if rank(held) < rank(role):
        raise ForbiddenError(
            f"This needs the {role} role in this project. "
            "Ask an administrator to give you access to it."
        )
    return held  # type: ignore[return-value]  (rank > 0, so a role)


def visible_projects(session: Session, user: WebUser) -> list[Project]:
    """The projects ``user`` may open, by name (all of them for an admin)."""
    q = select(Project).order_by(Project.name)
    if not is_admin(user):
        q = q.join(ProjectMembership, ProjectMembership.project_id == Project.id).where(
            ProjectMembership.web_user_id == user.id
        )
    return list(session.scalars(q))


@dataclass(slots=True)
class Membership:
    """One assignment, with the names an admin reads."""

    project_id: int
    project_name: str
    web_user_id: int
    username: str
    role: str


def _memberships(session: Session, *where: object) -> list[Membership]:
    rows = session.execute(
        select(
            ProjectMembership.project_id,
            Project.name,
            ProjectMembership.web_user_id,
            WebUser.username,
            ProjectMembership.role,
        )
        .join(Project, Project.id == ProjectMembership.project_id)
        .join(WebUser, WebUser.id == ProjectMembership.web_user_id)
        .where(*where)  # type: ignore[arg-type]
        .order_by(Project.name, WebUser.username)
    )
    return [Membership(*row) for row in rows]


def user_memberships(session: Session, user_id: int) -> list[Membership]:
    """The projects a user is assigned to, with the role in each."""
    return _memberships(session, ProjectMembership.web_user_id == user_id)


def project_members(session: Session, project_id: int) -> list[Membership]:
    """The web users assigned to a project (admins are not listed: they see every project)."""
    return _memberships(session, ProjectMembership.project_id == project_id)


def all_memberships(session: Session) -> list[Membership]:
    """Every assignment (the admin users page)."""
    return _memberships(session)


def find_web_user(session: Session, name: str) -> WebUser:
    """The web user with this username, else the one with this email (NotFoundError)."""
    name = name.strip()
    user = session.scalar(select(WebUser).where(WebUser.username == name))
    if user is not None:
        return user
    matches = session.scalars(
        select(WebUser).where(func.lower(WebUser.email) == name.lower()).limit(2)
    ).all()
    if len(matches) > 1:
        raise ProjectError(f"Several users have the email {name!r}: give the username.")
    if not matches:
        raise NotFoundError(f"No web user is called or has the email {name!r}.")
    return matches[0]


def grant_project_role(
    session: Session, user: WebUser, project: Project, role: str, *, actor: str = "cli"
) -> ProjectMembership:
    """Give ``user`` ``role`` (manager | viewer) in ``project``; replaces a previous role."""
    if role not in PROJECT_ROLES:
        raise ProjectError(f"A project role is one of {', '.join(PROJECT_ROLES)}, not {role!r}.")
    if is_admin(user):
        raise ProjectError(
            f"{user.username} is an admin and already has every project: nothing to grant."
        )
    row = session.get(ProjectMembership, (user.id, project.id))
    previous = row.role if row is not None else None
    if previous == role:
        return row  # type: ignore[return-value]  (previous is set, so row is)
    if row is None:
        row = ProjectMembership(web_user_id=user.id, project_id=project.id, role=role)
        session.add(row)
    row.role = role
    session.flush()
    audit.record(
        session, actor, "project_role.grant", f"web_user:{user.id}",
        project=project.id, role=role, previous=previous,
    )  # fmt: skip
    return row


def revoke_project_role(
    session: Session, user: WebUser, project_id: int, *, actor: str = "cli"
) -> bool:
    """Remove ``user`` from the project; False when they had no role in it."""
    row = session.get(ProjectMembership, (user.id, project_id))
    if row is None:
        return False
    session.delete(row)
    session.flush()
    audit.record(
        session, actor, "project_role.revoke", f"web_user:{user.id}",
        project=project_id, role=row.role,
    )  # fmt: skip
    return True
