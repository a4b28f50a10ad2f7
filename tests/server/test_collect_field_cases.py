"""What ODK Collect does in the field, replayed against the server request by request.

A device given a new QR code with instances still to send; a password with accents signed in
with Digest, and a username Collect cannot send; a form designed without ``meta/instanceID``;
the integrity GET of a Digest user holding hundreds of offline cases, under the production
gunicorn config; the next POST of a split upload arriving long after the nonce was issued.

Sources (read at the commits listed in shared/notes/openrosa.md §0):
* getodk/collect ``collect_app/.../tasks/SaveFormToDisk.java``,
  ``collect_app/.../instancemanagement/send/OpenRosaServerInstanceUploader.kt``,
  ``open-rosa/.../okhttp/OkHttpOpenRosaServerClientProvider.java``
* rburgst/okhttp-digest 3.1.1 (the version Collect pins in gradle/libs.versions.toml)
  ``src/main/java/com/burgstaller/okhttp/digest/DigestAuthenticator.java``
"""

from __future__ import annotations

import base64
import hashlib
import re
import uuid

import pytest
import requests
from cryptography.hazmat.primitives.serialization import load_der_public_key

from server.errors import PublishError
from server.services.projects import create_project
from server.services.users import create_app_user, revoke_app_user
from sync_protocol.crypto import encrypt_submission
from tests.server.collect import CollectActions, collect_headers, with_device_id
from tests.server.conftest import publish
from tests.server.forms import instance, xform
from tests.server.test_auth import _parse_challenge


def _okhttp_digest(challenge: dict[str, str], user: str, password: str, method: str, uri: str,
                   nc: int = 1) -> str:  # fmt: skip
    """The Authorization okhttp-digest 3.1.1 builds (createDigestHeader): HA1 and HA2 are the
    bytes of the strings in the challenge's ``charset`` parameter, and without one in
    ``getCredentialsCharset()``, which is US-ASCII by default (``new DigestAuthenticator(cred)``
    in Collect); Java's String.getBytes replaces each unmappable character by ``?``."""
    charset = challenge.get("charset", "US-ASCII")

    def md5(s: str) -> str:
        return hashlib.md5(s.encode(charset, errors="replace"), usedforsecurity=False).hexdigest()

    ha1 = md5(f"{user}:{challenge['realm']}:{password}")
    ha2 = md5(f"{method}:{uri}")
    ncv, cnonce = f"{nc:08x}", "0a4f113b"
    response = hashlib.md5(
        f"{ha1}:{challenge['nonce']}:{ncv}:{cnonce}:auth:{ha2}".encode("ascii"),
        usedforsecurity=False,
    ).hexdigest()
    return (
        f'Digest username="{user}", realm="{challenge["realm"]}", nonce="{challenge["nonce"]}", '
        f'uri="{uri}", response="{response}", qop=auth, nc={ncv}, cnonce="{cnonce}", '
        f'algorithm=MD5, opaque="{challenge["opaque"]}"'
    )


def _manager(app, project_id: int, username: str, password: str) -> None:
    from server.models import Project
    from server.services.access import grant_project_role
    from server.services.users import create_web_user

    with app.extensions["kintsugi.db"].sessionmaker() as s:
        user = create_web_user(
            s, username, password, role="manager", realm=app.config["DIGEST_REALM"],
            method=app.config["PASSWORD_HASH_METHOD"],
        )  # fmt: skip
        grant_project_role(s, user, s.get(Project, project_id), "manager")
        s.commit()


def test_digest__non_ascii_password__collect_signs_in(app, client, field):
    """A web user whose password has an accent (``contraseña``) must be able to sign in from
    Collect. okhttp-digest hashes the credentials in the challenge's ``charset`` and falls back
    to US-ASCII (``ñ`` becomes ``?``), while the server stores HA1 over UTF-8. Without
    ``charset=UTF-8`` in the challenge (RFC 7616 §3.3) the two never match: 401, Collect's
    authenticator gives up (same nonce, not stale) and re-prompts for a password that is right.
    """
    _manager(app, field.project_id, "maria", "contraseña segura")
    uri = f"/v1/projects/{field.project_id}/formList?deviceID=collect%3AXa7bC9dE1fG3hJ5k"
    first = client.get(uri, headers=collect_headers())
    assert first.status_code == 401
    ch = _parse_challenge(first.headers["WWW-Authenticate"])
    auth = _okhttp_digest(ch, "maria", "contraseña segura", "GET", uri)
    resp = client.get(uri, headers={**collect_headers(), "Authorization": auth})
    assert resp.status_code == 200, resp.data


def test_form_action__device_given_new_qr_code__unsent_instances_still_upload(app, client):
    """Revoking a device's token and giving it a new QR code (the remedy the 403 message
    itself asks for) must not strand the forms it already filled.

    Collect stores the form's ``<submission action>`` on every instance when it is first saved
    (SaveFormToDisk: ``instanceBuilder.submissionUri(form.getSubmissionUri())``) and later
    posts there, falling back to ``<server URL>/submission`` only when there is no action
    (OpenRosaServerInstanceUploader.getUrlToSubmitTo). Were the form served with
    ``action="<the device's token URL>/submission"``, every draft and finalized instance made
    before the new QR code would keep posting to the revoked token: 403 for ever, and an
    encrypted instance cannot be reopened to pick up another URL. So the server serves the
    form without an action.
    """
    with app.extensions["kintsugi.db"].sessionmaker() as s:
        project = create_project(s, "Rotation office", passphrase=b"fictional passphrase 44")
        old_user, old_token = create_app_user(s, project, "Tablet 7")
        s.commit()
        pid, key_b64, old_id = project.id, project.active_key.public_key_b64, old_user.id
    publish(app, pid, xform(public_key=key_b64))

    # The device downloads the form and the enumerator fills it in (instance saved).
    old_base = f"/v1/key/{old_token}/projects/{pid}"
    form = CollectActions(client, old_base).get(f"{old_base}/forms/household.xml").data
    action = re.search(rb'<submission[^>]*\saction="([^"]+)"', form)
    instance_submission_uri = action.group(1).decode() if action else None

    # The supervisor revokes the token and the device scans a new QR code.
    with app.extensions["kintsugi.db"].sessionmaker() as s:
        revoke_app_user(s, old_id)
        _, new_token = create_app_user(s, s.get(type(project), pid), "Tablet 7 (new QR)")
        s.commit()
    server_url = f"http://localhost/v1/key/{new_token}/projects/{pid}"

    # Collect sends the pending instance: its stored action, else the configured server URL.
    url = instance_submission_uri or f"{server_url}/submission"
    instance_id = f"uuid:{uuid.uuid4()}"
    manifest, files = encrypt_submission(
        instance(instance_id=instance_id), load_der_public_key(base64.b64decode(key_b64)),
        form_id="household", version="1", instance_id=instance_id,
    )  # fmt: skip
    collect = CollectActions(
        client, url.removeprefix("http://localhost").removesuffix("/submission")
    )
    resp = collect.submit(manifest, files)
    assert resp.status_code == 201, resp.data


def _form_without_instance_id() -> bytes:
    """What pyxform makes of an XLSForm with ``omit_instanceID``: no meta/instanceID."""
    no_id = (
        xform("noid")
        .replace(b'<bind nodeset="/data/meta/instanceID" type="string" readonly="true()" '
                 b'jr:preload="uid"/>', b"")
        .replace(b"<meta><instanceID/><instanceName/></meta>", b"")
    )  # fmt: skip
    assert b"instanceID" not in no_id
    return no_id


def test_form_without_instance_id__published__refused_never_listed_to_collect(app, field):
    """A form the server would publish and list to Collect must not have every submission
    refused.

    An XLSForm with ``omit_instanceID`` yields a form with no ``meta/instanceID``; Collect
    fills and sends it as is, and the server answers each upload 400 "The form must be fixed
    by its designer" (Central would generate an id: openrosa.md §6.4-3). The server refuses
    such a form at publication, telling the designer what to change, so it never reaches a
    device.
    """
    with pytest.raises(PublishError) as refused:
        publish(app, field.project_id, _form_without_instance_id())
    message = str(refused.value)
    assert "'noid'" in message and "meta/instanceID" in message
    assert "omit_instanceID" in message
    assert b"noid" not in field.collect.form_list().data
    assert field.collect.get(f"{field.collect.base}/forms/noid.xml").status_code == 404


def test_form_without_instance_id__cli_publish__names_file_and_fix(runner, field, tmp_path):
    """``kintsugi forms publish`` refuses it with the file at fault and the fix."""
    path = tmp_path / "noid.xml"
    path.write_bytes(_form_without_instance_id())
    result = runner.invoke("forms", "publish", "--project", str(field.project_id), str(path))
    assert result.exit_code != 0
    assert f"{path}: Form 'noid' has no meta/instanceID" in result.output
    assert "omit_instanceID" in result.output
    assert b"noid" not in field.collect.form_list().data


def test_integrity__digest_user_with_many_offline_cases__production_gunicorn_accepts(
    app, app_config, field
):
    """The integrity GET for a web user signed in with Digest. okhttp-digest puts the whole
    request path *and query* in the ``uri`` parameter of ``Authorization`` (requestPath), and
    Collect sends it proactively once authenticated (AuthenticationCacheInterceptor). With
    ``?id=`` listing every offline case (39 bytes each) the header passes gunicorn's default
    ``limit_request_field_size`` (8190) at about 205 cases. Lifting only
    ``limit_request_line`` in docker/gunicorn.conf.py left the header refused, and Collect's
    form update failed.
    """
    from tests.reliability.server import Gunicorn

    publish(
        app,
        field.project_id,
        xform("followup", entity_list="cases"),
        report={"entity_list": {"dataset": "cases", "properties": ["district"]}},
    )
    _manager(app, field.project_id, "maria", "correct horse battery")
    with Gunicorn(app_config, workers=1) as server:
        # 250: past the old limit; 1,600: what README.md and the config promise (64 KiB)
        for cases in (250, 1600):
            ids = [str(uuid.uuid4()) for _ in range(cases)]
            path = with_device_id(
                f"/v1/projects/{field.project_id}/datasets/cases/integrity?id={'%2C'.join(ids)}"
            )
            first = requests.get(server.url + path, headers=collect_headers(), timeout=30)
            assert first.status_code == 401
            ch = _parse_challenge(first.headers["WWW-Authenticate"])
            auth = _okhttp_digest(ch, "maria", "correct horse battery", "GET", path)
            resp = requests.get(
                server.url + path, headers={**collect_headers(), "Authorization": auth}, timeout=30
            )
            assert resp.status_code == 200, (cases, resp.status_code, resp.text[:300])


@pytest.mark.parametrize(
    "age",
    [
        pytest.param(900, id="1 Mbit/s, one POST before"),
        pytest.param(7 * 3600, id="64 kbit/s, two POSTs before"),
    ],
)
def test_digest__next_post_of_split_upload_on_slow_link__not_sent_twice(app, client, field, age):
    """Collect splits an upload into POSTs of up to X-OpenRosa-Accept-Content-Length (100 MB
    here) and sends them back to back with no HEAD in between (OkHttpConnection
    .uploadSubmissionAndFiles), each with the cached Digest credentials, i.e. the nonce from
    the HEAD probe. 100 MB takes about 15 minutes at 1 Mbit/s and 3.5 hours at 64 kbit/s, so
    the next POST carries a nonce that old or older; were it stale the server would answer
    401 stale=true once the body has been read, and OkHttp would send the whole 100 MB again
    with the new nonce. The nonce count (``digest_nonces``) refuses replays, so an old nonce
    with a new ``nc`` is safe to accept; on metered field data every expiry costs a full
    re-upload.
    """
    import time

    from server.auth import make_nonce
    from tests.server.collect import multipart_body

    publish(app, field.project_id, xform())
    _manager(app, field.project_id, "maria", "correct horse battery")
    uri = f"/v1/projects/{field.project_id}/submission?deviceID=collect%3AXa7bC9dE1fG3hJ5k"
    ch = _parse_challenge(client.head(uri, headers=collect_headers()).headers["WWW-Authenticate"])
    # the nonce the HEAD probe got when the upload started, ``age`` seconds ago
    ch["nonce"] = make_nonce(app.config["SECRET_KEY"], now=time.time() - age)
    body, ctype = multipart_body(instance(photo="p2.jpg"), files={"p2.jpg": b"\xff\xd8" * 1000})
    auth = _okhttp_digest(ch, "maria", "correct horse battery", "POST", uri, nc=3)
    headers = {**collect_headers(), "Content-Type": ctype, "Authorization": auth}
    resp = client.post(uri, data=body, headers=headers)
    assert resp.status_code == 201, resp.headers.get("WWW-Authenticate")
    # the same POST replayed, or an older count, on that long-lived nonce: refused
    replay = client.post(uri, data=body, headers=headers)
    assert replay.status_code == 401 and "stale=true" in replay.headers["WWW-Authenticate"]
    older = _okhttp_digest(ch, "maria", "correct horse battery", "POST", uri, nc=2)
    resp = client.post(uri, data=body, headers={**headers, "Authorization": older})
    assert resp.status_code == 401


def test_digest__nonce_past_its_lifetime__stale_then_fresh_challenge_signs_in(app, client, field):
    """A nonce older than NONCE_TTL still expires: the right password gets 401 with
    ``stale=true`` (okhttp-digest retries without prompting) and a challenge that again says
    ``charset=UTF-8``, which Collect answers at once."""
    import time

    from server.auth import make_nonce

    _manager(app, field.project_id, "maria", "contraseña segura")
    uri = f"/v1/projects/{field.project_id}/formList?deviceID=collect%3AXa7bC9dE1fG3hJ5k"
    ch = _parse_challenge(client.get(uri, headers=collect_headers()).headers["WWW-Authenticate"])
    ch["nonce"] = make_nonce(
        app.config["SECRET_KEY"], now=time.time() - app.config["NONCE_TTL"] - 5
    )
    auth = _okhttp_digest(ch, "maria", "contraseña segura", "GET", uri, nc=7)
    stale = client.get(uri, headers={**collect_headers(), "Authorization": auth})
    assert stale.status_code == 401
    fresh = _parse_challenge(stale.headers["WWW-Authenticate"])
    assert fresh["stale"] == "true" and fresh["charset"] == "UTF-8"
    auth = _okhttp_digest(fresh, "maria", "contraseña segura", "GET", uri)
    assert client.get(uri, headers={**collect_headers(), "Authorization": auth}).status_code == 200


def test_digest__non_ascii_username__refused_at_creation_with_reason(runner, app):
    """okhttp-digest writes the username as is into ``Authorization`` and OkHttp refuses any
    header value outside printable ASCII, so Collect could never sign in as ``josé`` (an
    exception on the tablet, not even a password prompt). ``kintsugi users create`` refuses
    such a name and says why; an ASCII name with a non-ASCII password works (above)."""
    from sqlalchemy import select

    from server.models import WebUser

    result = runner.invoke("users", "create", "josé", "--role", "manager")
    assert result.exit_code != 0
    assert "'josé'" in result.output and "ODK Collect cannot send" in result.output
    with app.extensions["kintsugi.db"].sessionmaker() as s:
        assert s.scalars(select(WebUser.username)).all() == []
    assert runner.invoke("users", "create", "jose", "--role", "manager").exit_code == 0


@pytest.mark.parametrize("charset", ["iso-8859-1", "utf-8"])
def test_basic__non_ascii_password__collect_and_browsers_sign_in(app, client, field, charset):
    """A password with an accent must work over https Basic whichever charset the client used.

    okhttp-digest's BasicAuthenticator, which Collect registers for https, builds the header
    with ``okhttp3.Credentials.basic(user, password)``: ISO-8859-1, whatever the challenge's
    ``charset="UTF-8"`` says. Browsers and scripts send UTF-8 (RFC 7617). ``contraseña`` in
    ISO-8859-1 is not valid UTF-8, so a UTF-8-only server saw no credentials at all: 401 and
    a password prompt, every time, for a password that is right.
    """
    _manager(app, field.project_id, "maria", "contraseña segura")
    uri = f"/v1/projects/{field.project_id}/formList?deviceID=collect%3AXa7bC9dE1fG3hJ5k"
    raw = "maria:contraseña segura".encode(charset)
    auth = "Basic " + base64.b64encode(raw).decode()
    resp = client.get(
        uri, base_url="https://localhost", headers={**collect_headers(), "Authorization": auth}
    )
    assert resp.status_code == 200, resp.data
    wrong = "Basic " + base64.b64encode("maria:contrasena segura".encode(charset)).decode()
    refused = client.get(
        uri, base_url="https://localhost", headers={**collect_headers(), "Authorization": wrong}
    )
    assert refused.status_code == 401


def test_basic__non_ascii_password__admin_api_over_https(app, client, field):
    """The admin API's Basic login takes an ISO-8859-1 password too (curl --basic, old tools)."""
    _manager(app, field.project_id, "maria", "contraseña segura")
    auth = "Basic " + base64.b64encode("maria:contraseña segura".encode("iso-8859-1")).decode()
    resp = client.get("/api/v1/projects", base_url="https://localhost",
                      headers={"Authorization": auth})  # fmt: skip
    assert resp.status_code == 200, resp.data
