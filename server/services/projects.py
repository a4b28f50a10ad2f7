"""Projects and their encryption keys."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.compat import generate_project_key
from server.errors import NotFoundError, ProjectError
from server.models import Project, ProjectKey
from server.services import audit

MIN_PASSPHRASE_LENGTH = 10


def create_project(
    session: Session, name: str, *, passphrase: bytes | None = None, actor: str = "cli"
) -> Project:
    """Create a project; with a passphrase it is encrypted and gets a fresh RSA-2048 key pair.

    Only the passphrase-encrypted private key is stored: the server can ingest encrypted
    submissions without ever holding the plaintext private key.
    """
    name = name.strip()
    if not name:
        raise ProjectError("A project needs a name.")
    if session.scalar(select(Project.id).where(Project.name == name)) is not None:
        raise ProjectError(f"A project named {name!r} already exists.")
    project = Project(name=name, encrypted=passphrase is not None)
    session.add(project)
    if passphrase is not None:
        if len(passphrase) < MIN_PASSPHRASE_LENGTH:
            raise ProjectError(
                f"The passphrase must be at least {MIN_PASSPHRASE_LENGTH} characters long."
            )
        generated = generate_project_key(passphrase)
        project.keys.append(
            ProjectKey(
                public_key_b64=generated.public_key_b64,
                fingerprint=generated.fingerprint,
                encrypted_private_pem=generated.encrypted_private_pem,
                active=True,
            )
        )
    session.flush()
    audit.record(
        session, actor, "project.create", f"project:{project.id}", encrypted=project.encrypted
    )
    return project


def get_project(session: Session, project_id: int) -> Project:
    """The project, or NotFoundError."""
    project = session.get(Project, project_id)
    if project is None:
        raise NotFoundError(f"Project {project_id} does not exist on this server.")
    return project


def find_project_by_name(session: Session, name: str) -> Project | None:
    """The project with this exact name, if any."""
    return session.scalar(select(Project).where(Project.name == name))
