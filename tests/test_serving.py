"""vs_lib.serving: image validation, perceptual hash, re-ranking rules, the facade, uploads.

Everything runs on a small platform built in a temporary folder (2,000 Fashion-MNIST
images, a PCA encoder fitted in a second, a flat index) — no trained model needed.
"""
from __future__ import annotations

import io
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from vs_lib import index as index_mod
from vs_lib import serving

N_IMAGES = 2000


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    return serving.build_small_platform(tmp_path_factory.mktemp("platform"), N_IMAGES, n_users=30, seed=0)


@pytest.fixture(scope="module")
def service(platform):
    svc = serving.open_small_platform(platform)
    yield svc
    svc.close()


def png_bytes(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def rows(platform, sql, args=()):
    conn = sqlite3.connect(platform["db"])
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


# --------------------------------------------------------------------------- perceptual hash
def test_area_matrix_is_exact_area_averaging():
    rng = np.random.default_rng(0)
    a = rng.random((100, 70)) * 255
    ours = serving.area_matrix(100, 32) @ a @ serving.area_matrix(70, 32).T
    # independent: repeat every pixel until the sizes divide, then average equal blocks
    big = np.repeat(np.repeat(a, 8, axis=0), 16, axis=1)  # 800 x 1120 = 32*25 x 32*35
    brute = big.reshape(32, 25, 32, 35).mean(axis=(1, 3))
    assert np.allclose(ours, brute)
    # and for whole-pixel boxes it is PIL's BOX filter
    b = rng.random((96, 64)).astype(np.float32) * 255
    pil = np.asarray(Image.fromarray(b, mode="F").resize((32, 32), Image.BOX))
    assert np.abs(serving.area_matrix(96, 32) @ b @ serving.area_matrix(64, 32).T - pil).max() < 1e-3


def test_dct_matrix_matches_scipy():
    from scipy.fft import dct

    x = np.random.default_rng(1).random(32)
    assert np.allclose(serving.dct_matrix(32) @ x, dct(x, norm="ortho"))


def test_perceptual_hash_separates_copies_from_different_images():
    from vs_lib import data

    imgs = data.load_fashion_mnist().train_images[:300]
    h = serving.perceptual_hash(imgs)
    # batch (matrix) and single-image (PIL) paths agree
    assert serving.perceptual_hash(Image.fromarray(imgs[3]))[0] == h[3]
    brighter = np.clip(imgs.astype(int) * 1.15 + 8, 0, 255).astype(np.uint8)
    upscaled = [Image.fromarray(im).resize((112, 112), Image.BILINEAR) for im in imgs[:50]]
    assert np.median(serving.hamming(h, serving.perceptual_hash(brighter))) <= 2
    assert np.median(serving.hamming(h[:50], serving.perceptual_hash(upscaled))) <= 4
    rng = np.random.default_rng(0)
    i, j = rng.integers(0, 300, 500), rng.integers(0, 300, 500)
    d = serving.hamming(h[i], h[j])[i != j]
    assert 20 <= np.median(d) <= 40  # unrelated pairs differ in about half the bits


def test_hamming_counts_bits_independently():
    a = np.array([0, 0b1011, 2**63], dtype=np.uint64)
    b = np.array([0, 0b0001, 0], dtype=np.uint64)
    expected = [bin(int(x) ^ int(y)).count("1") for x, y in zip(a, b)]
    assert serving.hamming(a, b).tolist() == expected


# --------------------------------------------------------------------------- image validation
def test_decode_rejects_bad_bytes():
    with pytest.raises(serving.InvalidImage, match="empty"):
        serving.decode_image(b"")
    with pytest.raises(serving.NotAnImage, match="not an image"):
        serving.decode_image(b"%PDF-1.4 definitely not an image")
    good = png_bytes(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)))
    with pytest.raises(serving.InvalidImage, match="truncated|corrupt"):
        serving.decode_image(good[: len(good) // 2])
    with pytest.raises(serving.ImageTooLarge, match="limit"):
        serving.decode_image(good, max_bytes=100)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_decompression_bomb_is_refused_before_decoding():
    bomb = png_bytes(Image.new("L", (10_000, 10_000)))  # 100 M pixels, a ~100 kB file
    assert len(bomb) < 1_000_000
    with pytest.raises(serving.ImageTooLarge, match="decompression-bomb"):
        serving.decode_image(bomb)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA", "P", "CMYK", "I;16", "1", "L"])
def test_every_mode_is_converted(mode, service):
    base = Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 20, 3), dtype=np.uint8))
    if mode == "I;16":
        img = Image.fromarray((np.random.default_rng(0).integers(0, 65535, (30, 20))).astype(np.uint16))
    elif mode == "P":
        img = base.convert("P", palette=Image.ADAPTIVE)
    else:
        img = base.convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "TIFF" if mode in ("LA",) else "PNG"
    out = serving.decode_image(png_bytes(img, fmt))
    assert out.mode in ("L", "RGB") and out.size == (20, 30)
    assert service.embedder.embed([out]).shape == (1, service.encoder.dim)


def test_sixteen_bit_images_are_scaled_not_clipped():
    a = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    out = np.asarray(serving.decode_image(png_bytes(Image.fromarray(a))))
    assert out.min() == 0 and out.max() == 255 and len(np.unique(out)) > 200


def test_exif_rotation_is_honoured():
    img = Image.new("RGB", (40, 20), "white")
    img.paste((255, 0, 0), (0, 0, 10, 20))  # red band on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    out = serving.decode_image(png_bytes(img, "JPEG", exif=exif.tobytes(), quality=95))
    assert out.size == (20, 40)  # width and height swapped
    a = np.asarray(out).astype(int)
    assert a[:8, :, 0].mean() > 200 and a[:8, :, 1].mean() < 80  # the red band is now on top


def test_crop_parsing_and_bounds():
    img = Image.new("L", (28, 20))
    assert serving.parse_crop("1, 2, 10, 12") == (1, 2, 10, 12)
    assert serving.parse_crop("") is None and serving.parse_crop(None) is None
    assert serving.apply_crop(img, (1, 2, 10, 12)).size == (9, 10)
    for bad in ["1,2,3", "a,b,c,d", "nan,0,1,1"]:
        with pytest.raises(serving.ServingError, match="crop"):
            serving.parse_crop(bad)
    for box in [(5, 5, 5, 10), (10, 0, 5, 5), (-1, 0, 5, 5), (0, 0, 29, 20), (0, 0, 10, 21)]:
        with pytest.raises(serving.ServingError, match="crop"):
            serving.apply_crop(img, box)


# --------------------------------------------------------------------------- re-ranking rules
def test_reranker_rules_on_a_hand_made_list():
    # id: (owner, private, flagged, tags)
    meta = {1: (10, False, False, "a"), 2: (11, True, False, "b"), 3: (10, True, False, "c"),
            4: (12, False, True, "d"), 5: (12, False, False, "e"), 6: (13, False, False, "f"),
            7: (14, False, False, "g")}
    vec = {9: [1, 1, 1], 1: [1, 0, 0], 2: [0, 1, 0], 3: [0, 0, 1], 4: [1, 0, 0], 5: [0.6, 0.8, 0], 6: [0.6, 0.8, 0.0005], 7: [0, 0.6, 0.8]}
    vectors = lambda ids: np.array([vec[i] for i in ids], dtype=np.float32) / np.linalg.norm([vec[i] for i in ids], axis=1, keepdims=True)
    ids = np.array([9, 1, 2, 3, 4, 5, 6, 7])
    scores = np.linspace(1, 0.3, len(ids))
    rr = serving.ReRanker(dup_cosine=0.99, dup_hamming=None)
    res, dropped = rr.rerank(ids, scores, k=10, meta={**meta, 9: (10, False, False, "q")}, requester_id=10,
                             query_image_id=9, vectors=vectors)
    assert [r.image_id for r in res] == [1, 3, 5, 7]  # 9 query, 2 private of 11, 4 flagged, 6 duplicate of 5
    assert [r.rank for r in res] == [1, 2, 3, 4]
    assert dropped == {"query": 1, "private": 1, "flagged": 1, "unknown": 0, "duplicate": 1}
    res, _ = rr.rerank(ids, scores, k=2, meta=meta, requester_id=None, vectors=vectors)
    assert [r.image_id for r in res] == [1, 5]  # anonymous: no private image at all; k respected
    # a platform query: its copies go too (8 is a public copy of the query 1)
    meta[8], vec[8] = (15, False, False, "h"), [1, 0, 0]
    res, dropped = rr.rerank(np.array([1, 8, 5, 6, 7]), np.linspace(1, 0.5, 5), k=10, meta=meta, requester_id=12,
                             query_image_id=1, vectors=vectors)
    assert [r.image_id for r in res] == [5, 7]
    assert dropped["query"] == 1 and dropped["duplicate"] == 2
    res, _ = rr.rerank(np.array([8, 5, 6, 7]), np.linspace(1, 0.5, 4), k=10, meta=meta, requester_id=12, vectors=vectors)
    assert [r.image_id for r in res] == [8, 5, 7]  # a file query keeps it (upload-then-find relies on this)


def test_search_fills_k_despite_filters(service, platform):
    hidden = rows(platform, "SELECT COUNT(*) FROM images WHERE is_private = 1 OR is_flagged = 1")[0][0]
    assert hidden > 100  # the small platform hides many images on purpose
    for q in [0, 1, 2, 3]:
        try:
            resp = service.search(image_id=q, k=100, user_id=None)
        except serving.NotFound:
            continue
        assert len(resp.results) == 100
        assert set(resp.timings_ms) >= {"validate", "embed", "search", "rerank", "total"}


def test_search_by_id_equals_search_by_pixels(service):
    from vs_lib import data

    img = data.load_fashion_mnist().train_images[11]
    by_id = service.search(image_id=11, k=10, user_id=None) if 11 in _visible(service) else None
    by_px = service.search(png_bytes(Image.fromarray(img)), k=11, user_id=None)
    if by_id is not None:
        ids = [i for i in by_px.ids if i != 11][:10]
        assert ids == by_id.ids


def test_flagged_image_hidden_from_all_but_its_owner(service, platform):
    fid, owner = rows(platform, "SELECT id, owner_id FROM images WHERE is_flagged = 1 AND is_private = 0 LIMIT 1")[0]
    other = owner % 30 + 1
    assert service.get_image(fid, user_id=owner).size == (28, 28)
    for who in (other, None):
        with pytest.raises(serving.NotFound):
            service.get_image(fid, user_id=who)
        with pytest.raises(serving.NotFound):
            service.search(image_id=fid, k=3, user_id=who)
    own = service.search(image_id=fid, k=10, user_id=owner)
    assert fid not in own.ids  # never in results, not even for its owner


def _visible(service):
    meta = service.image_meta(range(N_IMAGES))
    return {i for i, m in meta.items() if not m[1] and not m[2]}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(requester=st.one_of(st.none(), st.integers(1, 30)), query=st.integers(0, N_IMAGES - 1), k=st.integers(1, 60),
       crop=st.booleans())
def test_privacy_property(service, platform, requester, query, k, crop):
    """Whoever asks, about whatever: no private image of another user, no flagged image, ever."""
    meta = {r[0]: r[1:] for r in rows(platform, "SELECT id, owner_id, is_private, is_flagged FROM images")}
    owner, private, flagged = meta[query]
    kwargs = {"crop": "2,2,26,26"} if crop else {}
    if (private or flagged) and owner != requester:
        with pytest.raises(serving.NotFound):
            service.search(image_id=query, k=k, user_id=requester, **kwargs)
        return
    resp = service.search(image_id=query, k=k, user_id=requester, **kwargs)
    assert len(resp.results) == k
    for r in resp.results:
        o, p, f = meta[r.image_id]
        assert not f
        assert not p or o == requester
        assert r.image_id != query
    assert [r.rank for r in resp.results] == list(range(1, k + 1))
    assert all(a.score >= b.score for a, b in zip(resp.results, resp.results[1:]))


def test_unknown_ids_and_bad_k(service):
    with pytest.raises(serving.NotFound, match="user_id"):
        service.search(image_id=0, k=5, user_id=99_999)
    with pytest.raises(serving.NotFound, match="image_id"):
        service.search(image_id=10**9, k=5)
    for k in [0, -3, 101, 10**9, "x"]:
        with pytest.raises(serving.ServingError, match="k must"):
            service.search(image_id=0, k=k)
    with pytest.raises(serving.ServingError, match="exactly one"):
        service.search(k=5)


# --------------------------------------------------------------------------- uploads
def novel_image(seed: int) -> Image.Image:
    """A 28x28 image unlike any garment: a random checkerboard-ish pattern."""
    rng = np.random.default_rng(seed)
    a = (rng.random((7, 7)) > 0.5).astype(np.uint8) * 255
    return Image.fromarray(np.kron(a, np.ones((4, 4), np.uint8)))


def test_upload_then_search_finds_it_and_survives_a_restart(service, platform):
    n_before = len(service.neighbours)
    img = novel_image(1)
    res = service.upload(png_bytes(img), owner_id=5, tags="pattern,test")
    assert res.image_id >= N_IMAGES
    assert len(service.neighbours) == n_before + 1
    assert (service.store_dir / res.storage_key).exists()
    hit = service.search(png_bytes(img), k=5, user_id=7)
    assert hit.results[0].image_id == res.image_id and hit.results[0].score > 0.999
    assert hit.results[0].tags == "pattern,test"
    # the index on disk already holds it: a restarted service finds it too
    reloaded = index_mod.VectorIndex.load(platform["index"])
    assert res.image_id in reloaded
    fresh = serving.open_small_platform(platform)
    assert fresh.search(png_bytes(img), k=1).ids == [res.image_id]
    assert np.array_equal(np.asarray(fresh.get_image(res.image_id)), np.asarray(img))
    fresh.close()


def test_private_upload_is_visible_to_its_owner_only(service):
    img = novel_image(2)
    res = service.upload(png_bytes(img), owner_id=6, is_private=True)
    assert service.search(png_bytes(img), k=3, user_id=6).ids[0] == res.image_id
    assert res.image_id not in service.search(png_bytes(img), k=50, user_id=8).ids
    assert res.image_id not in service.search(png_bytes(img), k=50).ids
    with pytest.raises(serving.NotFound):
        service.get_image(res.image_id, user_id=8)
    assert service.get_image(res.image_id, user_id=6).size == (28, 28)


def test_near_duplicates_are_collapsed(service):
    img = novel_image(3)
    a = service.upload(png_bytes(img), owner_id=5)
    brighter = Image.fromarray(np.clip(np.asarray(img).astype(int) * 0.9 + 10, 0, 255).astype(np.uint8))
    b = service.upload(png_bytes(brighter), owner_id=9)
    same = service.upload(png_bytes(img), owner_id=10)  # an exact re-upload
    hashes = service.hashes([a.image_id, b.image_id, same.image_id])
    assert serving.hamming(hashes[0], hashes[1]) <= serving.DUP_HAMMING
    resp = service.search(png_bytes(img), k=10)
    found = {a.image_id, b.image_id, same.image_id} & set(resp.ids)
    assert len(found) == 1 and resp.dropped["duplicate"] >= 2
    # with the rule off, all three come back
    plain = serving.ReRanker(dup_cosine=None, dup_hamming=None)
    old, service.reranker = service.reranker, plain
    try:
        assert {a.image_id, b.image_id, same.image_id} <= set(service.search(png_bytes(img), k=10).ids)
    finally:
        service.reranker = old


def test_failed_upload_changes_nothing(service, platform, monkeypatch):
    count = lambda: rows(platform, "SELECT COUNT(*) FROM images")[0][0]
    files = lambda: sorted(p.name for p in (service.store_dir / "uploads").glob("*")) if (service.store_dir / "uploads").exists() else []
    before = (count(), len(service.neighbours), files(), set(service.neighbours.index.ids().tolist()))

    def boom(*a, **k):
        raise RuntimeError("disk full (simulated)")

    monkeypatch.setattr(service.neighbours, "save", boom)
    with pytest.raises(RuntimeError, match="simulated"):
        service.upload(png_bytes(novel_image(4)), owner_id=5)
    monkeypatch.undo()
    assert (count(), len(service.neighbours), files(), set(service.neighbours.index.ids().tolist())) == before
    # bad inputs: refused, nothing changed
    for data, owner, err in [(b"", 5, serving.InvalidImage), (b"junk", 5, serving.NotAnImage),
                             (png_bytes(novel_image(5)), 99_999, serving.NotFound)]:
        with pytest.raises(err):
            service.upload(data, owner_id=owner)
    assert (count(), len(service.neighbours), files()) == before[:3]


def test_concurrent_uploads_and_searches_lose_nothing(service, platform):
    n_before = len(service.neighbours)
    errors: list[BaseException] = []

    def up(seed):
        return service.upload(png_bytes(novel_image(1000 + seed)), owner_id=1 + seed % 30, tags=f"c{seed}").image_id

    def look(q):
        try:
            return service.search(image_id=int(q), k=10, user_id=None).ids
        except serving.NotFound:
            return []

    visible = sorted(_visible(service))[:40]
    with ThreadPoolExecutor(8) as pool:
        ups = [pool.submit(up, s) for s in range(12)]
        looks = [pool.submit(look, q) for q in visible]
        new_ids = [f.result() for f in ups]
        for f in looks:
            assert len(f.result()) == 10
    assert len(set(new_ids)) == 12
    assert len(service.neighbours) == n_before + 12
    assert set(new_ids) <= set(service.neighbours.index.ids().tolist())
    db_ids = {r[0] for r in rows(platform, "SELECT id FROM images WHERE id >= ?", (N_IMAGES,))}
    assert set(new_ids) <= db_ids
    assert set(new_ids) <= set(index_mod.VectorIndex.load(platform["index"]).ids().tolist())
    for s, i in enumerate(new_ids):  # every upload is findable by its own pixels
        assert service.search(png_bytes(novel_image(1000 + s)), k=1, user_id=1 + s % 30).ids == [i]


def test_search_ids_is_the_simulation_entry_point(service):
    q = sorted(_visible(service))[0]
    ids = service.search_ids(q, 10, 1)
    assert ids == service.search(image_id=q, k=10, user_id=1).ids and len(ids) == 10
    assert all(isinstance(i, int) for i in ids)
