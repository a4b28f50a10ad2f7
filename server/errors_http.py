"""Maps errors to HTTP responses: OpenRosa XML for Collect-facing routes, JSON elsewhere.

Collect shows the first ``<message>`` of an OpenRosaResponse, so every error a device can meet
carries one written for a field worker (openrosa.md §6.3).
"""

from __future__ import annotations

import logging
from typing import Any

from server.errors import ServerError

log = logging.getLogger(__name__)

_HTTP_MESSAGES = {
    400: "The server could not understand this request.",
    404: "Not found on this server. Check the server address in Collect's settings.",
    405: "This address does not accept that kind of request.",
    413: "The upload is too large for this server. Ask your supervisor to raise the limit.",
}


def openrosa_error(message: str, status: int, headers: dict[str, str] | None = None) -> Any:
    """An OpenRosaResponse error (``nature="error"``) with the OpenRosa headers."""
    from flask import Response

    from sync_protocol.openrosa import (
        OPENROSA_HEADERS,
        XML_CONTENT_TYPE,
        render_openrosa_response,
    )

    resp = Response(
        render_openrosa_response(message, nature="error"),
        status=status,
        content_type=XML_CONTENT_TYPE,
    )
    resp.headers.update(OPENROSA_HEADERS)
    resp.headers["Cache-Control"] = "no-store"
    if headers:
        resp.headers.update(headers)
    return resp


#: what the admin pages say instead (a person in a browser, not Collect or a script)
_ADMIN_MESSAGES = {
    404: "This page does not exist. Check the address, or start again from the projects page.",
    405: (
        "This address cannot be opened directly: it takes a form sent from one of the admin "
        "pages. Go back and use the page's button."
    ),
    413: (
        "The upload is too large for this server: choose a smaller file, or ask the server's "
        "operator to raise the limit."
    ),
}


def _admin_page() -> bool:
    from flask import request

    return request.path == "/admin" or request.path.startswith("/admin/")


def _admin_error(message: str, status: int) -> Any:
    from server.views.admin_pages import error_page

    return error_page(message, status)


def _wants_json() -> bool:
    from flask import request

    # /api/ paths answer JSON even when routing failed (404/405 have no blueprint)
    if request.path.startswith("/api/"):
        return True
    return bool(request.blueprint) and request.blueprint != "openrosa"


def error_response(
    message: str,
    status: int,
    error: str,
    *,
    code: bool = True,
    headers: dict[str, str] | None = None,
) -> Any:
    """``message`` for whoever asked: the admin error page in a browser under ``/admin``, JSON
    (``{"error", "message"[, "code"]}``) for the API and other non-Collect routes, an
    OpenRosaResponse for Collect. Decided by the path too, so a request no route matched (a
    refused NUL, an id no converter takes) is answered in its caller's format."""
    from flask import jsonify

    if _admin_page():
        resp = _admin_error(message, status)
    elif _wants_json():
        resp = jsonify({"error": error, "message": message, **({"code": status} if code else {})})
        resp.status_code = status
    else:
        return openrosa_error(message, status, headers)
    resp.headers.update(headers or {})
    return resp


def init_app(app: Any) -> None:
    """Register the error handlers."""
    from werkzeug.exceptions import HTTPException

    @app.errorhandler(ServerError)
    def _server_error(err: ServerError) -> Any:
        return error_response(
            err.message, err.http_status, err.code, headers=getattr(err, "headers", None)
        )

    @app.errorhandler(HTTPException)
    def _http_error(err: HTTPException) -> Any:
        status = err.code or 500
        if _admin_page():
            return _admin_error(
                _ADMIN_MESSAGES.get(status, err.description or "Request failed."), status
            )
        message = _HTTP_MESSAGES.get(status, err.description or "Request failed.")
        return error_response(message, status, str(status))

    @app.errorhandler(Exception)
    def _unexpected(err: Exception) -> Any:
        # Log the type and traceback only (never the request body).
        log.exception("unhandled error: %s", type(err).__name__)
        return error_response(
            "The server had a problem; nothing was saved. Try again later.", 500, "500"
        )
