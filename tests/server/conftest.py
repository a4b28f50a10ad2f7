"""Fixtures for server tests: a project with an app user and the vector forms published."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from server.blobs import make_blob_store
from server.services.forms import publish_form
from server.services.projects import create_project
from server.services.users import create_app_user, create_web_user
from tests.server.collect import CollectActions, Vector, load_vectors


@dataclass
class Field:
    """A project set up for Collect: ids, the app-user token and a Collect speaking to it."""

    project_id: int
    token: str
    app_user_id: int
    collect: CollectActions
    base: str


def publish(app: Any, project_id: int, xml: bytes, **kw: Any) -> Any:
    """Publish a form in its own committed transaction."""
    from server.models import Project

    with app.extensions["kintsugi.db"].sessionmaker() as session:
        project = session.get(Project, project_id)
        version, _ = publish_form(session, make_blob_store(app.config, session), project, xml, **kw)
        session.commit()
        return version.id


@pytest.fixture(scope="session")
def vectors(shared_dir: Path) -> list[Vector]:
    """Every shared vector with an upload (fails if shared/ is missing: they are the contract)."""
    found = load_vectors(shared_dir)
    assert found, f"no vectors with upload.multipart under {shared_dir}/vectors"
    return found


@pytest.fixture
def field(app: Any, client: Any) -> Field:
    """An unencrypted project with an app user (forms published per test)."""
    with app.extensions["kintsugi.db"].sessionmaker() as session:
        project = create_project(session, "Field office")
        user, token = create_app_user(session, project, "Tablet 1")
        session.commit()
        pid, uid = project.id, user.id
    base = f"/v1/key/{token}/projects/{pid}"
    return Field(pid, token, uid, CollectActions(client, base), base)


@pytest.fixture
def web_user(app: Any, field: Field) -> tuple[str, str]:
    """A web user who is manager of the field project (username, password)."""
    from server.models import Project
    from server.services.access import grant_project_role

    with app.extensions["kintsugi.db"].sessionmaker() as session:
        user = create_web_user(
            session,
            "maria",
            "correct horse battery",
            role="manager",
            realm=app.config["DIGEST_REALM"],
            method=app.config["PASSWORD_HASH_METHOD"],
        )
        grant_project_role(session, user, session.get(Project, field.project_id), "manager")
        session.commit()
    return "maria", "correct horse battery"
