"""HTTP views (thin: parse the request, call a service, render). One blueprint per module."""

from __future__ import annotations

from typing import Any


def register_blueprints(app: Any) -> None:
    """Register every blueprint of the server."""
    from server.views import admin_pages, openrosa

    app.register_blueprint(openrosa.bp)
    admin_pages.register(app)
