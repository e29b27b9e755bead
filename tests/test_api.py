"""vs_lib.api: the HTTP contract, bad inputs (4xx, nothing changed, server up), privacy, CLI.

The requester is whoever holds the bearer token a test sends (tokens made through the
library, as ``python -m vs_lib user token`` makes them). The read-only tests share one client;
tests that send uploads (refused or not) use a copy of the platform, so the shared one never
changes. Credentials themselves (sessions, CSRF, expiry, revocation) are tests/test_auth.py's.
"""

from __future__ import annotations

import functools
import io
import json
import sqlite3
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from vs_lib import api, config, serving, testing

N_IMAGES = 1500
PERSONAL = ("username", "email", "age", "gender", "city", "country")


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    paths = testing.build_small_platform(tmp_path_factory.mktemp("api_platform"), N_IMAGES, n_users=20, seed=1)
    TOKENS.clear()
    TOKENS.update({u: testing.issue_token(paths, u) for u in range(1, 21)})  # copies of the platform share them
    return paths


TOKENS: dict[int, str] = {}


def as_user(user: int | None) -> dict[str, str]:
    """The headers of a request by ``user`` (``None``: anonymous)."""
    return {} if user is None else {"Authorization": f"Bearer {TOKENS[user]}"}


def _client(paths):
    from fastapi.testclient import TestClient

    svc = testing.open_small_platform(paths)
    with TestClient(api.create_app(svc)) as c:
        yield c
    svc.close()


@pytest.fixture(scope="module")
def client(platform):
    """Read-only: no test sends an upload through it."""
    yield from _client(platform)


@pytest.fixture(scope="module")
def scratch(platform, tmp_path_factory):
    """``(client, paths)`` on a copy of the platform, for the uploads that must be refused."""
    paths = testing.copy_platform(platform, tmp_path_factory.mktemp("api_scratch"))
    for c in _client(paths):
        yield c, paths


@pytest.fixture
def own(platform, tmp_path):
    """``(client, paths)`` on a fresh copy, for a test whose upload succeeds."""
    paths = testing.copy_platform(platform, tmp_path / "copy")
    for c in _client(paths):
        yield c, paths


@pytest.fixture(scope="module")
def public_id(platform):
    """An image everyone may see (neither private nor flagged)."""
    return db_rows(platform, "SELECT MIN(id) FROM images WHERE is_private = 0 AND is_flagged = 0")[0][0]


def png(img: Image.Image | np.ndarray, fmt="PNG") -> bytes:
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def db_rows(platform, sql, args=()):
    conn = sqlite3.connect(platform["db"])
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def state(client, platform):
    return (db_rows(platform, "SELECT COUNT(*) FROM images")[0][0], client.get("/health").json()["images_indexed"])


PERSONAL_VALUES: set[str] = set()


def _walk(obj, keys, strings):
    if isinstance(obj, dict):
        for k, v in obj.items():
            keys.add(str(k).lower())
            _walk(v, keys, strings)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _walk(v, keys, strings)
    elif isinstance(obj, str):
        strings.append(obj)


def assert_no_personal_fields(payload):
    """No personal key anywhere, and no personal value (any user's username, email, city)."""
    keys, strings = set(), []
    _walk(payload, keys, strings)
    assert not keys & set(PERSONAL), keys & set(PERSONAL)
    text = " ".join(strings)
    assert "@" not in text
    for value in PERSONAL_VALUES:
        assert value not in text, f"personal value {value!r} returned"


@pytest.fixture(scope="module", autouse=True)
def personal_values(platform):
    for row in db_rows(platform, "SELECT username, email, city, country FROM users"):
        PERSONAL_VALUES.update(v for v in row if v)


def test_search_response_shape(client, public_id):
    r = client.post("/search", data={"image_id": str(public_id), "k": "7"}, headers=as_user(2))
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"results", "timings_ms", "candidates", "fewer_than_k", "stop_reason"}
    assert len(body["results"]) == 7 and body["fewer_than_k"] is False and body["stop_reason"] == "k_results"
    assert body["candidates"] >= 7
    for rank, item in enumerate(body["results"], start=1):
        assert set(item) == {"image_id", "score", "rank", "thumbnail_url", "tags"}
        assert item["rank"] == rank and -1.0001 <= item["score"] <= 1.0001
        assert item["thumbnail_url"] == f"/images/{item['image_id']}?size={api.THUMB_SIZE}"  # no identity in it
        assert client.get(item["thumbnail_url"], headers=as_user(2)).headers["content-type"] == "image/png"
    assert set(body["timings_ms"]) == {"validate", "embed", "search", "rerank", "total", "request"}
    assert public_id not in [item["image_id"] for item in body["results"]]
    assert_no_personal_fields(body)


def test_search_with_a_file_and_a_crop(client):
    from vs_lib import data

    img = data.load_fashion_mnist().train_images[20]
    big = Image.fromarray(img).resize((280, 280), Image.NEAREST)  # 10x: crop coords in these pixels
    r = client.post(
        "/search", data={"k": "5", "crop": "40,40,240,240"}, files={"image": ("q.png", png(big), "image/png")}
    )
    assert r.status_code == 200, r.text
    assert len(r.json()["results"]) == 5
    # the API answers exactly what the service ranks for that crop of the original pixels
    svc = client.app.state.service
    assert [x["image_id"] for x in r.json()["results"]] == svc.search(png(big), crop=(40, 40, 240, 240), k=5).ids
    cropped_by_hand = svc.search(png(big.crop((40, 40, 240, 240))), k=5)
    assert [x["image_id"] for x in r.json()["results"]] == cropped_by_hand.ids


def test_health_docs_page(client):
    h = client.get("/health").json()
    assert h["status"] == "ok" and h["images_indexed"] >= N_IMAGES
    assert_no_personal_fields(h)
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert {"/search", "/images", "/images/{image_id}", "/health", "/auth/session"} <= set(spec["paths"])
    schemes = spec["components"]["securitySchemes"]
    assert schemes["bearerToken"] == {**schemes["bearerToken"], "type": "http", "scheme": "bearer"}
    assert schemes["sessionCookie"]["in"] == "cookie"
    assert {"bearerToken": []} in spec["paths"]["/search"]["post"]["security"]
    # no operation documents a client-stated identity
    params = [p["name"] for op in spec["paths"].values() for m in op.values() for p in m.get("parameters", [])]
    forms = json.dumps(spec["components"]["schemas"])
    assert "user_id" not in params and "owner_id" not in params and '"owner_id"' not in forms
    page = client.get("/")
    assert page.status_code == 200 and "<canvas" in page.text
    for asset in ("/static/app.js", "/static/style.css"):
        assert client.get(asset).status_code == 200
    assert "http://" not in page.text and "https://" not in page.text  # nothing from the internet
    assert "https://" not in client.get("/static/app.js").text


def test_private_image_404_for_others(client, platform):
    pid, owner = db_rows(platform, "SELECT id, owner_id FROM images WHERE is_private = 1 LIMIT 1")[0]
    other = 1 if owner != 1 else 2
    assert client.get(f"/images/{pid}", headers=as_user(owner)).status_code == 200
    for who in (other, None):
        for url in (f"/images/{pid}", f"/images/{pid}?size=96"):  # the image and its thumbnail
            r = client.get(url, headers=as_user(who))
            assert r.status_code == 404 and r.json()["detail"] == f"unknown image_id {pid}"  # same as a missing id
        assert client.post("/search", data={"image_id": str(pid)}, headers=as_user(who)).status_code == 404
    assert client.post("/search", data={"image_id": str(pid)}, headers=as_user(owner)).status_code == 200
    # claiming to be the owner changes nothing: the claim is refused, not believed
    r = client.get(f"/images/{pid}?user_id={owner}", headers=as_user(other))
    assert r.status_code == 400 and "not accepted" in r.json()["detail"]


def test_privacy_over_random_requests(client, platform):
    meta = {r[0]: r[1:] for r in db_rows(platform, "SELECT id, owner_id, is_private, is_flagged FROM images")}
    rng = np.random.default_rng(7)
    for _ in range(40):
        q = int(rng.integers(0, N_IMAGES))
        user = None if rng.random() < 0.2 else int(rng.integers(1, 21))
        form = {"image_id": str(q), "k": str(int(rng.integers(1, 40)))}
        r = client.post("/search", data=form, headers=as_user(user))
        owner, private, flagged = meta[q]
        if (private or flagged) and owner != user:
            assert r.status_code == 404
            continue
        assert r.status_code == 200
        body = r.json()
        assert len(body["results"]) == int(form["k"])
        assert_no_personal_fields(body)
        for item in body["results"]:
            o, p, f = meta[item["image_id"]]
            assert not f and (not p or o == user)


def test_upload_then_find(own):
    client, platform = own
    rng = np.random.default_rng(3)
    pattern = np.kron((rng.random((7, 7)) > 0.5).astype(np.uint8) * 255, np.ones((4, 4), np.uint8))
    r = client.post(
        "/images",
        data={"tags": "checks", "is_private": "false"},
        files={"image": ("p.png", png(pattern), "image/png")},
        headers=as_user(3),
    )
    assert r.status_code == 201, r.text
    new = r.json()["image_id"]
    assert set(r.json()) == {"image_id", "thumbnail_url", "timings_ms"}
    hit = client.post("/search", data={"k": "3"}, files={"image": ("p.png", png(pattern), "image/png")}).json()
    assert hit["results"][0]["image_id"] == new and hit["results"][0]["tags"] == "checks"
    assert db_rows(platform, "SELECT owner_id, split FROM images WHERE id = ?", (new,)) == [(3, "upload")]


@functools.lru_cache(maxsize=1)
def _bad_uploads():
    rgb = np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)
    good = png(rgb)
    bomb = png(Image.new("1", (9000, 9000)))  # 81 M pixels in a ~10 kB file
    return {
        "zero-byte": (b"", 400),
        "not an image": (b"hello, I am a text file\n" * 20, 415),
        "truncated": (good[: len(good) // 2], 400),
        "corrupt": (good[:200] + bytes(200) + good[400:], 400),
        "decompression bomb": (bomb, 413),
    }


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("name", list(_bad_uploads()))
def test_bad_files_are_refused_and_change_nothing(scratch, name):
    client, platform = scratch
    data, status = _bad_uploads()[name]
    before = state(client, platform)
    r = client.post("/images", files={"image": ("x.png", data, "image/png")}, headers=as_user(3))
    assert r.status_code == status, (name, r.status_code, r.text)
    assert isinstance(r.json()["detail"], str) and len(r.json()["detail"]) > 10
    r = client.post("/search", data={"k": "5"}, files={"image": ("x.png", data, "image/png")})
    assert r.status_code == status
    assert state(client, platform) == before
    assert client.get("/health").status_code == 200


def test_size_limit_413(scratch):
    client, platform = scratch
    before = state(client, platform)
    big = b"\x89PNG" + bytes(serving.MAX_UPLOAD_BYTES + api.FORM_OVERHEAD + 10)
    r = client.post("/images", files={"image": ("big.png", big, "image/png")}, headers=as_user(3))
    assert r.status_code == 413 and "limit" in r.json()["detail"]
    assert state(client, platform) == before


@pytest.mark.parametrize("mode", ["CMYK", "P", "I;16", "RGBA"])
def test_unusual_modes_are_accepted(client, mode):
    base = Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 24, 3), dtype=np.uint8))
    img = {
        "CMYK": base.convert("CMYK"),
        "P": base.convert("P", palette=Image.ADAPTIVE),
        "RGBA": base.convert("RGBA"),
        "I;16": Image.fromarray(np.random.default_rng(0).integers(0, 65535, (32, 24)).astype(np.uint16)),
    }[mode]
    r = client.post(
        "/search", data={"k": "3"}, files={"image": ("m", png(img, "JPEG" if mode == "CMYK" else "PNG"), "image/x")}
    )
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    "form, status, words",
    [
        ({"image_id": "{public}", "k": "0"}, 400, "k must"),
        ({"image_id": "{public}", "k": "-1"}, 400, "k must"),
        ({"image_id": "{public}", "k": "100000000"}, 400, "k must"),
        ({"image_id": "{public}", "k": "ten"}, 400, "k must be an integer"),
        ({"image_id": "999999"}, 404, "unknown image_id"),
        ({"image_id": "abc"}, 400, "image_id must be an integer"),
        ({"image_id": "{public}", "user_id": "424242"}, 400, "user_id is not accepted"),
        ({"image_id": "{public}", "owner_id": "3"}, 400, "owner_id is not accepted"),
        ({"image_id": "{public}", "crop": "0,0,50,50"}, 400, "outside the image"),
        ({"image_id": "{public}", "crop": "10,10,10,20"}, 400, "empty"),
        ({"image_id": "{public}", "crop": "1,2,3"}, 400, "four numbers"),
        ({"k": "5"}, 400, "give an image file"),
    ],
)
def test_bad_search_fields(client, platform, public_id, form, status, words):
    form = {f: str(public_id) if v == "{public}" else v for f, v in form.items()}
    before = state(client, platform)
    r = client.post("/search", data=form)
    assert r.status_code == status, r.text
    assert words in r.json()["detail"]
    assert state(client, platform) == before


def test_bad_upload_fields(scratch):
    client, platform = scratch
    img = png(np.zeros((28, 28), np.uint8))
    before = state(client, platform)
    cases = [
        ({}, None, 401, "sign in"),  # anonymous: an upload needs an owner, and the owner is the credential
        ({"user_id": "3"}, None, 401, "sign in"),
        ({"user_id": "4"}, 3, 400, "user_id is not accepted"),  # signed in as 3, claiming to be 4
        ({"owner_id": "4"}, 3, 400, "owner_id is not accepted"),
        ({"is_private": "maybe"}, 3, 400, "is_private"),
    ]
    for form, who, status, words in cases:
        r = client.post("/images", data=form, files={"image": ("z.png", img, "image/png")}, headers=as_user(who))
        assert r.status_code == status and words in r.json()["detail"], r.text
    r = client.post("/images", headers=as_user(3))
    assert r.status_code == 400 and "image" in r.json()["detail"]
    assert client.get("/images/99999999").status_code == 404
    assert client.get("/images/1?size=5000").status_code == 400
    assert client.get("/corpus/random?n=0").status_code == 400
    assert state(client, platform) == before


def test_cli_serve_help():
    out = subprocess.run(
        [sys.executable, "-m", "vs_lib", "serve", "--help"], capture_output=True, text=True, cwd=config.ROOT, timeout=60
    )
    assert out.returncode == 0
    for flag in ("--host", "--port", "--model", "--index-kind", "--demo-user", "--local-owner"):
        assert flag in out.stdout
