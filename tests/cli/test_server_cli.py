"""``kintsugi`` server commands as an admin types them."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from sqlalchemy import func, select

from server.models import AppUser, Project, ProjectKey, WebUser
from tests.server.forms import xform


def _ok(result):
    assert result.exit_code == 0, result.output
    return result.output


def test_projects_create__plain__prints_id(runner, db_session):
    """Should print the new project's id."""
    out = _ok(runner.invoke("projects", "create", "Field office North"))
    project = db_session.get(Project, int(out.strip()))
    assert project.name == "Field office North" and not project.encrypted


def test_projects_create__passphrase_file__encrypted_key_only(runner, db_session, tmp_path):
    """Should create a key pair and store only the passphrase-encrypted private key."""
    secret = tmp_path / "pass.txt"
    secret.write_text("a long fictional passphrase\n")
    out = _ok(runner.invoke("projects", "create", "Secure", "--passphrase-file", str(secret)))
    project = db_session.get(Project, int(out.strip()))
    assert project.encrypted
    key = db_session.scalars(select(ProjectKey)).one()
    assert b"ENCRYPTED" in key.encrypted_private_pem
    assert key.public_key_b64.startswith("MII")
    assert "fictional passphrase" not in out


def test_projects_create__short_passphrase__error(runner, tmp_path):
    """Should refuse a weak passphrase with a readable error."""
    secret = tmp_path / "p"
    secret.write_text("short")
    result = runner.invoke("projects", "create", "X", "--passphrase-file", str(secret))
    assert result.exit_code != 0 and "at least" in result.output


def test_forms_publish__file__prints_form_id_and_version(runner, tmp_path):
    """Should publish an XForm file and be idempotent for identical bytes."""
    pid = _ok(runner.invoke("projects", "create", "P")).strip()
    form = tmp_path / "household.xml"
    form.write_bytes(xform())
    assert _ok(runner.invoke("forms", "publish", "--project", pid, str(form))).split() == [
        "household",
        "1",
    ]
    again = _ok(runner.invoke("forms", "publish", "--project", pid, str(form)))
    assert "already published" in again
    form.write_bytes(xform(title="Changed"))
    clash = runner.invoke("forms", "publish", "--project", pid, str(form))
    assert clash.exit_code != 0 and "Change the version" in clash.output


def test_forms_publish__unencrypted_form_to_encrypted_project__refused(runner, tmp_path):
    """Should refuse a form without the project's key (it would leak plaintext)."""
    secret = tmp_path / "pass"
    secret.write_text("a long fictional passphrase")
    pid = _ok(runner.invoke("projects", "create", "S", "--passphrase-file", str(secret))).strip()
    form = tmp_path / "f.xml"
    form.write_bytes(xform())
    result = runner.invoke("forms", "publish", "--project", pid, str(form))
    assert result.exit_code != 0 and "encrypted" in result.output


def test_forms_state__close__hidden_from_collect(runner, client, tmp_path):
    """Should close a form so Collect no longer lists it."""
    pid = _ok(runner.invoke("projects", "create", "P")).strip()
    form = tmp_path / "f.xml"
    form.write_bytes(xform())
    _ok(runner.invoke("forms", "publish", "--project", pid, str(form)))
    url = _ok(runner.invoke("app-users", "create", "--project", pid, "Tablet")).strip()
    path = url.removeprefix("http://localhost")
    assert b"household" in client.get(f"{path}/formList").data
    _ok(runner.invoke("forms", "state", "--project", pid, "household", "closed"))
    assert b"household" not in client.get(f"{path}/formList").data


def test_app_users_create__prints_collect_url_and_qr(runner, client, tmp_path, db_session):
    """Should print <base>/v1/key/<token>/projects/<id> that works, and write a QR PNG."""
    pid = _ok(runner.invoke("projects", "create", "P")).strip()
    qr = tmp_path / "qr.png"
    url = _ok(runner.invoke("app-users", "create", "--project", pid, "Tablet 1", "--qr", str(qr)))
    url = url.strip()
    assert url.startswith("http://localhost/v1/key/") and url.endswith(f"/projects/{pid}")
    assert qr.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    resp = client.get(url.removeprefix("http://localhost") + "/formList")
    assert resp.status_code == 200
    user_id = db_session.scalars(select(AppUser.id)).one()
    _ok(runner.invoke("app-users", "revoke", str(user_id)))
    assert client.get(url.removeprefix("http://localhost") + "/formList").status_code == 403


def test_app_users_create__qr_png__decodes_to_the_one_settings_payload(runner, tmp_path):
    """Should write a QR that a scanner reads as server.qr.settings_payload of the printed URL."""
    from server.qr import decode_payload, settings_payload
    from tests.qrcodes import read_qr_png

    pid = _ok(runner.invoke("projects", "create", "Field office North")).strip()
    qr = tmp_path / "qr.png"
    url = _ok(runner.invoke("app-users", "create", "--project", pid, "Tablet", "--qr", str(qr)))
    url = url.strip()
    text = read_qr_png(qr.read_bytes())
    assert text == settings_payload(url, "Field office North")
    assert decode_payload(text) == {
        "general": {"server_url": url, "form_update_mode": "match_exactly"},
        "admin": {},
        "project": {"name": "Field office North", "icon": "F", "color": "#8a5a00"},
    }


def test_users_create__generated_password_shown_once(runner, db_session):
    """Should create a web user with a role and print a generated password."""
    out = _ok(runner.invoke("users", "create", "ana", "--role", "manager"))
    assert "password (shown once)" in out
    user = db_session.scalars(select(WebUser)).one()
    assert user.role == "manager" and user.digest_ha1
    old = user.digest_ha1
    _ok(runner.invoke("users", "set-password", "ana"))
    db_session.expire_all()
    assert db_session.scalars(select(WebUser)).one().digest_ha1 != old


def test_setup__twice__creates_admin_once_secret_file_0600(runner, app_config, db_session):
    """Should create one admin, write its password 0600, and change nothing on a second run."""
    first = _ok(runner.invoke("setup"))
    assert "password (shown once)" in first
    pw_file = Path(app_config["VAR_DIR"]) / "admin-password.txt"
    assert stat.S_IMODE(pw_file.stat().st_mode) == 0o600
    assert pw_file.read_text().strip() in first
    second = _ok(runner.invoke("setup"))
    assert "already exists" in second and "shown once" not in second
    assert db_session.scalar(select(func.count(WebUser.id))) == 1


def test_setup__password_file_cannot_be_written__no_admin_without_a_password(
    runner, app_config, db_session
):
    """Should not leave an admin whose password nobody has: when var/admin-password.txt
    cannot be written, setup fails before committing, and a re-run creates the admin."""
    var = Path(app_config["VAR_DIR"])
    var.mkdir(parents=True, exist_ok=True)
    (var / "admin-password.txt").mkdir()  # a folder where the file should go
    failed = runner.invoke("setup")
    assert failed.exit_code == 1
    assert "admin-password.txt (Is a directory): no admin was created" in failed.output
    assert db_session.scalar(select(func.count(WebUser.id))) == 0
    (var / "admin-password.txt").rmdir()
    again = _ok(runner.invoke("setup"))
    assert (var / "admin-password.txt").read_text().strip() in again
    assert db_session.scalar(select(func.count(WebUser.id))) == 1


def test_setup_demo__twice__idempotent_with_collect_url(
    runner, app_config, db_session, client, tmp_path
):
    """Should create the encrypted demo project and a device URL once, then reuse them."""
    # a real project that exists before the demo: it must stay untouched
    other = int(_ok(runner.invoke("projects", "create", "Field office North")).strip())
    form = tmp_path / "f.xml"
    form.write_bytes(xform("north_intake"))
    _ok(runner.invoke("forms", "publish", "--project", str(other), str(form)))
    first = _ok(runner.invoke("setup", "--demo"))
    var = Path(app_config["VAR_DIR"])
    assert stat.S_IMODE((var / "demo-passphrase.txt").stat().st_mode) == 0o600

    def url_line(output: str) -> str:
        return next(line for line in output.splitlines() if line.startswith("Collect server URL"))

    url = url_line(first).split(": ", 1)[1]
    assert "fictional assessments reconciled" in first
    second = _ok(runner.invoke("setup", "--demo"))
    assert url_line(second).endswith(url)
    assert "demo cases: already seeded" in second
    assert db_session.scalar(select(func.count(Project.id))) == 2
    assert db_session.scalar(select(func.count(AppUser.id))) == 1
    project = db_session.scalars(select(Project).where(Project.id != other)).one()
    assert project.encrypted and project.name == "Demo (fictional data)"
    form_list = client.get(url.removeprefix("http://localhost") + "/formList")
    assert form_list.status_code == 200
    from server.services.publishing import list_contexts

    contexts = list_contexts(Path(app_config["INSTRUMENTS_DIR"]))
    assert form_list.data.count(b"<xform>") == len(contexts) > 0
    assert "already published" in second and "published" in first
    _assert_demo_caseload(db_session, project.id)


def _assert_demo_caseload(db_session, demo_id: int) -> None:
    """The issue's first-run demo: "a few dozen cases with one to four assessments each, across
    casework types, some overdue, some closure-ready, one conflict, one orphan", all of it
    through upload + reconciliation and only in the demo project."""
    from server.models import Entity, EntityBacklog, Form, Submission
    from server.models_cases import Assessment, AssessmentState, Case, CaseStatus, ReviewItem
    from server.services.cases import review_queues

    cases = db_session.scalars(select(Case).where(Case.project_id == demo_id)).all()
    assert 24 <= len(cases) <= 48 and all(c.case_code.startswith("DEMO-") for c in cases)
    assessments = db_session.scalars(
        select(Assessment).where(Assessment.project_id == demo_id, Assessment.case_id.is_not(None))
    ).all()
    active: dict[int, int] = {}
    kinds: dict[int, set[tuple[str | None, str | None]]] = {}
    for a in assessments:
        kinds.setdefault(a.case_id, set()).add((a.casework_type, a.office))
        if a.state == AssessmentState.ACTIVE:
            active[a.case_id] = active.get(a.case_id, 0) + 1
    for c in cases:
        assert 1 <= active.get(c.id, 0) <= 4, (c.case_code, active.get(c.id))
        assert c.assessment_count == active[c.id]
        # one casework type and one office per case, across all its assessments
        assert kinds[c.id] == {(c.casework_type, c.office)}, (c.case_code, kinds[c.id])
    assert len({c.casework_type for c in cases}) >= 2
    assert any("overdue" in (c.flags or []) for c in cases)
    assert any(c.closure_ready and c.status == CaseStatus.OPEN for c in cases)
    open_items = db_session.execute(
        select(ReviewItem.kind, func.count())
        .where(ReviewItem.project_id == demo_id, ReviewItem.resolved_at.is_(None))
        .group_by(ReviewItem.kind)
    ).all()
    by_kind = dict(open_items)
    assert by_kind.get("conflict") == 1 and by_kind.get("orphan") == 1, by_kind
    # the conflict's second device edited the case list in parallel: one entity conflict;
    # every other follow-up builds on its device's previous version, so none waits
    assert by_kind.get("entity_conflict") == 1, by_kind
    held = select(func.count(EntityBacklog.id)).where(EntityBacklog.project_id == demo_id)
    assert db_session.scalar(held) == 0
    queues = review_queues(db_session, demo_id)
    assert len(queues["orphans"]) == 1 and len(queues["conflicts"]) >= 1
    # nothing anywhere else
    elsewhere = [
        select(func.count(Submission.id))
        .join(Form, Form.id == Submission.form_id)
        .where(Form.project_id != demo_id),
        *(
            select(func.count(model.id)).where(model.project_id != demo_id)
            for model in (Case, Assessment, ReviewItem, Entity, EntityBacklog)
        ),
    ]
    assert [db_session.scalar(q) for q in elsewhere] == [0] * len(elsewhere)


def test_forms_publish__context__carries_project_key_and_report(runner, tmp_path, db_session):
    """Should compile a context for an encrypted project: its key in the form, report stored."""
    from server.models import FormAttachment, FormVersion
    from server.services.publishing import list_contexts

    secret = tmp_path / "pass"
    secret.write_text("a long fictional passphrase")
    pid = _ok(runner.invoke("projects", "create", "S", "--passphrase-file", str(secret))).strip()
    context = list_contexts(Path(__file__).resolve().parents[2] / "instruments")[0]
    out = _ok(runner.invoke("forms", "publish", "--project", pid, "--context", context))
    form_id, version = out.split()[:2]
    fv = db_session.scalars(select(FormVersion)).one()
    key = db_session.scalars(select(ProjectKey)).one()
    assert (fv.version, fv.public_key_b64) == (version, key.public_key_b64)
    assert f'base64RsaPublicKey="{key.public_key_b64}"'.encode() in fv.xml
    assert fv.report and fv.report["entity_list"]["dataset"] == "cases"
    atts = db_session.scalars(select(FormAttachment)).all()
    assert [(a.name, a.kind, a.dataset) for a in atts] == [("cases.csv", "entityList", "cases")]
    assert form_id in out


def test_db_current__after_migration__head(runner):
    """Should report the head revision."""
    from alembic.script import ScriptDirectory

    from server import db

    (head,) = ScriptDirectory.from_config(db.alembic_config("sqlite://")).get_heads()
    assert _ok(runner.invoke("db", "current")).strip() == head


def test_forms_publish__with_attachment__listed_in_manifest(runner, client, tmp_path):
    """Should store --attachment files and serve them through the manifest."""
    pid = _ok(runner.invoke("projects", "create", "P")).strip()
    form = tmp_path / "f.xml"
    form.write_bytes(xform(media=("logo.png",)))
    logo = tmp_path / "logo.png"
    logo.write_bytes(b"\x89PNG fictional")
    _ok(runner.invoke("forms", "publish", "--project", pid, str(form), "--attachment", str(logo)))
    url = _ok(runner.invoke("app-users", "create", "--project", pid, "T")).strip()
    path = url.removeprefix("http://localhost")
    manifest = client.get(f"{path}/forms/household/manifest")
    assert b"logo.png" in manifest.data
    assert client.get(f"{path}/forms/household/attachments/logo.png").data == b"\x89PNG fictional"


def _api_projects(client, user: str) -> list[int] | int:
    """The project ids ``user`` sees through the API (or the error status)."""
    from tests.admin.conftest import HTTPS, PASSWORD, basic

    resp = client.get("/api/v1/projects", base_url=HTTPS, headers=basic(user, PASSWORD))
    return [p["id"] for p in resp.get_json()] if resp.status_code == 200 else resp.status_code


def _password_file(tmp_path: Path) -> str:
    from tests.admin.conftest import PASSWORD

    path = tmp_path / "pw"
    path.write_text(PASSWORD + "\n")
    return str(path)


def test_users_grant_revoke__by_email__access_follows_over_http(runner, client, tmp_path):
    """Should give a manager one project by email (the API then lists that one only), show it
    in users list, and take it away again."""
    north = _ok(runner.invoke("projects", "create", "North")).strip()
    _ok(runner.invoke("projects", "create", "South"))
    _ok(runner.invoke("users", "create", "ana", "--role", "manager", "--email",
                      "Ana@Example.org", "--password-file", _password_file(tmp_path)))  # fmt: skip
    assert _api_projects(client, "ana") == []
    out = _ok(runner.invoke("users", "grant", "ana@example.org", "--project", north,
                            "--role", "manager"))  # fmt: skip
    assert out.split("\t")[:3] == ["ana", "manager", f"project {north}"]
    assert _api_projects(client, "ana") == [int(north)]
    listed = _ok(runner.invoke("users", "list"))
    assert f"ana\tmanager\t{north}:manager" in listed
    _ok(runner.invoke("users", "grant", "ana", "--project", north, "--role", "viewer"))
    assert f"ana\tmanager\t{north}:viewer" in _ok(runner.invoke("users", "list"))
    _ok(runner.invoke("users", "revoke", "ana", "--project", north))
    assert _api_projects(client, "ana") == []
    again = runner.invoke("users", "revoke", "ana", "--project", north)
    assert again.exit_code != 0 and "no role in project" in again.output


def test_users_create__with_projects__granted_at_once(runner, client, tmp_path, db_session):
    """Should create a viewer already holding the projects named with --project."""
    a = _ok(runner.invoke("projects", "create", "A")).strip()
    b = _ok(runner.invoke("projects", "create", "B")).strip()
    _ok(runner.invoke("projects", "create", "C"))
    out = _ok(runner.invoke("users", "create", "vic", "--project", a, "--project", b,
                            "--password-file", _password_file(tmp_path)))  # fmt: skip
    assert f"viewer of project {a}" in out and f"viewer of project {b}" in out
    assert _api_projects(client, "vic") == [int(a), int(b)]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("users", "grant", "nobody", "--project", "1", "--role", "viewer"), "No web user"),
        (("users", "grant", "root", "--project", "1", "--role", "viewer"), "admin"),
        (("users", "grant", "ana", "--project", "999", "--role", "viewer"), "does not exist"),
        (("users", "grant", "ana", "--project", "1", "--role", "admin"), "Invalid value"),
        (("users", "create", "boss", "--role", "admin", "--project", "1"), "admin"),
    ],
)
def test_users_grant__bad_target__clear_error_nothing_changed(runner, db_session, args, message):
    """Should refuse unknown users and projects, admins (site-wide already) and non-project
    roles with a message, and change nothing."""
    from server.models import ProjectMembership

    _ok(runner.invoke("projects", "create", "P"))
    _ok(runner.invoke("users", "create", "root", "--role", "admin"))
    _ok(runner.invoke("users", "create", "ana", "--role", "manager"))
    result = runner.invoke(*args)
    assert result.exit_code != 0 and message in result.output
    assert db_session.scalars(select(ProjectMembership)).all() == []
    assert db_session.scalar(select(WebUser.id).where(WebUser.username == "boss")) is None


def test_app_users_create__no_base_url__warns_phones_cannot_reach_it(runner, tmp_path):
    """Should tell the admin the printed URL is this machine's and how to give the real one."""
    from tests.conftest import CliRunner

    local = CliRunner({k: v for k, v in runner.env.items() if k != "KINTSUGI_BASE_URL"})
    pid = _ok(local.invoke("projects", "create", "P")).strip()

    out = _ok(local.invoke("app-users", "create", "--project", pid, "Tablet 1"))

    assert "KINTSUGI_BASE_URL" in out and "phone" in out
    assert _ok(runner.invoke("app-users", "create", "--project", pid, "Tablet 2")).count("\n") == 1


def test_app_users_create__qr_png__readable_by_its_owner_only(runner, tmp_path):
    """Should write the QR (it carries the device's token) with mode 0600, as other secrets."""
    pid = _ok(runner.invoke("projects", "create", "P")).strip()
    qr = tmp_path / "qr.png"

    _ok(runner.invoke("app-users", "create", "--project", pid, "Tablet", "--qr", str(qr)))

    assert stat.S_IMODE(qr.stat().st_mode) == 0o600
