"""vs_lib.auth and the HTTP side of who is asking: tokens, sessions, CSRF, passwords, the user command.

Digests and CSRF tokens are recomputed here with hashlib/hmac from the token's own parts (an
independent computation of what the database must hold); every refusal is checked for its
status, its message, and that nothing changed.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from vs_lib import api, auth, config, database, testing


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    return testing.build_small_platform(tmp_path_factory.mktemp("auth_platform"), 600, n_users=8, seed=3)


@pytest.fixture
def own(platform, tmp_path):
    return testing.copy_platform(platform, tmp_path / "copy")


@pytest.fixture
def conn(own):
    c = database.connect(own["db"])
    yield c
    c.close()


def png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def pattern(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.kron((rng.random((7, 7)) > 0.5).astype(np.uint8) * 255, np.ones((4, 4), np.uint8))


# --------------------------------------------------------------------------- credentials
def test_a_token_is_stored_as_the_sha256_of_its_secret_only(conn):
    token = auth.issue(conn, 3, "token", label="ci")
    prefix, selector, secret = token.split(".")
    assert prefix == "vst" and len(bytes.fromhex(selector)) == 8 and len(secret) == 43  # 32 random bytes
    row = conn.execute("SELECT user_id, digest, label FROM credentials WHERE selector = ?", (selector,)).fetchone()
    assert row == (3, hashlib.sha256(secret.encode()).hexdigest(), "ci")
    dump = "\n".join(conn.iterdump())
    assert secret not in dump and token not in dump  # the database never holds a usable credential
    assert auth.resolve(conn, token, "token").user_id == 3
    assert auth.issue(conn, 3, "token") != token  # fresh randomness every time


@pytest.mark.parametrize(
    "mangle, words",
    [
        (lambda t: "", "malformed"),
        (lambda t: "hello", "malformed"),
        (lambda t: t[:-1], "malformed"),
        (lambda t: t.replace("vst.", "vss."), "malformed"),  # a token is not a session
        (lambda t: t[:-2] + ("AA" if t[-2:] != "AA" else "BB"), "unknown"),  # right selector, wrong secret
        (lambda t: "vst." + "0" * 16 + "." + t.split(".")[2], "unknown"),
    ],
)
def test_bad_credentials_are_refused_with_their_reason(conn, mangle, words):
    token = auth.issue(conn, 2, "token")
    with pytest.raises(auth.AuthError, match=words):
        auth.resolve(conn, mangle(token), "token")


def test_expired_and_revoked_credentials_are_refused(conn):
    t0 = 1_800_000_000
    token = auth.issue(conn, 4, "token", seconds=60, now=t0)
    assert auth.resolve(conn, token, "token", now=t0 + 59).user_id == 4
    with pytest.raises(auth.AuthError, match="expired"):
        auth.resolve(conn, token, "token", now=t0 + 60)
    live = auth.issue(conn, 4, "token")
    other = auth.issue(conn, 5, "token")
    assert auth.revoke(conn, selector=live) == 1  # the whole token works as well as its selector
    with pytest.raises(auth.AuthError, match="revoked"):
        auth.resolve(conn, live, "token")
    assert auth.resolve(conn, other, "token").user_id == 5  # someone else's is untouched
    assert auth.revoke(conn, user_id=5) == 1 and auth.revoke(conn, user_id=5) == 0
    with pytest.raises(ValueError):
        auth.issue(conn, 4, "token", seconds=400 * 86400)
    with pytest.raises(auth.UnknownUser):
        auth.issue(conn, 999, "token")


def test_csrf_token_is_an_hmac_of_the_session_secret(conn):
    session = auth.issue(conn, 2, "session")
    secret = session.split(".")[2]
    expected = hmac.new(secret.encode(), b"vs_lib csrf v1", hashlib.sha256).hexdigest()
    assert auth.csrf_token(session) == expected
    assert auth.verify_csrf(session, expected)
    assert not auth.verify_csrf(auth.issue(conn, 2, "session"), expected)  # bound to its session
    assert not auth.verify_csrf(session, None) and not auth.verify_csrf(session, "")


def test_passwords_are_argon2id_hashes_checked_the_same_way_for_unknown_users(conn):
    from argon2 import PasswordHasher

    auth.set_password(conn, 3, "correct horse battery")
    stored = conn.execute("SELECT hash FROM passwords WHERE user_id = 3").fetchone()[0]
    assert stored.startswith("$argon2id$") and "correct horse" not in stored
    assert PasswordHasher().verify(stored, "correct horse battery")  # the reference library agrees
    assert auth.check_password(conn, "user00003", "correct horse battery") == 3
    assert auth.check_password(conn, "user00003", "wrong horse battery") is None
    assert auth.check_password(conn, "nobody", "correct horse battery") is None
    assert auth.check_password(conn, "user00004", "correct horse battery") is None  # has no password
    with pytest.raises(ValueError, match="10 to"):
        auth.set_password(conn, 3, "short")


def test_user_command_prints_a_token_once_and_lists_no_secret_or_email(own):
    env = {"VS_DB": str(own["db"]), "VS_DATA_DIR": str(own["data_dir"])}
    import os

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "vs_lib", "user", *args], capture_output=True, text=True,
            env={**os.environ, **env}, cwd=config.ROOT, timeout=120,
        )  # fmt: skip

    out = run("token", "user00002", "--days", "2", "--label", "laptop")
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip()
    assert len(out.stdout.splitlines()) == 1 and token.startswith("vst.")
    with database.connect(own["db"]) as c:
        p = auth.resolve(c, token, "token")
    assert p.user_id == 2 and 1.9 * 86400 < p.expires_at - time.time() <= 2 * 86400
    listing = run("list")
    assert listing.returncode == 0 and "user00002" in listing.stdout and "laptop" in listing.stdout
    assert token.split(".")[2] not in listing.stdout and "@" not in listing.stdout + listing.stderr
    assert run("revoke", token.split(".")[1]).returncode == 0
    assert "revoked" in run("list", "--user", "user00002").stdout
    bad = run("token", "nobody")
    assert bad.returncode == 2 and "no user named 'nobody'" in bad.stderr and bad.stdout == ""


# --------------------------------------------------------------------------- over HTTP
@pytest.fixture
def web(own):
    """``(client, service, paths)``: a TestClient on a copy of the platform (https, for the Secure cookie)."""
    from fastapi.testclient import TestClient

    svc = testing.open_small_platform(own)
    with TestClient(api.create_app(svc), base_url="https://testserver") as c:
        yield c, svc, own
    svc.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_every_bad_credential_is_a_401_with_a_clear_message(web, conn):
    client, _, _paths = web
    expired = auth.issue(conn, 2, "token", seconds=1)
    revoked = auth.issue(conn, 2, "token")
    auth.revoke(conn, selector=revoked)
    time.sleep(1.1)
    cases = {
        "Basic dXNlcjpwYXNz": "malformed Authorization header",
        "Bearer": "malformed Authorization header",
        "Bearer not-a-token": "malformed credential",
        f"Bearer {expired}": "expired",
        f"Bearer {revoked}": "revoked",
        f"Bearer {revoked[:-3]}abc": "unknown credential",
    }
    for header, words in cases.items():
        for method, url in (("POST", "/search"), ("GET", "/images/1"), ("GET", "/corpus/random")):
            r = client.request(
                method, url, headers={"Authorization": header}, data={"image_id": "1"} if method == "POST" else None
            )
            assert r.status_code == 401 and words in r.json()["detail"], (header, url, r.text)
            assert r.headers["www-authenticate"] == "Bearer"
    client.cookies.set("vs_session", "vss.0000000000000000." + "A" * 43)
    r = client.get("/corpus/random")
    assert r.status_code == 401 and "unknown credential" in r.json()["detail"]
    assert client.get("/auth/session").json()["signed_in"] is False  # the page is told, and the cookie cleared


def test_sign_in_sets_a_strict_httponly_secure_cookie_and_csrf_guards_changes(web, conn):
    client, svc, _ = web
    token = auth.issue(conn, 3, "token")
    r = client.post("/auth/session", data={"token": token})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["signed_in"] and body["user_id"] == 3 and body["csrf_token"]
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "secure" in cookie and "path=/" in cookie
    assert token not in r.headers["set-cookie"]  # a new session credential, not the token
    upload = {"files": {"image": ("p.png", png(pattern(1)), "image/png")}, "data": {"is_private": "true"}}
    n_before = svc.health()["images_indexed"]
    for csrf in (None, "0" * 64):
        r = client.post("/images", headers={"X-CSRF-Token": csrf} if csrf else {}, **upload)
        assert r.status_code == 403 and "X-CSRF-Token" in r.json()["detail"]
    assert svc.health()["images_indexed"] == n_before  # refused changes changed nothing
    r = client.post("/images", headers={"X-CSRF-Token": body["csrf_token"]}, **upload)
    assert r.status_code == 201, r.text
    new = r.json()["image_id"]
    assert client.get(f"/images/{new}").status_code == 200  # the cookie is the requester: its private image
    assert client.get("/auth/session").json()["csrf_token"] == body["csrf_token"]  # the page can get it back
    # sign-out revokes the session: the old cookie no longer works anywhere
    old = client.cookies.get("vs_session")
    assert client.delete("/auth/session", headers={"X-CSRF-Token": body["csrf_token"]}).status_code == 200
    client.cookies.set("vs_session", old)
    r = client.get(f"/images/{new}")
    assert r.status_code == 401 and "revoked" in r.json()["detail"]


def test_sign_in_with_a_password_and_refusals(web, conn):
    client, _, _ = web
    auth.set_password(conn, 5, "a long enough password")
    assert (
        client.post("/auth/session", data={"username": "user00005", "password": "wrong password!"}).status_code == 401
    )
    assert (
        client.post("/auth/session", data={"username": "nobody", "password": "a long enough password"}).status_code
        == 401
    )
    assert client.post("/auth/session", data={}).status_code == 400
    r = client.post("/auth/session", data={"token": "vst.x"})
    assert r.status_code == 401 and "malformed" in r.json()["detail"]
    r = client.post("/auth/session", data={"username": "user00005", "password": "a long enough password"},
                    headers={"Origin": "https://evil.example"})  # fmt: skip
    assert r.status_code == 403 and "another site" in r.json()["detail"]
    r = client.post("/auth/session", data={"username": "user00005", "password": "a long enough password"})
    assert r.status_code == 200 and r.json()["user_id"] == 5


def test_nothing_a_client_sends_changes_another_users_data(web, conn):
    """User 2 tries every way to act on user 3's images: all refused, every row as it was."""
    client, _svc, _paths = web
    t2, t3 = auth.issue(conn, 2, "token"), auth.issue(conn, 3, "token")
    mine = client.post("/images", files={"image": ("a.png", png(pattern(2)), "image/png")}, data={"is_private": "true"},
                       headers=bearer(t3)).json()["image_id"]  # fmt: skip
    public = client.post("/images", files={"image": ("b.png", png(pattern(3)), "image/png")},
                         headers=bearer(t3)).json()["image_id"]  # fmt: skip
    snapshot = lambda: conn.execute("SELECT * FROM images ORDER BY id").fetchall()  # noqa: E731
    before = snapshot()
    refusals = [
        client.delete(f"/images/{mine}", headers=bearer(t2)),  # private of 3: does not exist for 2
        client.delete(f"/images/{public}", headers=bearer(t2)),  # public of 3: not 2's to delete
        client.delete(f"/images/{public}"),  # anonymous
        client.delete(f"/images/{mine}?user_id=3", headers=bearer(t2)),  # claiming to be 3
        client.post(
            "/images",
            files={"image": ("c.png", png(pattern(4)), "image/png")},
            data={"owner_id": "3"},
            headers=bearer(t2),
        ),
    ]
    assert [r.status_code for r in refusals] == [404, 403, 401, 400, 400]
    assert snapshot() == before
    assert client.get(f"/images/{mine}", headers=bearer(t2)).status_code == 404
    assert client.get(f"/images/{mine}", headers=bearer(t3)).status_code == 200
    # what 2 uploads is 2's
    r = client.post("/images", files={"image": ("d.png", png(pattern(5)), "image/png")}, headers=bearer(t2))
    assert conn.execute("SELECT owner_id FROM images WHERE id = ?", (r.json()["image_id"],)).fetchone() == (2,)
    assert client.delete(f"/images/{public}", headers=bearer(t3)).status_code == 204
    assert conn.execute("SELECT COUNT(*) FROM images WHERE id = ?", (public,)).fetchone() == (0,)


def test_a_result_whose_file_is_missing_is_a_404_never_a_500(web, conn):
    client, svc, _ = web
    t = auth.issue(conn, 4, "token")
    up = client.post("/images", files={"image": ("e.png", png(pattern(6)), "image/png")}, headers=bearer(t)).json()
    key = conn.execute("SELECT storage_key FROM images WHERE id = ?", (up["image_id"],)).fetchone()[0]
    (svc.store.store_dir / key).unlink()
    assert client.get(up["thumbnail_url"], headers=bearer(t)).status_code == 404
    r = client.post("/search", files={"image": ("q.png", png(pattern(6)), "image/png")}, headers=bearer(t))
    assert r.status_code == 200 and up["image_id"] not in [x["image_id"] for x in r.json()["results"]]


# --------------------------------------------------------------------------- one local owner, no sign-in
def test_a_local_owner_needs_no_sign_in_but_still_a_csrf_header(own):
    from fastapi.testclient import TestClient

    svc = testing.open_small_platform(own)
    policy = api.AccessPolicy(local_owner=6)
    try:
        with TestClient(api.create_app(svc, policy), base_url="http://127.0.0.1:8000") as c:
            s = c.get("/auth/session").json()
            assert s["signed_in"] and s["user_id"] == 6 and s["sign_in_required"] is False
            files = {"image": ("p.png", png(pattern(7)), "image/png")}
            assert c.post("/images", files=files).status_code == 403  # another site's form cannot post here
            r = c.post("/images", files=files, headers={"X-CSRF-Token": s["csrf_token"]})
            assert r.status_code == 201
            with database.connect(own["db"]) as db:
                assert db.execute("SELECT owner_id FROM images WHERE id = ?", (r.json()["image_id"],)).fetchone() == (
                    6,
                )
            assert c.get("/health", headers={"Host": "evil.example"}).status_code == 400  # DNS rebinding
    finally:
        svc.close()


def test_no_sign_in_is_refused_on_any_address_but_loopback():
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        api.check_bind(host, api.AccessPolicy(local_owner=1))
        assert api.is_loopback(host)
    for host in ("0.0.0.0", "192.168.1.20", "::", "example.org"):
        with pytest.raises(ValueError, match="refusing to serve without sign-in"):
            api.check_bind(host, api.AccessPolicy(local_owner=1))
        api.check_bind(host, api.AccessPolicy())  # with sign-in, any address


def test_serve_refuses_a_public_address_without_sign_in_before_loading_anything(own):
    import os

    out = subprocess.run(
        [sys.executable, "-m", "vs_lib", "serve", "--host", "0.0.0.0", "--local-owner", "user00001",
         "--model", str(own["model"]), "--index-path", str(own["index"])],
        capture_output=True, text=True, timeout=120, env={**os.environ, "VS_DB": str(own["db"])}, cwd=config.ROOT,
    )  # fmt: skip
    assert out.returncode == 2 and "refusing to serve without sign-in on '0.0.0.0'" in out.stderr
    assert "loading encoder" not in out.stdout


def test_demo_sign_in_prints_a_working_short_lived_token(own):
    text = api.demo_sign_in(own["db"], "user00002", "127.0.0.1", 8123, hours=1)
    token = text.split("#token=")[1].split()[0]
    assert "http://127.0.0.1:8123/#token=" in text
    with sqlite3.connect(own["db"]) as c:
        p = auth.resolve(c, token, "token")
    assert p.user_id == 2 and p.expires_at - time.time() <= 3600
