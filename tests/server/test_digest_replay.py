"""Digest nonce counts: a replayed or non-increasing ``nc`` is refused, on every node."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import pytest
from sqlalchemy import event, func, select

from server.auth import claim_nonce_count, nonce_count
from server.models import AuthFailure, DigestNonce, Submission
from tests.server.collect import collect_headers, multipart_body
from tests.server.conftest import publish
from tests.server.forms import instance, xform
from tests.server.test_auth import _parse_challenge, digest_header


def _challenge(client: Any, uri: str) -> dict[str, str]:
    resp = client.get(uri)
    assert resp.status_code == 401
    return _parse_challenge(resp.headers["WWW-Authenticate"])


def _get(client: Any, uri: str, auth: str) -> Any:
    return client.get(uri, headers={**collect_headers(), "Authorization": auth})


def test_digest__same_nc_replayed__401_with_fresh_challenge(app, client, field, web_user):
    """Should refuse the very same Authorization a second time with a new nonce, stale=true
    (the password was right), and not count it as a failed password."""
    uri = f"/v1/projects/{field.project_id}/formList"
    ch = _challenge(client, uri)
    auth = digest_header(ch, *web_user, "GET", uri, nc=1)
    assert _get(client, uri, auth).status_code == 200
    replay = _get(client, uri, auth)
    assert replay.status_code == 401
    fresh = _parse_challenge(replay.headers["WWW-Authenticate"])
    assert fresh["nonce"] != ch["nonce"] and fresh["stale"] == "true"
    assert fresh["qop"] == "auth" and fresh["realm"] == ch["realm"]
    # the fresh challenge works at once, as okhttp-digest answers it (count back to 1)
    assert _get(client, uri, digest_header(fresh, *web_user, "GET", uri, nc=1)).status_code == 200
    with app.extensions["kintsugi.db"].sessionmaker() as s:
        assert s.scalar(select(func.count(AuthFailure.id))) == 0


def test_digest__increasing_nc__accepted_and_lower_refused(client, field, web_user):
    """Should accept 1, 2, 3 (and a jump to 9) on one nonce, and refuse any count not above
    the highest one accepted so far."""
    uri = f"/v1/projects/{field.project_id}/formList?deviceID=collect%3Aabc"
    ch = _challenge(client, uri)
    codes = [_get(client, uri, digest_header(ch, *web_user, "GET", uri, nc=n)).status_code
             for n in (1, 2, 3, 2, 3, 9, 4)]  # fmt: skip
    assert codes == [200, 200, 200, 401, 401, 200, 401]


def test_digest__replay_on_another_node__refused(make_app, field, web_user):
    """Should share the counts between nodes/workers (database, not process memory)."""
    node_a, node_b = make_app().test_client(), make_app().test_client()
    uri = f"/v1/projects/{field.project_id}/formList"
    auth = digest_header(_challenge(node_a, uri), *web_user, "GET", uri, nc=1)
    assert _get(node_a, uri, auth).status_code == 200
    assert _get(node_b, uri, auth).status_code == 401


def test_digest__submission_replayed__401_nothing_stored_twice(app, client, field, web_user):
    """Should answer a replayed submission POST with a challenge, not a merge 201."""
    publish(app, field.project_id, xform())
    uri = f"/v1/projects/{field.project_id}/submission?deviceID=collect%3Aabc"
    ch = _parse_challenge(client.head(uri).headers["WWW-Authenticate"])
    body, ctype = multipart_body(instance())
    headers = {"Content-Type": ctype, "Authorization": digest_header(ch, *web_user, "POST", uri)}
    assert client.post(uri, data=body, headers=headers).status_code == 201
    replay = client.post(uri, data=body, headers=headers)
    assert replay.status_code == 401 and "stale=true" in replay.headers["WWW-Authenticate"]
    with app.extensions["kintsugi.db"].sessionmaker() as s:
        assert s.scalar(select(func.count(Submission.id))) == 1


def test_digest__refused_request__its_count_stays_used(app, client, field, web_user):
    """Should keep a count used even when the request itself failed (committed at once): a
    failed upload cannot be replayed either."""
    uri = f"/v1/projects/{field.project_id}/submission"
    ch = _parse_challenge(client.head(uri).headers["WWW-Authenticate"])
    auth = digest_header(ch, *web_user, "POST", uri)
    headers = {"Content-Type": "text/plain", "Authorization": auth}
    assert client.post(uri, data=b"not multipart", headers=headers).status_code == 400
    assert client.post(uri, data=b"not multipart", headers=headers).status_code == 401


def test_digest__one_upsert_per_request(app, client, field, web_user, monkeypatch):
    """Should cost the request one statement on digest_nonces (the conditional upsert)."""
    import server.auth

    monkeypatch.setattr(server.auth.secrets, "randbelow", lambda _n: 1)  # no pruning this time
    uri = f"/v1/projects/{field.project_id}/formList"
    ch = _challenge(client, uri)
    seen: list[str] = []

    def capture(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "digest_nonces" in statement:
            seen.append(statement)

    engine = app.extensions["kintsugi.db"].engine
    event.listen(engine, "before_cursor_execute", capture)
    try:
        assert _get(client, uri, digest_header(ch, *web_user, "GET", uri)).status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    assert len(seen) == 1 and seen[0].startswith("INSERT INTO digest_nonces")


def test_digest__without_qop__nonce_serves_one_request(client, field, web_user):
    """Should let a nonce without qop (no nc to count) authenticate a single request."""
    import hashlib

    def md5(text: str) -> str:
        return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()

    uri = f"/v1/projects/{field.project_id}/formList"
    ch = _challenge(client, uri)
    user, password = web_user
    realm, nonce = ch["realm"], ch["nonce"]
    ha1, ha2 = md5(f"{user}:{realm}:{password}"), md5(f"GET:{uri}")
    response = md5(f"{ha1}:{nonce}:{ha2}")
    auth = (
        f'Digest username="{user}", realm="{realm}", nonce="{nonce}", '
        f'uri="{uri}", response="{response}", algorithm=MD5'
    )
    assert _get(client, uri, auth).status_code == 200
    assert _get(client, uri, auth).status_code == 401


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"qop": "auth", "nc": "00000001"}, 1),
        ({"qop": "auth", "nc": "0000000a"}, 10),
        ({"qop": "auth", "nc": "ffffffff"}, 2**32 - 1),
        ({"qop": "auth", "nc": "00000000"}, None),
        ({"qop": "auth", "nc": "-1"}, None),
        ({"qop": "auth", "nc": "123456789"}, None),
        ({"qop": "auth"}, None),
        ({}, 1),
    ],
)
def test_nonce_count__wire_forms(params, expected):
    """Should read nc as 1-8 hex digits, at least 1 (1 when qop is absent)."""
    assert nonce_count(params) == expected


def test_claim_nonce_count__expired_rows__pruned(app, db_session, monkeypatch):
    """Should delete rows whose nonce can no longer be used, and keep live ones."""
    import server.auth

    old = server.db.utcnow() - dt.timedelta(hours=1)
    db_session.add(DigestNonce(nonce="old", nc=3, expires_at=old))
    db_session.commit()
    monkeypatch.setattr(server.auth.secrets, "randbelow", lambda _n: 0)
    assert claim_nonce_count(db_session, "live", 1, ttl=300)
    db_session.commit()
    assert db_session.scalars(select(DigestNonce.nonce)).all() == ["live"]


def test_claim_nonce_count__racing_same_count__exactly_one_wins(app):
    """Should let only one of several concurrent requests use the same nonce count."""
    maker = app.extensions["kintsugi.db"].sessionmaker
    start = threading.Barrier(6)
    results: list[bool] = []

    def claim() -> None:
        with maker() as s:
            start.wait()
            results.append(claim_nonce_count(s, "shared-nonce", 7, ttl=300))
            s.commit()

    threads = [threading.Thread(target=claim) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 5 + [True]


def test_digest__long_lived_nonce__row_expires_with_the_nonce_not_its_last_use(
    app, client, field, web_user
):
    """Should keep a nonce's count only until a minute after the nonce itself expires (issue
    time + NONCE_TTL), however late it was used, so digest_nonces holds at most the nonces
    used within one lifetime."""
    import time

    from server.auth import make_nonce

    uri = f"/v1/projects/{field.project_id}/formList"
    ch = _challenge(client, uri)
    issued = time.time() - 7 * 3600  # used for the first time 7 hours after the challenge
    ch["nonce"] = make_nonce(app.config["SECRET_KEY"], now=issued)
    assert _get(client, uri, digest_header(ch, *web_user, "GET", uri)).status_code == 200
    with app.extensions["kintsugi.db"].sessionmaker() as s:
        row = s.scalars(select(DigestNonce)).one()
    expires = row.expires_at.replace(tzinfo=dt.UTC).timestamp()
    assert abs(expires - (int(issued) + app.config["NONCE_TTL"] + 60)) < 2
