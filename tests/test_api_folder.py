"""Folder mode of the service (``python -m vs_lib serve --folder DIR``) over a small folder of photos.

The folder (tests/_folder_photos.py) is embedded once for the module with the photo encoder,
into a temporary data folder. The answers of the API are checked against independent calls
of :meth:`vs_lib.collection.Collection.search` and against the files themselves; the refusals
(traversal, symlinks out of the folder, bad input, other hosts, a non-loopback bind) against
a snapshot of the folder and the collection, which must not change.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
from _folder_photos import FACE, IMAGES, LARGE_SIZE, indexed_folder, snapshot
from PIL import Image

from vs_lib import config
from vs_lib.api.folder import check_folder_bind, create_folder_app

LOCAL = "http://127.0.0.1"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """``(folder, secret, data_dir, coll)``: the folder indexed once, in a temporary data folder."""
    root = tmp_path_factory.mktemp("folder_api")
    with indexed_folder(root) as (folder, secret, coll):
        yield folder, secret, root / "data", coll


@pytest.fixture(scope="module")
def client(env):
    from fastapi.testclient import TestClient

    with TestClient(create_folder_app(env[3]), base_url=LOCAL) as c:
        yield c


def png_bytes(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def search(client, **fields):
    """POST /search with form ``fields``; ``image=bytes`` is sent as a file."""
    files = {"image": ("query.png", fields.pop("image"), "image/png")} if "image" in fields else None
    return client.post("/search", data={k: str(v) for k, v in fields.items()}, files=files)


# --------------------------------------------------------------------------- what it serves
def test_health_says_folder_mode_and_counts_the_images(client, env):
    h = client.get("/health").json()
    assert h["mode"] == "folder" and h["model"] == "photo"
    assert h["images_indexed"] == len(IMAGES) and h["folder"] == str(env[0].resolve())


def test_listing_pages_through_every_indexed_path(client):
    seen, offset = [], 0
    while True:
        body = client.get(f"/files?offset={offset}&limit=4").json()
        assert body["total"] == len(IMAGES) and len(body["files"]) <= 4
        if not body["files"]:
            break
        seen += body["files"]
        offset += 4
    assert [f["path"] for f in seen] == IMAGES  # every image file, sorted; notes.txt is not one
    served = {f["path"]: f["thumbnail_url"] for f in seen}
    assert served["outside.png"] is None  # indexed through a symlink out of the folder: never served
    assert all(url for p, url in served.items() if p != "outside.png")
    assert client.get("/files?limit=0").status_code == 422
    assert client.get("/files?limit=100000").status_code == 422


def test_thumbnail_is_the_file_scaled_down(client, env):
    folder = env[0]
    r = client.get("/files/thumbnail?path=chelsea.jpg&size=96")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    thumb = Image.open(io.BytesIO(r.content)).convert("RGB")
    assert thumb.size == (96, 64)  # 451 x 300, longer side 96, aspect kept
    ref = np.asarray(Image.open(folder / "chelsea.jpg").convert("RGB").resize(thumb.size), np.float32)
    other = np.asarray(Image.open(folder / "coffee.jpg").convert("RGB").resize(thumb.size), np.float32)
    got = np.asarray(thumb, np.float32)
    assert np.abs(got - ref).mean() < 8 < np.abs(got - other).mean()
    assert client.get("/files/thumbnail?path=chelsea.jpg&size=4").status_code == 400


def test_view_is_reduced_but_reports_the_full_size(client):
    r = client.get("/files/view?path=large.jpg")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert (int(r.headers["X-Full-Width"]), int(r.headers["X-Full-Height"])) == LARGE_SIZE
    assert max(Image.open(io.BytesIO(r.content)).size) == 1024
    small = client.get("/files/view?path=" + quote("people/astronaut.png"))
    assert Image.open(io.BytesIO(small.content)).size == (512, 512) and small.headers["X-Full-Width"] == "512"


# --------------------------------------------------------------------------- searching
def test_search_by_path_ranks_like_the_collection(client, env):
    folder, _, _, coll = env
    body = search(client, path="coffee.jpg", k=5).json()
    expected = coll.search(str(folder / "coffee.jpg"), k=5)
    assert [h["path"] for h in body["results"]] == [h.path for h in expected.results]
    np.testing.assert_allclose([h["score"] for h in body["results"]], [h.score for h in expected.results], atol=1e-5)
    first = body["results"][0]
    assert first["path"] == "coffee.jpg" and first["score"] > 0.99 and first["rank"] == 1
    # the resized copy is a near-duplicate of a result, collapsed into it rather than ranked
    assert first["duplicates"] == 1 and first["duplicate_paths"] == ["copies/coffee_small.png"]
    assert "copies/coffee_small.png" not in [h["path"] for h in body["results"]]
    assert all(h["thumbnail_url"].startswith("/files/thumbnail?path=") for h in body["results"])


def test_a_crop_of_the_cat_s_face_finds_chelsea_first(client, env):
    folder = env[0]
    face = Image.open(folder / "chelsea.jpg").convert("RGB").crop(FACE)
    uploaded = search(client, image=png_bytes(face), k=3).json()["results"]
    by_crop = search(client, path="chelsea.jpg", crop=",".join(map(str, FACE)), k=3).json()["results"]
    assert uploaded[0]["path"] == by_crop[0]["path"] == "chelsea.jpg"
    # the same pixels reach the encoder both ways: the crop is in full-size pixels
    assert abs(uploaded[0]["score"] - by_crop[0]["score"]) < 0.01
    assert by_crop[0]["score"] < 0.99  # a crop, not the whole photo again


def test_a_crop_of_a_large_jpeg_is_in_full_size_pixels(client, env):
    folder = env[0]
    box = (1200, 100, 2300, 900)  # a region only the full-size coordinates describe
    part = Image.open(folder / "large.jpg").convert("RGB").crop(box)
    uploaded = {h["path"]: h["score"] for h in search(client, image=png_bytes(part), k=20).json()["results"]}
    by_crop = search(client, path="large.jpg", crop=",".join(map(str, box)), k=20).json()["results"]
    both = [h for h in by_crop if h["path"] in uploaded]  # (a pair of near-duplicates may swap which one is kept)
    assert len(both) >= len(by_crop) - 1 and "large.jpg" in uploaded
    # nearly the same query vector both ways (the crop is decoded from a reduced-size JPEG)
    assert max(abs(uploaded[h["path"]] - h["score"]) for h in both) < 0.03


def test_min_score_drops_exactly_the_results_below_it(client, env):
    folder, _, _, coll = env
    everything = coll.search(str(folder / "people" / "astronaut.png"), k=20)
    scores = [h.score for h in everything.results]
    cut = float(np.median(scores))
    expected = [(h.path, h.score) for h in everything.results if h.score >= cut]
    assert 0 < len(expected) < len(scores)  # the cut-off keeps some results and drops others
    body = search(client, path="people/astronaut.png", k=20, min_score=cut).json()
    assert body["min_score"] == pytest.approx(cut)
    assert [h["path"] for h in body["results"]] == [p for p, _ in expected]
    assert all(h["score"] >= cut - 1e-6 for h in body["results"])
    assert search(client, path="people/astronaut.png", k=20, min_score=1.5).json()["results"] == []
    for bad in ("high", "nan", "inf"):
        r = search(client, path="people/astronaut.png", min_score=bad)
        assert r.status_code == 400 and "min_score" in r.json()["detail"]


# --------------------------------------------------------------------------- refusals
def _state(env) -> tuple[dict, dict]:
    folder, _, data_dir, _ = env
    return snapshot(folder), snapshot(data_dir / "collections")


def bomb_png() -> bytes:
    """A small file that claims 81 megapixels (the guard refuses more than 40)."""
    return png_bytes(Image.new("1", (9000, 9000)))


@pytest.mark.parametrize(
    ("fields", "status", "says"),
    [
        ({"image": b"not an image at all"}, 400, "not an image"),
        ({"image": b""}, 400, "empty"),
        ({"path": "chelsea.jpg", "crop": "0,0,5000,5000"}, 400, "outside the image"),
        ({"path": "chelsea.jpg", "crop": "10,10,10,50"}, 400, "empty"),
        ({"path": "chelsea.jpg", "crop": "a,b,c"}, 400, "four numbers"),
        ({"path": "chelsea.jpg", "k": "0"}, 400, "k must"),
        ({"path": "chelsea.jpg", "k": "-3"}, 400, "k must"),
        ({"path": "chelsea.jpg", "k": "many"}, 400, "k must"),
        ({"path": "chelsea.jpg", "k": "101"}, 400, "k must"),
        ({"path": "no/such.jpg"}, 404, "not an indexed image"),
        ({"path": "chelsea.jpg", "image": b"x"}, 400, "not both"),
        ({}, 400, "give an image"),
    ],
)
def test_bad_search_input_is_refused_and_changes_nothing(client, env, fields, status, says):
    before = _state(env)
    r = search(client, **fields)
    assert r.status_code == status, r.text
    assert says in r.json()["detail"]
    assert _state(env) == before


def test_a_decompression_bomb_is_refused(client, env):
    before = _state(env)
    r = search(client, image=bomb_png())
    assert r.status_code == 400 and "decompression-bomb" in r.json()["detail"]
    assert _state(env) == before


def test_an_uploaded_query_is_not_written_anywhere(client, env):
    before = _state(env)
    r = search(client, image=png_bytes(Image.fromarray(np.full((64, 64, 3), 200, np.uint8))), k=2)
    assert r.status_code == 200 and len(r.json()["results"]) == 2
    assert _state(env) == before


def test_nothing_outside_the_folder_or_unindexed_is_served(client, env):
    _, secret, _, coll = env
    assert "outside.png" in coll.paths()  # indexed through its symlink: only the server's check stops it
    refused = [
        "../secret/secret.png",
        "gen/../../secret/secret.png",
        str(secret),
        "/etc/passwd",
        "outside.png",
        "notes.txt",
        "gen/../chelsea.jpg",
        "./chelsea.jpg",
        "",
    ]
    for path in refused:
        q = quote(path, safe="")
        for url in (f"/files/thumbnail?path={q}", f"/files/view?path={q}"):
            r = client.get(url)
            assert r.status_code == 404, (url, r.status_code)
            assert r.headers["content-type"].startswith("application/json")
        if path:
            assert search(client, path=path).status_code == 404, path
    # the raw, unencoded form reaches the same check
    assert client.get("/files/thumbnail?path=../secret/secret.png").status_code == 404
    assert client.get("/files/view?path=%2e%2e%2fsecret%2fsecret.png").status_code == 404


def test_requests_addressed_to_another_host_are_refused(env):
    from fastapi.testclient import TestClient

    with TestClient(create_folder_app(env[3]), base_url="http://photos.example.com") as c:
        assert c.get("/health").status_code == 400  # a DNS-rebinding page cannot reach the photos
    with TestClient(create_folder_app(env[3], allow_remote=True), base_url="http://photos.example.com") as c:
        assert c.get("/health").status_code == 200


def test_the_page_is_the_platform_s_page(client):
    page = client.get("/")
    assert page.status_code == 200 and 'id="minscore"' in page.text and "/static/app.js" in page.text
    assert "loadFolderPage" in client.get("/static/app.js").text


# --------------------------------------------------------------------------- the command
def test_a_non_loopback_bind_is_refused_without_the_flag(env, capsys):
    from vs_lib.__main__ import main

    folder, _, data_dir, _ = env
    for host in ("0.0.0.0", "192.168.1.20", "::"):
        with pytest.raises(ValueError, match="--allow-remote"):
            check_folder_bind(host, allow_remote=False)
    check_folder_bind("0.0.0.0", allow_remote=True)
    check_folder_bind("127.0.0.1", allow_remote=False)
    check_folder_bind("localhost", allow_remote=False)
    before = snapshot(data_dir)
    assert main(["serve", "--folder", str(folder), "--host", "0.0.0.0"]) == 2
    assert "--allow-remote" in capsys.readouterr().err
    assert snapshot(data_dir) == before  # refused before anything was loaded or written


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_serve_folder_command_syncs_and_serves(env, tmp_path):
    import urllib.request

    folder, _, data_dir, _ = env
    port = _free_port()
    run_env = {**os.environ, "VS_DATA_DIR": str(data_dir), "VS_MODELS_DIR": str(data_dir / "models"),
               "PYTHONPATH": str(config.ROOT)}  # fmt: skip
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vs_lib", "serve", "--folder", str(folder), "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=run_env,
        )
        try:
            deadline, health = time.time() + 180, None
            while time.time() < deadline and proc.poll() is None:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                        health = r.read().decode()
                    break
                except OSError:
                    time.sleep(0.5)
            assert health is not None, Path(log).read_text()
            assert '"mode":"folder"' in health and f'"images_indexed":{len(IMAGES)}' in health
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    text = Path(log).read_text()
    # the start-up sync found the collection up to date: nothing was embedded again
    assert f"serving {len(IMAGES)} images" in text and "; 0 embedded" in text, text
