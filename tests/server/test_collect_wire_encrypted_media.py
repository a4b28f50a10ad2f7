"""Encrypted uploads and entity lists byte for byte as Collect sends and reads them.

OkHttp writes non-ASCII part names as raw UTF-8 and Collect's manifest lists ``<file>.enc`` in
encryption order; a big upload is split so that ``submission.xml.enc`` can arrive before the
media it belongs with (openrosa.md §6.2, §9.4). Entity lists are read with Commons CSV (``,``
unless the header line has ``;``, quoted fields may hold newlines, BOM skipped; §4.3).
"""

from __future__ import annotations

import uuid

from sqlalchemy import select

from server.blobs import make_blob_store, read_all
from server.models import Entity, ProjectKey, Submission, SubmissionStatus
from server.services.projects import create_project
from server.services.users import create_app_user
from sync_protocol import crypto, keys
from sync_protocol.envelope import parse_submission
from tests.server.collect import CollectActions, collect_headers, with_device_id
from tests.server.conftest import publish
from tests.server.forms import instance, xform

PASSPHRASE = b"fictional demo passphrase"


def _okhttp_body(xml: bytes, files: dict[str, bytes], *, incomplete: bool) -> tuple[bytes, str]:
    """OkHttp MultipartBody.FORM with names written raw in UTF-8 (addUnsafeNonAscii)."""
    boundary = str(uuid.uuid4())
    out = bytearray()
    parts = [("xml_submission_file", "Évaluation ménage_2026-11-26_09-19-05.xml", "text/xml", xml)]
    parts += [(n, n, "application/octet-stream", d) for n, d in files.items()]
    for name, filename, ctype, data in parts:
        out += f"--{boundary}\r\n".encode()
        out += (
            f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            f"Content-Type: {ctype}\r\nContent-Length: {len(data)}\r\n\r\n"
        ).encode()
        out += data + b"\r\n"
    if incomplete:
        out += f"--{boundary}\r\n".encode()
        out += b'Content-Disposition: form-data; name="*isIncomplete*"\r\n'
        out += b"Content-Length: 3\r\n\r\nyes\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


def test_encrypted_upload__non_ascii_and_space_names_split_across_posts__decrypts_valid(
    app, client, db_session
):
    """Should match raw-UTF-8 part names to the manifest, take media arriving in a POST after
    submission.xml.enc, and keep every file at its manifest (IV) position: the stored upload
    decrypts with a VALID signature to the original file names."""
    with app.extensions["kintsugi.db"].sessionmaker() as s:
        project = create_project(s, "Encrypted office", passphrase=PASSPHRASE)
        _, token = create_app_user(s, project, "Tablet")
        s.commit()
        pid, key_b64 = project.id, project.active_key.public_key_b64
    publish(app, pid, xform(public_key=key_b64))
    base = f"/v1/key/{token}/projects/{pid}"
    instance_id = f"uuid:{uuid.uuid4()}"
    media = {
        "photo é 1.jpg": b"\xff\xd8 fictional photo" * 40,
        "audit.csv": b"event,node,start,end\nform start,,1,\n",
        "signature; a,b.png": b"\x89PNG fictional",
    }
    plaintext = instance(instance_id=instance_id, photo="photo é 1.jpg")
    manifest, files = crypto.encrypt_submission(
        plaintext,
        keys.load_public_key(key_b64.encode()),
        form_id="household",
        version="1",
        instance_id=instance_id,
        media=media,
    )
    # File.listFiles() order is not the manifest order: the XML's .enc goes in the first POST
    first = {"submission.xml.enc": files["submission.xml.enc"]}
    rest = {n: d for n, d in reversed(files.items()) if n != "submission.xml.enc"}
    head = client.head(with_device_id(f"{base}/submission"), headers=collect_headers())
    assert head.status_code == 204 and head.headers["X-OpenRosa-Accept-Content-Length"]
    for batch, incomplete in ((first, True), (rest, False)):
        body, ctype = _okhttp_body(manifest, batch, incomplete=incomplete)
        resp = CollectActions(client, base).post_raw(body, ctype)
        assert resp.status_code == 201, resp.data
        assert resp.headers["Content-Type"] == "text/xml; charset=utf-8"
        assert resp.headers["X-OpenRosa-Version"] == "1.0"

    sub = db_session.scalars(select(Submission)).one()
    assert sub.complete and sub.status == SubmissionStatus.PENDING_DECRYPTION and sub.flags == []
    order = sorted(sub.attachments, key=lambda a: a.position)
    assert [a.name for a in order] == [*(n + ".enc" for n in media), "submission.xml.enc"]
    store = make_blob_store(app.config, db_session)
    stored = {a.name: read_all(store, a.blob_key) for a in sub.attachments}
    private = keys.load_private_key(
        db_session.scalars(select(ProjectKey)).one().encrypted_private_pem, PASSPHRASE
    )
    result = crypto.decrypt_submission(
        parse_submission(read_all(store, sub.xml_blob_key)), private, stored
    )
    assert result.signature.name == "VALID"
    assert result.xml == plaintext and result.media == media


def test_entity_list_csv__labels_with_quotes_commas_newlines__commons_csv_bytes(
    app, field, db_session
):
    """Should write the header without ';' (Collect would switch delimiter), no BOM, and quote
    every field holding a comma, quote or line break, so each case stays one record."""
    from defusedxml import ElementTree

    publish(
        app,
        field.project_id,
        xform("followup", entity_list="cases"),
        report={"entity_list": {"dataset": "cases", "properties": ["district", "note"]}},
    )
    a = str(uuid.uuid4())
    db_session.add(
        Entity(
            project_id=field.project_id,
            dataset="cases",
            uuid=a,
            label='Ama "Kofi", Jr.\nsecond line',
            version=3,
            properties={"district": "Nörth; side", "note": "a\r\nb"},
        )
    )
    db_session.commit()
    ns = "{http://openrosa.org/xforms/xformsManifest}"
    manifest_url = f"{field.base}/forms/followup/manifest"
    root = ElementTree.fromstring(field.collect.get(manifest_url).data)
    url = root.find(f"{ns}mediaFile/{ns}downloadUrl").text
    resp = field.collect.get(url)
    assert resp.status_code == 200 and resp.headers["ETag"]
    header, _, rows = resp.data.partition(b"\n")
    assert header == b"name,label,__version,district,note"
    assert rows == (f'{a},"Ama ""Kofi"", Jr.\nsecond line",3,Nörth; side,"a\r\nb"\n'.encode())
