"""Structured logs: one JSON object per line, a request id on every request, nothing sensitive.

Each request gets an id (a safe ``X-Request-Id`` from the proxy, else a fresh one), echoed in the
response header and attached to every record logged while it runs. The access line carries the
method, the route path with app-user tokens replaced by ``***``, the status and the duration;
never the query string, headers, body or answers. Messages pass through the token redactor too.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import secrets
import sys
import time
import traceback
from typing import Any

from server.logs import RedactTokens, redact

_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._\-]{8,64}$")
access_log = logging.getLogger("kintsugi.access")


def _current_request_id() -> str | None:
    try:
        from flask import g, has_request_context

        if has_request_context():
            return g.get("request_id")
    except Exception:
        return None
    return None


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON line (time, level, logger, message, request id, extras)."""

    EXTRA_KEYS = ("method", "path", "status", "duration_ms", "remote")

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        rid = getattr(record, "request_id", None) or _current_request_id()
        if rid:
            out["request_id"] = rid
        for key in self.EXTRA_KEYS:
            if hasattr(record, key):
                out[key] = getattr(record, key)
        if record.exc_info:
            # type and traceback only: exception messages from parsers may quote input
            out["exc_type"] = record.exc_info[0].__name__ if record.exc_info[0] else None
            out["traceback"] = redact(frames_only(record.exc_info))
        return json.dumps(out, ensure_ascii=False)


def frames_only(exc_info: Any) -> str:
    """A traceback with the frames and exception types of every chained exception, but none
    of their messages: a message may quote what it failed on (a decrypted answer)."""
    out: list[str] = []
    te: traceback.TracebackException | None = traceback.TracebackException(*exc_info)
    while te is not None:
        out.append("Traceback (most recent call last):\n")
        out.extend(te.stack.format())
        name = getattr(te, "exc_type_str", None) or getattr(te.exc_type, "__qualname__", "?")
        out.append(f"{name} (message not logged)\n")
        te = te.__cause__ or (None if te.__suppress_context__ else te.__context__)
        if te is not None:
            out.append("caused by / raised while handling:\n")
    return "".join(out)


def configure_json_logging(level: int = logging.INFO) -> None:
    """Send every log record to stderr as JSON lines (idempotent)."""
    root = logging.getLogger()
    for handler in root.handlers:
        if isinstance(handler.formatter, JsonFormatter):
            return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactTokens())
    root.addHandler(handler)
    root.setLevel(level)


def init_app(app: Any) -> None:
    """Request ids, the access line, and JSON logging when ``LOG_JSON`` (default: production)."""
    from flask import g, request

    if app.config.get("LOG_JSON", app.config.get("ENV") == "production"):
        configure_json_logging()

    @app.before_request
    def _start() -> None:
        incoming = request.headers.get("X-Request-Id", "")
        g.request_id = incoming if _SAFE_REQUEST_ID.match(incoming) else secrets.token_hex(8)
        g.request_started = time.perf_counter()

    @app.after_request
    def _finish(resp: Any) -> Any:
        rid = g.get("request_id")
        if rid:
            resp.headers["X-Request-Id"] = rid
        started = g.get("request_started")
        access_log.info(
            "%s %s %s",
            request.method,
            redact(request.path),
            resp.status_code,
            extra={
                "method": request.method,
                "path": redact(request.path),
                "status": resp.status_code,
                "duration_ms": round((time.perf_counter() - started) * 1000, 1)
                if started
                else None,
                "request_id": rid,
            },
        )
        return resp
