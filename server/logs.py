"""Logging safety: app-user tokens live in URLs, so request logs must never show them."""

from __future__ import annotations

import logging
import re

_TOKEN_IN_PATH = re.compile(r"(/v1/key/)[A-Za-z0-9!$]{8,}(/)")
_TOKEN_IN_QUERY = re.compile(r"([?&]st=)[^&\s\"]+")


def redact(text: str) -> str:
    """Replace app-user tokens in URLs with ``***``."""
    return _TOKEN_IN_QUERY.sub(r"\1***", _TOKEN_IN_PATH.sub(r"\1***\2", text))


class RedactTokens(logging.Filter):
    """A filter that rewrites records so no token reaches a handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True


_FILTER = RedactTokens()


def install_filters() -> None:
    """Attach the redaction filter to the request loggers (werkzeug dev server, gunicorn)."""
    for name in ("werkzeug", "gunicorn.access", "gunicorn.error"):
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
