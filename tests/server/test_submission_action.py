"""Forms of an encrypted project carry this server's submission URL, per device.

Collect posts a form's submissions to its ``<submission action>`` when there is one. Each device
downloads the form with ``action`` set to the URL it itself used, token included, so uploads stay
authenticated; the form-list hash is the md5 of exactly those bytes.
"""

from __future__ import annotations

import base64
import hashlib
import re
import uuid

from cryptography.hazmat.primitives.serialization import load_der_public_key

from server.services.projects import create_project
from server.services.users import create_app_user
from sync_protocol.crypto import encrypt_submission
from tests.server.collect import CollectActions
from tests.server.conftest import publish
from tests.server.forms import instance, xform


def test_form_download__token_device__action_is_its_own_submission_url(app, client):
    """Should serve the key and a per-device action, hash the served bytes, and accept a post there."""
    with app.extensions["kintsugi.db"].sessionmaker() as s:
        project = create_project(s, "Action office", passphrase=b"fictional passphrase 42")
        _, token_a = create_app_user(s, project, "Tablet A")
        _, token_b = create_app_user(s, project, "Tablet B")
        s.commit()
        pid, key_b64 = project.id, project.active_key.public_key_b64
    publish(app, pid, xform(public_key=key_b64))
    served = {}
    for token in (token_a, token_b):
        base = f"/v1/key/{token}/projects/{pid}"
        collect = CollectActions(client, base)
        listing = collect.form_list().data.decode()
        announced = re.search(r"<hash>md5:([0-9a-f]{32})</hash>", listing).group(1)
        url = (
            re.search(r"<downloadUrl>([^<]+)</downloadUrl>", listing).group(1).replace("&amp;", "&")
        )
        form = collect.get(url.removeprefix("http://localhost")).data
        assert hashlib.md5(form).hexdigest() == announced
        assert f'base64RsaPublicKey="{key_b64}"'.encode() in form
        action = re.search(rb'<submission action="([^"]+)" method="post"', form).group(1).decode()
        assert action == f"http://localhost{base}/submission"
        served[token] = (form, action)
    assert served[token_a][1] != served[token_b][1]

    # Collect posts to the action: it must work exactly as the server URL does
    instance_id = f"uuid:{uuid.uuid4()}"
    manifest, files = encrypt_submission(
        instance(instance_id=instance_id), load_der_public_key(base64.b64decode(key_b64)),
        form_id="household", version="1", instance_id=instance_id,
    )  # fmt: skip
    action_path = served[token_a][1].removeprefix("http://localhost")
    resp = CollectActions(client, action_path.removesuffix("/submission")).submit(manifest, files)
    assert resp.status_code == 201


def test_form_download__setting_off__stored_bytes(make_app):
    """Should serve the form exactly as published when SUBMISSION_URL_IN_FORMS is off."""
    app = make_app(SUBMISSION_URL_IN_FORMS=False)
    client = app.test_client()
    with app.extensions["kintsugi.db"].sessionmaker() as s:
        project = create_project(s, "Plain office", passphrase=b"fictional passphrase 43")
        _, token = create_app_user(s, project, "Tablet")
        s.commit()
        pid, key_b64 = project.id, project.active_key.public_key_b64
    published = xform(public_key=key_b64)
    publish(app, pid, published)
    form = CollectActions(client, f"/v1/key/{token}/projects/{pid}").get(
        f"/v1/key/{token}/projects/{pid}/forms/household.xml"
    )
    assert b" action=" not in form.data and key_b64.encode() in form.data
