"""The admin JSON API as a client speaks it: roles, project scoping, CSRF, validation errors."""

from __future__ import annotations

import io
from typing import Any

import pytest

from server.qr import decode_payload
from tests.admin.conftest import HTTPS, Api, World, basic, login
from tests.server.forms import xform

# (method, path template, json body or None, lowest role allowed)
ROLE_MATRIX = [
    ("GET", "/me", None, "viewer"),
    ("GET", "/projects", None, "viewer"),
    ("GET", "/projects/{a}", None, "viewer"),
    ("POST", "/projects", {"name": "New office"}, "admin"),
    ("GET", "/projects/{a}/forms", None, "manager"),
    ("GET", "/projects/{a}/forms/household", None, "manager"),
    ("PATCH", "/projects/{a}/forms/household", {"state": "closing"}, "manager"),
    ("GET", "/projects/{a}/app-users", None, "manager"),
    ("POST", "/projects/{a}/app-users", {"display_name": "Tablet"}, "manager"),
    ("GET", "/projects/{a}/submissions", None, "manager"),
    ("GET", "/projects/{a}/key", None, "manager"),
    ("GET", "/users", None, "admin"),
    ("POST", "/users", {"username": "new", "role": "viewer"}, "admin"),
]
RANK = {"viewer": 1, "manager": 2, "admin": 3}


@pytest.mark.parametrize(("method", "path", "payload", "lowest"), ROLE_MATRIX)
def test_role_matrix__each_role__allowed_or_403(
    api: dict[str, Api], world: World, method: str, path: str, payload: Any, lowest: str
) -> None:
    path = path.format(a=world.project_a)
    for role in ("viewer", "manager", "admin"):
        kw = {"json": payload} if payload is not None else {}
        if method == "POST" and path == "/users":
            kw = {"json": {**payload, "username": f"new-{role}"}}
        if method == "POST" and path == "/projects":
            kw = {"json": {"name": f"New office {role}"}}
        resp = api[role](method, path, **kw)
        if RANK[role] >= RANK[lowest]:
            assert resp.status_code in (200, 201), (role, method, path, resp.get_json())
        else:
            assert resp.status_code == 403, (role, method, path, resp.status_code)
            body = resp.get_json()
            assert body["code"] == 403 and body["error"] == "FORBIDDEN"
            assert lowest in body["message"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/projects/{a}/key/unlock"),
        ("POST", "/projects/{a}/key/lock"),
        ("POST", "/projects/{a}/key/rotate"),
    ],
)
def test_key_custody__manager_and_viewer__403(
    api: dict[str, Api], world: World, method: str, path: str
) -> None:
    for role in ("viewer", "manager"):
        resp = api[role](method, path.format(a=world.project_a), json={"passphrase": "x" * 12})
        assert resp.status_code == 403


def test_review_and_notes__viewer__403(api: dict[str, Api], world: World) -> None:
    a = world.project_a
    assert api["viewer"]("GET", f"/projects/{a}/review-queues").status_code == 403
    assert api["viewer"]("POST", f"/projects/{a}/assessments/1/notes").status_code == 403
    assert api["viewer"]("GET", f"/projects/{a}/export").status_code == 403


def test_other_projects_form__via_this_project__404_like_missing(
    api: dict[str, Api], world: World
) -> None:
    a, b = world.project_a, world.project_b
    foreign = api["admin"]("GET", f"/projects/{a}/forms/{world.form_b}")
    missing = api["admin"]("GET", f"/projects/{a}/forms/nothing-here")
    assert foreign.status_code == missing.status_code == 404
    assert foreign.get_json()["error"] == "NOT_FOUND"
    # the form exists, in its own project
    assert api["admin"]("GET", f"/projects/{b}/forms/{world.form_b}").status_code == 200
    patched = api["admin"]("PATCH", f"/projects/{a}/forms/{world.form_b}", json={"state": "closed"})
    assert patched.status_code == 404


def test_other_projects_app_user__revoke_via_this_project__404(
    api: dict[str, Api], world: World
) -> None:
    created = api["manager"](
        "POST", f"/projects/{world.project_b}/app-users", json={"display_name": "B tablet"}
    ).get_json()
    resp = api["manager"]("DELETE", f"/projects/{world.project_a}/app-users/{created['id']}")
    assert resp.status_code == 404
    listed = api["manager"]("GET", f"/projects/{world.project_b}/app-users").get_json()
    assert listed[0]["revoked_at"] is None


def test_unknown_project__404_json(api: dict[str, Api]) -> None:
    # a non-admin gets the 403 of a project they are not in (no existence oracle)
    assert api["viewer"]("GET", "/projects/99999").status_code == 403
    resp = api["admin"]("GET", "/projects/99999")
    assert resp.status_code == 404
    assert resp.get_json() == {
        "error": "NOT_FOUND",
        "message": "Project 99999 does not exist.",
        "code": 404,
    }


def test_submissions__scoped_to_project_with_status(api: dict[str, Api], world: World) -> None:
    a = api["manager"]("GET", f"/projects/{world.project_a}/submissions").get_json()
    b = api["manager"]("GET", f"/projects/{world.project_b}/submissions").get_json()
    assert a["total"] == 0 and a["items"] == []
    assert b["total"] == 1
    assert b["items"][0]["instance_id"] == "uuid:b-1"
    assert b["items"][0]["status"] == "received"
    assert b["items"][0]["flagged"] is False
    assert a["quarantined_uploads"] == b["quarantined_uploads"] == 0


def test_submissions__bad_status__clear_validation_error(api: dict[str, Api], world: World) -> None:
    resp = api["manager"]("GET", f"/projects/{world.project_a}/submissions?status=lost")
    assert resp.status_code == 400
    body = resp.get_json()
    assert body["error"] == "VALIDATION" and body["code"] == 400
    assert "status" in body["fields"]


def test_create_project__missing_name__field_errors(api: dict[str, Api]) -> None:
    resp = api["admin"]("POST", "/projects", json={"passphrase": "short"})
    assert resp.status_code == 400
    body = resp.get_json()
    assert set(body["fields"]) == {"name", "passphrase"}
    assert "name" in body["message"]


def test_create_project__unknown_field__refused(api: dict[str, Api]) -> None:
    resp = api["admin"]("POST", "/projects", json={"name": "X", "colour": "red"})
    assert resp.status_code == 400
    assert "colour" in resp.get_json()["fields"]


def test_create_project__not_json__400(api: dict[str, Api]) -> None:
    resp = api["admin"]("POST", "/projects", data="name=x")
    assert resp.status_code == 400
    assert resp.get_json()["error"] == "VALIDATION"


def test_create_project__json_nested_too_deep__400(api: dict[str, Api]) -> None:
    """Should refuse JSON nested deeper than the parser recurses with a 400, not a 500."""
    deep = "[" * 5000 + "]" * 5000
    resp = api["admin"]("POST", "/projects", data=deep, content_type="application/json")
    assert resp.status_code == 400
    assert resp.get_json()["error"] == "VALIDATION"


def test_create_project__lone_surrogate_in_json__400_naming_the_field(
    api: dict[str, Api],
) -> None:
    """Should refuse a string holding an unpaired surrogate escape (``\\ud800``, no
    character at all: it cannot be stored as UTF-8) with a 400 on that field, not a 500."""
    raw = '{"name": "Kisumu \\ud800", "passphrase": "correct horse battery staple"}'
    resp = api["admin"]("POST", "/projects", data=raw, content_type="application/json")
    assert resp.status_code == 400
    body = resp.get_json()
    assert body["error"] == "VALIDATION" and list(body["fields"]) == ["name"]


def test_app_user_create__token_once_and_qr_payload(
    api: dict[str, Api], world: World, client: Any
) -> None:
    resp = api["manager"](
        "POST", f"/projects/{world.project_a}/app-users", json={"display_name": "Tablet 7"}
    )
    assert resp.status_code == 201
    body = resp.get_json()
    assert len(body["token"]) == 64
    assert body["server_url"].endswith(f"/v1/key/{body['token']}/projects/{world.project_a}")
    settings = decode_payload(body["qr_payload"])
    assert settings["general"]["server_url"] == body["server_url"]
    assert settings["admin"] == {}
    assert settings["project"]["name"] == "Office A"
    # the URL really works for Collect
    path = body["server_url"].split("localhost", 1)[1]
    assert client.get(path + "/formList").status_code == 200
    # and the token is never listed again
    listed = api["manager"]("GET", f"/projects/{world.project_a}/app-users").get_json()
    assert all("token" not in u for u in listed)
    # revoking stops the URL at once
    api["manager"]("DELETE", f"/projects/{world.project_a}/app-users/{body['id']}")
    assert client.get(path + "/formList").status_code == 403


def test_publish__xform_upload_then_same_bytes__created_then_not(
    api: dict[str, Api], world: World
) -> None:
    def upload() -> Any:
        return api["manager"](
            "POST",
            f"/projects/{world.project_a}/forms",
            data={"xform": (io.BytesIO(xform("visit", "3")), "visit.xml")},
            content_type="multipart/form-data",
        )

    first, again = upload(), upload()
    assert first.status_code == 201 and first.get_json()["created"] is True
    assert first.get_json()["form"]["current_version"]["version"] == "3"
    assert again.status_code == 200 and again.get_json()["created"] is False


def test_publish__not_an_xform__publish_error_json(api: dict[str, Api], world: World) -> None:
    resp = api["manager"](
        "POST",
        f"/projects/{world.project_a}/forms",
        data={"xform": (io.BytesIO(b"<html/>"), "x.xml")},
        content_type="multipart/form-data",
    )
    assert resp.status_code == 400
    assert resp.get_json()["error"] == "PUBLISH"


def test_publish__xform_without_instance_id__refused_with_designer_fix(
    api: dict[str, Api], world: World
) -> None:
    """A form Collect would fill but whose every submission would be refused (no
    meta/instanceID, XLSForm ``omit_instanceID``) is not published."""
    no_id = xform("noid").replace(b"<instanceID/>", b"")
    resp = api["manager"](
        "POST",
        f"/projects/{world.project_a}/forms",
        data={"xform": (io.BytesIO(no_id), "noid.xml")},
        content_type="multipart/form-data",
    )
    assert resp.status_code == 400 and resp.get_json()["error"] == "PUBLISH"
    message = resp.get_json()["message"]
    assert "'noid' has no meta/instanceID" in message and "omit_instanceID" in message
    forms = api["manager"]("GET", f"/projects/{world.project_a}/forms").get_json()
    assert "noid" not in {f["xml_form_id"] for f in forms}


def test_form_state__bad_value__validation(api: dict[str, Api], world: World) -> None:
    resp = api["manager"](
        "PATCH", f"/projects/{world.project_a}/forms/household", json={"state": "paused"}
    )
    assert resp.status_code == 400 and "state" in resp.get_json()["fields"]


def test_key_unlock__unencrypted_project__explains(api: dict[str, Api], world: World) -> None:
    resp = api["admin"](
        "POST", f"/projects/{world.project_a}/key/unlock", json={"passphrase": "whatever12"}
    )
    assert resp.status_code == 400
    assert "not encrypted" in str(resp.get_json()["fields"])


def test_no_credentials__401_json(client: Any, world: World) -> None:
    resp = client.get("/api/v1/projects", base_url=HTTPS)
    assert resp.status_code == 401
    assert resp.get_json()["code"] == 401
    assert resp.headers["WWW-Authenticate"].startswith("Basic")


def test_basic_over_plain_http__refused(client: Any, world: World) -> None:
    resp = client.get("/api/v1/projects", headers=basic("admin"))
    assert resp.status_code == 401
    assert "https" in resp.get_json()["message"]


def test_wrong_password__401(client: Any, world: World) -> None:
    resp = client.get("/api/v1/projects", base_url=HTTPS, headers=basic("admin", "nope"))
    assert resp.status_code == 401


def test_session_cookie_post__without_csrf_header__403_then_with__201(
    client: Any, world: World
) -> None:
    assert login(client, "admin").status_code == 302
    refused = client.post("/api/v1/projects", json={"name": "Via cookie"})
    assert refused.status_code == 403
    assert refused.get_json()["error"] == "CSRF"
    token = client.get("/api/v1/me").get_json()["csrf_token"]
    ok = client.post(
        "/api/v1/projects", json={"name": "Via cookie"}, headers={"X-CSRF-Token": token}
    )
    assert ok.status_code == 201, ok.get_json()


def test_users_create__generated_password_shown_once_and_works(
    api: dict[str, Api], client: Any
) -> None:
    body = api["admin"]("POST", "/users", json={"username": "ana", "role": "manager"}).get_json()
    assert body["role"] == "manager" and len(body["password"]) >= 12
    assert "password" not in api["admin"]("GET", "/users").get_json()[0]
    me = client.get("/api/v1/me", base_url=HTTPS, headers=basic("ana", body["password"]))
    assert me.get_json()["username"] == "ana"


def test_users_create__username_collect_cannot_send__400_says_why(api: dict[str, Api]) -> None:
    """OkHttp (Collect) sends header values in printable ASCII only, so a username with an
    accent could never sign in from a tablet: refused at creation, with the reason."""
    resp = api["admin"]("POST", "/users", json={"username": "josé", "role": "manager"})
    assert resp.status_code == 400
    assert "ODK Collect cannot send" in resp.get_json()["message"]
    assert "josé" not in {u["username"] for u in api["admin"]("GET", "/users").get_json()}


def test_unrouted_api_paths__json_errors(client: Any) -> None:
    missing = client.get("/api/v1/no-such-thing")
    assert missing.status_code == 404 and missing.get_json()["code"] == 404
    wrong_method = client.put("/api/v1/projects")
    assert wrong_method.status_code == 405 and wrong_method.get_json()["code"] == 405


def test_publish__instrument_context__compiled_and_published(
    api: dict[str, Api], world: World, app: Any
) -> None:
    from pathlib import Path

    from server.services.publishing import list_contexts

    context = list_contexts(Path(app.config["INSTRUMENTS_DIR"]))[0]
    resp = api["manager"]("POST", f"/projects/{world.project_a}/forms", json={"context": context})
    assert resp.status_code == 201, resp.get_json()
    form = resp.get_json()["form"]
    assert form["state"] == "open" and form["current_version"]["md5"]
    unknown = api["manager"](
        "POST", f"/projects/{world.project_a}/forms", json={"context": "no-such-context"}
    )
    assert unknown.status_code == 400
    assert unknown.get_json()["message"]
