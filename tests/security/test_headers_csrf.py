"""Browser-facing protections: security headers, session cookie flags, CSRF on every POST."""

from __future__ import annotations

from sqlalchemy import func, select

from server.models import Project
from tests.admin.conftest import HTTPS, login, page_csrf


def test_admin_page__https__csp_nosniff_frame_denial_hsts(client, world):
    """Should send CSP (no framing), nosniff, X-Frame-Options and HSTS on an https page."""
    resp = client.get("/admin/login", base_url=HTTPS)
    assert resp.status_code == 200
    csp = resp.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert resp.headers["Strict-Transport-Security"].startswith("max-age=")


def test_any_response__plain_http__headers_but_no_hsts(client, field):
    """Should protect every response (OpenRosa, health) and send HSTS only over https."""
    for path in ("/healthz", f"{field.base}/formList", "/api/v1/openapi.json"):
        resp = client.get(path)
        assert resp.headers["X-Content-Type-Options"] == "nosniff", path
        assert resp.headers["X-Frame-Options"] == "DENY", path
        assert "Content-Security-Policy" in resp.headers, path
        assert "Strict-Transport-Security" not in resp.headers, path


def test_session_cookie__https_base_url__secure_httponly_samesite(make_app, world):
    """Should mark the admin session cookie Secure, HttpOnly and SameSite behind https."""
    app = make_app(BASE_URL="https://kintsugi.example.org")
    client = app.test_client()
    page = client.get("/admin/login", base_url=HTTPS)
    import re

    token = re.search(rb'name="csrf_token" value="([^"]+)"', page.data).group(1).decode()
    resp = client.post(
        "/admin/login",
        base_url=HTTPS,
        data={"csrf_token": token, "username": "admin", "password": "long enough password"},
    )
    cookies = [v for k, v in resp.headers.items() if k == "Set-Cookie"]
    assert cookies, resp.status_code
    flags = cookies[-1].lower()
    assert "secure" in flags and "httponly" in flags and "samesite=lax" in flags


def test_login__no_csrf_token__refused_no_session(client, world):
    """Should refuse a login POST without the form's CSRF token (login CSRF)."""
    client.get("/admin/login")
    resp = client.post(
        "/admin/login", data={"username": "admin", "password": "long enough password"}
    )
    assert resp.status_code in (400, 403)
    assert client.get("/admin/").status_code in (302, 303)  # still signed out


def test_admin_post__missing_or_wrong_csrf__refused_nothing_changed(app, client, world):
    """Should refuse a page POST without or with a wrong CSRF token and change nothing."""
    assert login(client, "admin").status_code in (302, 303)
    with app.extensions["kintsugi.db"].sessionmaker() as s:
        before = s.scalar(select(func.count()).select_from(Project))
    for token in (None, "forged-token"):
        data = {"name": "Forged office"}
        if token:
            data["csrf_token"] = token
        resp = client.post("/admin/projects", data=data)
        assert resp.status_code in (400, 403), resp.status_code
    # the same request with the page's token goes through
    good = page_csrf(client, "/admin/")
    assert (
        client.post("/admin/projects", data={"name": "Real", "csrf_token": good}).status_code < 400
    )
    with app.extensions["kintsugi.db"].sessionmaker() as s:
        assert s.scalar(select(func.count()).select_from(Project)) == before + 1


def test_api_with_session_cookie__no_csrf_header__403(client, world):
    """Should refuse a cookie-authenticated API write without X-CSRF-Token."""
    login(client, "admin")
    resp = client.post("/api/v1/projects", json={"name": "Via cookie"}, base_url=HTTPS)
    assert resp.status_code == 403
