"""The field fixture: an encrypted project with a compiled form, a device, and Collect-style uploads."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.serialization import load_der_public_key

from server.blobs import make_blob_store
from server.services import custody
from server.services.projects import create_project
from server.services.publishing import publish_context
from server.services.users import create_app_user, create_web_user
from tests.admin.conftest import HTTPS, PASSWORD, basic
from tests.cases.fieldwork import encrypted_upload, instance_xml
from tests.server.collect import CollectActions

PASSPHRASE = "fictional passphrase for tests"
CONTEXT = "kenya-police-abuse"


@pytest.fixture
def field(app, client, tmp_path):
    """An encrypted project with the Kenya form published and a device."""
    with app.extensions["kintsugi.db"].sessionmaker() as s:
        project = create_project(s, "Nairobi aftercare", passphrase=PASSPHRASE.encode())
        _user, token = create_app_user(s, project, "Tablet 1")
        version, _ = publish_context(
            s, make_blob_store(app.config, s), project, app.config, CONTEXT
        )
        s.commit()
        pid, report, key_b64 = project.id, version.report, project.active_key.public_key_b64
    pw = tmp_path / "pass.txt"
    pw.write_text(PASSPHRASE + "\n")
    collect = CollectActions(client, f"/v1/key/{token}/projects/{pid}")
    public = load_der_public_key(base64.b64decode(key_b64))

    class Field:
        project_id, passphrase_file = pid, pw

        def __init__(self):
            self.report = report
            self.collect = collect  # the device's OpenRosa client (formList, manifest, files...)

        def unlock(self):
            """Unlock the project key in this process (as an admin would before a worker runs
            in it); returns the sessionmaker the workers take."""
            sessionmaker = app.extensions["kintsugi.db"].sessionmaker
            with sessionmaker() as s:
                custody.unlock_project(s, pid, PASSPHRASE.encode(), actor="test")
                s.commit()
            return sessionmaker

        def post(self, manifest, files):
            resp = collect.submit(manifest, files)
            assert resp.status_code == 201, resp.data
            return resp

        def encrypt(self, **kw):
            instance_id, xml = instance_xml(report, **kw)
            return (instance_id, *encrypted_upload(report, public, instance_id, xml))

        def send(self, **kw):
            instance_id, manifest, files = self.encrypt(**kw)
            self.post(manifest, files)
            return instance_id, manifest, files

    yield Field()
    custody.lock_all()


@pytest.fixture
def reconcile(field, runner):
    """Run ``kintsugi reconcile --once`` for the field project, as an admin types it."""
    args = ["--project", str(field.project_id), "--passphrase-file", str(field.passphrase_file)]

    def run() -> str:
        result = runner.invoke("reconcile", *args, "--once")
        assert result.exit_code == 0, result.output
        return result.output

    return run


@pytest.fixture
def admin_api(app, field):
    """Call the admin API of the field project as a site admin (Basic over https)."""
    with app.extensions["kintsugi.db"].sessionmaker() as s:
        create_web_user(s, "lead", PASSWORD, role="admin", realm=app.config["DIGEST_REALM"],
                        method=app.config["PASSWORD_HASH_METHOD"])  # fmt: skip
        s.commit()
    client, path = app.test_client(), f"/api/v1/projects/{field.project_id}"

    def call(method: str, sub: str, **kw):
        return client.open(path + sub, method=method, base_url=HTTPS, headers=basic("lead"), **kw)

    return call
