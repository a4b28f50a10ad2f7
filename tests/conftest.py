"""Shared fixtures: ``app``, ``client``, ``runner``, ``db_session`` on SQLite AND PostgreSQL.

Every test that uses ``app`` (directly or through ``client``/``db_session``/``runner``) runs once
per backend. The schema is migrated once per test session per backend (a fresh
``kintsugi_test_<random>`` PostgreSQL database, dropped at the end); tests are isolated by
truncating every table afterwards.

PostgreSQL comes from ``KINTSUGI_TEST_POSTGRES_URL`` (default
``postgresql+psycopg://postgres@127.0.0.1:5432/test``). When it is unreachable the postgres
tests are skipped with a loud reason (and a line in the terminal summary), unless
``KINTSUGI_REQUIRE_POSTGRES=1``, in which case they fail.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DIR = Path(os.environ.get("KINTSUGI_SHARED_DIR") or REPO_ROOT.parent / "shared")
DEFAULT_TEST_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

_postgres_skip_reasons: list[str] = []

# Hypothesis (and schemathesis on it) draws the same examples on every run of a commit, so a CI
# run cannot fail on an example the run before it never drew, and any failure replays as is.
# KINTSUGI_HYPOTHESIS_PROFILE=explore draws new examples each run, for a deeper hunt by hand
# (with KINTSUGI_SCHEMATHESIS_EXAMPLES raised, or --hypothesis-seed=N).
settings.register_profile("ci", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False, database=None)
settings.load_profile(os.environ.get("KINTSUGI_HYPOTHESIS_PROFILE", "ci"))


def postgres_admin_url() -> str:
    """The PostgreSQL URL tests connect to in order to create their own database."""
    from server.config import normalise_database_url

    return normalise_database_url(
        os.environ.get("KINTSUGI_TEST_POSTGRES_URL") or DEFAULT_TEST_POSTGRES_URL
    )


def _create_postgres_database() -> tuple[str, Callable[[], None]]:
    """Create a fresh database; return its URL and a function dropping it."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = make_url(postgres_admin_url())
    name = f"kintsugi_test_{secrets.token_hex(6)}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()

    def drop() -> None:
        engine = create_engine(admin, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        finally:
            engine.dispose()

    return admin.set(database=name).render_as_string(hide_password=False), drop


@pytest.fixture(
    scope="session", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def backend(request: pytest.FixtureRequest) -> str:
    """The database backend of this test run: ``sqlite`` or ``postgres``."""
    return request.param


@pytest.fixture(scope="session")
def database_url(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A migrated database for the whole test session, per backend."""
    from server import db

    if backend == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'kintsugi.sqlite3'}"
        db.upgrade(url)
        yield url
        return
    try:
        url, drop = _create_postgres_database()
    except Exception as err:  # unreachable server, auth failure...
        from sqlalchemy.engine import make_url

        where = make_url(postgres_admin_url()).render_as_string(hide_password=True)
        reason = f"PostgreSQL at {where} is unreachable ({type(err).__name__})"
        if os.environ.get("KINTSUGI_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"{reason} and KINTSUGI_REQUIRE_POSTGRES=1")
        _postgres_skip_reasons.append(reason)
        pytest.skip(f"!!! POSTGRES TESTS SKIPPED: {reason}")
    try:
        db.upgrade(url)
        yield url
    finally:
        drop()


def _truncate_all(engine: Any) -> None:
    from sqlalchemy import text

    from server.db import Base

    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # a leaked transaction must fail the run, not hang it
            conn.execute(text("SET LOCAL lock_timeout = '20s'"))
            conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            for name in tables:
                conn.execute(text(f"DELETE FROM {name}"))  # noqa: S608 (our own table names)


@pytest.fixture
def app_config(database_url: str, tmp_path: Path) -> dict[str, Any]:
    """The test config every app of one test shares (same DB, same blob dir, same secret)."""
    return {
        "TESTING": True,
        "ENV": "testing",
        "SECRET_KEY": "test-secret-" + "x" * 32,
        "DATABASE_URL": database_url,
        "VAR_DIR": str(tmp_path / "var"),
        "DATA_DIR": str(tmp_path / "data"),
        "BASE_URL": "http://localhost",
        "INSTRUMENTS_DIR": str(REPO_ROOT / "instruments"),
        # cheap hashing keeps the suite fast; production uses werkzeug's scrypt default
        "PASSWORD_HASH_METHOD": "pbkdf2:sha256:1000",
    }


@pytest.fixture
def make_app(app_config: dict[str, Any]) -> Iterator[Callable[..., Any]]:
    """Factory for apps on the test database (a second call = a restarted server)."""
    from server import create_app

    apps: list[Any] = []

    def factory(**overrides: Any) -> Any:
        app = create_app({**app_config, **overrides})
        apps.append(app)
        return app

    yield factory
    if apps:
        _truncate_all(apps[0].extensions["kintsugi.db"].engine)
    for app in apps:
        app.extensions["kintsugi.db"].engine.dispose()


@pytest.fixture
def app(make_app: Callable[..., Any]) -> Any:
    """A Flask app on a clean, migrated database."""
    return make_app()


@pytest.fixture
def client(app: Any) -> Any:
    """Flask test client."""
    return app.test_client()


@pytest.fixture
def db_session(app: Any) -> Iterator[Any]:
    """A session on the app's database (commit to make data visible to requests)."""
    session = app.extensions["kintsugi.db"].sessionmaker()
    try:
        yield session
    finally:
        session.close()


@pytest.fixture
def frozen_today(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The server's date (``server.db.today``) held at today's for the whole test: a test
    that reckons "due" and "overdue" from the date must not see it turn at midnight between
    its setup and its reads (CI runs at any hour)."""
    import datetime as dt

    import server.db

    day = dt.date.today()
    monkeypatch.setattr(server.db, "today", lambda: day)
    return day


class CliRunner:
    """Runs ``kintsugi ...`` in-process against the test database and directories."""

    def __init__(self, env: dict[str, str]) -> None:
        from click.testing import CliRunner as _Runner

        self.env = env
        self._runner = _Runner()

    def invoke(self, *args: str, input: str | None = None) -> Any:
        """Invoke the CLI; returns click's Result (``exit_code``, ``output``)."""
        from server.cli import main

        return self._runner.invoke(main, list(args), env=self.env, input=input)


@pytest.fixture
def runner(app: Any, app_config: dict[str, Any]) -> CliRunner:
    """The ``kintsugi`` CLI bound to the same database and directories as ``app``."""
    return CliRunner(
        {
            "KINTSUGI_DATABASE_URL": app_config["DATABASE_URL"],
            "KINTSUGI_VAR_DIR": app_config["VAR_DIR"],
            "KINTSUGI_DATA_DIR": app_config["DATA_DIR"],
            "KINTSUGI_SECRET_KEY": app_config["SECRET_KEY"],
            "KINTSUGI_BASE_URL": app_config["BASE_URL"],
            "KINTSUGI_INSTRUMENTS_DIR": app_config["INSTRUMENTS_DIR"],
            "KINTSUGI_ENV": "testing",
        }
    )


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The read-only shared/ folder (notes, vectors, tools)."""
    return SHARED_DIR


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    """Leave out combinations that do not exist rather than skip them: "blob files" on
    SQLite (test_encrypt_on_arrival, test_encrypt_stored_cli), whose blobs are files by
    default, and the SQLite run of a ``postgres_only`` check."""
    keep, drop = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        absent = params.get("backend") == "sqlite" and (
            params.get("app") == "blob files" or item.get_closest_marker("postgres_only")
        )
        (drop if absent else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say loudly when the PostgreSQL half of the suite did not run."""
    if _postgres_skip_reasons:
        terminalreporter.write_sep(
            "!", "POSTGRESQL TESTS WERE SKIPPED: " + _postgres_skip_reasons[0], red=True, bold=True
        )
