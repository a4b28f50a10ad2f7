"""Per-project access: a manager or viewer of project A cannot reach project B anywhere.

``scoped`` gives ``ana`` (manager of A) and ``vic`` (viewer of A); project B exists and has a
form, a submission and (for some tests) the caller's own app user. Every check is made at the
HTTP boundary: the JSON API, the pages and the Collect endpoints.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from sqlalchemy import select

from server import openapi
from server.models import AuditLog, WebUser
from tests.admin.conftest import HTTPS, SCOPED, Api, World, basic, login, page_csrf
from tests.server.collect import collect_headers, multipart_body, openrosa_message
from tests.server.forms import instance

RANK = {"viewer": 1, "manager": 2, "admin": 3}
MISSING = 987654


def _project_routes() -> list[Any]:
    import server.views.admin_api  # noqa: F401 - importing the views fills openapi.ROUTES

    return [r for r in openapi.ROUTES if r.role is not None and "<int:project_id>" in r.path]


def _fill(path: str, project_id: int) -> str:
    path = path.replace("<int:project_id>", str(project_id))
    path = path.replace("<xml_form_id>", "household")
    return "/api/v1" + re.sub(r"<(?:int:)?[a-z_]+>", "1", path)


def _call(client: Any, method: str, path: str, user: str) -> Any:
    kw: dict[str, Any] = {"base_url": HTTPS, "headers": basic(user)}
    if method in {"POST", "PATCH", "PUT"}:
        kw["json"] = {}
    return client.open(path, method=method, **kw)


def test_api__every_project_route__other_project_403_like_missing(
    client: Any, world: World, scoped: dict[str, Api]
) -> None:
    """Should answer 403 on project B for every project route, with the very body a missing
    project gets, and let each user through on project A as far as their role goes."""
    routes = _project_routes()
    assert len(routes) >= 20
    for route in routes:
        for name, role in SCOPED.items():
            other = _call(client, route.method, _fill(route.path, world.project_b), name)
            assert other.status_code == 403, (name, route.method, route.path, other.data)
            missing = _call(client, route.method, _fill(route.path, MISSING), name)
            assert (missing.status_code, missing.get_json()) == (403, other.get_json())
            assert other.get_json()["error"] == "FORBIDDEN"
            own = _call(client, route.method, _fill(route.path, world.project_a), name)
            if RANK[role] >= RANK[route.role]:
                assert own.status_code not in (401, 403, 500), (name, route.path, own.data)
            else:
                assert own.status_code == 403, (name, route.method, route.path)


def test_api__projects_list_and_me__only_own_projects(
    api: dict[str, Api], world: World, scoped: dict[str, Api]
) -> None:
    """Should list only the caller's projects (admins: all) and say which role they hold."""
    for name in SCOPED:
        listed = scoped[name]("GET", "/projects").get_json()
        assert [p["id"] for p in listed] == [world.project_a]
        me = scoped[name]("GET", "/me").get_json()
        assert [(m["project_id"], m["role"]) for m in me["projects"]] == [
            (world.project_a, SCOPED[name])
        ]
    everything = api["admin"]("GET", "/projects").get_json()
    assert {p["id"] for p in everything} == {world.project_a, world.project_b}
    assert api["admin"]("GET", "/me").get_json()["projects"] == []


def test_api__own_project__manager_works_viewer_reads(world: World, scoped: dict[str, Api]) -> None:
    """Should let the manager of A manage A (devices, submissions) and the viewer only read."""
    a = world.project_a
    created = scoped["ana"]("POST", f"/projects/{a}/app-users", json={"display_name": "Tab"})
    assert created.status_code == 201
    assert scoped["ana"]("GET", f"/projects/{a}/submissions").get_json()["total"] == 0
    assert scoped["vic"]("GET", f"/projects/{a}").status_code == 200
    assert scoped["vic"]("GET", f"/projects/{a}/submissions").status_code == 403
    # and nothing of B leaks through A's URLs or B's
    assert scoped["ana"]("GET", f"/projects/{world.project_b}/submissions").status_code == 403


def test_api__cases_and_export_of_other_project__403(world: World, scoped: dict[str, Api]) -> None:
    """Should refuse another project's caseload, case pages, aggregates and export."""
    b = world.project_b
    for path in (f"/projects/{b}/cases", f"/projects/{b}/cases/1", f"/projects/{b}/aggregates",
                 f"/projects/{b}/export?format=csv", f"/projects/{b}/review-queues"):  # fmt: skip
        assert scoped["ana"]("GET", path).status_code == 403, path
        assert scoped["vic"]("GET", path).status_code == 403, path


def _user_id(app: Any, username: str) -> int:
    with app.extensions["kintsugi.db"].sessionmaker() as s:
        return s.scalar(select(WebUser.id).where(WebUser.username == username))


def test_members_api__grant_then_revoke__access_follows_and_is_audited(
    app: Any, api: dict[str, Api], world: World, scoped: dict[str, Api]
) -> None:
    """Should open project B to ana as viewer when an admin grants it, and close it again."""
    b, ana = world.project_b, _user_id(app, "ana")
    granted = api["admin"]("PUT", f"/projects/{b}/members/{ana}", json={"role": "viewer"})
    assert granted.status_code == 200, granted.get_json()
    assert granted.get_json() == {
        "project_id": b, "project_name": "Office B", "user_id": ana, "username": "ana",
        "role": "viewer",
    }  # fmt: skip
    assert scoped["ana"]("GET", f"/projects/{b}").status_code == 200
    assert scoped["ana"]("GET", f"/projects/{b}/submissions").status_code == 403  # viewer there
    members = api["admin"]("GET", f"/projects/{b}/members").get_json()
    assert ("ana", "viewer") in {(m["username"], m["role"]) for m in members}
    users = {u["username"]: u for u in api["admin"]("GET", "/users").get_json()}
    assert {(m["project_id"], m["role"]) for m in users["ana"]["projects"]} == {
        (world.project_a, "manager"),
        (b, "viewer"),
    }
    assert api["admin"]("DELETE", f"/projects/{b}/members/{ana}").status_code == 204
    assert scoped["ana"]("GET", f"/projects/{b}").status_code == 403
    assert api["admin"]("DELETE", f"/projects/{b}/members/{ana}").status_code == 404
    with app.extensions["kintsugi.db"].sessionmaker() as s:
        actions = s.scalars(select(AuditLog.action).where(AuditLog.actor == "web:admin")).all()
    assert actions.count("project_role.grant") == 1 and "project_role.revoke" in actions


def test_members_api__project_manager_cannot_grant__admin_needed(
    app: Any, world: World, scoped: dict[str, Api]
) -> None:
    """Should keep role assignment with admins, even inside the manager's own project."""
    vic = _user_id(app, "vic")
    resp = scoped["ana"]("PUT", f"/projects/{world.project_a}/members/{vic}",
                         json={"role": "manager"})  # fmt: skip
    assert resp.status_code == 403
    assert scoped["vic"]("GET", f"/projects/{world.project_a}/submissions").status_code == 403


@pytest.mark.parametrize(
    ("who", "payload", "status"),
    [("admin", {"role": "viewer"}, 400), ("ana", {"role": "admin"}, 400), ("ana", {}, 400)],
)
def test_members_api__bad_grant__400(
    app: Any, api: dict[str, Api], world: World, scoped: dict[str, Api], who, payload, status
) -> None:
    """Should refuse to grant to an admin (site-wide already) or a role that is not a project
    role, with a message."""
    resp = api["admin"](
        "PUT", f"/projects/{world.project_a}/members/{_user_id(app, who)}", json=payload
    )
    assert resp.status_code == status and resp.get_json()["message"]


# ---------------------------------------------------------------- pages


def _page_rules(app: Any) -> list[Any]:
    return [r for r in app.url_map.iter_rules() if r.rule.startswith("/admin/projects/<int:")]


def test_pages__every_project_page__other_project_is_a_clear_403(
    app: Any, client: Any, world: World, scoped: dict[str, Api]
) -> None:
    """Should answer every page and form of project B with a 403 page that says why."""
    login(client, "ana")
    token = page_csrf(client, "/admin/")
    rules = _page_rules(app)
    assert len(rules) >= 12
    for rule in rules:
        path = rule.rule.replace("<int:project_id>", str(world.project_b))
        path = re.sub(r"<(?:int:)?[a-z_]+>", "1", path.replace("<xml_form_id>", "household"))
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            data = {"csrf_token": token} if method == "POST" else None
            resp = client.open(path, method=method, data=data)
            assert resp.status_code == 403, (method, path, resp.status_code)
            text = resp.get_data(as_text=True)
            assert "in this project" in text and "Ask an administrator" in text, path
            assert "Office B" not in text


def test_pages__project_list_and_own_project(
    client: Any, world: World, scoped: dict[str, Api]
) -> None:
    """Should list only project A for its manager, with the manager's controls on its page,
    and show its viewer the page without them."""
    login(client, "ana")
    home = client.get("/admin/").get_data(as_text=True)
    assert "Office A" in home and "Office B" not in home
    page = client.get(f"/admin/projects/{world.project_a}").get_data(as_text=True)
    assert "Publish a form" in page and "(manager)" in page
    client.post("/admin/logout", data={"csrf_token": page_csrf(client, "/admin/")})
    login(client, "vic")
    page = client.get(f"/admin/projects/{world.project_a}")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "Publish a form" not in text and "(viewer)" in text
    assert client.get(f"/admin/projects/{world.project_a}/submissions").status_code == 403


def test_pages__no_project_yet__says_whom_to_ask(app: Any, client: Any, world: World) -> None:
    """Should tell a user with no project what to do instead of an empty table."""
    from server.services.users import create_web_user
    from tests.admin.conftest import PASSWORD

    with app.extensions["kintsugi.db"].sessionmaker() as s:
        create_web_user(s, "newbie", PASSWORD, role="viewer", realm="kintsugi",
                        method=app.config["PASSWORD_HASH_METHOD"])  # fmt: skip
        s.commit()
    login(client, "newbie")
    text = client.get("/admin/").get_data(as_text=True)
    assert "ask an administrator to add you" in text and "Office A" not in text


def test_users_page__admin_grants_and_removes_a_project(
    app: Any, client: Any, world: World, scoped: dict[str, Api]
) -> None:
    """Should let an admin give ana project B on the users page, then take it away."""
    ana = _user_id(app, "ana")
    login(client, "admin")
    token = page_csrf(client, "/admin/users")
    form = {"csrf_token": token, "user_id": str(ana), "project_id": str(world.project_b)}
    resp = client.post("/admin/users/project-roles", data={**form, "role": "manager"})
    assert resp.status_code == 200
    assert "ana is now manager of Office B" in resp.get_data(as_text=True)
    assert scoped["ana"]("GET", f"/projects/{world.project_b}/submissions").status_code == 200
    resp = client.post("/admin/users/project-roles/revoke", data=form)
    assert resp.status_code == 200
    assert scoped["ana"]("GET", f"/projects/{world.project_b}").status_code == 403
    bad = client.post("/admin/users/project-roles", data={**form, "role": "admin"})
    assert bad.status_code == 400


def test_users_page__not_for_project_managers(
    app: Any, client: Any, world: World, scoped: dict[str, Api]
) -> None:
    """Should keep the users page and its forms for admins."""
    login(client, "ana")
    assert client.get("/admin/users").status_code == 403
    token = page_csrf(client, "/admin/")
    data = {"csrf_token": token, "user_id": str(_user_id(app, "ana")),
            "project_id": str(world.project_b), "role": "manager"}  # fmt: skip
    assert client.post("/admin/users/project-roles", data=data).status_code == 403


# ---------------------------------------------------------------- Collect with a web user


def test_collect__web_user__only_their_projects(
    client: Any, world: World, scoped: dict[str, Api]
) -> None:
    """Should serve A's form list to its members, refuse B (403 like a missing project), and
    refuse submissions from a viewer."""

    def get(user: str, project_id: int, tail: str = "formList", method: str = "GET") -> Any:
        return client.open(f"/v1/projects/{project_id}/{tail}", method=method, base_url=HTTPS,
                           headers={**collect_headers(), **basic(user)})  # fmt: skip

    for name in SCOPED:
        assert get(name, world.project_a).status_code == 200
        other, missing = get(name, world.project_b), get(name, MISSING)
        assert other.status_code == missing.status_code == 403
        assert other.data == missing.data and "no access" in openrosa_message(other)
    assert get("ana", world.project_a, "submission", "HEAD").status_code == 204
    assert get("vic", world.project_a, "submission", "HEAD").status_code == 403
    body, ctype = multipart_body(instance("bform"))
    posted = client.post(f"/v1/projects/{world.project_b}/submission", data=body,
                         base_url=HTTPS, headers={**basic("ana"), "Content-Type": ctype})  # fmt: skip
    assert posted.status_code == 403
