"""Fixtures for the admin surface: three web users (one per role), two projects, a form each.

``world``'s manager and viewer hold their role in *both* projects (tests of resource scoping
by project id); ``scoped`` adds a manager and a viewer of project A only (access control)."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import select

from server.blobs import make_blob_store
from server.models import Form, Project, Submission, WebUser
from server.services.access import grant_project_role
from server.services.forms import publish_form
from server.services.projects import create_project
from server.services.users import create_web_user
from tests.server.forms import xform

PASSWORD = "long enough password"
HTTPS = "https://localhost"


@dataclass
class World:
    """Ids of what the fixture created."""

    project_a: int
    project_b: int
    form_b: str  # xmlFormId published only in project B


def basic(username: str, password: str = PASSWORD) -> dict[str, str]:
    """An HTTP Basic header."""
    raw = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


class Api:
    """Calls /api/v1 as a user with HTTP Basic over https."""

    def __init__(self, client: Any, username: str) -> None:
        self.client = client
        self.headers = basic(username)

    def __call__(self, method: str, path: str, **kw: Any) -> Any:
        headers = {**self.headers, **kw.pop("headers", {})}
        return self.client.open(
            "/api/v1" + path, method=method, base_url=HTTPS, headers=headers, **kw
        )


def add_submission(session: Any, form: Form, instance_id: str, **kw: Any) -> Submission:
    """A stored submission row (display tests need no blob behind it)."""
    version = form.versions[-1]
    sub = Submission(
        form_id=form.id,
        form_version_id=version.id,
        instance_id=instance_id,
        xml_blob_key=f"test/{instance_id}",
        xml_sha256="0" * 64,
        xml_size=10,
        **kw,
    )
    session.add(sub)
    session.flush()
    return sub


@pytest.fixture
def world(app: Any) -> World:
    """admin/manager/viewer users; project A (form 'household') and B (form 'bform')."""
    with app.extensions["kintsugi.db"].sessionmaker() as session:
        for name in ("admin", "manager", "viewer"):
            create_web_user(
                session,
                name,
                PASSWORD,
                role=name,
                realm=app.config["DIGEST_REALM"],
                method=app.config["PASSWORD_HASH_METHOD"],
            )
        a = create_project(session, "Office A")
        b = create_project(session, "Office B")
        for name in ("manager", "viewer"):  # members of both projects (see `scoped` for one)
            user = session.scalar(select(WebUser).where(WebUser.username == name))
            for project in (a, b):
                grant_project_role(session, user, project, name)
        store = make_blob_store(app.config, session)
        publish_form(session, store, a, xform("household"))
        version, _ = publish_form(session, store, b, xform("bform", title="B form"))
        add_submission(session, version.form, "uuid:b-1")
        session.commit()
        return World(a.id, b.id, "bform")


@pytest.fixture
def api(client: Any, world: World) -> dict[str, Api]:
    """One API caller per role."""
    return {role: Api(client, role) for role in ("admin", "manager", "viewer")}


#: users of ``scoped``: a manager and a viewer of project A only
SCOPED = {"ana": "manager", "vic": "viewer"}


@pytest.fixture
def scoped(app: Any, client: Any, world: World) -> dict[str, Api]:
    """``ana`` (manager of project A only) and ``vic`` (viewer of project A only)."""
    with app.extensions["kintsugi.db"].sessionmaker() as session:
        project_a = session.get(Project, world.project_a)
        for name, role in SCOPED.items():
            user = create_web_user(
                session,
                name,
                PASSWORD,
                role=role,
                realm=app.config["DIGEST_REALM"],
                method=app.config["PASSWORD_HASH_METHOD"],
            )
            grant_project_role(session, user, project_a, role)
        session.commit()
    return {name: Api(client, name) for name in SCOPED}


def login(client: Any, username: str, password: str = PASSWORD) -> Any:
    """Sign in through the login page (reads its CSRF token like a browser)."""
    import re

    page = client.get("/admin/login")
    token = re.search(rb'name="csrf_token" value="([^"]+)"', page.data).group(1).decode()
    return client.post(
        "/admin/login",
        data={"csrf_token": token, "username": username, "password": password},
    )


def page_csrf(client: Any, path: str) -> str:
    """The CSRF token embedded in a page's forms."""
    import re

    page = client.get(path)
    assert page.status_code == 200, page.data[:300]
    return re.search(rb'name="csrf_token" value="([^"]+)"', page.data).group(1).decode()
