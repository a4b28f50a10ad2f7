"""gunicorn settings for the Kintsugi web tier (container and bare-metal alike).

Every value can be overridden with the usual ``GUNICORN_CMD_ARGS``; the bind address and worker
count also come from ``KINTSUGI_BIND`` / ``KINTSUGI_WORKERS`` for compose files.
"""

import os

wsgi_app = "server:create_app()"
bind = os.environ.get("KINTSUGI_BIND", "0.0.0.0:8080")
workers = int(os.environ.get("KINTSUGI_WORKERS", "2"))
threads = int(os.environ.get("KINTSUGI_THREADS", "4"))
worker_class = "gthread"
# Collect uploads up to 100 MB over slow field networks: give a request time to arrive.
timeout = 300
graceful_timeout = 30
keepalive = 5
# The app writes its own JSON access line (with request id, token redacted); gunicorn's is off.
accesslog = None
errorlog = "-"
loglevel = os.environ.get("KINTSUGI_LOG_LEVEL", "info")
forwarded_allow_ips = os.environ.get("KINTSUGI_FORWARDED_ALLOW_IPS", "127.0.0.1")
# gunicorn's own messages as JSON lines too (same formatter as the app).
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "server.logging.JsonFormatter"}},
    "handlers": {
        "stderr": {
            "class": "logging.StreamHandler",
            "formatter": "json",
            "stream": "ext://sys.stderr",
        }
    },
    "root": {"handlers": ["stderr"], "level": loglevel.upper()},
    "loggers": {
        "gunicorn.error": {"handlers": ["stderr"], "level": loglevel.upper(), "propagate": False}
    },
}
