"""``kintsugi setup | db | serve | projects | forms | app-users | users``: run the sync server.

Secrets are printed once to the terminal (and, for setup, written to ``var/`` with mode 0600);
they are never logged.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click


def _app(**overrides: Any) -> Any:
    from server import create_app

    return create_app(overrides or None)


@contextmanager
def _session(app: Any) -> Iterator[Any]:
    """One session for the command; the engine is disposed after (no stray connections)."""
    database = app.extensions["kintsugi.db"]
    try:
        with database.sessionmaker() as session:
            yield session
    finally:
        database.engine.dispose()


def _fail(err: Exception) -> None:
    raise click.ClickException(str(err)) from err


def _write_secret(path: Path, text: str) -> None:
    """Write a secret file readable by the owner only (0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(path, 0o600)


def _base_url(app: Any) -> str:
    return (app.config.get("BASE_URL") or "http://127.0.0.1:8080").rstrip("/")


# ---------------------------------------------------------------- db


@click.group("db")
def db_group() -> None:
    """Database migrations."""


@db_group.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade_command(revision: str) -> None:
    """Migrate the database (KINTSUGI_DATABASE_URL, default SQLite under var/)."""
    from server import db
    from server.config import load_config

    url = load_config()["DATABASE_URL"]
    db.upgrade(url, revision)
    click.echo(f"database at revision {db.current_revision(url)}")


@db_group.command("downgrade")
@click.argument("revision")
def db_downgrade_command(revision: str) -> None:
    """Migrate the database down to REVISION (``base`` = empty)."""
    from server import db
    from server.config import load_config

    db.downgrade(load_config()["DATABASE_URL"], revision)
    click.echo(f"database downgraded to {revision}")


@db_group.command("current")
def db_current_command() -> None:
    """Print the database's migration revision."""
    from server import db
    from server.config import load_config

    click.echo(db.current_revision(load_config()["DATABASE_URL"]) or "(not migrated)")


@db_group.command("grant-app-role")
@click.argument("role")
def db_grant_app_role_command(role: str) -> None:
    """Give PostgreSQL ROLE the rights the web tier and the worker need, and no more.

    Run it with KINTSUGI_DATABASE_URL naming the owner of the tables (the role that migrates),
    after each `kintsugi db upgrade`; then run the web tier and the worker as ROLE. ROLE may
    read, add, change and remove rows, but only add to the audit log, and has no DDL.
    """
    from server import db
    from server.config import load_config
    from server.errors import ServerError

    try:
        statements = db.grant_app_role(load_config()["DATABASE_URL"], role)
    except ServerError as err:
        raise click.ClickException(err.message) from err
    click.echo(f"{len(statements)} grants for {role}: rows in every table, the audit log only "
               "appended to, no schema changes.")  # fmt: skip


# ---------------------------------------------------------------- serve


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
def serve_command(host: str, port: int) -> None:
    """Run the development server (production: gunicorn 'server:create_app()')."""
    app = _app()
    app.run(host=host, port=port, threaded=True, use_reloader=False)


# ---------------------------------------------------------------- projects


@click.group("projects")
def projects_group() -> None:
    """Projects (a field office or programme)."""


def _read_passphrase(path: str) -> bytes:
    data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    return data.rstrip(b"\r\n")


@projects_group.command("create")
@click.argument("name")
@click.option(
    "--passphrase-file",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Encrypt the project: its private key is stored encrypted with this passphrase.",
)
def projects_create_command(name: str, passphrase_file: str | None) -> None:
    """Create a project and print its id."""
    from server.errors import ServerError
    from server.services.projects import create_project

    passphrase = _read_passphrase(passphrase_file) if passphrase_file else None
    app = _app()
    with _session(app) as session:
        try:
            project = create_project(session, name, passphrase=passphrase)
        except ServerError as err:
            _fail(err)
        session.commit()
        click.echo(project.id)


@projects_group.command("list")
def projects_list_command() -> None:
    """List projects: id, encrypted, name."""
    from sqlalchemy import select

    from server.models import Project

    app = _app()
    with _session(app) as session:
        for p in session.scalars(select(Project).order_by(Project.id)):
            click.echo(f"{p.id}\t{'encrypted' if p.encrypted else 'plain'}\t{p.name}")


# ---------------------------------------------------------------- forms


@click.group("forms")
def forms_group() -> None:
    """Publish and manage forms."""


@forms_group.command("publish")
@click.option("--project", "project_id", required=True, type=int)
@click.option("--context", help="Compile this instrument context for the project and publish it.")
@click.option(
    "--attachment",
    "attachments",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="A media file the form references (repeatable; with FILE.xml).",
)
@click.option(
    "--report",
    "report_file",
    type=click.Path(exists=True, dir_okay=False),
    help="The compiler's report of FILE.xml (default: FILE.report.json beside it, as "
    "kintsugi compile writes it); the server scores submissions into cases with it.",
)
@click.argument("file", required=False, type=click.Path(exists=True, dir_okay=False))
def forms_publish_command(
    project_id: int,
    context: str | None,
    attachments: tuple[str, ...],
    report_file: str | None,
    file: str | None,
) -> None:
    """Publish FILE.xml (or a compiled --context) to a project; prints form_id and version."""
    from server.blobs import make_blob_store
    from server.errors import PublishError, ServerError
    from server.services.forms import load_report, parse_xform_meta, publish_form
    from server.services.projects import get_project
    from server.services.publishing import publish_context

    if bool(context) == bool(file):
        raise click.UsageError("give either FILE.xml or --context NAME")
    if report_file and not file:
        raise click.UsageError("--report goes with FILE.xml (--context makes its own report)")
    beside = Path(file).with_suffix(".report.json") if file else None
    if file and not report_file and beside is not None and beside.is_file():
        report_file = str(beside)
    app = _app()
    with _session(app) as session:
        try:
            project = get_project(session, project_id)
            store = make_blob_store(app.config, session)
            if context:
                version, created = publish_context(session, store, project, app.config, context)
            else:
                xml = Path(file).read_bytes()
                report = (
                    load_report(xml, Path(report_file).read_bytes(), report_file)
                    if report_file
                    else None
                )
                media = {Path(a).name: Path(a).read_bytes() for a in attachments}
                version, created = publish_form(
                    session, store, project, xml, report=report, attachments=media
                )
                if report is None and parse_xform_meta(xml).datasets_written:
                    click.echo(
                        f"warning: published without its compiler report ({beside} not "
                        "found): its submissions will be stored but will not be scored into "
                        "cases, and the cases list on phones has no columns. Publish it with "
                        "the .report.json kintsugi compile wrote beside it (--report), or use "
                        "--context NAME.",
                        err=True,
                    )
        except ServerError as err:
            if file and isinstance(err, PublishError):  # name the file at fault
                raise click.ClickException(f"{file}: {err}") from err
            _fail(err)
        except Exception as err:  # the compiler's own errors print as file:line: message
            if type(err).__module__.startswith("form_compiler"):
                _fail(err)
            raise
        session.commit()
        note = "" if created else "\t(already published)"
        click.echo(f"{version.form.xml_form_id}\t{version.version}{note}")


@forms_group.command("list")
@click.option("--project", "project_id", required=True, type=int)
def forms_list_command(project_id: int) -> None:
    """List forms of a project: form_id, state, current version, versions published."""
    from server.errors import ServerError
    from server.services.projects import get_project

    app = _app()
    with _session(app) as session:
        try:
            project = get_project(session, project_id)
        except ServerError as err:
            _fail(err)
        for f in project.forms:
            current = f.current_version
            click.echo(
                f"{f.xml_form_id}\t{f.state}\t{current.version if current else '-'}"
                f"\t{len(f.versions)}"
            )


@forms_group.command("state")
@click.option("--project", "project_id", required=True, type=int)
@click.argument("form_id")
@click.argument("state", type=click.Choice(["open", "closing", "closed"]))
def forms_state_command(project_id: int, form_id: str, state: str) -> None:
    """Open a form, or close it (closing: hidden but still accepts; closed: refuses)."""
    from server.errors import ServerError
    from server.services.forms import get_form, set_form_state
    from server.services.projects import get_project

    app = _app()
    with _session(app) as session:
        try:
            form = get_form(session, get_project(session, project_id), form_id, None)
        except ServerError as err:
            _fail(err)
        set_form_state(session, form, state)
        session.commit()
        click.echo(f"{form_id}\t{state}")


# ---------------------------------------------------------------- app users


@click.group("app-users")
def app_users_group() -> None:
    """Device credentials (app users)."""


@app_users_group.command("create")
@click.option("--project", "project_id", required=True, type=int)
@click.option("--form", "forms", multiple=True, help="Limit to this form id (repeatable).")
@click.option("--qr", type=click.Path(dir_okay=False), help="Write Collect's settings QR (PNG).")
@click.argument("name")
def app_users_create_command(
    project_id: int, forms: tuple[str, ...], qr: str | None, name: str
) -> None:
    """Create an app user; prints the URL to give Collect (shown once)."""
    from server.errors import ServerError
    from server.services.projects import get_project
    from server.services.users import app_user_url, create_app_user

    app = _app()
    with _session(app) as session:
        try:
            project = get_project(session, project_id)
            _user, token = create_app_user(session, project, name, forms=list(forms) or None)
        except ServerError as err:
            _fail(err)
        session.commit()
        url = app_user_url(_base_url(app), project.id, token)
        if qr:
            from server.qr import save_qr_png, settings_payload

            # the same payload the admin pages and API show (one definition, server.qr)
            save_qr_png(settings_payload(url, project.name), qr)
        click.echo(url)
        if not app.config.get("BASE_URL"):
            click.echo(
                f"warning: KINTSUGI_BASE_URL is not set, so this URL names {_base_url(app)}, "
                "which a phone cannot reach. Set KINTSUGI_BASE_URL to the address phones use "
                "(e.g. https://kintsugi.example.org), then revoke this app user and create it "
                "again.",
                err=True,
            )


@app_users_group.command("revoke")
@click.argument("user_id", type=int)
def app_users_revoke_command(user_id: int) -> None:
    """Revoke an app user: its URL stops working at once."""
    from server.errors import ServerError
    from server.services.users import revoke_app_user

    app = _app()
    with _session(app) as session:
        try:
            revoke_app_user(session, user_id)
        except ServerError as err:
            _fail(err)
        session.commit()
        click.echo(f"revoked {user_id}")


@app_users_group.command("list")
@click.option("--project", "project_id", required=True, type=int)
def app_users_list_command(project_id: int) -> None:
    """List app users of a project: id, state, name."""
    from sqlalchemy import select

    from server.errors import ServerError
    from server.models import AppUser
    from server.services.projects import get_project

    app = _app()
    with _session(app) as session:
        try:
            get_project(session, project_id)  # an unknown id is an error, not an empty list
        except ServerError as err:
            _fail(err)
        for u in session.scalars(
            select(AppUser).where(AppUser.project_id == project_id).order_by(AppUser.id)
        ):
            click.echo(f"{u.id}\t{'revoked' if u.revoked_at else 'active'}\t{u.display_name}")


# ---------------------------------------------------------------- web users


@click.group("users")
def users_group() -> None:
    """Web users: admins see every project; managers and viewers only the projects granted."""


@users_group.command("create")
@click.argument("username")
@click.option("--role", type=click.Choice(["admin", "manager", "viewer"]), default="viewer")
@click.option("--email")
@click.option(
    "--password-file",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Read the password from a file; otherwise one is generated and printed once.",
)
@click.option(
    "--project",
    "project_ids",
    multiple=True,
    type=int,
    help="Give the new manager/viewer this project with that role (repeatable).",
)
def users_create_command(
    username: str,
    role: str,
    email: str | None,
    password_file: str | None,
    project_ids: tuple[int, ...],
) -> None:
    """Create a web user (a manager or viewer sees no project until granted one)."""
    from server.errors import ServerError
    from server.services.access import grant_project_role
    from server.services.projects import get_project
    from server.services.users import create_web_user, generate_password

    generated = password_file is None
    password = generate_password() if generated else _read_passphrase(password_file).decode("utf-8")
    app = _app()
    with _session(app) as session:
        try:
            user = create_web_user(
                session,
                username,
                password,
                role=role,
                email=email,
                realm=app.config["DIGEST_REALM"],
                method=app.config["PASSWORD_HASH_METHOD"],
            )
            for project_id in project_ids:
                grant_project_role(session, user, get_project(session, project_id), role)
        except ServerError as err:
            _fail(err)
        session.commit()
    click.echo(f"created {role} {username}")
    for project_id in project_ids:
        click.echo(f"  {role} of project {project_id}")
    if generated:
        click.echo(f"password (shown once): {password}")


@users_group.command("grant")
@click.argument("user")
@click.option("--project", "project_id", required=True, type=int)
@click.option("--role", required=True, type=click.Choice(["manager", "viewer"]))
def users_grant_command(user: str, project_id: int, role: str) -> None:
    """Give USER (username or email) ROLE in a project, replacing the role they had there."""
    from server.errors import ServerError
    from server.services.access import find_web_user, grant_project_role
    from server.services.projects import get_project

    app = _app()
    with _session(app) as session:
        try:
            web_user = find_web_user(session, user)
            project = get_project(session, project_id)
            grant_project_role(session, web_user, project, role)
        except ServerError as err:
            _fail(err)
        session.commit()
        click.echo(f"{web_user.username}\t{role}\tproject {project.id}\t{project.name}")


@users_group.command("revoke")
@click.argument("user")
@click.option("--project", "project_id", required=True, type=int)
def users_revoke_command(user: str, project_id: int) -> None:
    """Take USER's (username or email) role in a project away: access ends at once."""
    from server.errors import ServerError
    from server.services.access import find_web_user, revoke_project_role

    app = _app()
    with _session(app) as session:
        try:
            web_user = find_web_user(session, user)
        except ServerError as err:
            _fail(err)
        if not revoke_project_role(session, web_user, project_id):
            raise click.ClickException(f"{web_user.username} has no role in project {project_id}")
        session.commit()
        click.echo(f"{web_user.username}\tno access\tproject {project_id}")


@users_group.command("list")
def users_list_command() -> None:
    """List web users: username, role, projects (id:role) or 'every project' for admins."""
    from sqlalchemy import select

    from server.models import WebUser
    from server.services.access import all_memberships

    app = _app()
    with _session(app) as session:
        held: dict[int, list[str]] = {}
        for m in all_memberships(session):
            held.setdefault(m.web_user_id, []).append(f"{m.project_id}:{m.role}")
        for u in session.scalars(select(WebUser).order_by(WebUser.username)):
            scope = "every project" if u.role == "admin" else ",".join(held.get(u.id, [])) or "-"
            state = "\tdisabled" if u.disabled_at else ""
            click.echo(f"{u.username}\t{u.role}\t{scope}{state}")


@users_group.command("set-password")
@click.argument("username")
@click.option("--password-file", type=click.Path(dir_okay=False, allow_dash=True))
def users_set_password_command(username: str, password_file: str | None) -> None:
    """Change a password (also revokes Digest credentials derived from the old one)."""
    from sqlalchemy import select

    from server.models import WebUser
    from server.services.users import change_password, generate_password

    generated = password_file is None
    password = generate_password() if generated else _read_passphrase(password_file).decode("utf-8")
    app = _app()
    with _session(app) as session:
        user = session.scalar(select(WebUser).where(WebUser.username == username))
        if user is None:
            raise click.ClickException(f"no user {username!r}")
        change_password(
            session,
            user,
            password,
            realm=app.config["DIGEST_REALM"],
            method=app.config["PASSWORD_HASH_METHOD"],
        )
        session.commit()
    click.echo(f"password changed for {username}")
    if generated:
        click.echo(f"password (shown once): {password}")


# ---------------------------------------------------------------- setup

DEMO_PROJECT = "Demo (fictional data)"
DEMO_DEVICE = "Demo device"


@click.command("setup")
@click.option("--demo", is_flag=True, help="Also create the encrypted demo project and device.")
def setup_command(demo: bool) -> None:
    """Migrate the database, create the first admin, and optionally the demo project.

    Idempotent: a second run changes nothing.
    """
    import secrets

    from sqlalchemy import select

    from server import db
    from server.blobs import make_blob_store
    from server.config import load_config
    from server.errors import ServerError
    from server.models import Role, WebUser
    from server.services.projects import create_project, find_project_by_name
    from server.services.publishing import list_contexts, publish_context
    from server.services.users import (
        app_user_url,
        create_app_user,
        create_web_user,
        generate_password,
    )

    cfg = load_config()
    db.upgrade(cfg["DATABASE_URL"])
    click.echo(f"database: migrated to {db.current_revision(cfg['DATABASE_URL'])}")
    app = _app()
    var_dir = Path(app.config["VAR_DIR"])
    with _session(app) as session:
        if session.scalar(select(WebUser.id).where(WebUser.role == Role.ADMIN.value)) is None:
            password = generate_password()
            create_web_user(
                session,
                "admin",
                password,
                role=Role.ADMIN.value,
                realm=app.config["DIGEST_REALM"],
                method=app.config["PASSWORD_HASH_METHOD"],
                actor="setup",
            )
            # the password file first: should it fail (a read-only var/), nothing is committed
            # and a re-run starts again, instead of an admin whose password nobody has
            try:
                _write_secret(var_dir / "admin-password.txt", password + "\n")
            except OSError as err:
                raise click.ClickException(
                    f"Cannot write {var_dir / 'admin-password.txt'} ({err.strerror or err}): "
                    "no admin was created. Make that path a writable file, then run setup again."
                ) from err
            session.commit()
            click.echo(f"admin user: admin  password (shown once): {password}")
            click.echo(f"  (also written to {var_dir / 'admin-password.txt'}, mode 0600)")
        else:
            click.echo("admin user: already exists")
        if not demo:
            return
        project = find_project_by_name(session, DEMO_PROJECT)
        if project is None:
            passphrase = secrets.token_urlsafe(24)
            _write_secret(var_dir / "demo-passphrase.txt", passphrase + "\n")
            project = create_project(
                session, DEMO_PROJECT, passphrase=passphrase.encode(), actor="setup"
            )
            session.commit()
            click.echo(
                f"demo project {project.id}: created (passphrase in var/demo-passphrase.txt)"
            )
        else:
            click.echo(f"demo project {project.id}: already exists")
        store = make_blob_store(app.config, session)
        try:
            contexts = list_contexts(Path(app.config["INSTRUMENTS_DIR"]))
        except ImportError:
            contexts = []
            click.echo("forms: the form compiler is not available; nothing published")
        for context in contexts:
            try:
                version, created = publish_context(
                    session, store, project, app.config, context, actor="setup"
                )
                session.commit()
                state = "published" if created else "already published"
                click.echo(f"form {version.form.xml_form_id} {version.version}: {state}")
            except ServerError as err:
                session.rollback()
                click.echo(f"form {context}: not published: {err}", err=True)
        url_file = var_dir / "demo-collect-url.txt"
        if not url_file.exists():
            _user, token = create_app_user(session, project, DEMO_DEVICE, actor="setup")
            session.commit()
            _write_secret(url_file, app_user_url(_base_url(app), project.id, token) + "\n")
        click.echo(f"Collect server URL for the demo device: {url_file.read_text().strip()}")
        _seed_demo(app, project.id, url_file, var_dir / "demo-passphrase.txt")


def _seed_demo(app: Any, project_id: int, url_file: Path, passphrase_file: Path) -> None:
    """Fictional survivors for the demo project, through upload and reconciliation."""
    from server.services.demo import seed_demo

    if not passphrase_file.exists():
        click.echo("demo cases: no demo passphrase in this var/ folder; not seeded")
        return
    token = url_file.read_text().strip().split("/v1/key/", 1)[1].split("/", 1)[0]
    passphrase = passphrase_file.read_text().strip().encode()
    result = seed_demo(app, project_id, token, passphrase)
    if result is None:
        click.echo("demo cases: already seeded")
    else:
        click.echo(
            f"demo cases: {result.assessments} fictional assessments reconciled "
            f"({result.conflicts} conflict, {result.orphans} orphan for the review queues)"
        )
