"""Security headers on every response (the admin pages set a stricter CSP of their own).

HSTS is sent only on requests that arrived over https (directly or, with
``KINTSUGI_TRUST_PROXY``, through the TLS-terminating proxy): sending it over plain http is
ignored by browsers and would pin a development host.
"""

from __future__ import annotations

from typing import Any

HSTS = "max-age=63072000; includeSubDomains"
DEFAULT_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"


def init_app(app: Any) -> None:
    """Add nosniff, frame denial, a default CSP and (over https) HSTS to every response."""
    from flask import request

    @app.after_request
    def _security_headers(resp: Any) -> Any:
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("X-Frame-Options", "DENY")
        resp.headers.setdefault("Content-Security-Policy", DEFAULT_CSP)
        resp.headers.setdefault("Referrer-Policy", "same-origin")
        if request.is_secure:
            resp.headers.setdefault("Strict-Transport-Security", HSTS)
        return resp
