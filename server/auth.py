"""Authentication for Collect: app-user token URLs, and Digest/Basic for web users.

* **App users** carry a 64-character token in the URL (``/v1/key/<token>/projects/<id>``,
  Central's layout). Only ``sha256(token)`` is stored. A well-formed but unknown or revoked
  token gets **403** (a 401 would make Collect prompt for a password it does not have).
* **Web users** (no token in the URL) get a 401 with a Digest challenge (RFC 7616, MD5, qop=auth,
  as Collect speaks it over plain http) and, only when the request is https, a Basic challenge
  as well. Nonces are ``timestamp:HMAC(secret, timestamp)``: any node sharing
  ``KINTSUGI_SECRET_KEY`` can verify them without shared state; an expired one is answered with
  ``stale=true`` so Collect retries without prompting. Nonces live ``KINTSUGI_NONCE_TTL``
  seconds, 8 hours by default: Collect reuses one nonce for every request after a challenge,
  and an expired one costs a whole resent POST of up to 100 MB (see ``server/config.py``).
* **Replay**: the nonce count ``nc`` must rise with every request on one nonce (RFC 7616
  §3.4). The highest ``nc`` accepted per nonce is a row of ``digest_nonces`` in the shared
  database (not process memory: the next request may reach another worker or node), claimed by
  one conditional upsert that only raises it; a replayed or non-increasing ``nc`` gets a 401
  with a fresh challenge and ``stale=true`` (the password was right: okhttp-digest then
  retries with the new nonce instead of prompting). Without ``qop`` there is no ``nc``: such a
  nonce is good for one request. A row expires a minute after its nonce does (issue time +
  TTL, however late the nonce was last used) and expired rows are pruned, so the table holds
  at most the nonces used within one TTL, and only a correct password writes a row.
* **Digest trade-off**: the server must keep HA1 = md5(username:realm:password), which is
  password-equivalent *for this realm only*. We store it next to the scrypt hash used for
  Basic/admin logins; changing the password replaces both, which revokes old Digest
  credentials; changing ``KINTSUGI_DIGEST_REALM`` invalidates every HA1 (users must reset
  their password). A leaked database therefore exposes Digest logins to this server: prefer
  app-user tokens for devices and https for people.
* **Rate limit**: failed authentications are rows in ``auth_failures`` (shared by every node).
  Within ``AUTH_FAIL_WINDOW`` seconds, ``AUTH_FAIL_LIMIT`` failures for one username (or of
  app-user tokens) from one client IP → 429 for that username from there; and
  ``AUTH_FAIL_IP_LIMIT`` failures from one IP whatever the username → 429 for everyone there.
  A field office puts every tablet behind one address: one tablet with an old password must
  not lock the others out, while guessing across many usernames is still slowed down.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, case, delete, func, select
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session, joinedload

from server import hotcache
from server.db import utcnow
from server.errors import AuthError, RateLimitedError
from server.models import AppUser, AuthFailure, DigestNonce, WebUser

TOKEN_RE = re.compile(r"^[A-Za-z0-9!$]{64}$")


def generate_token() -> str:
    """A new 64-character app-user token (base64 with ``/``→``!`` and ``+``→``$``, as Central)."""
    raw = base64.b64encode(secrets.token_bytes(48)).decode("ascii")
    return raw.replace("/", "!").replace("+", "$")


def hash_token(token: str) -> str:
    """sha256 hex of a token: what the database stores."""
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def find_app_user(session: Session, token: str, project_id: int) -> AppUser:
    """The active app user for ``token`` in ``project_id``; AuthError(403) otherwise."""
    if not TOKEN_RE.match(token):
        raise _forbidden()
    # joinedload: the project comes in the same round trip (this is on every Collect request)
    user = session.scalar(
        select(AppUser)
        .options(joinedload(AppUser.project))
        .where(AppUser.token_hash == hash_token(token))
    )
    if user is None or user.revoked_at is not None or user.project_id != project_id:
        raise _forbidden()
    return user


_c = AppUser.__table__.c
# Built once: constructing statements per request is a measurable share of ingest CPU.
_APP_USER_BY_TOKEN = select(_c.id, _c.project_id, _c.form_scope, _c.revoked_at).where(
    _c.token_hash == bindparam("token_hash")
)


@dataclass(slots=True)
class AppUserRef:
    """The few app-user facts the ingest path needs."""

    id: int
    project_id: int
    form_scope: list[str] | None


def find_app_user_ref(
    session: Session, token: str, project_id: int, *, cache_seconds: float = 0
) -> AppUserRef:
    """Like :func:`find_app_user` with a single Core query (the submission hot path).

    :param cache_seconds: keep a valid token's answer this long (``server.hotcache``)
    """
    if not TOKEN_RE.match(token):
        raise _forbidden()
    token_hash = hash_token(token)

    def load() -> AppUserRef | None:
        row = session.execute(_APP_USER_BY_TOKEN, {"token_hash": token_hash}).first()
        if row is None or row.revoked_at is not None:
            return None
        return AppUserRef(id=row.id, project_id=row.project_id, form_scope=row.form_scope)

    ref = hotcache.cached(session, ("app_user", token_hash), cache_seconds, load)
    if ref is None or ref.project_id != project_id:
        raise _forbidden()
    return ref


def _forbidden() -> AuthError:
    return AuthError(
        "This device's access to the server is not valid or was revoked. "
        "Ask your supervisor for a new QR code.",
        http_status=403,
    )


# ---------------------------------------------------------------- passwords / Digest HA1


def digest_ha1(username: str, realm: str, password: str) -> str:
    """md5(username:realm:password) over UTF-8, the Digest password equivalent (the challenge
    says ``charset=UTF-8`` so that clients hash the same bytes)."""
    return hashlib.md5(f"{username}:{realm}:{password}".encode(), usedforsecurity=False).hexdigest()


def set_password(user: WebUser, password: str, *, realm: str, method: str = "scrypt") -> None:
    """Set both the scrypt hash and the Digest HA1 (a change revokes old Digest credentials)."""
    from werkzeug.security import generate_password_hash

    user.password_hash = generate_password_hash(password, method=method)
    user.digest_ha1 = digest_ha1(user.username, realm, password)


def check_password(user: WebUser, password: str) -> bool:
    """Verify a password against the stored hash."""
    from werkzeug.security import check_password_hash

    return check_password_hash(user.password_hash, password)


# ---------------------------------------------------------------- nonces


def make_nonce(secret: str, now: float | None = None) -> str:
    """A stateless nonce: ``<unix time>:<random>:<hmac>`` base64url-encoded.

    The random part makes every challenge's nonce its own: nonce counts are tracked per nonce,
    and two devices challenged in the same second must not share one.
    """
    ts = str(int(time.time() if now is None else now))
    body = f"{ts}:{secrets.token_hex(8)}"
    mac = hmac.new(secret.encode(), body.encode(), hashlib.sha256).hexdigest()[:32]
    return base64.urlsafe_b64encode(f"{body}:{mac}".encode()).decode().rstrip("=")


def _nonce_parts(nonce: str) -> tuple[str, str, int] | None:
    """(signed body, mac, issue time) of a nonce, None when it is not one of ours."""
    try:
        padded = nonce + "=" * (-len(nonce) % 4)
        body, mac = base64.urlsafe_b64decode(padded.encode()).decode().rsplit(":", 1)
        ts, _random = body.split(":", 1)
        return body, mac, int(ts)
    except (ValueError, UnicodeDecodeError):
        return None


def nonce_issued_at(nonce: str) -> int | None:
    """The unix time a nonce was issued (not verified: call :func:`check_nonce` first)."""
    parts = _nonce_parts(nonce)
    return None if parts is None else parts[2]


def check_nonce(secret: str, nonce: str, ttl: int, now: float | None = None) -> str:
    """``"ok"``, ``"stale"`` (valid but expired) or ``"bad"``."""
    parts = _nonce_parts(nonce)
    if parts is None:
        return "bad"
    body, mac, issued = parts
    expected = hmac.new(secret.encode(), body.encode(), hashlib.sha256).hexdigest()[:32]
    if not hmac.compare_digest(mac.encode(), expected.encode()):
        return "bad"
    now = time.time() if now is None else now
    if issued > now + 60:
        return "bad"
    return "stale" if now - issued > ttl else "ok"


def _opaque(secret: str) -> str:
    return hmac.new(secret.encode(), b"opaque", hashlib.sha256).hexdigest()[:32]


def challenge_headers(config: dict[str, Any], *, https: bool, stale: bool = False) -> list:
    """``WWW-Authenticate`` headers: Digest always (first: Collect takes the first it supports),
    Basic only over https.

    The Digest challenge says ``charset=UTF-8`` (RFC 7616 §3.3): okhttp-digest hashes the
    credentials in the challenge's charset and, without one, in US-ASCII, turning every
    non-ASCII character of a password into ``?``; HA1 is stored over UTF-8 (:func:`digest_ha1`).
    """
    realm = config["DIGEST_REALM"]
    secret = config["SECRET_KEY"]
    digest = (
        f'Digest realm="{realm}", qop="auth", algorithm=MD5, charset=UTF-8, '
        f'nonce="{make_nonce(secret)}", opaque="{_opaque(secret)}"'
    )
    if stale:
        digest += ", stale=true"
    headers = [("WWW-Authenticate", digest)]
    if https:
        headers.append(("WWW-Authenticate", f'Basic realm="{realm}", charset="UTF-8"'))
    return headers


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """Username and password of an ``Authorization: Basic`` header (None: not Basic, or bad).

    UTF-8 is what the challenge asks for (RFC 7617) and what browsers send. Collect does not
    follow it: okhttp-digest's BasicAuthenticator uses ``okhttp3.Credentials.basic``, which
    encodes ISO-8859-1. Bytes that are not UTF-8 are therefore read as ISO-8859-1, so a
    password such as ``contraseña`` works from either. (Characters outside ISO-8859-1 cannot
    be sent by Collect's Basic at all: OkHttp replaces them with ``?``. Digest has no such gap.)
    """
    scheme, _, value = (header or "").strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except ValueError:
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("iso-8859-1")
    username, sep, password = text.partition(":")
    return (username, password) if sep else None


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def verify_digest(params: dict[str, str], *, method: str, ha1: str, request_path: str) -> bool:
    """Check a Digest ``Authorization`` against the stored HA1 (RFC 7616 MD5 / MD5-sess)."""
    from urllib.parse import unquote, urlsplit

    try:
        uri = params["uri"]
        nonce = params["nonce"]
        response = params["response"]
    except KeyError:
        return False
    # The digest covers the uri the client put in the header (path + query, as OkHttp
    # sends it); it must name the resource actually requested, or it could be replayed.
    if unquote(urlsplit(uri).path) != unquote(request_path):
        return False
    qop = params.get("qop")
    algorithm = params.get("algorithm", "MD5").upper()
    if algorithm == "MD5-SESS":
        ha1 = _md5(f"{ha1}:{nonce}:{params.get('cnonce', '')}")
    elif algorithm != "MD5":
        return False
    ha2 = _md5(f"{method}:{uri}")
    if qop == "auth":
        expected = _md5(
            f"{ha1}:{nonce}:{params.get('nc', '')}:{params.get('cnonce', '')}:auth:{ha2}"
        )
    elif qop is None:
        expected = _md5(f"{ha1}:{nonce}:{ha2}")
    else:
        return False
    return hmac.compare_digest(expected, response.lower())


# ---------------------------------------------------------------- nonce counts (replay)

_NC_RE = re.compile(r"^[0-9a-fA-F]{1,8}$")
#: How long a nonce-count row may outlive its nonce: check_nonce accepts nonces issued up to
#: 60 s in the future (clock skew between nodes).
_NC_ROW_SLACK = 60


def nonce_count(params: dict[str, str]) -> int | None:
    """The request's ``nc`` as an integer (1 when ``qop`` is absent); None when malformed."""
    if params.get("qop") is None:
        return 1  # RFC 2069 style: no count, so the nonce serves one request
    raw = params.get("nc", "")
    if not _NC_RE.match(raw):
        return None
    value = int(raw, 16)
    return value if value >= 1 else None


_NC_UPSERTS: dict[str, Any] = {}


def _nc_upsert(dialect: Dialect) -> Any:
    """``INSERT .. ON CONFLICT (nonce) DO UPDATE SET nc = new WHERE old < new`` (built once).

    The statement writes (and returns) a row exactly when the count is new and higher;
    PostgreSQL's row lock makes two racing requests with the same ``nc`` see each other (the
    second gets no row).
    """
    stmt = _NC_UPSERTS.get(dialect.name)
    if stmt is None:
        if dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        table = DigestNonce.__table__
        ins = insert(table)
        # RETURNING, not rowcount: psycopg reports -1 for this statement
        stmt = ins.on_conflict_do_update(
            index_elements=[table.c.nonce],
            set_={"nc": ins.excluded.nc},
            where=table.c.nc < ins.excluded.nc,
        ).returning(table.c.nc)
        _NC_UPSERTS[dialect.name] = stmt
    return stmt


def claim_nonce_count(
    session: Session, nonce: str, nc: int, *, ttl: int, issued: float | None = None
) -> bool:
    """Record ``nc`` as the highest count used with ``nonce``; False for a replay.

    One statement (the caller commits at once, so a rolled-back request cannot free its
    count for a replay). The row expires a minute after the nonce issued at ``issued`` (unix
    time; default now) does, so however long a nonce is used its row outlives it by no more.
    Now and then expired rows are pruned in the same transaction.
    """
    start = utcnow() if issued is None else dt.datetime.fromtimestamp(issued, dt.UTC)
    expires_at = start + dt.timedelta(seconds=ttl + _NC_ROW_SLACK)
    claimed = session.execute(
        _nc_upsert(session.get_bind().dialect),
        {"nonce": nonce, "nc": nc, "expires_at": expires_at},
    ).first()
    if secrets.randbelow(100) == 0:
        session.execute(delete(DigestNonce).where(DigestNonce.expires_at < utcnow()))
    return claimed is not None


@dataclass(slots=True)
class Credentials:
    """What the client sent in ``Authorization`` (nothing logged from here)."""

    scheme: str  # "digest" | "basic" | ""
    username: str | None
    params: dict[str, str]
    password: str | None = None


def authenticate_web_user(
    session: Session,
    config: dict[str, Any],
    creds: Credentials,
    *,
    method: str,
    path: str,
    https: bool,
) -> WebUser:
    """The web user the credentials prove, or AuthError(401) carrying a fresh challenge."""
    stale = False
    user: WebUser | None = None
    if creds.scheme == "digest" and creds.username:
        state = check_nonce(
            config["SECRET_KEY"], creds.params.get("nonce", ""), config["NONCE_TTL"]
        )
        candidate = _active_user(session, creds.username)
        if (
            candidate is not None
            and candidate.digest_ha1
            and creds.params.get("realm") == config["DIGEST_REALM"]
            and state != "bad"
            and verify_digest(
                creds.params, method=method, ha1=candidate.digest_ha1, request_path=path
            )
        ):
            nc = nonce_count(creds.params)
            if state != "ok":
                stale = True  # right password, old nonce: retry without prompting
            elif nc is not None and claim_nonce_count(
                session,
                creds.params["nonce"],
                nc,
                ttl=config["NONCE_TTL"],
                issued=nonce_issued_at(creds.params["nonce"]),
            ):
                user = candidate
            elif nc is not None:
                stale = True  # right password, count already used: a replay, or out of order
    elif creds.scheme == "basic" and https and creds.username and creds.password is not None:
        candidate = _active_user(session, creds.username)
        if candidate is not None and check_password(candidate, creds.password):
            user = candidate
    if user is not None:
        return user
    err = AuthError("Sign-in needed: check the username and password in Collect's settings.")
    err.headers = challenge_headers(config, https=https, stale=stale)  # type: ignore[attr-defined]
    err.failed_attempt = bool(creds.scheme) and not stale  # type: ignore[attr-defined]
    return _raise(err)


def _raise(err: Exception) -> Any:
    raise err


def _active_user(session: Session, username: str) -> WebUser | None:
    user = session.scalar(select(WebUser).where(WebUser.username == username))
    if user is None or user.disabled_at is not None:
        return None
    return user


# ---------------------------------------------------------------- rate limiting


def _failure_name(username: str | None) -> str | None:
    return (username or "")[:200] or None


def check_rate_limit(
    session: Session, config: dict[str, Any], client: str, username: str | None = None
) -> None:
    """RateLimitedError(429) when ``username`` (None: a token, or no name) failed too often
    from ``client`` within the window, or ``client`` did whatever the username."""
    since = utcnow() - dt.timedelta(seconds=config["AUTH_FAIL_WINDOW"])
    name = _failure_name(username)
    same = AuthFailure.username.is_(None) if name is None else AuthFailure.username == name
    total, named = session.execute(
        select(func.count(AuthFailure.id), func.count(case((same, 1)))).where(
            AuthFailure.client == client[:64], AuthFailure.at >= since
        )
    ).one()
    ip_limit = config.get("AUTH_FAIL_IP_LIMIT", 10 * config["AUTH_FAIL_LIMIT"])
    if named >= config["AUTH_FAIL_LIMIT"] or total >= ip_limit:
        raise RateLimitedError(
            "Too many failed sign-in attempts from this device. Wait a few minutes, then "
            "check the server settings and try again."
        )


def record_failure(session: Session, client: str, username: str | None) -> None:
    """Record one failed authentication (the caller commits); prunes old rows now and then."""
    session.add(AuthFailure(client=client[:64], username=_failure_name(username)))
    if secrets.randbelow(100) == 0:
        cutoff = utcnow() - dt.timedelta(days=1)
        session.execute(delete(AuthFailure).where(AuthFailure.at < cutoff))
