"""Configuration: DEFAULTS, then ``KINTSUGI_*`` environment variables, then ``test_config``.

Every environment variable the server reads is listed in :data:`ENV_VARS`; nothing else in the
package reads ``os.environ``. In production (``KINTSUGI_ENV=production``) a missing secret key is
a startup error; in development one is generated once and kept in ``var/secret_key`` so
sessions and Digest nonces survive restarts.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from server.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent


def _bool(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


#: Config key -> default. ``None`` means "derived at load time" (see :func:`load_config`).
DEFAULTS: dict[str, Any] = {
    "ENV": "development",
    "SECRET_KEY": None,
    "VAR_DIR": str(REPO_ROOT / "var"),
    "DATABASE_URL": None,  # default: sqlite:///<VAR_DIR>/kintsugi.sqlite3
    "DATA_DIR": None,  # default: <VAR_DIR>/data (local blob store)
    "BLOB_BACKEND": None,  # local | postgres; default: postgres when the DB is PostgreSQL
    "INSTRUMENTS_DIR": str(REPO_ROOT / "instruments"),
    "BASE_URL": None,  # public URL of this server (for QR codes, submission URLs in forms)
    "TRUST_PROXY": False,  # honour X-Forwarded-Proto/For/Host (only behind a proxy you run)
    "DIGEST_REALM": "kintsugi",
    # Seconds a Digest nonce stays valid before stale=true. Collect answers a challenge once and
    # then reuses that nonce with a rising nc for every request it sends (the HEAD probe, then
    # each POST of a split upload back to back, each up to ACCEPT_CONTENT_LENGTH = 100 MB). An
    # expired nonce makes OkHttp send the whole POST again, and behind a buffering proxy the
    # nonce is only checked once the body has arrived. 100 MB at 64 kbit/s (a congested 2G/EDGE
    # uplink) takes 100e6 * 8 / 64e3 = 12,500 s, about 3.5 h; 8 h covers the probe and two such
    # POSTs. Replay protection does not depend on it: the highest nc of each nonce is kept in
    # digest_nonces while the nonce is valid, and those rows are pruned once it has expired.
    "NONCE_TTL": 8 * 3600,
    "AUTH_FAIL_LIMIT": 10,  # failed logins per client IP + username (or bad tokens) ...
    "AUTH_FAIL_IP_LIMIT": 100,  # ... or per client IP whatever the username (an office NAT) ...
    "AUTH_FAIL_WINDOW": 300,  # ... within this many seconds before 429
    "ACCEPT_CONTENT_LENGTH": 100_000_000,  # X-OpenRosa-Accept-Content-Length (what Collect packs)
    "MAX_SUBMISSION_PARTS": 110,  # Collect sends at most 101 files plus the XML per POST
    "HOT_CACHE_SECONDS": 2.0,  # token -> app user, form version lookups on uploads (server.hotcache)
    "MAX_XML_BYTES": 10_000_000,  # xml_submission_file part size limit
    "DB_POOL_SIZE": 5,
    # A liveness ping costs one round trip per request; without it, the first request on a
    # connection that died (database restart) fails once and the pool is rebuilt.
    "DB_PRE_PING": False,
    "SQL_ECHO": False,
    "PASSWORD_HASH_METHOD": "scrypt",  # werkzeug generate_password_hash method
    # Put <submission action="BASE_URL/v1/projects/<id>/submission"> into published forms.
    # Off by default: Collect posts to the form's action instead of <server URL>/submission,
    # which would drop the app-user token from the URL (see server/services/publishing.py).
    "EMBED_SUBMISSION_URL": False,
    # An unlocked project key is forgotten after this many seconds without use (server.services
    # .custody): the web tier's unlocks, and the default of ``kintsugi reconcile --idle-lock``.
    "KEY_IDLE_SECONDS": 15 * 60,
    # Wrong passphrases for one project's key through the web (page or API) before 429, within
    # this many seconds. Each guess already costs 600,000 PBKDF2 rounds; this caps how many a
    # stolen admin session gets. The CLI and the worker read the database directly: not limited.
    "UNLOCK_FAIL_LIMIT": 5,
    "UNLOCK_FAIL_WINDOW": 15 * 60,
    # An offline entity update waits this many days for its predecessor in the device's branch
    # before it is applied against the latest version (Central: 5; services.entity_versions).
    "ENTITY_BACKLOG_DAYS": 5.0,
    # Threads per reconciliation worker that decrypt, verify and score side by side (RSA-OAEP
    # releases the GIL). 1 is best when workers already fill the cores; 2 helps one worker on a
    # machine with a core to spare (bench/reconcile.py: +3 % to +25 % depending on the machine).
    "RECONCILE_THREADS": 1,
}

#: Every environment variable the server reads: name -> (config key, converter).
ENV_VARS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "KINTSUGI_ENV": ("ENV", str),
    "KINTSUGI_SECRET_KEY": ("SECRET_KEY", str),
    "KINTSUGI_VAR_DIR": ("VAR_DIR", str),
    "KINTSUGI_DATABASE_URL": ("DATABASE_URL", str),
    "KINTSUGI_DATA_DIR": ("DATA_DIR", str),
    "KINTSUGI_BLOB_BACKEND": ("BLOB_BACKEND", str),
    "KINTSUGI_INSTRUMENTS_DIR": ("INSTRUMENTS_DIR", str),
    "KINTSUGI_BASE_URL": ("BASE_URL", str),
    "KINTSUGI_TRUST_PROXY": ("TRUST_PROXY", _bool),
    "KINTSUGI_DIGEST_REALM": ("DIGEST_REALM", str),
    "KINTSUGI_NONCE_TTL": ("NONCE_TTL", int),
    "KINTSUGI_AUTH_FAIL_LIMIT": ("AUTH_FAIL_LIMIT", int),
    "KINTSUGI_AUTH_FAIL_IP_LIMIT": ("AUTH_FAIL_IP_LIMIT", int),
    "KINTSUGI_AUTH_FAIL_WINDOW": ("AUTH_FAIL_WINDOW", int),
    "KINTSUGI_ACCEPT_CONTENT_LENGTH": ("ACCEPT_CONTENT_LENGTH", int),
    "KINTSUGI_MAX_SUBMISSION_PARTS": ("MAX_SUBMISSION_PARTS", int),
    "KINTSUGI_HOT_CACHE_SECONDS": ("HOT_CACHE_SECONDS", float),
    "KINTSUGI_DB_POOL_SIZE": ("DB_POOL_SIZE", int),
    "KINTSUGI_DB_PRE_PING": ("DB_PRE_PING", _bool),
    "KINTSUGI_SQL_ECHO": ("SQL_ECHO", _bool),
    "KINTSUGI_EMBED_SUBMISSION_URL": ("EMBED_SUBMISSION_URL", _bool),
    "KINTSUGI_KEY_IDLE_SECONDS": ("KEY_IDLE_SECONDS", int),
    "KINTSUGI_UNLOCK_FAIL_LIMIT": ("UNLOCK_FAIL_LIMIT", int),
    "KINTSUGI_UNLOCK_FAIL_WINDOW": ("UNLOCK_FAIL_WINDOW", int),
    "KINTSUGI_ENTITY_BACKLOG_DAYS": ("ENTITY_BACKLOG_DAYS", float),
    "KINTSUGI_RECONCILE_THREADS": ("RECONCILE_THREADS", int),
}


def read_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Return the config keys set through ``KINTSUGI_*`` environment variables."""
    environ = os.environ if environ is None else environ
    out: dict[str, Any] = {}
    for name, (key, convert) in ENV_VARS.items():
        if environ.get(name, "") != "":
            try:
                out[key] = convert(environ[name])
            except ValueError as err:
                raise ConfigError(f"{name} has an invalid value") from err
    return out


def load_config(
    test_config: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Merge DEFAULTS, the environment and ``test_config``; derive and validate the rest."""
    cfg = dict(DEFAULTS)
    cfg.update(read_env(environ))
    if test_config:
        cfg.update(test_config)
    var_dir = Path(cfg["VAR_DIR"])
    if not cfg["DATABASE_URL"]:
        var_dir.mkdir(parents=True, exist_ok=True)
        cfg["DATABASE_URL"] = f"sqlite:///{var_dir / 'kintsugi.sqlite3'}"
    cfg["DATABASE_URL"] = normalise_database_url(cfg["DATABASE_URL"])
    if not cfg["DATA_DIR"]:
        cfg["DATA_DIR"] = str(var_dir / "data")
    if not cfg["BLOB_BACKEND"]:
        cfg["BLOB_BACKEND"] = "postgres" if is_postgres(cfg["DATABASE_URL"]) else "local"
    if int(cfg["KEY_IDLE_SECONDS"]) < 1:
        raise ConfigError("KINTSUGI_KEY_IDLE_SECONDS must be at least 1 (seconds)")
    if int(cfg["RECONCILE_THREADS"]) < 1:
        raise ConfigError("KINTSUGI_RECONCILE_THREADS must be at least 1")
    if float(cfg["ENTITY_BACKLOG_DAYS"]) < 0:
        raise ConfigError("KINTSUGI_ENTITY_BACKLOG_DAYS must be 0 or more (days)")
    if cfg["BLOB_BACKEND"] not in {"local", "postgres"}:
        raise ConfigError("KINTSUGI_BLOB_BACKEND must be 'local' or 'postgres'")
    if cfg["BLOB_BACKEND"] == "postgres" and not is_postgres(cfg["DATABASE_URL"]):
        raise ConfigError("KINTSUGI_BLOB_BACKEND=postgres needs a PostgreSQL database")
    if not cfg["SECRET_KEY"]:
        if cfg["ENV"] == "production":
            raise ConfigError(
                "KINTSUGI_SECRET_KEY must be set in production (it signs Digest nonces and "
                "sessions and must be the same on every node)"
            )
        cfg["SECRET_KEY"] = _dev_secret_key(var_dir)
    # Werkzeug refuses bodies over this with 413 before we read them; room for multipart overhead.
    cfg.setdefault("MAX_CONTENT_LENGTH", cfg["ACCEPT_CONTENT_LENGTH"] + 2_000_000)
    cfg.setdefault("MAX_FORM_PARTS", max(1000, cfg["MAX_SUBMISSION_PARTS"] * 2))
    return cfg


def is_postgres(url: str) -> bool:
    """True for a PostgreSQL SQLAlchemy URL."""
    return url.startswith("postgresql")


def normalise_database_url(url: str) -> str:
    """Use psycopg 3 for plain ``postgres://``/``postgresql://`` URLs (the installed driver)."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _dev_secret_key(var_dir: Path) -> str:
    """Generate once and keep the development secret key (mode 0600) under var/."""
    var_dir.mkdir(parents=True, exist_ok=True)
    path = var_dir / "secret_key"
    if path.exists():
        return path.read_text().strip()
    key = secrets.token_urlsafe(48)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another worker won the race
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(key)
        fh.flush()
        os.fsync(fh.fileno())
    return key
