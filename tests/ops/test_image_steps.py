"""The container image, checked without docker: the Dockerfile's steps are the ones this repo
supports, and its entry points (docker/entrypoint.sh + docker/gunicorn.conf.py) really serve.

docker cannot run here, so the entry point script is run exactly as the image runs it, with the
project's venv on PATH in place of /opt/kintsugi/bin.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
ENTRYPOINT = REPO / "docker" / "entrypoint.sh"


def _instructions() -> list[tuple[str, str]]:
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            verb, _, rest = line.partition(" ")
            out.append((verb.upper(), rest.strip()))
    return out


def test_dockerfile__stages__multi_stage_non_root_healthcheck():
    """Should build in one stage, run from another as a non-root user with a healthcheck."""
    steps = _instructions()
    froms = [rest for verb, rest in steps if verb == "FROM"]
    assert len(froms) >= 2 and froms[0].endswith("AS build") and "AS runtime" in froms[-1]
    runtime = steps[[i for i, (v, _) in enumerate(steps) if v == "FROM"][-1] :]
    users = [rest for verb, rest in runtime if verb == "USER"]
    assert users and not users[-1].startswith(("root", "0"))
    assert any(v == "COPY" and rest.startswith("--from=build") for v, rest in runtime)
    health = [rest for verb, rest in runtime if verb == "HEALTHCHECK"]
    assert health and '"healthcheck"' in health[0] and "entrypoint.sh" in health[0]
    assert [rest for verb, rest in runtime if verb == "ENTRYPOINT"] == [
        '["/opt/kintsugi/docker/entrypoint.sh"]'
    ]
    assert [rest for verb, rest in runtime if verb == "CMD"] == ['["web"]']


def test_dockerfile__install__copies_every_package_and_installs_the_project():
    """Should copy every package pyproject installs and pip-install the project itself."""
    steps = _instructions()
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = [
        p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    ]
    copied = {rest.split()[0] for verb, rest in steps if verb == "COPY"}
    for pkg in packages:
        assert pkg in copied, f"Dockerfile does not COPY {pkg}"
    runs = [rest for verb, rest in steps if verb == "RUN"]
    assert any(re.search(r"pip install .*\s\.$", r) for r in runs)
    copied_files = " ".join(rest for verb, rest in steps if verb == "COPY")
    assert "docker/entrypoint.sh" in copied_files and "docker/gunicorn.conf.py" in copied_files


def test_compose__services__postgres_web_worker_with_volumes():
    """Should declare PostgreSQL, the web tier and a worker, with database and blob volumes."""
    text = (REPO / "compose.yaml").read_text()
    for service in ("db:", "web:", "worker:"):
        assert re.search(rf"^  {service}", text, re.M), service
    assert 'command: ["web"]' in text and 'command: ["worker"]' in text
    assert "pgdata:/var/lib/postgresql/data" in text and "blobs:/var/lib/kintsugi" in text
    assert "KINTSUGI_SECRET_KEY: ${KINTSUGI_SECRET_KEY:?" in text  # no default secret
    # the worker gets the key passphrase as a secret file, never an environment variable
    assert "kintsugi_passphrase:\n    file:" in text and "PASSPHRASE:" not in text


def test_compose__least_privilege__web_and_worker_log_in_as_the_app_role():
    """Should run web and worker as kintsugi_app, and migrate (as the owner) before them."""
    import yaml

    doc = yaml.safe_load((REPO / "compose.yaml").read_text())
    services = doc["services"]
    for name in ("web", "worker"):
        env = services[name]["environment"]
        assert env["KINTSUGI_DATABASE_URL"].startswith("postgresql://kintsugi_app:"), name
        assert env["KINTSUGI_MIGRATE_ON_START"] == "false"  # no DDL rights to migrate with
        assert services[name]["depends_on"]["migrate"] == {
            "condition": "service_completed_successfully"
        }
    migrate = services["migrate"]
    assert migrate["command"] == ["migrate"] and migrate["restart"] == "no"
    assert migrate["environment"]["KINTSUGI_DATABASE_URL"].startswith("postgresql://kintsugi:")
    assert migrate["environment"]["KINTSUGI_APP_ROLE"] == "kintsugi_app"
    # the role is made when the database volume is first created
    assert "./docker/initdb:/docker-entrypoint-initdb.d:ro" in services["db"]["volumes"]
    script = (REPO / "docker" / "initdb" / "10-app-role.sh").read_text()
    assert "CREATE ROLE kintsugi_app LOGIN PASSWORD :'pw'" in script


@pytest.mark.postgres_only
def test_entrypoint__migrate_with_app_role__upgrades_then_grants(app, backend, tmp_path):
    """Should migrate as the owner, then give KINTSUGI_APP_ROLE its rights (compose's migrate)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    role = "kintsugi_app_entry"
    url = app.config["DATABASE_URL"]
    owner = create_engine(url, isolation_level="AUTOCOMMIT")
    with owner.connect() as conn:
        conn.execute(text(f'DROP ROLE IF EXISTS "{role}"'))
        conn.execute(text(f'CREATE ROLE "{role}" LOGIN'))
    try:
        env = {
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
            "KINTSUGI_SECRET_KEY": "image-test-" + "k" * 32,
            "KINTSUGI_VAR_DIR": str(tmp_path / "var"),
            "KINTSUGI_DATABASE_URL": url,
            "KINTSUGI_APP_ROLE": role,
        }
        done = subprocess.run(["/bin/sh", str(ENTRYPOINT), "migrate"], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert f"grants for {role}" in done.stdout
        as_role = create_engine(make_url(url).set(username=role))
        try:
            with as_role.connect() as conn:
                assert conn.scalar(text("SELECT count(*) FROM cases")) == 0
                assert conn.scalar(text(
                    "SELECT has_table_privilege(current_user, 'audit_log', 'UPDATE')"
                )) is False  # fmt: skip
        finally:
            as_role.dispose()
    finally:
        with owner.connect() as conn:
            conn.execute(text(f'DROP OWNED BY "{role}"'))
            conn.execute(text(f'DROP ROLE "{role}"'))
        owner.dispose()


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(args: list[str], env: dict[str, str], **kw) -> subprocess.Popen:
    return subprocess.Popen(["/bin/sh", str(ENTRYPOINT), *args], env=env, cwd=kw.pop("cwd"), **kw)


def test_entrypoint__migrate_web_healthcheck__serves_ready_json_logs(tmp_path):
    """Should migrate, serve under gunicorn with JSON logs, and pass then fail its healthcheck."""
    port = _port()
    env = {
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "KINTSUGI_ENV": "production",
        "KINTSUGI_SECRET_KEY": "image-test-" + "k" * 32,
        "KINTSUGI_VAR_DIR": str(tmp_path / "var"),
        "KINTSUGI_DATA_DIR": str(tmp_path / "var" / "data"),
        "KINTSUGI_DATABASE_URL": f"sqlite:///{tmp_path / 'kintsugi.sqlite3'}",
        "KINTSUGI_INSTRUMENTS_DIR": str(REPO / "instruments"),
        "KINTSUGI_BIND": f"127.0.0.1:{port}",
        "KINTSUGI_WORKERS": "1",
        "KINTSUGI_HEALTH_URL": f"http://127.0.0.1:{port}/readyz",
    }
    # the image's working directory is not the repo: the installed package must be enough
    work = tmp_path / "cwd"
    work.mkdir()
    log = (tmp_path / "web.log").open("w+")
    web = _entry(["web"], env, cwd=work, stderr=log, stdout=log, start_new_session=True)
    try:
        _serve_and_check(web, env, work, port, log)
    finally:
        log.close()


def _serve_and_check(web, env, work, port, log) -> None:
    try:
        for _ in range(150):
            try:
                if requests.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:  # not listening yet, or slow under load
                pass
            if web.poll() is not None:
                break
            time.sleep(0.1)
        else:
            pytest.fail("gunicorn never became ready")
        assert web.poll() is None, Path(log.name).read_text()[-2000:]
        check = _entry(["healthcheck"], env, cwd=work)
        assert check.wait(timeout=30) == 0
        requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
    finally:
        os.killpg(web.pid, 15)
        web.wait(timeout=30)
    assert _entry(["healthcheck"], env, cwd=work).wait(timeout=30) == 1
    log.seek(0)
    text = log.read()
    lines = [json.loads(x) for x in text.splitlines() if x.startswith("{")]
    assert any(e.get("logger") == "kintsugi.access" and e.get("path") == "/readyz" for e in lines)
    assert any(e.get("logger", "").startswith("gunicorn") for e in lines)
