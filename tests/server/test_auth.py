"""App-user tokens, Digest/Basic for web users, and the failed-login rate limit."""

from __future__ import annotations

import base64
import hashlib

import pytest
from sqlalchemy import select

from server.auth import make_nonce
from server.models import AppUser
from tests.server.collect import collect_headers, openrosa_message
from tests.server.conftest import publish
from tests.server.forms import instance, xform


def _md5(s: str) -> str:
    return hashlib.md5(s.encode(), usedforsecurity=False).hexdigest()


def _parse_challenge(value: str) -> dict[str, str]:
    assert value.startswith("Digest ")
    out = {}
    for item in value[len("Digest ") :].split(", "):
        k, _, v = item.partition("=")
        out[k] = v.strip('"')
    return out


def digest_header(
    challenge: dict[str, str], user: str, password: str, method: str, uri: str, nc: int = 1
):
    """The Authorization header okhttp-digest would send (MD5, qop=auth): its ``nc`` counts
    the requests made with one nonce, 1, 2, 3... as ``%08x``."""
    ha1 = _md5(f"{user}:{challenge['realm']}:{password}")
    ha2 = _md5(f"{method}:{uri}")
    nc, cnonce = f"{nc:08x}", "0a4f113b"
    response = _md5(f"{ha1}:{challenge['nonce']}:{nc}:{cnonce}:auth:{ha2}")
    return (
        f'Digest username="{user}", realm="{challenge["realm"]}", nonce="{challenge["nonce"]}", '
        f'uri="{uri}", response="{response}", qop=auth, nc={nc}, cnonce="{cnonce}", '
        f'algorithm=MD5, opaque="{challenge["opaque"]}"'
    )


def test_token__bad_or_unknown__403_with_message(client, field):
    """Should answer 403 (not 401: Collect would prompt for a password it lacks)."""
    for token in ["x" * 64, "short"]:
        resp = client.get(f"/v1/key/{token}/projects/{field.project_id}/formList")
        assert resp.status_code == 403
        assert "QR code" in openrosa_message(resp)
        assert "WWW-Authenticate" not in resp.headers


def test_token__revoked__403(app, client, field, runner):
    """Should stop a revoked token at once."""
    assert field.collect.form_list().status_code == 200
    with app.extensions["kintsugi.db"].sessionmaker() as s:
        s.get(AppUser, field.app_user_id).revoked_at = __import__("server.db").db.utcnow()
        s.commit()
    assert field.collect.form_list().status_code == 403


def test_token__other_project__403(app, client, field):
    """Should not let a token open another project's URLs."""
    resp = client.get(f"/v1/key/{field.token}/projects/{field.project_id + 1}/formList")
    assert resp.status_code == 403


def test_token__stored_hashed_only(field, db_session):
    """Should never store the token itself."""
    user = db_session.scalars(select(AppUser)).one()
    assert user.token_hash == hashlib.sha256(field.token.encode()).hexdigest()
    assert field.token not in repr(user.__dict__)


def test_web_user__no_credentials__401_with_digest_challenge(client, field):
    """Should carry a usable Digest challenge on every 401 (and no Basic over http)."""
    resp = client.get(f"/v1/projects/{field.project_id}/formList", headers=collect_headers())
    assert resp.status_code == 401
    challenges = resp.headers.getlist("WWW-Authenticate")
    assert len(challenges) == 1
    ch = _parse_challenge(challenges[0])
    assert ch["qop"] == "auth" and ch["nonce"] and ch["opaque"] and ch["realm"]


def test_web_user__digest__formlist_and_submission(app, client, field, web_user):
    """Should accept Digest as okhttp-digest computes it, with deviceID in the uri."""
    publish(app, field.project_id, xform())
    user, password = web_user
    uri = f"/v1/projects/{field.project_id}/formList?deviceID=collect%3Aabc"
    ch = _parse_challenge(client.get(uri).headers["WWW-Authenticate"])
    auth = digest_header(ch, user, password, "GET", uri)
    resp = client.get(uri, headers={**collect_headers(), "Authorization": auth})
    assert resp.status_code == 200
    assert b"household" in resp.data
    sub_uri = f"/v1/projects/{field.project_id}/submission?deviceID=collect%3Aabc"
    from tests.server.collect import multipart_body

    body, ctype = multipart_body(instance())
    auth = digest_header(ch, user, password, "POST", sub_uri, nc=2)  # same nonce, next count
    resp = client.post(sub_uri, data=body, headers={"Authorization": auth, "Content-Type": ctype})
    assert resp.status_code == 201


def test_web_user__digest_wrong_password__401(client, field, web_user):
    """Should answer a wrong password with a fresh challenge."""
    uri = f"/v1/projects/{field.project_id}/formList"
    ch = _parse_challenge(client.get(uri).headers["WWW-Authenticate"])
    resp = client.get(
        uri, headers={"Authorization": digest_header(ch, "maria", "wrong", "GET", uri)}
    )
    assert resp.status_code == 401
    assert "stale" not in resp.headers["WWW-Authenticate"]


def test_web_user__digest_uri_for_other_path__401(client, field, web_user):
    """Should not accept a digest computed for another resource."""
    uri = f"/v1/projects/{field.project_id}/formList"
    ch = _parse_challenge(client.get(uri).headers["WWW-Authenticate"])
    auth = digest_header(ch, *web_user, "GET", f"/v1/projects/{field.project_id}/submission")
    assert client.get(uri, headers={"Authorization": auth}).status_code == 401


def test_web_user__expired_nonce__401_stale_true(app, client, field, web_user):
    """Should answer a right password with an old nonce with stale=true (no prompt)."""
    uri = f"/v1/projects/{field.project_id}/formList"
    ch = _parse_challenge(client.get(uri).headers["WWW-Authenticate"])
    ch["nonce"] = make_nonce(app.config["SECRET_KEY"], now=1_000_000)
    resp = client.get(uri, headers={"Authorization": digest_header(ch, *web_user, "GET", uri)})
    assert resp.status_code == 401
    assert "stale=true" in resp.headers["WWW-Authenticate"]


def test_web_user__nonce_from_other_node__accepted(make_app, field, web_user):
    """Should verify a nonce issued by another node sharing the secret (stateless tier)."""
    node_a, node_b = make_app().test_client(), make_app().test_client()
    uri = f"/v1/projects/{field.project_id}/formList"
    ch = _parse_challenge(node_a.get(uri).headers["WWW-Authenticate"])
    auth = digest_header(ch, *web_user, "GET", uri)
    assert node_b.get(uri, headers={"Authorization": auth}).status_code == 200


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_web_user__basic_over_http__refused(client, field, web_user):
    """Should never accept Basic over plain http."""
    uri = f"/v1/projects/{field.project_id}/formList"
    resp = client.get(uri, headers={"Authorization": _basic(*web_user)})
    assert resp.status_code == 401
    assert all(not h.startswith("Basic") for h in resp.headers.getlist("WWW-Authenticate"))


def test_web_user__basic_over_https__accepted(client, field, web_user):
    """Should accept Basic over https and offer it in the challenge."""
    uri = f"/v1/projects/{field.project_id}/formList"
    resp = client.get(uri, base_url="https://localhost")
    assert any(h.startswith("Basic") for h in resp.headers.getlist("WWW-Authenticate"))
    ok = client.get(uri, base_url="https://localhost", headers={"Authorization": _basic(*web_user)})
    assert ok.status_code == 200


@pytest.mark.parametrize("trust", [False, True])
def test_web_user__forwarded_proto__only_with_trust_proxy(make_app, field, web_user, trust):
    """Should believe X-Forwarded-Proto: https only when KINTSUGI_TRUST_PROXY is on."""
    client = make_app(TRUST_PROXY=trust).test_client()
    uri = f"/v1/projects/{field.project_id}/formList"
    headers = {"Authorization": _basic(*web_user), "X-Forwarded-Proto": "https"}
    assert client.get(uri, headers=headers).status_code == (200 if trust else 401)


def test_rate_limit__too_many_failures__429_with_message(make_app, field, web_user):
    """Should answer 429 once a client failed too often, even with the right password."""
    client = make_app(AUTH_FAIL_LIMIT=3).test_client()
    uri = f"/v1/projects/{field.project_id}/formList"
    ch = _parse_challenge(client.get(uri).headers["WWW-Authenticate"])
    bad = {"Authorization": digest_header(ch, "maria", "nope", "GET", uri)}
    assert [client.get(uri, headers=bad).status_code for _ in range(3)] == [401] * 3
    good = {"Authorization": digest_header(ch, *web_user, "GET", uri)}
    resp = client.get(uri, headers=good)
    assert resp.status_code == 429
    assert "Too many failed" in openrosa_message(resp)


def test_rate_limit__bad_tokens__429(make_app, field):
    """Should slow down token guessing too."""
    client = make_app(AUTH_FAIL_LIMIT=2).test_client()
    codes = [
        client.get(f"/v1/key/{'y' * 64}/projects/{field.project_id}/formList").status_code
        for _ in range(3)
    ]
    assert codes == [403, 429, 429]


def test_web_user__viewer__may_list_but_not_submit(app, client, field):
    """Should let a viewer download forms but answer 403 to a submission."""
    from server.models import Project
    from server.services.access import grant_project_role
    from server.services.users import create_web_user
    from tests.server.collect import multipart_body

    with app.extensions["kintsugi.db"].sessionmaker() as s:
        vera = create_web_user(s, "vera", "viewer password", role="viewer", realm="kintsugi",
                               method=app.config["PASSWORD_HASH_METHOD"])  # fmt: skip
        grant_project_role(s, vera, s.get(Project, field.project_id), "viewer")
        s.commit()
    list_uri = f"/v1/projects/{field.project_id}/formList"
    ch = _parse_challenge(client.get(list_uri).headers["WWW-Authenticate"])
    ok = client.get(
        list_uri,
        headers={"Authorization": digest_header(ch, "vera", "viewer password", "GET", list_uri)},
    )
    assert ok.status_code == 200
    sub_uri = f"/v1/projects/{field.project_id}/submission"
    body, ctype = multipart_body(instance())
    auth = digest_header(ch, "vera", "viewer password", "POST", sub_uri, nc=2)
    resp = client.post(sub_uri, data=body, headers={"Authorization": auth, "Content-Type": ctype})
    assert resp.status_code == 403
    assert "may not send" in openrosa_message(resp)


def test_rate_limit__one_tablet_with_an_old_password__others_behind_the_same_ip_sign_in(
    make_app, field, web_user
):
    """Should rate-limit the username that keeps failing, not every tablet of the office
    (they all reach the server from one address), until the failures from that address
    reach AUTH_FAIL_IP_LIMIT whatever the usernames."""
    from server.models import Project
    from server.services.access import grant_project_role
    from server.services.users import create_web_user

    app = make_app(AUTH_FAIL_LIMIT=3, AUTH_FAIL_IP_LIMIT=6)
    with app.extensions["kintsugi.db"].sessionmaker() as s:
        user = create_web_user(s, "juma", "another long password", role="viewer",
                               realm=app.config["DIGEST_REALM"])  # fmt: skip
        grant_project_role(s, user, s.get(Project, field.project_id), "viewer")
        s.commit()
    client = app.test_client()
    uri = f"/v1/projects/{field.project_id}/formList"
    ch = _parse_challenge(client.get(uri).headers["WWW-Authenticate"])

    def get(username: str, password: str) -> int:
        auth = digest_header(ch, username, password, "GET", uri)
        return client.get(uri, headers={"Authorization": auth}).status_code

    assert [get("maria", "an old password") for _ in range(4)] == [401, 401, 401, 429]
    assert get(*web_user) == 429  # maria waits, even with the right password...
    assert get("juma", "another long password") == 200  # ...the office's other tablets do not
    # guessing across usernames from one address is still stopped
    assert [get(f"guess{i}", "x") for i in range(3)] == [401, 401, 401]
    assert get("juma", "another long password") == 429
