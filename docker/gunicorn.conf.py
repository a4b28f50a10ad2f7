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
# Collect asks the entity-list integrity API about every case a tablet made offline in one GET
# (?id=<uuid>%2C<uuid>...: 39 bytes a case). gunicorn's default 4094-byte request line turns
# that away (414) past about 100 cases, and the form update on the tablet then fails; its
# largest finite limit (8190) would stop at about 200. So no limit on the line here: the body
# limits stay, and a proxy in front must allow long lines too (nginx:
# large_client_header_buffers 4 64k allows about 1,600 cases).
limit_request_line = 0
# The same query comes back in a header: a web user signed in with Digest sends the whole path
# and query again in the uri="..." of Authorization (okhttp-digest), so that header is as long
# as the request line. gunicorn refuses a header field over limit_request_field_size (default
# 8190, about 200 cases), and 0 does NOT lift it: gunicorn's http/message.py replaces any value
# <= 0 by that default (checked in gunicorn 27.0.1, whatever its docs say). 64 KiB matches the
# nginx buffers above (about 1,600 cases); gunicorn buffers at most limit_request_fields (100)
# fields of that size per request.
limit_request_field_size = 65536
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
