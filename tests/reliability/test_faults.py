"""Faults a field deployment meets: crashes mid-upload, duplicate storms, a dead database, a
full disk. Each test drives a real server the way Collect does and checks what is stored."""

from __future__ import annotations

import errno
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from sqlalchemy import func, select

from server.blobs import make_blob_store, read_all
from server.models import QuarantinedUpload, Submission, SubmissionAttachment
from tests.reliability.server import Gunicorn
from tests.server.collect import collect_headers, multipart_body, with_device_id
from tests.server.conftest import publish
from tests.server.forms import instance, xform

pytestmark = pytest.mark.slow


def _post(url: str, body: bytes, ctype: str) -> int:
    try:
        return requests.post(
            with_device_id(url),
            data=body,
            headers={**collect_headers(), "Content-Type": ctype},
            timeout=60,
        ).status_code
    except requests.RequestException:
        return 0  # connection reset: Collect keeps the form as "failed" and retries


def _count(app: Any, model: Any) -> int:
    with app.extensions["kintsugi.db"].sessionmaker() as s:
        return s.scalar(select(func.count()).select_from(model))


def _storm(url: str, bodies: list[tuple[bytes, str]]) -> list[int]:
    """Release every POST at the same instant (a barrier), return the statuses in order."""
    barrier = threading.Barrier(len(bodies))

    def go(item: tuple[bytes, str]) -> int:
        barrier.wait()
        return _post(url, *item)

    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(go, bodies))


def test_twenty_identical_posts__same_instant__exactly_one_stored(app, app_config, field):
    """Should answer every identical POST 201 and store the submission once."""
    publish(app, field.project_id, xform())
    body = multipart_body(instance(instance_id=f"uuid:{uuid.uuid4()}"))
    with Gunicorn(app_config, workers=2) as server:
        statuses = _storm(f"{server.url}{field.base}/submission", [body] * 20)
    assert statuses == [201] * 20
    assert _count(app, Submission) == 1
    print("\nfigure: 20 identical POSTs -> 20 x 201, 1 row")


def test_twenty_conflicting_posts__same_instant__one_stored_rest_409(app, app_config, field):
    """Should store exactly one of 20 different XMLs sharing an instanceID; the rest get 409."""
    publish(app, field.project_id, xform())
    iid = f"uuid:{uuid.uuid4()}"
    bodies = [multipart_body(instance(instance_id=iid, name=f"Person {i}")) for i in range(20)]
    with Gunicorn(app_config, workers=2) as server:
        statuses = _storm(f"{server.url}{field.base}/submission", bodies)
    assert sorted(statuses) == [201] + [409] * 19
    print(
        f"\nfigure: 20 conflicting POSTs -> {statuses.count(201)} x 201, {statuses.count(409)} x 409"
    )
    winner = statuses.index(201)
    with app.extensions["kintsugi.db"].sessionmaker() as s:
        (sub,) = s.scalars(select(Submission)).all()
        stored = read_all(make_blob_store(app.config, s), sub.xml_blob_key)
    assert f"Person {winner}<".encode() in stored


def test_sigkill_mid_uploads__restart_and_retry__every_submission_exactly_once(
    app, app_config, field, tmp_path
):
    """Should keep every 201'd upload whole after SIGKILL; Collect's retries store the rest."""
    publish(app, field.project_id, xform())
    photo = bytes(range(256)) * 4096  # 1 MB: uploads are in flight when the kill lands
    uploads = [
        multipart_body(
            instance(instance_id=f"uuid:{uuid.uuid4()}", photo="p.jpg"), files={"p.jpg": photo}
        )
        for _ in range(24)
    ]
    server = Gunicorn(app_config, workers=2, log=tmp_path / "g1.log")
    url = f"{server.url}{field.base}/submission"
    statuses: list[int] = [0] * len(uploads)
    first_201 = threading.Event()

    def send(i: int) -> None:
        statuses[i] = _post(url, *uploads[i])
        if statuses[i] == 201:
            first_201.set()

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(uploads))]
    for t in threads:
        t.start()
    first_201.wait(timeout=60)
    server.kill()  # while the other uploads are mid-flight
    for t in threads:
        t.join(timeout=60)
    acked = [i for i, s in enumerate(statuses) if s == 201]
    assert acked and len(acked) < len(uploads), statuses  # the kill really landed mid-run
    print(f"\nfigure: SIGKILL with {len(uploads)} uploads in flight: {len(acked)} got 201 before")
    # after restart: every acknowledged upload is whole; Collect retries the others
    with Gunicorn(app_config, workers=2, log=tmp_path / "g2.log") as again:
        url = f"{again.url}{field.base}/submission"
        with app.extensions["kintsugi.db"].sessionmaker() as s:
            assert s.scalar(select(func.count()).select_from(Submission)) >= len(acked)
        retries = [_post(url, *uploads[i]) for i in range(len(uploads)) if statuses[i] != 201]
        assert set(retries) == {201}
        # a resend of an already stored one is still a 201 and stores nothing new
        assert _post(url, *uploads[acked[0]]) == 201
    with app.extensions["kintsugi.db"].sessionmaker() as s:
        subs = s.scalars(select(Submission)).all()
        assert len(subs) == len(uploads)
        store = make_blob_store(app.config, s)
        for sub in subs:
            assert b"<photo>p.jpg</photo>" in read_all(store, sub.xml_blob_key)
            atts = s.scalars(
                select(SubmissionAttachment).where(SubmissionAttachment.submission_id == sub.id)
            ).all()
            assert [a.present for a in atts] == [True]
            assert read_all(store, atts[0].blob_key) == photo
        assert s.scalar(select(func.count()).select_from(QuarantinedUpload)) == 0


def test_database_unavailable__post__503_openrosa_message_then_retry_stores(app, make_app, field):
    """Should answer 503 with a message Collect shows (and keep nothing), then accept the retry."""
    publish(app, field.project_id, xform())
    body, ctype = multipart_body(instance())
    down = make_app(
        DATABASE_URL="postgresql+psycopg://kintsugi@127.0.0.1:9/gone?connect_timeout=2",
        BLOB_BACKEND="local",
    )
    client = down.test_client()
    resp = client.post(
        with_device_id(f"{field.base}/submission"),
        data=body,
        headers={**collect_headers(), "Content-Type": ctype},
    )
    assert resp.status_code == 503
    assert resp.headers["Retry-After"]
    assert b"<OpenRosaResponse" in resp.data and b"cannot reach its database" in resp.data
    assert b"psycopg" not in resp.data and b"127.0.0.1" not in resp.data
    assert client.head(with_device_id(f"{field.base}/submission")).status_code == 503
    assert client.get("/readyz").status_code == 503
    assert client.get("/healthz").status_code == 200  # alive: don't restart, wait for the DB
    assert field.collect.post_raw(body, ctype).status_code == 201


class _DiskFills:
    """A blob store whose writes run out of space part-way through the bytes (ENOSPC)."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.transactional = getattr(real, "transactional", False)

    def put(self, key: str, data: Any) -> tuple[int, str]:
        class Reader:
            def __init__(self) -> None:
                self.calls = 0

            def read(self, n: int = -1) -> bytes:
                self.calls += 1
                if self.calls == 1:
                    return bytes(data)[: max(1, len(data) // 2)]
                raise OSError(errno.ENOSPC, "No space left on device")

        return self.real.put(key, Reader())

    def __getattr__(self, name: str) -> Any:
        if name in {"put_many", "insert_cte"}:
            raise AttributeError(name)  # force blob-by-blob writes through put()
        return getattr(self.real, name)


def test_disk_full__post__error_nothing_half_written_then_recovers(
    app, field, monkeypatch, tmp_path
):
    """Should refuse the upload with 503 when blob writes hit ENOSPC, leave no row or partial
    file, and store the same upload once space is back."""
    from pathlib import Path

    import server.views.openrosa as openrosa_views

    publish(app, field.project_id, xform())
    body, ctype = multipart_body(instance(photo="p.jpg"), files={"p.jpg": b"\xff" * 50_000})
    data_dir = Path(app.config["DATA_DIR"])
    before = sorted(p for p in data_dir.rglob("*") if p.is_file()) if data_dir.exists() else []
    real = openrosa_views.make_blob_store
    monkeypatch.setattr(openrosa_views, "make_blob_store", lambda c, s: _DiskFills(real(c, s)))
    resp = field.collect.post_raw(body, ctype)
    assert resp.status_code == 503, resp.data
    assert b"out of storage space" in resp.data
    assert _count(app, Submission) == 0
    after = sorted(p for p in data_dir.rglob("*") if p.is_file()) if data_dir.exists() else []
    assert after == before  # no temp file, no partial blob left behind
    monkeypatch.setattr(openrosa_views, "make_blob_store", real)  # space is back
    assert field.collect.post_raw(body, ctype).status_code == 201
    assert _count(app, Submission) == 1
