"""Forms are served to Collect byte for byte as published: no per-device submission URL.

Collect posts a form's submissions to its ``<submission action>`` when there is one and stores
that action on every instance it saves; without one it posts to ``<its server URL>/submission``,
which for a device given a QR code is its own app-user token URL. So every device downloads the
very bytes that were published, and the form list's hash is their md5.
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


def test_form_download__two_token_devices__published_bytes_and_hash(app, client):
    """Should serve each device the published XForm unchanged (key kept, no action), announce
    its md5 in the form list, and accept the device's post to <server URL>/submission."""
    with app.extensions["kintsugi.db"].sessionmaker() as s:
        project = create_project(s, "Action office", passphrase=b"fictional passphrase 42")
        _, token_a = create_app_user(s, project, "Tablet A")
        _, token_b = create_app_user(s, project, "Tablet B")
        s.commit()
        pid, key_b64 = project.id, project.active_key.public_key_b64
    published = xform(public_key=key_b64)
    publish(app, pid, published)
    for token in (token_a, token_b):
        collect = CollectActions(client, f"/v1/key/{token}/projects/{pid}")
        listing = collect.form_list().data.decode()
        announced = re.search(r"<hash>md5:([0-9a-f]{32})</hash>", listing).group(1)
        url = (
            re.search(r"<downloadUrl>([^<]+)</downloadUrl>", listing).group(1).replace("&amp;", "&")
        )
        form = collect.get(url.removeprefix("http://localhost")).data
        assert form == published
        assert announced == hashlib.md5(form).hexdigest()
        assert b" action=" not in form

    # Collect posts to <server URL>/submission: the token URL of the device's QR code
    instance_id = f"uuid:{uuid.uuid4()}"
    manifest, files = encrypt_submission(
        instance(instance_id=instance_id), load_der_public_key(base64.b64decode(key_b64)),
        form_id="household", version="1", instance_id=instance_id,
    )  # fmt: skip
    resp = CollectActions(client, f"/v1/key/{token_a}/projects/{pid}").submit(manifest, files)
    assert resp.status_code == 201


def test_form_download__published_with_own_action__kept_as_published(app, client, field):
    """Should leave an action the designer put in the form alone (served as published)."""
    published = xform("withaction").replace(
        b"<model>", b'<model><submission action="https://other.example/submit" method="post"/>'
    )
    publish(app, field.project_id, published)
    form = field.collect.get(f"{field.collect.base}/forms/withaction.xml")
    assert form.status_code == 200 and form.data == published
