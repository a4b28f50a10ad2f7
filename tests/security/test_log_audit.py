"""Log audit: drive the whole Collect + admin flow with every logger at DEBUG and check that
no password, passphrase, app-user token, answer or rating note reaches a log line."""

from __future__ import annotations

import errno
import logging
import re
from typing import Any

from server.logging import JsonFormatter
from tests.admin.conftest import HTTPS, basic
from tests.server.collect import multipart_body
from tests.server.conftest import publish
from tests.server.forms import instance, xform

PASSWORD = "long enough password"
WRONG_PASSWORD = "Wrong-Secret-Pw-9431"
PASSPHRASE = "audit passphrase kingfisher 7781"
ANSWER = "Audit Answer Kestrel Ravine"
NOTE = "Audit rating note heron marsh"


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.fmt = JsonFormatter()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.fmt.format(record))
        # the raw message and arguments too, as any other handler would see them
        self.lines.append(repr(record.msg) + repr(record.args))


def test_full_flow__all_logs_captured__no_secret_or_answer_in_them(
    app, client, field, world, monkeypatch
):
    """Should keep passwords, passphrases, tokens, answers and notes out of every log line."""
    capture = _Capture()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(capture)
    root.setLevel(logging.DEBUG)
    try:
        _drive(app, client, field, monkeypatch)
    finally:
        root.removeHandler(capture)
        root.setLevel(old_level)
    text = "\n".join(capture.lines)
    assert "kintsugi.access" in text  # the audit really saw the request logs
    for secret in (PASSWORD, WRONG_PASSWORD, PASSPHRASE, ANSWER, NOTE, field.token):
        assert secret not in text, f"{secret[:6]}... leaked into the logs"
    assert not re.search(r"/v1/key/(?!\*\*\*/)[^/]+/", text)


def _drive(app: Any, client: Any, field: Any, monkeypatch: Any) -> None:
    publish(app, field.project_id, xform())
    c = field.collect
    assert c.form_list().status_code == 200
    assert c.head_submission().status_code == 204
    ok = multipart_body(instance(name=ANSWER))
    assert c.post_raw(*ok).status_code == 201
    assert c.post_raw(*ok).status_code == 201  # duplicate
    conflict = instance(instance_id=re.search(rb"uuid:[^<]+", ok[0]).group().decode(), name=NOTE)
    assert c.post_raw(*multipart_body(conflict)).status_code == 409
    broken = f"<data id='household'><name>{ANSWER}</name><meta><instanceID>".encode()
    assert c.post_raw(*multipart_body(broken)).status_code == 400
    # ... through the token in the query string, too
    client.get(f"/v1/projects/{field.project_id}/formList?st={field.token}")
    # disk full while storing an answer
    import server.views.openrosa as views

    real = views.make_blob_store

    class Full:
        def __init__(self, inner: Any) -> None:
            self.inner, self.transactional = inner, getattr(inner, "transactional", False)

        def put(self, key: str, data: Any) -> Any:
            raise OSError(errno.ENOSPC, f"No space left writing {ANSWER}")

        def __getattr__(self, name: str) -> Any:
            if name in {"put_many", "insert_cte"}:
                raise AttributeError(name)  # every blob goes through put()
            return getattr(self.inner, name)

    monkeypatch.setattr(views, "make_blob_store", lambda cfg, s: Full(real(cfg, s)))
    assert c.post_raw(*multipart_body(instance(name=ANSWER))).status_code == 503
    monkeypatch.setattr(views, "make_blob_store", real)
    # admin: failed and successful sign-in, encrypted project, key custody with passphrases
    page = client.get("/admin/login")
    token = re.search(rb'name="csrf_token" value="([^"]+)"', page.data).group(1).decode()
    client.post(
        "/admin/login",
        data={"csrf_token": token, "username": "admin", "password": WRONG_PASSWORD},
    )
    client.post(
        "/admin/login", data={"csrf_token": token, "username": "admin", "password": PASSWORD}
    )
    admin = basic("admin")
    client.get("/api/v1/projects", base_url=HTTPS, headers=basic("admin", WRONG_PASSWORD))
    made = client.post(
        "/api/v1/projects",
        base_url=HTTPS,
        headers=admin,
        json={"name": "Audit office", "passphrase": PASSPHRASE},
    )
    pid = (made.get_json() or {}).get("id", field.project_id)
    for phrase in (PASSPHRASE, WRONG_PASSWORD):
        client.post(
            f"/api/v1/projects/{pid}/key/unlock",
            base_url=HTTPS,
            headers=admin,
            json={"passphrase": phrase},
        )
    client.post(
        f"/api/v1/projects/{pid}/assessments/1/notes",
        base_url=HTTPS,
        headers=admin,
        json={"notes": {"safety": NOTE}},
    )
    client.post(f"/api/v1/projects/{pid}/key/lock", base_url=HTTPS, headers=admin)


def test_json_log__exception_quoting_an_answer__message_never_logged():
    """Should log the frames and types of a failure and its cause, never their messages: a
    parser's message can quote the decrypted answer it choked on."""
    import json
    import sys

    def parse(answer: str) -> int:
        return int(answer)

    try:
        try:
            parse(ANSWER)
        except ValueError as err:
            raise RuntimeError(f"could not read {ANSWER!r}") from err
    except RuntimeError:
        record = logging.LogRecord("kintsugi", logging.ERROR, __file__, 1, "failed", (), None)
        record.exc_info = sys.exc_info()
    line = json.loads(JsonFormatter().format(record))
    assert ANSWER not in json.dumps(line)
    assert line["exc_type"] == "RuntimeError"
    tb = line["traceback"]
    assert "ValueError (message not logged)" in tb and "RuntimeError (message not logged)" in tb
    assert "in parse" in tb  # the frames are kept: where it failed
