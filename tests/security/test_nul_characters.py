"""A NUL character in a request: a clear 400 for the admin and for Collect, on both databases
(PostgreSQL cannot store or even compare text holding one; it was a 500)."""

from __future__ import annotations

from server.health import NUL_MESSAGE
from tests.admin.conftest import HTTPS, basic, login
from tests.server.collect import openrosa_message


def test_admin_api__nul_in_a_query_or_body__400_naming_the_problem(app, world, client):
    """Should refuse a NUL in a search, a filter or a JSON field with a 400 that says why."""
    for query in ("q=KE%00", "office=%00", "%00=1"):
        resp = client.get(
            f"/api/v1/projects/{world.project_a}/cases?{query}",
            base_url=HTTPS,
            headers=basic("admin"),
        )
        assert resp.status_code == 400, (query, resp.get_data(as_text=True))
        assert "NUL character" in resp.get_json()["message"]
    resp = client.post(
        "/api/v1/projects", base_url=HTTPS, headers=basic("admin"), json={"name": "Kisumu\u0000"}
    )
    assert resp.status_code == 400
    assert resp.get_json()["fields"] == {"name": ["Contains a NUL character."]}


def test_collect__nul_in_a_form_id__openrosa_400(app, field):
    """Should answer Collect asking for a form id holding a NUL with an OpenRosa message."""
    resp = field.collect.get(f"{field.base}/forms/ab%00cd.xml")
    assert resp.status_code == 400
    assert "NUL character" in openrosa_message(resp)


def test_admin_api__nul_in_a_path_no_route_matches__json_400(app, world, client):
    """Should answer JSON under /api/ even when the path matches no route (a negative project
    id): schemathesis found OpenRosa XML there, which the API never documents."""
    resp = client.get("/api/v1/projects/-216/cases?q=%00", base_url=HTTPS, headers=basic("admin"))
    assert resp.status_code == 400
    assert resp.mimetype == "application/json"
    assert resp.get_json() == {
        "error": "BAD_REQUEST",
        "message": NUL_MESSAGE,
        "code": 400,
    }


def test_admin_pages__nul_in_a_query__html_page_with_a_way_back(app, world, client):
    """Should show a person in a browser the admin error page, not Collect XML or JSON."""
    login(client, "admin")
    resp = client.get(f"/admin/projects/{world.project_a}/cases?q=%00", base_url=HTTPS)
    assert resp.status_code == 400
    assert resp.mimetype == "text/html"
    body = resp.get_data(as_text=True)
    assert "NUL character" in body
    assert 'href="/admin' in body
