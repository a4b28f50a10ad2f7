"""``/healthz`` (the process answers) and ``/readyz`` (it can do its job), plus 503 mapping.

``/readyz`` checks the database answers, its schema is at the migrations' head (an upgrade that
was not run makes the node unready rather than half-working) and the blob store takes a write.
It is what a load balancer or the container healthcheck polls; it reveals no data.

This module also maps "the database is unreachable" and "the disk is full" to 503 with an
OpenRosaResponse message: Collect keeps the submission and retries later.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
from pathlib import Path
from typing import Any

from flask import Blueprint, current_app, jsonify

from server.errors_http import error_response

bp = Blueprint("health", __name__)
log = logging.getLogger(__name__)

DB_DOWN_MESSAGE = (
    "The server cannot reach its database right now. Your data is kept; try again later."
)
DISK_FULL_MESSAGE = "The server is out of storage space. Your data is kept; try again later."


def _head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    from server.db import alembic_config

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def check_database(engine: Any) -> tuple[bool, str]:
    """(ok, detail): the database answers and is migrated to head."""
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import text

    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            current = MigrationContext.configure(conn).get_current_revision()
    except Exception as err:
        return False, f"unreachable ({type(err).__name__})"
    head = _head_revision()
    if current != head:
        return (
            False,
            f"schema at {current or 'nothing'}, code expects {head}: run kintsugi db upgrade",
        )
    return True, "ok"


def check_blobs(config: dict, engine: Any) -> tuple[bool, str]:
    """(ok, detail): the blob store accepts a write (a probe file, or the blobs table)."""
    if config["BLOB_BACKEND"] == "postgres":
        from sqlalchemy import text

        try:
            with engine.connect() as conn:
                trans = conn.begin()
                conn.execute(text("SELECT count(*) FROM blobs WHERE false"))
                trans.rollback()
        except Exception as err:
            return False, f"blobs table unusable ({type(err).__name__})"
        return True, "ok"
    root = Path(config["DATA_DIR"])
    probe = root / f".readyz-{secrets.token_hex(4)}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"ok")
            os.fsync(fd)
        finally:
            os.close(fd)
            probe.unlink(missing_ok=True)
    except OSError as err:
        return False, f"not writable ({errno.errorcode.get(err.errno or 0, 'error')})"
    return True, "ok"


@bp.get("/healthz")
def healthz() -> Any:
    """200 while the process serves requests (no dependency checked)."""
    resp = jsonify({"status": "ok"})
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.get("/readyz")
def readyz() -> Any:
    """200 when database, schema and blob store are usable, else 503 with what failed."""
    engine = current_app.extensions["kintsugi.db"].engine
    db_ok, db_detail = check_database(engine)
    blob_ok, blob_detail = check_blobs(current_app.config, engine) if db_ok else (False, "skipped")
    ok = db_ok and blob_ok
    resp = jsonify(
        {
            "status": "ready" if ok else "unavailable",
            "checks": {"database": db_detail, "blobs": blob_detail},
        }
    )
    resp.status_code = 200 if ok else 503
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _unavailable(message: str) -> Any:
    return error_response(message, 503, "503", code=False, headers={"Retry-After": "60"})


def _failed() -> Any:
    return error_response(
        "The server had a problem; nothing was saved. Try again later.", 500, "500", code=False
    )


NUL_MESSAGE = "The request contains a NUL character, which no name, code or text can hold."


def _bad_request(message: str) -> Any:
    return error_response(message, 400, "BAD_REQUEST")


def _is_nul_error(err: Exception) -> bool:
    """psycopg refuses a NUL character in text before it reaches PostgreSQL."""
    return "NUL" in str(getattr(err, "orig", "")) and getattr(err.orig, "sqlstate", None) is None


def init_app(app: Any) -> None:
    """Register the health blueprint and the 503 handlers (database down, disk full)."""
    from flask import request
    from sqlalchemy.exc import DataError, DBAPIError, OperationalError

    from server import security

    app.register_blueprint(bp)
    security.init_app(app)  # nosniff, frame denial, default CSP, HSTS over https

    @app.before_request
    def _refuse_nul() -> Any:
        # a NUL in a path or query value cannot name anything; PostgreSQL cannot even compare
        # it (found by schemathesis: a 500 before)
        args = [x for key, values in request.args.lists() for x in (key, *values)]
        if "\x00" in request.path or any("\x00" in x for x in args):
            return _bad_request(NUL_MESSAGE)
        return None

    @app.errorhandler(OperationalError)
    def _db_down(err: OperationalError) -> Any:
        log.error("database unavailable: %s", type(err.orig).__name__ if err.orig else "?")
        return _unavailable(DB_DOWN_MESSAGE)

    @app.errorhandler(DataError)
    @app.errorhandler(OverflowError)
    def _out_of_range(err: Exception) -> Any:
        # An id in the URL beyond the column's range (found by schemathesis): no row can have
        # it, so it is "not found" rather than a crash. PostgreSQL says numeric_value_out_of_range
        # (SQLSTATE 22003), SQLite's driver OverflowError. Any other DataError is a failure.
        if isinstance(err, DataError) and _is_nul_error(err):
            return _bad_request(NUL_MESSAGE)  # in a body: text the database cannot store
        if isinstance(err, DataError) and getattr(err.orig, "sqlstate", None) != "22003":
            log.error("database error: %s", type(err.orig).__name__)
            return _failed()
        return error_response("Not found on this server.", 404, "NOT_FOUND")

    @app.errorhandler(DBAPIError)
    def _db_error(err: DBAPIError) -> Any:
        if err.connection_invalidated:
            log.error("database connection lost")
            return _unavailable(DB_DOWN_MESSAGE)
        log.error("database error: %s", type(err).__name__)
        return _failed()

    @app.errorhandler(OSError)
    def _os_error(err: OSError) -> Any:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            log.error("blob store out of space")
            return _unavailable(DISK_FULL_MESSAGE)
        log.error("storage error: %s", errno.errorcode.get(err.errno or 0, type(err).__name__))
        return _failed()
