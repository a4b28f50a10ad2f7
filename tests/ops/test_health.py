"""/healthz, /readyz and JSON request logs, as a load balancer and an admin see them."""

from __future__ import annotations

import json
import logging

from server.logging import JsonFormatter


def test_healthz__running__200(client):
    """Should answer 200 without touching anything."""
    resp = client.get("/healthz")
    assert resp.status_code == 200
    assert resp.get_json() == {"status": "ok"}


def test_readyz__migrated_and_writable__200(client):
    """Should be ready on a migrated database with a writable blob store."""
    resp = client.get("/readyz")
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["checks"] == {"database": "ok", "blobs": "ok"}


def test_readyz__schema_behind__503(tmp_path, app_config):
    """Should be unready (and say what to run) when migrations were not applied."""
    from server import create_app

    app = create_app({**app_config, "DATABASE_URL": f"sqlite:///{tmp_path / 'empty.db'}"})
    resp = app.test_client().get("/readyz")
    assert resp.status_code == 503
    assert "kintsugi db upgrade" in resp.get_json()["checks"]["database"]


def test_readyz__database_unreachable__503(app_config):
    """Should be unready when the database cannot be reached."""
    from server import create_app

    url = "postgresql+psycopg://nobody@127.0.0.1:9/none?connect_timeout=1"
    app = create_app({**app_config, "DATABASE_URL": url, "BLOB_BACKEND": "local"})
    resp = app.test_client().get("/readyz")
    assert resp.status_code == 503
    assert resp.get_json()["checks"]["database"].startswith("unreachable")


def test_readyz__blob_dir_not_writable__503(app, client, tmp_path):
    """Should be unready when the local blob directory refuses writes."""
    if app.config["BLOB_BACKEND"] != "local":
        return
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    app.config["DATA_DIR"] = str(ro)
    try:
        resp = client.get("/readyz")
    finally:
        ro.chmod(0o700)
    import os

    if os.geteuid() == 0:  # root writes anywhere; the check itself is still exercised
        assert resp.status_code == 200
    else:
        assert resp.status_code == 503
        assert resp.get_json()["checks"]["blobs"].startswith("not writable")


def test_request_id__given_or_generated__echoed(client):
    """Should echo a safe X-Request-Id and replace an unsafe one."""
    assert client.get("/healthz", headers={"X-Request-Id": "abc-123-def"}).headers[
        "X-Request-Id"
    ] == ("abc-123-def")
    rid = client.get("/healthz", headers={"X-Request-Id": "<script>"}).headers["X-Request-Id"]
    assert rid != "<script>" and len(rid) == 16


def test_access_log__token_in_url__json_line_redacted(client, caplog):
    """Should log one JSON access line per request, with the app-user token replaced."""
    token = "Zq9!pL2$wX7mN4vB8cR1tY6uI3oE5aS0dF2gH9jK4lQ7zX1c"
    with caplog.at_level(logging.INFO, logger="kintsugi.access"):
        client.get(f"/v1/key/{token}/projects/1/formList?st=secretvalue")
    lines = [JsonFormatter().format(r) for r in caplog.records if r.name == "kintsugi.access"]
    assert lines
    entry = json.loads(lines[-1])
    assert entry["path"] == "/v1/key/***/projects/1/formList"
    assert entry["request_id"] and entry["status"] in (401, 403, 404)
    assert token not in lines[-1] and "secretvalue" not in lines[-1]
