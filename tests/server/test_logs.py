"""Tokens never reach request logs."""

from __future__ import annotations

import logging

from server.logs import RedactTokens, redact

TOKEN = "KAClR7ivIgrWp50F2wubMl1MlI535ASlkNRzLmGqULUyyuxJPfRNBB!BBX8f6Nw5"


def test_redact__token_in_path_and_query__hidden():
    """Should hide the token in /v1/key/<token>/ and ?st=<token>."""
    line = f'"GET /v1/key/{TOKEN}/projects/1/formList?deviceID=x HTTP/1.1" 200'
    assert TOKEN not in redact(line) and "/v1/key/***/projects/1" in redact(line)
    assert redact(f"/v1/projects/1/formList?st={TOKEN}&a=1") == "/v1/projects/1/formList?st=***&a=1"


def test_filter__werkzeug_style_record__rewritten():
    """Should rewrite %-style records (werkzeug passes the request line as an argument)."""
    record = logging.LogRecord(
        "werkzeug", logging.INFO, __file__, 1, '%s - - [%s] "%s" %s', (
            "127.0.0.1", "now", f"POST /v1/key/{TOKEN}/projects/1/submission HTTP/1.1", "201"
        ), None
    )  # fmt: skip
    assert RedactTokens().filter(record)
    assert TOKEN not in record.getMessage()


def test_create_app__installs_filter_on_request_loggers(app):
    """Should attach the filter when the app is built."""
    assert any(isinstance(f, RedactTokens) for f in logging.getLogger("werkzeug").filters)
