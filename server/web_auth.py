"""Web-user sessions, CSRF and role checks for the admin pages and the admin JSON API.

Decisions:

* **Pages** use Flask's signed session cookie (``HttpOnly``, ``SameSite=Lax``, ``Secure`` when
  ``BASE_URL`` is https). The session holds the user id and a short digest of the password hash,
  so changing a password (or disabling the user) ends every open session.
* **CSRF**: every POST form carries ``csrf_token`` (a random per-session value compared in
  constant time); API calls authenticated by the cookie must send it as ``X-CSRF-Token``.
* **API** clients either reuse the page session (cookie + ``X-CSRF-Token``) or send HTTP Basic
  with their username and password, accepted **only over https** (the password would otherwise
  cross the network readable). Basic calls carry no CSRF token, but a browser that once
  answered the API's Basic challenge attaches the cached credentials to any request to this
  server, a cross-site form POST included: so a state-changing Basic call that a browser says
  comes from another site (``Sec-Fetch-Site``, ``Origin``) is refused. Scripts and Collect send
  neither header. Failed Basic attempts feed the same DB rate limit as Collect's Digest logins.
* **Exports** are GET downloads; one a browser fetches for another site (a link, a redirect:
  ``SameSite=Lax`` sends the cookie) is refused, so nobody is made to download survivor data,
  with an audit row in their name, by a page elsewhere.
* **Roles**: admin > manager > viewer. Admins are site-wide; managers and viewers hold their
  role per project (:mod:`server.services.access`). Every view whose URL names a project goes
  through :func:`api_route` or the pages' ``page`` decorator, which check the caller's role *in
  that project* (403, the same for a project that does not exist); the role found is kept in
  ``g.project_role`` for the templates. Lookups of a project's resources still filter by
  project id, so another project's ids answer 404.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from typing import Any

from server.errors import AuthError, ForbiddenError
from server.models import WebUser
from server.services.access import ROLE_RANK, require_project_role, site_role

#: A signed-in session ends this long after sign-in, whatever the activity (shared office PCs).
SESSION_MAX_AGE = 12 * 3600

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class CSRFError(ForbiddenError):
    """A state-changing request without the session's CSRF token."""

    code = "CSRF"


def init_app(app: Any) -> None:
    """Session cookie flags (HttpOnly is Flask's default)."""
    base = app.config.get("BASE_URL") or ""
    # Flask's defaults are present keys (SameSite None, name "session"): set ours explicitly
    if not app.config.get("SESSION_COOKIE_SAMESITE"):
        app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    if base.startswith("https://"):
        app.config["SESSION_COOKIE_SECURE"] = True
    if app.config.get("SESSION_COOKIE_NAME") in (None, "session"):
        app.config["SESSION_COOKIE_NAME"] = "kintsugi_session"


def _pw_tag(user: WebUser) -> str:
    return hashlib.sha256(user.password_hash.encode("utf-8")).hexdigest()[:16]


def role_at_least(user: WebUser | None, role: str) -> bool:
    """True when ``user`` has ``role`` or a higher one: in the project of this request when
    the URL names one (``g.project_role``), else site-wide (:func:`access.site_role`)."""
    from flask import g, has_app_context

    if user is None:
        return False
    held = g.get("project_role") if has_app_context() else None
    return ROLE_RANK[held or site_role(user)] >= ROLE_RANK[role]


def login_session(user: WebUser) -> None:
    """Start a fresh session for ``user`` (new CSRF token: no session fixation)."""
    from flask import session

    session.clear()
    session["uid"] = user.id
    session["pw"] = _pw_tag(user)
    session["csrf"] = secrets.token_urlsafe(32)
    session["t"] = int(time.time())


def logout_session() -> None:
    """Forget the session."""
    from flask import session

    session.clear()


def csrf_token() -> str:
    """The session's CSRF token (created on first use, e.g. for the login form)."""
    from flask import session

    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


def check_csrf(sent: str | None) -> None:
    """CSRFError unless ``sent`` equals the session's token."""
    from flask import session

    expected = session.get("csrf")
    if not expected or not sent or not hmac.compare_digest(str(expected), str(sent)):
        raise CSRFError(
            "This form has expired or did not come from this site. Reload the page and try again."
        )


def from_another_site() -> bool:
    """Whether a browser sent this request for another site: ``Sec-Fetch-Site`` says
    cross-site or same-site (a sibling host), or ``Origin`` names another origin than this
    server's. Collect, scripts and curl send neither header."""
    from flask import current_app, request

    if request.headers.get("Sec-Fetch-Site", "").lower() in ("cross-site", "same-site"):
        return True
    origin = request.headers.get("Origin")
    if origin is None:
        return False
    ours = {request.host_url.rstrip("/"), str(current_app.config.get("BASE_URL") or "").rstrip("/")}
    return origin.rstrip("/") not in ours


def refuse_other_sites(what: str) -> None:
    """ForbiddenError when :func:`from_another_site`."""
    if from_another_site():
        raise ForbiddenError(
            f"Refused: {what} was requested by another website. Open Kintsugi's own page and "
            "do it there."
        )


def session_user(db_session: Any) -> WebUser | None:
    """The web user of the session cookie, if it is still valid."""
    from flask import session

    uid = session.get("uid")
    if uid is None:
        return None
    user = db_session.get(WebUser, uid)
    expired = time.time() - float(session.get("t", 0)) > SESSION_MAX_AGE
    if (
        expired
        or user is None
        or user.disabled_at is not None
        or session.get("pw") != _pw_tag(user)
    ):
        session.clear()
        return None
    return user


def basic_user(db_session: Any) -> WebUser | None:
    """The web user proven by HTTP Basic over https (None when no Basic header was sent)."""
    from flask import current_app, request

    from server.auth import basic_credentials, check_password, check_rate_limit, record_failure

    header = request.headers.get("Authorization", "")
    if header.split(" ", 1)[0].lower() != "basic":
        return None
    if not request.is_secure:
        raise AuthError("HTTP Basic is accepted only over https.")
    username, password = basic_credentials(header) or ("", "")
    client = request.remote_addr or "unknown"
    check_rate_limit(db_session, current_app.config, client, username)
    user = db_session.query(WebUser).filter_by(username=username).one_or_none()
    if user is not None and user.disabled_at is None and check_password(user, password):
        return user
    record_failure(db_session, client, username)
    db_session.commit()
    raise AuthError("Wrong username or password.")


def api_user(db_session: Any) -> WebUser:
    """The caller of an API request (Basic over https, or session + CSRF header)."""
    from flask import request

    user = basic_user(db_session)
    if user is not None:
        if request.method in UNSAFE_METHODS:
            refuse_other_sites("this change")  # a browser's cached Basic credentials
        return user
    user = session_user(db_session)
    if user is None:
        raise AuthError("Sign in first (session cookie, or HTTP Basic over https).")
    if request.method in UNSAFE_METHODS:
        check_csrf(request.headers.get("X-CSRF-Token"))
    return user


def require(user: WebUser, role: str) -> None:
    """ForbiddenError unless ``user`` has at least ``role`` site-wide (only admins rank above
    viewer outside a project)."""
    if ROLE_RANK[site_role(user)] < ROLE_RANK[role]:
        raise ForbiddenError(f"This needs the {role} role; you are signed in as {user.role}.")


def authorize(db: Any, user: WebUser, role: str, view_args: dict[str, Any]) -> None:
    """Check ``role`` in the project the URL names (``project_id``), else site-wide.

    The project role found is kept in ``g.project_role`` (templates, :func:`role_at_least`).
    """
    from flask import g

    project_id = view_args.get("project_id")
    if project_id is None:
        require(user, role)
        return
    g.project_role = require_project_role(db, user, project_id, role)


def api_route(role: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: authenticate the API caller, check ``role``, pass ``(db, user, **kwargs)``."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(**kwargs: Any) -> Any:
            from server.db import get_session

            db = get_session()
            user = api_user(db)
            authorize(db, user, role, kwargs)
            return fn(db, user, **kwargs)

        wrapper.required_role = role  # type: ignore[attr-defined]
        return wrapper

    return deco
