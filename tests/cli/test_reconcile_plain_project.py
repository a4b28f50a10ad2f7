"""``kintsugi reconcile`` for a project without encryption, as an admin types it.

A project created without ``--passphrase-file`` has no key: Collect sends it plaintext, and the
worker must turn those submissions into cases without any passphrase (as ODK Central needs
none for an unencrypted project).
"""

from __future__ import annotations

from sqlalchemy import func, select

from server.models_cases import Assessment
from tests.cases.fieldwork import instance_xml, ratings_for
from tests.server.collect import CollectActions

CONTEXT = "kenya-police-abuse"


def _ok(result):
    assert result.exit_code == 0, result.output
    return result.output


def _plain_project_with_form(runner, client):
    """A plain project, the compiled Kenya form published to it, and a device."""
    pid = _ok(runner.invoke("projects", "create", "Mombasa aftercare")).strip()
    _ok(runner.invoke("forms", "publish", "--project", pid, "--context", CONTEXT))
    url = _ok(runner.invoke("app-users", "create", "--project", pid, "Tablet 1")).strip()
    return pid, CollectActions(client, url.removeprefix("http://localhost"))


def _send_intake(collect, db_session, n: int) -> None:
    """A device sends the plaintext intake of case MB-000n (an unencrypted form)."""
    from server.models import FormVersion

    report = db_session.scalars(select(FormVersion.report)).one()
    _iid, xml = instance_xml(
        report, case_code=f"MB-000{n}", point="intake", date=f"2026-10-0{n}",
        ratings=ratings_for(report, "3"), entity_id=f"7a1c3b7e-0000-4000-8000-00000000000{n}",
    )  # fmt: skip
    assert collect.submit(xml).status_code == 201


def test_reconcile__plain_project_no_passphrase__plaintext_submissions_become_cases(
    runner, client, db_session
):
    """Should reconcile a plaintext intake of an unencrypted project with no passphrase file."""
    pid, collect = _plain_project_with_form(runner, client)
    _send_intake(collect, db_session, 1)

    out = _ok(runner.invoke("reconcile", "--project", pid, "--once"))

    assert "processed 1: 1 assessments" in out
    db_session.expire_all()
    assert db_session.scalar(select(func.count()).select_from(Assessment)) == 1


def test_reconcile__plain_project_with_passphrase_file__still_reconciles(
    runner, client, db_session, tmp_path
):
    """Should not fail on a passphrase file a generic worker setup passes for a plain project."""
    pid, collect = _plain_project_with_form(runner, client)
    _send_intake(collect, db_session, 2)
    secret = tmp_path / "pass"
    secret.write_text("a long fictional passphrase\n")

    out = _ok(
        runner.invoke("reconcile", "--project", pid, "--passphrase-file", str(secret), "--once")
    )

    assert "processed 1: 1 assessments" in out


def test_reconcile__encrypted_project_no_passphrase_file__says_what_to_give(runner, tmp_path):
    """Should tell the admin an encrypted project's worker needs --passphrase-file."""
    secret = tmp_path / "pass"
    secret.write_text("a long fictional passphrase\n")
    pid = _ok(runner.invoke("projects", "create", "S", "--passphrase-file", str(secret))).strip()

    result = runner.invoke("reconcile", "--project", pid, "--once")

    assert result.exit_code != 0
    assert f"Project {pid} is encrypted" in result.output
    assert "--passphrase-file" in result.output


def test_reconcile__unknown_project__clear_error(runner):
    """Should say the project does not exist (with or without a passphrase file)."""
    result = runner.invoke("reconcile", "--project", "99", "--once")

    assert result.exit_code == 1
    assert "Project 99 does not exist" in result.output
