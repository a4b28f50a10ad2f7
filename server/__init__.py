"""Kintsugi sync server: the Flask app factory.

Production: ``gunicorn 'server:create_app()'`` (run ``kintsugi db upgrade`` first: the factory
never migrates). Development: ``kintsugi setup --demo && kintsugi serve``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Heavy imports (flask, sqlalchemy) stay inside create_app so `import server.cli` stays light.


def create_app(test_config: Mapping[str, Any] | None = None):  # -> flask.Flask
    """Build the WSGI app: config (DEFAULTS → env ``KINTSUGI_*`` → test_config), DB, blueprints."""
    from flask import Flask

    from server import db, errors_http, health, views
    from server import logging as kintsugi_logging
    from server.config import load_config
    from server.logs import install_filters

    install_filters()
    app = Flask(__name__, instance_relative_config=False)
    app.config.from_mapping(load_config(test_config))
    if app.config["TRUST_PROXY"]:
        from werkzeug.middleware.proxy_fix import ProxyFix

        # Only behind a proxy we run: otherwise clients could claim https or another IP.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1)  # type: ignore[method-assign]
    db.init_app(app)
    errors_http.init_app(app)
    views.register_blueprints(app)
    health.init_app(app)  # /healthz, /readyz; database down or disk full -> 503
    kintsugi_logging.init_app(app)  # JSON lines with request ids
    return app
