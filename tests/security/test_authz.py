"""Authorisation matrix: every endpoint x every role / app-user scope.

Denials are 401 (no credentials), 403 or 404, and a caller who may not see a project gets the
same answer whether the project exists or not (no existence oracle).
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from server import openapi
from server.models import AppUser
from server.services.projects import create_project
from server.services.users import create_app_user
from tests.admin.conftest import HTTPS, basic
from tests.server.collect import collect_headers, multipart_body, with_device_id
from tests.server.forms import instance

RANK = {None: 0, "viewer": 1, "manager": 2, "admin": 3}
MISSING = 987654


def _fill(path: str, project_id: int) -> str:
    path = path.replace("<int:project_id>", str(project_id))
    path = path.replace("<xml_form_id>", "household")
    return re.sub(r"<(?:int:)?[a-z_]+>", "1", path)


def _call(client: Any, method: str, path: str, headers: dict[str, str]) -> Any:
    kw: dict[str, Any] = {"base_url": HTTPS, "headers": headers}
    if method in {"POST", "PATCH", "PUT"}:
        kw["json"] = {}
    return client.open("/api/v1" + path, method=method, **kw)


def _routes() -> list[Any]:
    import server.views.admin_api  # noqa: F401 - importing the views fills openapi.ROUTES

    return [r for r in openapi.ROUTES if r.role is not None]


def test_admin_api__every_route_every_role__denials_do_not_leak(client, world):
    """Should give 401 without credentials, 403 below the route's role (same answer for an
    existing and a missing project), and let every role at or above it through."""
    routes = _routes()
    assert len(routes) >= 20
    checked = 0
    for route in routes:
        path = _fill(route.path, world.project_a)
        missing = _fill(route.path, MISSING)
        anon = _call(client, route.method, path, {})
        assert anon.status_code == 401, (route.method, route.path)
        for role in ("viewer", "manager", "admin"):
            resp = _call(client, route.method, path, basic(role))
            if RANK[role] < RANK[route.role]:
                assert resp.status_code == 403, (role, route.method, route.path, resp.data)
                other = _call(client, route.method, missing, basic(role))
                assert (other.status_code, other.get_json()) == (403, resp.get_json())
            else:
                assert resp.status_code not in (401, 403), (role, route.path, resp.data)
                # 503 = that area is not installed in this build; never a crash
                assert resp.status_code != 500, (role, route.path, resp.data)
            checked += 1
        # an app-user token is not a web credential
        token_try = _call(client, route.method, path, {"Authorization": "Bearer " + "x" * 48})
        assert token_try.status_code in (401, 403)
    assert checked == 3 * len(routes)


def test_admin_api__basic_over_plain_http__refused(client, world):
    """Should refuse Basic credentials on a plain-http request (TLS is required for them)."""
    resp = client.get("/api/v1/projects", headers=basic("admin"))
    assert resp.status_code in (401, 403)


OPENROSA = [
    ("GET", "formList"),
    ("GET", "forms/household.xml"),
    ("GET", "forms/household/manifest"),
    ("GET", "forms/household/attachments/x.csv"),
    ("GET", "datasets/cases/integrity"),
    ("GET", "submission"),
    ("HEAD", "submission"),
    ("POST", "submission"),
]


@pytest.fixture
def two_offices(app, field):
    """Project A (the field fixture, form 'household') and project B with its own app user,
    a revoked user on A and a user on A scoped to another form."""
    from server.blobs import make_blob_store
    from server.models import Project
    from server.services.forms import publish_form
    from tests.server.forms import xform

    with app.extensions["kintsugi.db"].sessionmaker() as s:
        a = s.get(Project, field.project_id)
        publish_form(s, make_blob_store(app.config, s), a, xform("household"))
        b = create_project(s, "Office B")
        _, token_b = create_app_user(s, b, "Tablet B")
        revoked, token_revoked = create_app_user(s, a, "Lost tablet")
        revoked.revoked_at = __import__("server.db", fromlist=["utcnow"]).utcnow()
        scoped, token_scoped = create_app_user(s, a, "Scoped")
        scoped.form_scope = ["someotherform"]
        s.commit()
        assert s.get(AppUser, revoked.id).revoked_at is not None
        return {"a": field.project_id, "b": b.id, "own": field.token, "other": token_b,
                "revoked": token_revoked, "scoped": token_scoped}  # fmt: skip


def _openrosa(client: Any, method: str, token: str, project: int, tail: str) -> Any:
    url = with_device_id(f"/v1/key/{token}/projects/{project}/{tail}")
    kw: dict[str, Any] = {"headers": collect_headers()}
    if method == "POST":
        body, ctype = multipart_body(instance())
        kw = {"data": body, "headers": {**collect_headers(), "Content-Type": ctype}}
    return client.open(url, method=method, **kw)


def test_openrosa__every_endpoint_every_token_scope__denied_without_leak(app, client, two_offices):
    """Should serve the project's own token, and deny another project's, a revoked, a bogus
    and (for its form) an out-of-scope token with 403/404 identical for missing projects."""
    app.config["AUTH_FAIL_LIMIT"] = 10_000  # the matrix itself is many failures (429 is tested)
    t = two_offices
    for method, tail in OPENROSA:
        own = _openrosa(client, method, t["own"], t["a"], tail)
        assert own.status_code not in (401, 403), (method, tail, own.data)
        assert own.status_code < 500
        for who in ("other", "revoked"):
            denied = _openrosa(client, method, t[who], t["a"], tail)
            assert denied.status_code in (403, 404), (who, method, tail, denied.status_code)
            ghost = _openrosa(client, method, t[who], MISSING, tail)
            assert (ghost.status_code, ghost.data) == (denied.status_code, denied.data)
        bogus = _openrosa(client, method, "Zz" * 32, t["a"], tail)
        assert bogus.status_code in (401, 403, 404)
        if "household" in tail or method == "POST":
            scoped = _openrosa(client, method, t["scoped"], t["a"], tail)
            assert scoped.status_code in (403, 404), (method, tail, scoped.status_code)
    # the form list of an out-of-scope user does not name the form
    listing = _openrosa(client, "GET", t["scoped"], t["a"], "formList")
    assert b"household" not in listing.data


def test_ids_beyond_column_range__api_and_collect__404_not_500(client, world, field):
    """Should answer an id no row can have (found by schemathesis) with 404, not a crash."""
    huge = 2**63 + 12345
    resp = client.get(f"/api/v1/projects/{huge}", base_url=HTTPS, headers=basic("admin"))
    assert resp.status_code == 404 and resp.get_json()["error"] == "NOT_FOUND"
    resp = client.get(f"/api/v1/projects/{2**40}", base_url=HTTPS, headers=basic("admin"))
    assert resp.status_code == 404
    resp = client.get(f"/v1/key/{field.token}/projects/{2**40}/formList")
    assert resp.status_code in (403, 404) and b"<OpenRosaResponse" in resp.data
