"""A real gunicorn killed with SIGKILL right after its 201s loses nothing."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from sqlalchemy import select

from server.blobs import make_blob_store, read_all
from server.models import Submission
from tests.server.collect import collect_headers, with_device_id
from tests.server.conftest import publish

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gunicorn(app_config: dict, port: int) -> subprocess.Popen:
    env = {
        **os.environ,
        "KINTSUGI_DATABASE_URL": app_config["DATABASE_URL"],
        "KINTSUGI_DATA_DIR": app_config["DATA_DIR"],
        "KINTSUGI_VAR_DIR": app_config["VAR_DIR"],
        "KINTSUGI_SECRET_KEY": app_config["SECRET_KEY"],
        "KINTSUGI_ENV": "production",
    }
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "-w", "2", "-b", f"127.0.0.1:{port}",
         "--log-level", "warning", "server:create_app()"],
        cwd=REPO, env=env, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60  # a loaded CI machine can be slow to import the app
    while time.monotonic() < deadline:
        try:
            requests.get(f"http://127.0.0.1:{port}/", timeout=5)
            return proc
        except requests.RequestException:
            time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    raise AssertionError("gunicorn did not start")


def test_gunicorn__sigkill_after_201__every_submission_survives(
    app, app_config, field, vectors, make_app
):
    """Should have every byte it answered 201 for after a SIGKILL and a restart."""
    for form in {v.expected["formId"]: v.form_xml for v in vectors}.values():
        publish(app, field.project_id, form)
    port = _port()
    proc = _gunicorn(app_config, port)
    base = f"http://127.0.0.1:{port}{field.base}"
    try:
        for v in vectors:
            resp = requests.post(
                with_device_id(f"{base}/submission"),
                data=v.body,
                headers={**collect_headers(), "Content-Type": v.content_type},
                timeout=30,
            )
            assert resp.status_code == 201, resp.text
    finally:
        # SIGKILL the whole process group (arbiter and workers): no clean shutdown at all
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    port2 = _port()
    proc2 = _gunicorn(app_config, port2)
    try:
        resp = requests.get(f"http://127.0.0.1:{port2}{field.base}/formList", timeout=10)
        assert resp.status_code == 200
    finally:
        os.killpg(proc2.pid, signal.SIGTERM)
        try:
            proc2.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc2.pid, signal.SIGKILL)
            proc2.wait(timeout=10)
    fresh = make_app()
    with fresh.extensions["kintsugi.db"].sessionmaker() as session:
        store = make_blob_store(fresh.config, session)
        subs = {s.instance_id: s for s in session.scalars(select(Submission))}
        assert len(subs) == len(vectors)
        for v in vectors:
            sub = subs[v.expected["instanceID"]]
            assert read_all(store, sub.xml_blob_key) == v.manifest_xml
            assert {a.name: read_all(store, a.blob_key) for a in sub.attachments} == v.enc_files
