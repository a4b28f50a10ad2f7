"""Database plumbing: declarative base, engine and sessionmaker, per-request session, migrations.

The engine and sessionmaker live in ``app.extensions["kintsugi.db"]``; a request gets one
session through :func:`get_session`, closed (and rolled back if not committed) at teardown.
Views own the transaction: services only ``add``/``flush``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, DateTime, Engine, LargeBinary, MetaData, create_engine, event, text
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC datetimes on both SQLite (which drops tzinfo) and PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is not None:
            if value.tzinfo is None:
                raise ValueError("naive datetime given to a UTC column")
            value = value.astimezone(dt.UTC)
        return value

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value


class Base(DeclarativeBase):
    """Declarative base with constraint naming and the project's type map."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        dt.datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
        list[str]: JSON(),
        bytes: LargeBinary(),
    }


def utcnow() -> dt.datetime:
    """The current time, timezone-aware UTC."""
    return dt.datetime.now(dt.UTC)


def today() -> dt.date:
    """The server's calendar date, from which "due" and "overdue" are reckoned. Read through
    this one function (``server.db.today()``) so that a test can hold the date still."""
    return dt.date.today()


@dataclass(slots=True)
class Database:
    """What ``app.extensions["kintsugi.db"]`` holds."""

    engine: Engine
    sessionmaker: sessionmaker[Session]


def make_engine(
    url: str, *, pool_size: int = 5, echo: bool = False, pre_ping: bool = False
) -> Engine:
    """Create an engine; SQLite gets WAL, foreign keys and a busy timeout."""
    if url.startswith("sqlite"):
        # hide_parameters: a failing statement's parameters (answers, blobs) never reach a log
        engine = create_engine(url, echo=echo, hide_parameters=True, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit is fsynced before we answer 201 (durability over speed)
            cur.execute("PRAGMA synchronous=FULL")
            cur.close()

        return engine
    return create_engine(
        url,
        echo=echo,
        hide_parameters=True,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=pre_ping,
        pool_recycle=3600,
    )


def init_app(app: Any) -> None:
    """Create the engine and sessionmaker for ``app`` and register the teardown."""
    engine = make_engine(
        app.config["DATABASE_URL"],
        pool_size=app.config["DB_POOL_SIZE"],
        echo=app.config["SQL_ECHO"],
        pre_ping=app.config["DB_PRE_PING"],
    )
    app.extensions["kintsugi.db"] = Database(
        engine=engine, sessionmaker=sessionmaker(engine, expire_on_commit=False)
    )
    app.teardown_appcontext(close_session)


class _SQLiteWriteLock:
    """Serialises SQLite write transactions across threads *and* worker processes.

    SQLite's busy handler sleeps in growing steps (up to 100 ms) while another writer holds the
    lock, which shows up as tail latency under concurrent uploads. Waiting on a kernel file lock
    instead wakes the next writer the moment the previous one committed.
    """

    def __init__(self, db_path: str) -> None:
        import threading

        self._path = db_path + ".writelock"
        self._thread_lock = threading.Lock()
        self._fd: int | None = None

    def __enter__(self) -> None:
        import fcntl
        import os

        self._thread_lock.acquire()
        try:
            if self._fd is None:
                self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self._thread_lock.release()
            raise

    def __exit__(self, *exc: object) -> None:
        import fcntl

        try:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()


def write_lock(app: Any) -> Any:
    """A context manager around a write transaction: a cross-process lock on file SQLite
    databases, nothing on PostgreSQL (its row locks and unique index do the work)."""
    from contextlib import nullcontext

    lock = app.extensions.get("kintsugi.write_lock")
    if lock is None:
        from sqlalchemy.engine import make_url

        url = make_url(app.config["DATABASE_URL"])
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            lock = _SQLiteWriteLock(url.database)
        else:
            lock = nullcontext()
        app.extensions["kintsugi.write_lock"] = lock
    return lock


def begin_snapshot(session: Session) -> None:
    """Make every read of ``session`` (fresh, for reading only) see one snapshot of the
    database until it is closed, whatever commits meanwhile.

    PostgreSQL: a REPEATABLE READ transaction. SQLite: an explicit read transaction (its
    driver would otherwise run each SELECT on its own), which in WAL mode keeps its snapshot
    while writers go on.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    else:
        session.connection().exec_driver_sql("BEGIN")


def get_session() -> Session:
    """The current request's session (created on first use)."""
    from flask import current_app, g

    if "db_session" not in g:
        g.db_session = current_app.extensions["kintsugi.db"].sessionmaker()
    return g.db_session


def close_session(_exc: BaseException | None = None) -> None:
    """Close the request's session; anything not committed is rolled back."""
    from flask import g

    session = g.pop("db_session", None)
    if session is not None:
        session.close()


def alembic_config(url: str) -> Any:
    """An Alembic ``Config`` pointing at our migrations and ``url`` (no alembic.ini needed)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Run migrations up to ``revision`` on the database at ``url``."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    """Run migrations down to ``revision``."""
    from alembic import command

    command.downgrade(alembic_config(url), revision)


def current_revision(url: str) -> str | None:
    """The revision the database is at (None when never migrated)."""
    from alembic.runtime.migration import MigrationContext

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


#: Tables the application role may read and add to, never change or empty (the audit trail),
#: and may only read (the schema revision: migrations are the owner's).
APPEND_ONLY_TABLES = ("audit_log",)
READ_ONLY_TABLES = ("alembic_version",)


def grant_app_role(url: str, role: str) -> list[str]:
    """Give the PostgreSQL ``role`` what the web tier and the worker need, and no more.

    Run as the owner of the tables (the role migrations use), after each upgrade: rows may be
    read, added, changed and removed, except that the audit log only takes new rows and the
    schema revision is read-only. No DDL, no TRUNCATE, no table ownership, so a compromised
    web process can neither rewrite the audit trail nor change the schema. Tables later
    migrations create get the same rights by default. Returns the statements run.

    :raises ConfigError: not PostgreSQL, or ``role`` does not exist
    """
    from server.errors import ConfigError

    engine = make_engine(url)
    try:
        if engine.dialect.name != "postgresql":
            raise ConfigError(
                "Database roles exist on PostgreSQL only: SQLite has no users to grant to."
            )
        quote = engine.dialect.identifier_preparer.quote
        with engine.begin() as conn:
            if conn.scalar(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}) is None:
                raise ConfigError(
                    f"There is no PostgreSQL role {role!r}: create it first, e.g. "
                    f"CREATE ROLE {quote(role)} LOGIN PASSWORD '...'; then run this again."
                )
            if conn.scalar(text("SELECT current_user")) == role:
                raise ConfigError(
                    f"{role!r} is the role this command runs as, the owner of the tables: an "
                    "owner keeps every right. Grant to a separate role that the web tier and "
                    "the worker log in as."
                )
            who, db_name = quote(role), quote(conn.scalar(text("SELECT current_database()")))
            dml = "SELECT, INSERT, UPDATE, DELETE"
            statements = [
                f"GRANT CONNECT ON DATABASE {db_name} TO {who}",
                f"GRANT USAGE ON SCHEMA public TO {who}",
                f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {who}",
                f"GRANT {dml} ON ALL TABLES IN SCHEMA public TO {who}",
                *(f"REVOKE UPDATE, DELETE ON {quote(t)} FROM {who}" for t in APPEND_ONLY_TABLES),
                *(f"REVOKE INSERT, UPDATE, DELETE ON {quote(t)} FROM {who}" for t in READ_ONLY_TABLES),
                f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {who}",
                f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT {dml} ON TABLES TO {who}",
                f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO {who}",
            ]  # fmt: skip
            for statement in statements:
                conn.execute(text(statement))
        return statements
    finally:
        engine.dispose()
