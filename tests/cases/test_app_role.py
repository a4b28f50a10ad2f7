"""The web tier and the worker run as a PostgreSQL role with only the rights they need
(``kintsugi db grant-app-role``): the whole Collect → reconcile → admin path works, and the
role can neither rewrite the audit trail nor change the schema."""

from __future__ import annotations

import secrets
import uuid

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ProgrammingError

from tests.admin.conftest import HTTPS, basic
from tests.cases.fieldwork import ratings_for
from tests.conftest import CliRunner
from tests.server.collect import CollectActions

pytestmark = pytest.mark.postgres_only


@pytest.fixture
def app_role(app, backend):
    """A login role with no rights yet, on the test database's cluster; dropped after."""
    owner_url = app.config["DATABASE_URL"]
    role = f"kintsugi_app_{secrets.token_hex(4)}"
    owner = create_engine(owner_url, isolation_level="AUTOCOMMIT")
    with owner.connect() as conn:
        conn.execute(text(f'CREATE ROLE "{role}" LOGIN'))
    yield role, make_url(owner_url).set(username=role).render_as_string(hide_password=False)
    with owner.connect() as conn:
        conn.execute(text(f'DROP OWNED BY "{role}"'))  # its grants and default privileges
        conn.execute(text(f'DROP ROLE "{role}"'))
    owner.dispose()


def test_app_role__collect_reconcile_admin__work_with_granted_rights_only(
    app, make_app, field, runner, app_role
):
    """Should serve Collect, reconcile and answer the admin API as the granted role."""
    role, role_url = app_role
    granted = runner.invoke("db", "grant-app-role", role)
    assert granted.exit_code == 0, granted.output
    assert f"grants for {role}" in granted.output

    web = make_app(DATABASE_URL=role_url)
    client = web.test_client()
    device = CollectActions(client, field.collect.base)
    assert device.form_list().status_code == 200
    ent = str(uuid.uuid4())
    _iid, manifest, files = field.encrypt(case_code="KE-0901", point="intake", date="2026-02-01",
                                          ratings=ratings_for(field.report, "3"), entity_id=ent)  # fmt: skip
    assert device.submit(manifest, files).status_code == 201

    worker = CliRunner({**runner.env, "KINTSUGI_DATABASE_URL": role_url})
    done = worker.invoke("reconcile", "--project", str(field.project_id),
                         "--passphrase-file", str(field.passphrase_file), "--once")  # fmt: skip
    assert done.exit_code == 0, done.output
    assert (
        "1 assessment" in done.output or "assessments: 1" in done.output or "1 new" in done.output
    )

    from server.services.users import create_web_user
    from tests.admin.conftest import PASSWORD

    with web.extensions["kintsugi.db"].sessionmaker() as s:  # as the role: a user is a row
        create_web_user(s, "lead", PASSWORD, role="admin", realm=web.config["DIGEST_REALM"],
                        method=web.config["PASSWORD_HASH_METHOD"])  # fmt: skip
        s.commit()
    cases = client.get(f"/api/v1/projects/{field.project_id}/cases", base_url=HTTPS,
                       headers=basic("lead"))  # fmt: skip
    assert cases.status_code == 200
    assert [c["label"] for c in cases.get_json()["items"]] == ["KE-0901"]

    # what the role must not do: rewrite or empty the audit trail, touch the schema
    engine = create_engine(role_url)
    try:
        for statement in (
            "UPDATE audit_log SET actor = 'someone else'",
            "DELETE FROM audit_log",
            "TRUNCATE submissions",
            "DROP TABLE cases",
            "ALTER TABLE cases ADD COLUMN x int",
            "UPDATE alembic_version SET version_num = 'x'",
        ):
            with (
                engine.connect() as conn,
                pytest.raises(ProgrammingError, match="InsufficientPrivilege"),
            ):
                conn.execute(text(statement))
        with engine.begin() as conn:  # while it may still add to the trail
            conn.execute(text("INSERT INTO audit_log (actor, action, details, at) "
                              "VALUES ('test', 'test.append', '{}', now())"))  # fmt: skip
    finally:
        engine.dispose()


def test_app_role__owner_or_unknown_role__refused_with_the_fix(runner, app, app_role):
    """Should refuse a role that does not exist, and the owner itself (it keeps every right)."""
    missing = runner.invoke("db", "grant-app-role", "no_such_role_here")
    assert missing.exit_code == 1
    assert "There is no PostgreSQL role 'no_such_role_here': create it first" in missing.output
    owner = make_url(app.config["DATABASE_URL"]).username
    itself = runner.invoke("db", "grant-app-role", owner)
    assert itself.exit_code == 1 and "an owner keeps every right" in itself.output
