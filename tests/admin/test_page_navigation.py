"""Getting around the admin pages when something goes wrong: an expired session in the middle
of a form, a mistyped address, a refused request, a server fault. The admin must land on a
readable page of this site, never on a Collect (OpenRosa XML) or API (JSON) error."""

from __future__ import annotations

import io
import re
from typing import Any

import pytest

from tests.admin.conftest import PASSWORD, World, login, page_csrf


def _sign_in_from(client: Any, login_url: str, username: str = "manager") -> Any:
    """Fill in the sign-in page at ``login_url`` as a browser does (its hidden ``next``)."""
    page = client.get(login_url)
    token = re.search(rb'name="csrf_token" value="([^"]+)"', page.data).group(1).decode()
    nxt = re.search(rb'name="next" value="([^"]*)"', page.data).group(1).decode()
    return client.post(
        "/admin/login",
        data={"csrf_token": token, "username": username, "password": PASSWORD, "next": nxt},
    )


def test_form_sent_after_session_ended__sign_in_returns_to_the_page_of_the_form(
    client: Any, world: World
) -> None:
    """Should bring the admin back to the page the form was on after signing in again, not to
    the form's POST-only address (a 405 in XML)."""
    login(client, "manager")
    project_page = f"/admin/projects/{world.project_a}"
    token = page_csrf(client, project_page)
    client.post("/admin/logout", data={"csrf_token": token})  # the session ends meanwhile

    sent = client.post(
        f"{project_page}/forms/household/state",
        data={"csrf_token": token, "state": "closing"},
        headers={"Referer": f"http://localhost{project_page}"},
    )
    assert sent.status_code == 302 and sent.headers["Location"].startswith("/admin/login")
    signed_in = _sign_in_from(client, sent.headers["Location"])
    assert signed_in.status_code == 302
    assert signed_in.headers["Location"] == project_page
    assert client.get(signed_in.headers["Location"]).status_code == 200


def test_form_sent_after_session_ended__without_referer__sign_in_opens_projects(
    client: Any, world: World
) -> None:
    login(client, "manager")
    token = page_csrf(client, "/admin/")
    client.post("/admin/logout", data={"csrf_token": token})
    sent = client.post(
        f"/admin/projects/{world.project_a}/forms/household/state",
        data={"csrf_token": token, "state": "closing"},
    )
    signed_in = _sign_in_from(client, sent.headers["Location"])
    assert client.get(signed_in.headers["Location"]).status_code == 200


def _html_error(resp: Any, status: int) -> str:
    assert resp.status_code == status
    assert resp.content_type.startswith("text/html"), resp.data[:200]
    page = resp.data.decode()
    assert "Collect" not in page and 'href="/admin/"' in page
    return page


@pytest.mark.parametrize(
    "path", ["/admin/projects/{a}/casesx", "/admin/projects/{a}/cases/K-0001", "/admin/nowhere"]
)
def test_admin_address_that_does_not_exist__html_page_not_collect_xml(
    client: Any, world: World, path: str
) -> None:
    login(client, "viewer")
    page = _html_error(client.get(path.format(a=world.project_a)), 404)
    assert "This page does not exist" in page


def test_admin_post_only_address_opened__html_page_not_collect_xml(
    client: Any, world: World
) -> None:
    login(client, "admin")
    page = _html_error(client.get(f"/admin/projects/{world.project_a}/key/lock"), 405)
    assert "cannot be opened directly" in page


def test_admin_upload_too_large__html_page_says_so(make_app: Any, world: World) -> None:
    client = make_app(MAX_CONTENT_LENGTH=10_000).test_client()
    login(client, "manager")
    path = f"/admin/projects/{world.project_a}"
    token = page_csrf(client, path)
    resp = client.post(
        f"{path}/forms",
        data={"csrf_token": token, "xform": (io.BytesIO(b"x" * 20_000), "f.xml")},
        content_type="multipart/form-data",
    )
    assert "too large" in _html_error(resp, 413)


def test_admin_page_server_fault__html_page_nothing_saved(
    make_app: Any, world: World, monkeypatch: Any
) -> None:
    from server.views import admin_pages

    def broken(*_a: Any, **_k: Any) -> Any:
        raise RuntimeError("fictional fault")

    monkeypatch.setattr(admin_pages.access, "visible_projects", broken)
    client = make_app(PROPAGATE_EXCEPTIONS=False).test_client()
    login(client, "viewer")
    page = _html_error(client.get("/admin/"), 500)
    assert "nothing was saved" in page and "fictional fault" not in page
