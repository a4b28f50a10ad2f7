"""Configuration: defaults, environment, production safety."""

from __future__ import annotations

import pytest

from server import create_app
from server.config import ENV_VARS, load_config
from server.errors import ConfigError


def test_load_config__defaults__sqlite_and_local_blobs_under_var(tmp_path):
    """Should default to SQLite and local blobs under var/ and persist a dev secret (0600)."""
    cfg = load_config({"VAR_DIR": str(tmp_path)}, environ={})
    assert cfg["DATABASE_URL"] == f"sqlite:///{tmp_path / 'kintsugi.sqlite3'}"
    assert cfg["BLOB_BACKEND"] == "local" and cfg["DATA_DIR"] == str(tmp_path / "data")
    secret = (tmp_path / "secret_key").read_text()
    assert cfg["SECRET_KEY"] == secret
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0
    assert load_config({"VAR_DIR": str(tmp_path)}, environ={})["SECRET_KEY"] == secret


def test_load_config__postgres_url__postgres_blobs_and_psycopg_driver(tmp_path):
    """Should pick the PostgreSQL blob store and the psycopg 3 driver for postgres URLs."""
    env = {"KINTSUGI_DATABASE_URL": "postgresql://u@h/db", "KINTSUGI_SECRET_KEY": "s"}
    cfg = load_config({"VAR_DIR": str(tmp_path)}, environ=env)
    assert cfg["DATABASE_URL"] == "postgresql+psycopg://u@h/db"
    assert cfg["BLOB_BACKEND"] == "postgres"


def test_load_config__env_then_test_config__precedence(tmp_path):
    """Should let test_config override the environment, which overrides DEFAULTS."""
    env = {"KINTSUGI_NONCE_TTL": "60", "KINTSUGI_TRUST_PROXY": "1", "KINTSUGI_SECRET_KEY": "s"}
    cfg = load_config({"VAR_DIR": str(tmp_path), "NONCE_TTL": 5}, environ=env)
    assert cfg["NONCE_TTL"] == 5 and cfg["TRUST_PROXY"] is True


def test_load_config__production_without_secret__fails_fast(tmp_path):
    """Should refuse to start in production without KINTSUGI_SECRET_KEY."""
    with pytest.raises(ConfigError, match="KINTSUGI_SECRET_KEY"):
        load_config({"VAR_DIR": str(tmp_path)}, environ={"KINTSUGI_ENV": "production"})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"KINTSUGI_BLOB_BACKEND": "s3"}, "local"),
        ({"KINTSUGI_BLOB_BACKEND": "postgres"}, "PostgreSQL"),
        ({"KINTSUGI_NONCE_TTL": "soon"}, "KINTSUGI_NONCE_TTL"),
    ],
)
def test_load_config__bad_values__config_error(tmp_path, env, message):
    """Should explain bad settings by variable name."""
    with pytest.raises(ConfigError, match=message):
        load_config({"VAR_DIR": str(tmp_path)}, environ={"KINTSUGI_SECRET_KEY": "s", **env})


def test_env_vars__all_prefixed_and_mapped():
    """Should keep one list of KINTSUGI_* variables, each mapped to a config key."""
    assert all(name.startswith("KINTSUGI_") for name in ENV_VARS)
    assert len({key for key, _ in ENV_VARS.values()}) == len(ENV_VARS)


def test_create_app__does_not_migrate(tmp_path):
    """Should not create tables on its own (production migrates explicitly)."""
    from sqlalchemy import inspect

    url = f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
    app = create_app({"VAR_DIR": str(tmp_path), "SECRET_KEY": "s", "DATABASE_URL": url})
    engine = app.extensions["kintsugi.db"].engine
    try:
        assert inspect(engine).get_table_names() == []
    finally:
        engine.dispose()


def test_key_idle_seconds__env_and_default__seconds_or_refused(tmp_path) -> None:
    """Should read KINTSUGI_KEY_IDLE_SECONDS (default 15 minutes) and refuse zero or junk."""
    base = {"KINTSUGI_VAR_DIR": str(tmp_path)}
    assert load_config(environ=base)["KEY_IDLE_SECONDS"] == 900
    assert (
        load_config(environ={**base, "KINTSUGI_KEY_IDLE_SECONDS": "60"})["KEY_IDLE_SECONDS"] == 60
    )
    for bad in ("0", "soon"):
        with pytest.raises(ConfigError, match="KINTSUGI_KEY_IDLE_SECONDS"):
            load_config(environ={**base, "KINTSUGI_KEY_IDLE_SECONDS": bad})


def test_entity_backlog_days__env_and_default__days_or_refused(tmp_path) -> None:
    """Should read KINTSUGI_ENTITY_BACKLOG_DAYS (default 5, as Central) and refuse junk."""
    base = {"KINTSUGI_VAR_DIR": str(tmp_path)}
    assert load_config(environ=base)["ENTITY_BACKLOG_DAYS"] == 5.0
    env = {**base, "KINTSUGI_ENTITY_BACKLOG_DAYS": "0.5"}
    assert load_config(environ=env)["ENTITY_BACKLOG_DAYS"] == 0.5
    for bad in ("-1", "a week"):
        with pytest.raises(ConfigError, match="KINTSUGI_ENTITY_BACKLOG_DAYS"):
            load_config(environ={**base, "KINTSUGI_ENTITY_BACKLOG_DAYS": bad})


def test_reconcile_threads__env_and_default__count_or_refused(tmp_path) -> None:
    """Should read KINTSUGI_RECONCILE_THREADS (default 1) and refuse zero or junk."""
    base = {"KINTSUGI_VAR_DIR": str(tmp_path)}
    assert load_config(environ=base)["RECONCILE_THREADS"] == 1
    env = {**base, "KINTSUGI_RECONCILE_THREADS": "2"}
    assert load_config(environ=env)["RECONCILE_THREADS"] == 2
    for bad in ("0", "many"):
        with pytest.raises(ConfigError, match="KINTSUGI_RECONCILE_THREADS"):
            load_config(environ={**base, "KINTSUGI_RECONCILE_THREADS": bad})
