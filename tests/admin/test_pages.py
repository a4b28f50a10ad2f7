"""The server-rendered admin pages as a browser uses them (Flask test client)."""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest

from server.models import FLAG_PLAINTEXT_FOR_ENCRYPTED_FORM, Form
from tests.admin import case_double
from tests.admin.conftest import World, add_submission, login, page_csrf


@pytest.fixture
def cases(monkeypatch: Any, world: World) -> case_double.CaseWorld:
    """The case services' contract double for project A."""
    cw = case_double.CaseWorld(world.project_a)
    case_double.install(monkeypatch, cw)
    return cw


def test_pages__not_signed_in__redirect_to_login(client: Any, world: World) -> None:
    resp = client.get(f"/admin/projects/{world.project_a}")
    assert resp.status_code == 302
    assert resp.headers["Location"].startswith("/admin/login?next=")


def test_login__right_password__session_cookie_flags(client: Any, world: World) -> None:
    resp = login(client, "viewer")
    assert resp.status_code == 302
    cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    page = client.get("/admin/")
    assert page.status_code == 200 and b"Office A" in page.data
    assert page.headers["Content-Security-Policy"].startswith("default-src 'self'")


def test_login__https_base_url__secure_cookie(make_app: Any, world: World) -> None:
    client = make_app(BASE_URL="https://kintsugi.example").test_client()
    resp = login(client, "viewer")
    assert "Secure" in resp.headers["Set-Cookie"]


def test_login__wrong_password__401_message(client: Any, world: World) -> None:
    resp = login(client, "viewer", "wrong")
    assert resp.status_code == 401
    assert b"Wrong username or password" in resp.data


def test_login__post_without_csrf__403(client: Any, world: World) -> None:
    resp = client.post("/admin/login", data={"username": "admin", "password": "x"})
    assert resp.status_code == 403
    assert b"Reload the page" in resp.data


def test_login__next_elsewhere__no_open_redirect(client: Any, world: World) -> None:
    page = client.get("/admin/login?next=https://evil.example/")
    token = re.search(rb'name="csrf_token" value="([^"]+)"', page.data).group(1).decode()
    resp = client.post(
        "/admin/login",
        data={"csrf_token": token, "username": "admin", "password": "long enough password",
              "next": "//evil.example/"},
    )  # fmt: skip
    assert resp.headers["Location"] == "/admin/"


def test_post_form__without_csrf_token__403_and_nothing_created(
    client: Any, world: World, db_session: Any
) -> None:
    login(client, "admin")
    resp = client.post("/admin/projects", data={"name": "Sneaky"})
    assert resp.status_code == 403
    resp = client.post("/admin/projects", data={"name": "Sneaky", "csrf_token": "forged"})
    assert resp.status_code == 403
    assert b"Sneaky" not in client.get("/admin/").data


def test_post_form__with_token__creates_project(client: Any, world: World) -> None:
    login(client, "admin")
    token = page_csrf(client, "/admin/")
    resp = client.post("/admin/projects", data={"name": "Office C", "csrf_token": token})
    assert resp.status_code == 302
    assert b"Office C" in client.get(resp.headers["Location"]).data


def test_logout__ends_session(client: Any, world: World) -> None:
    login(client, "viewer")
    token = page_csrf(client, "/admin/")
    client.post("/admin/logout", data={"csrf_token": token})
    assert client.get("/admin/").status_code == 302


def test_viewer__manager_pages__403(client: Any, world: World) -> None:
    login(client, "viewer")
    for path in ("submissions", "key", "review", "export"):
        resp = client.get(f"/admin/projects/{world.project_a}/{path}")
        assert resp.status_code == 403, path
        assert b"manager role" in resp.data


def test_app_user_create__shows_qr_svg_and_url_once(client: Any, world: World) -> None:
    login(client, "manager")
    token = page_csrf(client, f"/admin/projects/{world.project_a}")
    resp = client.post(
        f"/admin/projects/{world.project_a}/app-users",
        data={"name": "Tablet 3", "csrf_token": token},
    )
    assert resp.status_code == 200
    assert b"<svg" in resp.data and b"segno" in resp.data
    png = re.search(rb'href="data:image/png;base64,([^"]+)"', resp.data).group(1)
    assert base64.b64decode(png).startswith(b"\x89PNG")
    url = re.search(rb'id="server-url">([^<]+)<', resp.data).group(1).decode()
    assert f"/projects/{world.project_a}" in url
    listing = client.get(f"/admin/projects/{world.project_a}").data
    assert b"Tablet 3" in listing and url.encode() not in listing


def test_submissions__plaintext_flag_explained(client: Any, world: World, db_session: Any) -> None:
    form = db_session.query(Form).filter_by(project_id=world.project_a).one()
    add_submission(db_session, form, "uuid:flagged", flags=[FLAG_PLAINTEXT_FOR_ENCRYPTED_FORM])
    from server.models import QuarantinedUpload

    db_session.add(QuarantinedUpload(project_id=world.project_a, reason="not multipart",
                                     blob_key="q/1", size=3, sha256="0" * 64))  # fmt: skip
    db_session.commit()
    login(client, "manager")
    page = client.get(f"/admin/projects/{world.project_a}/submissions?flagged=1").data
    assert b"uuid:flagged" in page
    assert b"Arrived unencrypted although the form is encrypted" in page
    assert b"uuid:b-1" not in page  # project B's submission
    assert re.search(rb'id="quarantined-uploads"><strong>1</strong> upload', page)


def test_caseload__filters_and_badges(client: Any, cases: Any, world: World) -> None:
    login(client, "viewer")
    page = client.get(f"/admin/projects/{world.project_a}/cases").data.decode()
    assert "K-0001" in page and "K-0003" in page
    assert 'class="badge bad">overdue' in page and "closure-ready" in page
    ready = client.get(f"/admin/projects/{world.project_a}/cases?closure_ready=1").data.decode()
    assert "K-0003" in ready and "K-0001" not in ready


def test_case_page__svg_chart_line_per_domain(client: Any, cases: Any, world: World) -> None:
    login(client, "viewer")
    page = client.get(f"/admin/projects/{world.project_a}/cases/1").data.decode()
    svg = page[page.index("<svg") : page.index("</svg>")]
    domains = re.findall(r'<polyline class="series-line" data-domain="([^"]+)"', svg)
    assert domains == [d.replace("&", "&amp;") for d in case_double.DOMAINS]
    assert svg.count('class="point-label"') == 6 * 3  # every point labelled
    for tick in ("1", "2", "3", "4"):
        assert f'text-anchor="end">{tick}</text>' in svg
    assert "2026-01-10" in svg and 'class="legend-item"' in svg
    assert "Show notes" not in page  # viewers never see decrypted notes


def test_case_page__other_project__404(client: Any, cases: Any, world: World) -> None:
    login(client, "viewer")
    assert client.get(f"/admin/projects/{world.project_b}/cases/1").status_code == 404


def test_review__resolve_orphan_by_linking(client: Any, cases: Any, world: World) -> None:
    login(client, "manager")
    token = page_csrf(client, f"/admin/projects/{world.project_a}/review")
    resp = client.post(
        f"/admin/projects/{world.project_a}/review/101",
        data={"csrf_token": token, "action": "link", "case_id": "2"},
    )
    assert resp.status_code == 302
    assert cases.resolved == [(101, "link", 2, "web:manager")]
    assert b"names unknown case" not in client.get(resp.headers["Location"]).data


def test_review__item_of_no_open_queue__404(client: Any, cases: Any, world: World) -> None:
    login(client, "manager")
    token = page_csrf(client, f"/admin/projects/{world.project_a}/review")
    resp = client.post(
        f"/admin/projects/{world.project_b}/review/101",
        data={"csrf_token": token, "action": "link", "case_id": "2"},
    )
    assert resp.status_code == 404 and cases.resolved == []


def test_impact__suppressed_cells_shown_as_such(client: Any, cases: Any, world: World) -> None:
    login(client, "viewer")
    page = client.get(f"/admin/projects/{world.project_a}/impact").data.decode()
    # change by casework type + by office, share by casework type, days by office
    assert page.count('class="chart bars"') == 4
    assert page.count('class="bar suppressed"') == 4
    assert "suppressed to protect small groups" in page
    assert "+0.80 (n=12)" in page and "-0.20 (n=8)" in page and "25% (n=12)" in page
    assert "210 days (n=6)" in page
    assert "(n=3)" not in page and "(n=2)" not in page  # not even n of a suppressed cell


def test_export__csv_download(client: Any, cases: Any, world: World) -> None:
    login(client, "manager")
    resp = client.get(f"/admin/projects/{world.project_a}/export?format=csv")
    assert resp.status_code == 200
    assert resp.headers["Content-Disposition"].startswith("attachment;")
    assert resp.data.decode().splitlines()[0] == "case,office,casework_type"


def test_key__wrong_passphrase__message_and_still_locked(
    client: Any, cases: Any, make_app: Any, world: World
) -> None:
    from server.services.projects import create_project

    with client.application.extensions["kintsugi.db"].sessionmaker() as s:
        p = create_project(s, "Encrypted office", passphrase=b"correct passphrase")
        s.commit()
        pid = p.id
    login(client, "admin")
    page = client.get(f"/admin/projects/{pid}/key").data.decode()
    assert "7</strong> submission(s) waiting" in page
    token = page_csrf(client, f"/admin/projects/{pid}/key")
    bad = client.post(
        f"/admin/projects/{pid}/key/unlock", data={"csrf_token": token, "passphrase": "nope"}
    )
    assert bad.status_code == 400 and b"does not unlock" in bad.data
    ok = client.post(
        f"/admin/projects/{pid}/key/unlock",
        data={"csrf_token": token, "passphrase": "correct passphrase"},
    )
    # post/redirect/get: a reload of the page shows it, never sends the passphrase again
    assert ok.status_code == 302 and ok.headers["Location"] == f"/admin/projects/{pid}/key"
    assert b"Key unlocked" in client.get(ok.headers["Location"]).data
    assert cases.unlocked == {pid}


def test_login__repeated_failures__rate_limited(make_app: Any, world: World) -> None:
    client = make_app(AUTH_FAIL_LIMIT=3).test_client()
    for _ in range(3):
        assert login(client, "admin", "wrong").status_code == 401
    resp = login(client, "admin")  # even the right password waits now
    assert resp.status_code == 429
    assert b"Too many failed sign-in attempts" in resp.data


def test_users_page__admin_creates_user_password_shown_once(client: Any, world: World) -> None:
    login(client, "manager")
    assert client.get("/admin/users").status_code == 403
    login(client, "admin")
    token = page_csrf(client, "/admin/users")
    resp = client.post(
        "/admin/users", data={"csrf_token": token, "username": "joy", "role": "viewer"}
    )
    password = re.search(rb'id="new-password">([^<]+)<', resp.data).group(1).decode()
    assert b"new-password" not in client.get("/admin/users").data
    fresh = client.application.test_client()
    assert login(fresh, "joy", password).status_code == 302


def test_session__password_changed_or_too_old__signed_out(
    client: Any, world: World, monkeypatch: Any, db_session: Any
) -> None:
    from server import web_auth
    from server.models import WebUser
    from server.services.users import change_password

    login(client, "viewer")
    assert client.get("/admin/").status_code == 200
    monkeypatch.setattr(web_auth, "SESSION_MAX_AGE", -1)
    assert client.get("/admin/").status_code == 302
    monkeypatch.undo()
    login(client, "viewer")
    user = db_session.query(WebUser).filter_by(username="viewer").one()
    change_password(db_session, user, "another long password", realm="kintsugi",
                    method="pbkdf2:sha256:1000")  # fmt: skip
    db_session.commit()
    assert client.get("/admin/").status_code == 302


def _status_notice(page: bytes) -> str:
    found = re.search(rb'<p class="notice" role="status">(.*?)</p>', page, re.S)
    assert found, "the page says nothing of what was done"
    return found.group(1).decode()


def test_form_state_set__project_page_says_what_it_means(client: Any, world: World) -> None:
    login(client, "manager")
    path = f"/admin/projects/{world.project_a}"
    token = page_csrf(client, path)
    resp = client.post(
        f"{path}/forms/household/state",
        data={"csrf_token": token, "state": "closing"},
        follow_redirects=True,
    )
    assert resp.request.path == path
    assert _status_notice(resp.data) == (
        "Form household is now closing: devices no longer download it; submissions of copies "
        "already filled in are accepted."
    )


def test_app_user_revoked__project_page_confirms_it(client: Any, world: World) -> None:
    login(client, "manager")
    path = f"/admin/projects/{world.project_a}"
    token = page_csrf(client, path)
    client.post(f"{path}/app-users", data={"name": "Tablet 9", "csrf_token": token})
    action = re.search(rb'action="([^"]+/revoke)"', client.get(path).data).group(1).decode()
    unconfirmed = client.post(action, data={"csrf_token": token})  # a stray click
    assert unconfirmed.status_code == 400
    assert "Tick the box to confirm: Tablet 9&#39;s QR code stops working" in (
        unconfirmed.data.decode()
    )
    assert b'<span class="badge ok">active</span>' in client.get(path).data
    resp = client.post(action, data={"csrf_token": token, "confirm": "yes"}, follow_redirects=True)
    assert resp.request.path == path
    assert _status_notice(resp.data).startswith("App user Tablet 9 is revoked")


def test_impact__figures_readable_without_the_picture(
    client: Any, cases: Any, world: World
) -> None:
    """Should give every chart's figures as a table (screen readers announce an SVG with
    role="img" by its title alone, so the figures drawn in it are otherwise unreachable)."""
    login(client, "viewer")
    page = client.get(f"/admin/projects/{world.project_a}/impact").data.decode()
    figures = re.findall(r'<figure class="chart-figure">(.*?)</figure>', page, re.S)
    assert len(figures) == 4
    tables = [re.search(r"<table[^>]*>.*?</table>", f, re.S) for f in figures]
    assert all(tables), "a chart without its figures as a table"
    rows = [
        [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", r)]
        for r in re.findall(r"<tr>(.*?)</tr>", tables[0].group(0), re.S)
    ]
    assert rows == [
        ["Group", "Figure", "Survivors"],
        ["forced labour · Safety", "+0.80", "12"],
        ["forced labour · Mental wellbeing", "+0.40", "12"],
        ["csx · Safety", "suppressed", "fewer than 5, or hidden with a smaller group"],
    ]
