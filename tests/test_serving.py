"""vs_lib.serving: image validation, perceptual hash, visibility and re-ranking rules, caches, the
neighbour service's delta and lock, the facade's bounds, uploads and deletions.

Everything runs on a small platform built in a temporary folder (2,000 Fashion-MNIST
images, a PCA encoder fitted in a second, a flat index) — no trained model needed. Tests
that upload work on their own copy of it, so the shared one never changes.
"""

from __future__ import annotations

import io
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from vs_lib import data, database, serving, testing
from vs_lib import index as index_mod
from vs_lib.serving import caches, hashing
from vs_lib.serving.access import ImageMeta, hidden_reason

N_IMAGES = 2000
N_USERS = 30


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    return testing.build_small_platform(tmp_path_factory.mktemp("platform"), N_IMAGES, n_users=N_USERS, seed=0)


@pytest.fixture(scope="module")
def service(platform):
    """Shared and read-only: no test uploads into it."""
    svc = testing.open_small_platform(platform)
    yield svc
    svc.close()


@pytest.fixture
def own(platform, tmp_path):
    """A copy of the platform and a service over it, for a test that uploads."""
    paths = testing.copy_platform(platform, tmp_path / "copy")
    svc = testing.open_small_platform(paths)
    yield paths, svc
    svc.close()


@pytest.fixture(scope="module")
def meta(platform):
    """``{id: (owner_id, is_private, is_flagged)}`` read straight from the database."""
    return {r[0]: r[1:] for r in rows(platform, "SELECT id, owner_id, is_private, is_flagged FROM images")}


@pytest.fixture(scope="module")
def public_ids(meta):
    return sorted(i for i, (_, p, f) in meta.items() if not p and not f)


def png_bytes(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def rows(paths, sql, args=()):
    conn = sqlite3.connect(paths["db"])
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def novel_image(seed: int) -> Image.Image:
    """A 28x28 image unlike any garment: a random checkerboard-ish pattern."""
    rng = np.random.default_rng(seed)
    a = (rng.random((7, 7)) > 0.5).astype(np.uint8) * 255
    return Image.fromarray(np.kron(a, np.ones((4, 4), np.uint8)))


# --------------------------------------------------------------------------- perceptual hash
def test_area_matrix_is_exact_area_averaging():
    rng = np.random.default_rng(0)
    a = rng.random((100, 70)) * 255
    ours = hashing.area_matrix(100, 32) @ a @ hashing.area_matrix(70, 32).T
    # independent: repeat every pixel until the sizes divide, then average equal blocks
    big = np.repeat(np.repeat(a, 8, axis=0), 16, axis=1)  # 800 x 1120 = 32*25 x 32*35
    brute = big.reshape(32, 25, 32, 35).mean(axis=(1, 3))
    assert np.allclose(ours, brute)
    # and for whole-pixel boxes it is PIL's BOX filter
    b = rng.random((96, 64)).astype(np.float32) * 255
    pil = np.asarray(Image.fromarray(b, mode="F").resize((32, 32), Image.BOX))
    assert np.abs(hashing.area_matrix(96, 32) @ b @ hashing.area_matrix(64, 32).T - pil).max() < 1e-3


def test_dct_matrix_matches_scipy():
    from scipy.fft import dct

    x = np.random.default_rng(1).random(32)
    assert np.allclose(hashing.dct_matrix(32) @ x, dct(x, norm="ortho"))


def test_perceptual_hash_bits_match_an_independent_computation():
    from scipy.fft import dctn

    img = np.random.default_rng(2).integers(0, 255, (64, 96)).astype(np.uint8)
    # independent: PIL's BOX resize to 32 x 32, scipy's 2-D DCT, 8 x 8 low corner vs its median
    small = np.asarray(Image.fromarray(img.astype(np.float32), mode="F").resize((32, 32), Image.BOX), np.float64)
    low = dctn(small, norm="ortho")[:8, :8].ravel()
    expected = int("".join("1" if v > np.median(low) else "0" for v in low), 2)
    assert int(serving.perceptual_hash(img)[0]) == expected


def test_perceptual_hash_separates_copies_from_different_images():
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
    expected = [bin(int(x) ^ int(y)).count("1") for x, y in zip(a, b, strict=True)]
    assert serving.hamming(a, b).tolist() == expected


# --------------------------------------------------------------------------- image validation
def test_decode_rejects_bad_bytes():
    with pytest.raises(serving.InvalidImage, match="empty"):
        serving.decode_image(b"")
    with pytest.raises(serving.NotAnImage, match="not an image"):
        serving.decode_image(b"%PDF-1.4 definitely not an image")
    good = png_bytes(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)))
    with pytest.raises(serving.InvalidImage, match=r"truncated|corrupt"):
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
    assert serving.parse_crop([1.4, 2.6, 10, 12]) == (1, 3, 10, 12)
    assert serving.parse_crop("") is None and serving.parse_crop(None) is None
    assert serving.apply_crop(img, (1, 2, 10, 12)).size == (9, 10)
    for bad in ["1,2,3", "a,b,c,d", "nan,0,1,1"]:
        with pytest.raises(serving.ServingError, match="crop"):
            serving.parse_crop(bad)
    for box in [(5, 5, 5, 10), (10, 0, 5, 5), (-1, 0, 5, 5), (0, 0, 29, 20), (0, 0, 10, 21)]:
        with pytest.raises(serving.ServingError, match="crop"):
            serving.apply_crop(img, box)


def test_encode_png_scales_the_longer_side():
    img = Image.fromarray(np.arange(28 * 14, dtype=np.uint8).reshape(28, 14))
    big = Image.open(io.BytesIO(serving.encode_png(img, 56)))
    assert big.size == (28, 56)
    assert np.array_equal(np.asarray(big)[::2, ::2], np.asarray(img))  # enlarged by whole pixels
    small = Image.open(io.BytesIO(serving.encode_png(img, 14)))
    assert small.size == (7, 14)
    np.testing.assert_allclose(np.asarray(small), np.asarray(img, float).reshape(14, 2, 7, 2).mean(axis=(1, 3)), atol=1)
    assert Image.open(io.BytesIO(serving.encode_png(img))).size == (14, 28)
    with pytest.raises(serving.ServingError, match="size"):
        serving.encode_png(img, 4)


# --------------------------------------------------------------------------- visibility and re-ranking rules
def test_visibility_rule():
    public, private, flagged = ImageMeta(7, False, False), ImageMeta(7, True, False), ImageMeta(7, False, True)
    expected = {  # (image, requester, as_result) -> reason; 7 owns all three
        (public, None, True): None, (public, 8, False): None,
        (private, 7, True): None, (private, 8, True): "private", (private, None, False): "private",
        (flagged, 7, False): None, (flagged, 7, True): "flagged", (flagged, 8, False): "flagged",
        (None, 7, False): "unknown",
    }  # fmt: skip
    for (m, who, as_result), reason in expected.items():
        assert hidden_reason(m, who, as_result=as_result) == reason, (m, who, as_result)


def _meta(table):
    return {i: ImageMeta(o, p, f, t) for i, (o, p, f, t) in table.items()}


def test_reranker_rules_on_a_hand_made_list():
    meta = _meta({1: (10, False, False, "a"), 2: (11, True, False, "b"), 3: (10, True, False, "c"),
                  4: (12, False, True, "d"), 5: (12, False, False, "e"), 6: (13, False, False, "f"),
                  7: (14, False, False, "g"), 9: (10, False, False, "q")})  # fmt: skip
    vec = {9: [1, 1, 1], 1: [1, 0, 0], 2: [0, 1, 0], 3: [0, 0, 1], 4: [1, 0, 0], 5: [0.6, 0.8, 0],
           6: [0.6, 0.8, 0.0005], 7: [0, 0.6, 0.8], 8: [1, 0, 0]}  # fmt: skip

    def vectors(ids):
        v = np.array([vec[i] for i in ids], dtype=np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    ids = np.array([9, 1, 2, 3, 4, 5, 6, 7])
    scores = np.linspace(1, 0.3, len(ids))
    rr = serving.ReRanker(dup_cosine=0.99, dup_hamming=None)
    res, dropped = rr.rerank(ids, scores, k=10, meta=meta, requester_id=10, query_image_id=9, vectors=vectors)
    assert [r.image_id for r in res] == [1, 3, 5, 7]  # 9 query, 2 private of 11, 4 flagged, 6 duplicate of 5
    assert [r.rank for r in res] == [1, 2, 3, 4]
    assert [r.tags for r in res] == ["a", "c", "e", "g"]
    assert [r.score for r in res] == pytest.approx(scores[[1, 3, 5, 7]].tolist())
    assert dropped == {"query": 1, "private": 1, "flagged": 1, "unknown": 0, "missing": 0, "duplicate": 1}
    without_9 = {i: m for i, m in meta.items() if i != 9}
    res, dropped = rr.rerank(ids, scores, k=2, meta=without_9, requester_id=None, vectors=vectors)
    assert [r.image_id for r in res] == [1, 5]  # anonymous: no private image at all; k respected
    assert dropped["unknown"] == 1 and dropped["private"] == 2
    # a platform query: its copies go too (8 is a public copy of the query 1)
    meta[8] = ImageMeta(15, False, False, "h")
    res, dropped = rr.rerank(np.array([1, 8, 5, 6, 7]), np.linspace(1, 0.5, 5), k=10, meta=meta, requester_id=12,
                             query_image_id=1, vectors=vectors)  # fmt: skip
    assert [r.image_id for r in res] == [5, 7]
    assert dropped["query"] == 1 and dropped["duplicate"] == 2
    res, _ = rr.rerank(np.array([8, 5, 6, 7, 99]), np.linspace(1, 0.5, 5), k=10, meta=meta, requester_id=12,
                       vectors=vectors)  # fmt: skip
    assert [r.image_id for r in res] == [8, 5, 7]  # a file query keeps it (upload-then-find relies on this); 99 unknown


def _rerank_by_hand(ids, meta, requester, query_id, hashes, k, max_bits):
    """The rules restated in plain Python, one candidate at a time, with str.count for the bits."""
    kept = [query_id] if query_id is not None else []
    out = []
    for i in ids:
        m = meta.get(i)
        if i == query_id or m is None or m.is_flagged or (m.is_private and m.owner_id != requester):
            continue
        if any(bin(hashes[i] ^ hashes[j]).count("1") <= max_bits for j in kept):
            continue
        kept.append(i)
        out.append(i)
        if len(out) == k:
            break
    return out


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 10**6), k=st.integers(1, 12), by_id=st.booleans(), requester=st.sampled_from([None, 1, 2]))
def test_reranker_agrees_with_a_rule_by_rule_computation(seed, k, by_id, requester):
    rng = np.random.default_rng(seed)
    n = 30
    ids = rng.permutation(100)[:n]
    meta = {int(i): ImageMeta(int(rng.integers(1, 4)), bool(rng.random() < 0.3), bool(rng.random() < 0.15))
            for i in ids if rng.random() < 0.9}  # fmt: skip
    base = rng.integers(0, 2**63, 4, dtype=np.uint64)  # 4 families of near-identical hashes
    hashes = {int(i): int(base[rng.integers(0, 4)] ^ np.uint64(1 << int(rng.integers(0, 64)))) for i in range(100)}
    query = int(ids[0]) if by_id else None
    res, dropped = serving.ReRanker(dup_cosine=None, dup_hamming=2).rerank(
        ids, np.linspace(1, 0, n), k=k, meta=meta, requester_id=requester, query_image_id=query,
        hashes=lambda xs: np.array([hashes[x] for x in xs], dtype=np.uint64),
    )  # fmt: skip
    assert [r.image_id for r in res] == _rerank_by_hand(ids.tolist(), meta, requester, query, hashes, k, 2)
    hidden = [i for i in ids.tolist() if i != query and hidden_reason(meta.get(i), requester, as_result=True)]
    assert dropped["query"] == int(by_id) and dropped["unknown"] == sum(i not in meta for i in hidden)
    assert dropped["private"] + dropped["flagged"] + dropped["unknown"] == len(hidden)


# --------------------------------------------------------------------------- caches
def _unit_vectors(n=50, dim=8, seed=0):
    """``(n, dim)`` L2-normalised vectors and their ids ``100..100+n-1``."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True), np.arange(100, 100 + n, dtype=np.int64)


def test_vector_cache_reads_stored_vectors_through_reconstruct(monkeypatch):
    x, ids = _unit_vectors()
    idx = index_mod.create(8, "flat")
    idx.add(x, ids)
    calls = []
    real = idx.reconstruct
    monkeypatch.setattr(idx, "reconstruct", lambda got: calls.append(np.asarray(got).tolist()) or real(got))
    fallback = []
    cache = caches.VectorCache(serving.NeighbourService(idx), lambda m: fallback.append(m) or np.zeros((len(m), 8)), 8)
    got = cache.get([105, 101, 105])
    np.testing.assert_array_equal(got, x[[5, 1, 5]])  # exactly the vectors that were added
    assert calls == [[105, 101]] and fallback == []  # one read of the distinct ids, nothing re-embedded
    cache.get([101])
    assert len(calls) == 1  # cached
    # an id the index lacks is re-embedded, and the index stays the source for the others
    cache.get([999])
    assert fallback == [[999]] and cache.can_reconstruct
    np.testing.assert_array_equal(cache.get([120]), x[[20]])
    assert calls[-1] == [120]


def test_vector_cache_re_embeds_when_the_kind_keeps_no_vectors():
    x, ids = _unit_vectors(n=300, dim=16)
    idx = index_mod.create(16, "lsh", nbits=64)
    idx.add(x, ids)
    with pytest.raises(index_mod.VectorIndexError):
        idx.reconstruct(ids[:1])  # what the cache relies on: the kind says it cannot
    fallback = []

    def embed(missing):
        fallback.append(list(missing))
        return x[np.asarray(missing) - 100]

    cache = caches.VectorCache(serving.NeighbourService(idx), embed, 16)
    assert cache.prefill() == 0 and not cache.can_reconstruct
    np.testing.assert_array_equal(cache.get([103, 110]), x[[3, 10]])
    cache.get([103, 110, 104])
    assert fallback == [[103, 110], [104]]  # each id embedded once


def test_hash_cache_loads_only_what_is_missing():
    imgs = data.load_fashion_mnist().train_images[:6]
    asked = []

    def pixels(ids):
        asked.append(list(ids))
        return [Image.fromarray(imgs[i]) for i in ids]

    cache = caches.HashCache(pixels)
    cache.prefill([0, 1, 2], imgs[:3])
    got = cache.get([2, 4, 0, 4])
    assert asked == [[4]]
    assert got.tolist() == serving.perceptual_hash(imgs[[2, 4, 0, 4]]).tolist()


# --------------------------------------------------------------------------- the facade: search
def test_search_fills_k_despite_filters(service, public_ids):
    for q in public_ids[:4]:
        resp = service.search(image_id=q, k=100, user_id=None)
        assert len(resp.results) == 100
        assert resp.dropped["private"] + resp.dropped["flagged"] > 0  # the top 100 alone would have been short
        assert set(resp.timings_ms) == {"validate", "embed", "search", "rerank", "total"}


def test_search_by_id_equals_search_by_pixels(service, public_ids):
    q = public_ids[5]
    img = data.load_fashion_mnist().train_images[q]
    by_id = service.search(image_id=q, k=10, user_id=None)
    by_px = service.search(png_bytes(Image.fromarray(img)), k=11, user_id=None)
    assert by_px.ids[0] == q  # a file query finds the image itself first
    assert by_px.ids[1:] == by_id.ids


def test_search_ids_is_the_exact_top_k_of_the_visible_images(platform, meta):
    """The whole pipeline against NumPy: cosine top-k over the images the requester may see."""
    svc = testing.open_small_platform(platform, dup_hamming=None)  # duplicate rule off: plain filtering
    try:
        emb = svc.encoder.embed(data.load_fashion_mnist().train_images[:N_IMAGES])  # independent of the index
        rng = np.random.default_rng(4)
        for requester in (None, 3, 17):
            for q in rng.choice([i for i, (o, p, f) in meta.items() if not (p or f)], 3, replace=False).tolist():
                got = svc.search_ids(q, 25, requester)
                allowed = np.array([i != q and not f and (not p or o == requester) for i, (o, p, f) in
                                    sorted(meta.items())])  # fmt: skip
                scores = np.where(allowed, emb @ emb[q], -np.inf)
                expected = np.sort(scores)[::-1][:25]
                assert len(got) == 25 and all(allowed[got])
                np.testing.assert_allclose(scores[got], expected, atol=1e-5)  # the 25 best, best first
    finally:
        svc.close()


def test_flagged_image_hidden_from_all_but_its_owner(service, platform):
    fid, owner = rows(platform, "SELECT id, owner_id FROM images WHERE is_flagged = 1 AND is_private = 0 LIMIT 1")[0]
    other = owner % N_USERS + 1
    assert service.get_image(fid, user_id=owner).size == (28, 28)
    for who in (other, None):
        with pytest.raises(serving.NotFound):
            service.get_image(fid, user_id=who)
        with pytest.raises(serving.NotFound):
            service.search(image_id=fid, k=3, user_id=who)
    own = service.search(image_id=fid, k=10, user_id=owner)
    assert len(own.ids) == 10 and fid not in own.ids  # never in results, not even for its owner


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(requester=st.one_of(st.none(), st.integers(1, N_USERS)), query=st.integers(0, N_IMAGES - 1),
       k=st.integers(1, 60), crop=st.booleans())  # fmt: skip
def test_privacy_property(service, meta, requester, query, k, crop):
    """Whoever asks, about whatever: no private image of another user, no flagged image, ever."""
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
    assert all(a.score >= b.score for a, b in zip(resp.results, resp.results[1:], strict=False))


def test_random_ids_are_visible_to_the_requester(service, meta):
    for who in (None, 4):
        ids = service.random_ids(50, who, seed=1)
        assert len(ids) == 50 and len(set(ids)) == 50
        assert all(not meta[i][2] and (not meta[i][1] or meta[i][0] == who) for i in ids)
    assert service.random_ids(50, 4, seed=1) == service.random_ids(50, 4, seed=1)  # a seed repeats the pick
    with pytest.raises(serving.ServingError, match="n must"):
        service.random_ids(0)


def test_unknown_ids_and_bad_k(service, public_ids):
    q = public_ids[0]
    with pytest.raises(serving.NotFound, match="user_id"):
        service.search(image_id=q, k=5, user_id=99_999)
    with pytest.raises(serving.NotFound, match="image_id"):
        service.search(image_id=10**9, k=5)
    for k in [0, -3, 101, 10**9, "x"]:
        with pytest.raises(serving.ServingError, match="k must"):
            service.search(image_id=q, k=k)
    with pytest.raises(serving.ServingError, match="exactly one"):
        service.search(k=5)


# --------------------------------------------------------------------------- the facade: uploads
def test_upload_then_search_finds_it_and_survives_a_restart(own):
    paths, svc = own
    n_before = len(svc.neighbours)
    img = novel_image(1)
    res = svc.upload(png_bytes(img), owner_id=5, tags="pattern,test")
    assert res.image_id >= N_IMAGES and len(svc.neighbours) == n_before + 1
    hit = svc.search(png_bytes(img), k=5, user_id=7)
    assert hit.results[0].image_id == res.image_id and hit.results[0].score > 0.999
    assert hit.results[0].tags == "pattern,test"
    # no index rewrite per upload: the file on disk is the earlier snapshot ...
    assert res.image_id not in index_mod.load(paths["index"]).ids()
    # ... and the upload is durable all the same: row and vector are in the database, so a
    # service started now (as after a kill) replays it
    stored_ids, stored = database.read_vectors(sqlite3.connect(paths["db"]), svc.encoder.fingerprint, [res.image_id])
    assert stored_ids.tolist() == [res.image_id]
    np.testing.assert_allclose(stored[0], svc.embedder.embed([img])[0], atol=1e-6)
    fresh = testing.open_small_platform(paths)
    try:
        assert fresh.search(png_bytes(img), k=1).ids == [res.image_id]
        assert np.array_equal(np.asarray(fresh.get_image(res.image_id)), np.asarray(img))
    finally:
        fresh.close()  # its snapshot now holds the upload
    assert res.image_id in index_mod.load(paths["index"]).ids()


def test_restart_replays_stored_vectors_without_embedding(own, monkeypatch):
    """What the start-up adds for an upload is the vector its upload stored, not a re-embedding."""
    paths, svc = own
    ids = [svc.upload(png_bytes(novel_image(40 + s)), owner_id=4).image_id for s in range(3)]
    expected = svc.neighbours.reconstruct(ids)

    class NoPixels:
        """The same encoder, except that it must not be asked to embed anything."""

        def __init__(self, enc):
            self.name, self.dim, self.fingerprint = enc.name, enc.dim, enc.fingerprint

        def embed(self, images, batch_size=256):
            raise AssertionError(f"asked to embed {len(images)} image(s): the replay should use stored vectors")

    res = index_mod.sync_index(NoPixels(svc.encoder), sqlite3.connect(paths["db"]), paths["index"], progress=False)
    assert res.added == 3
    np.testing.assert_array_equal(index_mod.load(paths["index"]).reconstruct(ids), expected)


def test_an_upload_is_read_back_through_its_storage_key(own):
    paths, svc = own
    img = novel_image(6)
    res = svc.upload(png_bytes(img), owner_id=2)
    key = rows(paths, "SELECT storage_key, split FROM images WHERE id = ?", (res.image_id,))[0]
    assert key == (res.storage_key, "upload") and key[0].startswith(data.UPLOAD_PREFIX)
    assert (svc.store.store_dir / res.storage_key).is_file()
    np.testing.assert_array_equal(data.load_pixels(res.storage_key, store_dir=svc.store.store_dir), np.asarray(img))
    # its id is below 60,000, yet it is not the corpus image at that position: the key decides
    corpus_twin = data.load_fashion_mnist().train_images[res.image_id]
    assert not np.array_equal(corpus_twin, np.asarray(img))
    np.testing.assert_array_equal(svc.load_image(res.image_id), np.asarray(img))
    # after a restart, its hash is computed from the stored file and matches the one made at upload
    fresh = testing.open_small_platform(paths)
    try:
        assert fresh.hashes.get([res.image_id])[0] == svc.hashes.get([res.image_id])[0]
    finally:
        fresh.close()


def test_private_upload_is_visible_to_its_owner_only(own):
    _, svc = own
    img = novel_image(2)
    res = svc.upload(png_bytes(img), owner_id=6, is_private=True)
    assert svc.search(png_bytes(img), k=3, user_id=6).ids[0] == res.image_id
    assert res.image_id not in svc.search(png_bytes(img), k=50, user_id=8).ids
    assert res.image_id not in svc.search(png_bytes(img), k=50).ids
    with pytest.raises(serving.NotFound):
        svc.get_image(res.image_id, user_id=8)
    assert svc.get_image(res.image_id, user_id=6).size == (28, 28)


def test_near_duplicates_are_collapsed(own):
    _, svc = own
    img = novel_image(3)
    a = svc.upload(png_bytes(img), owner_id=5)
    brighter = Image.fromarray(np.clip(np.asarray(img).astype(int) * 0.9 + 10, 0, 255).astype(np.uint8))
    b = svc.upload(png_bytes(brighter), owner_id=9)
    same = svc.upload(png_bytes(img), owner_id=10)  # an exact re-upload
    family = {a.image_id, b.image_id, same.image_id}
    hashes = svc.hashes.get([a.image_id, b.image_id, same.image_id])
    assert serving.hamming(hashes[0], hashes[1]) <= serving.DUP_HAMMING
    resp = svc.search(png_bytes(img), k=10)
    assert len(family & set(resp.ids)) == 1 and resp.dropped["duplicate"] >= 2
    # with the rules off, all three come back
    svc.reranker = serving.ReRanker(dup_cosine=None, dup_hamming=None)
    assert family <= set(svc.search(png_bytes(img), k=10).ids)


def test_failed_upload_changes_nothing(own, monkeypatch):
    paths, svc = own
    count = lambda: rows(paths, "SELECT COUNT(*) FROM images")[0][0] + rows(paths, "SELECT COUNT(*) FROM vectors")[0][0]  # noqa: E731
    files = lambda: sorted(p.name for p in (svc.store.store_dir / "uploads").rglob("*") if p.is_file())  # noqa: E731
    on_disk = lambda: index_mod.load(paths["index"]).ids().tolist()  # noqa: E731
    before = (count(), len(svc.neighbours), files(), svc.neighbours.ids().tolist(), on_disk())

    def boom(*a, **k):
        raise OSError("disk full (simulated)")

    failures = ((svc.neighbours, "add"), (data, "insert_image"), (database, "write_vector"), (svc.embedder, "embed"),
                (svc.store, "stage_object"))  # fmt: skip
    for target, name in failures:
        with monkeypatch.context() as m:
            m.setattr(target, name, boom)
            with pytest.raises(OSError, match="simulated"):
                svc.upload(png_bytes(novel_image(4)), owner_id=5)
        assert (count(), len(svc.neighbours), files(), svc.neighbours.ids().tolist(), on_disk()) == before, name
    # bad inputs: refused, nothing changed
    for payload, owner, err in [(b"", 5, serving.InvalidImage), (b"junk", 5, serving.NotAnImage),
                                (png_bytes(novel_image(5)), 99_999, serving.NotFound)]:  # fmt: skip
        with pytest.raises(err):
            svc.upload(payload, owner_id=owner)
    assert (count(), len(svc.neighbours), files()) == before[:3]
    # and the service still works
    assert svc.upload(png_bytes(novel_image(4)), owner_id=5).image_id not in before[3]


def test_concurrent_uploads_and_searches_lose_nothing(own, public_ids):
    paths, svc = own
    n_before = len(svc.neighbours)

    def up(seed):
        return svc.upload(png_bytes(novel_image(1000 + seed)), owner_id=1 + seed % N_USERS, tags=f"c{seed}").image_id

    def look(q):
        return svc.search(image_id=int(q), k=10, user_id=None).ids

    with ThreadPoolExecutor(8) as pool:
        ups = [pool.submit(up, s) for s in range(12)]
        looks = [pool.submit(look, q) for q in public_ids[:40]]
        new_ids = [f.result() for f in ups]
        assert all(len(f.result()) == 10 for f in looks)
    assert len(set(new_ids)) == 12
    assert len(svc.neighbours) == n_before + 12
    assert set(new_ids) <= set(svc.neighbours.ids().tolist())
    assert set(new_ids) <= {r[0] for r in rows(paths, "SELECT id FROM images WHERE id >= ?", (N_IMAGES,))}
    assert set(new_ids) <= {r[0] for r in rows(paths, "SELECT image_id FROM vectors")}
    assert svc.snapshot()  # what the background thread does: now the saved index holds them all
    assert set(new_ids) <= set(index_mod.load(paths["index"]).ids().tolist())
    for s, i in enumerate(new_ids):  # every upload is findable by its own pixels
        assert svc.search(png_bytes(novel_image(1000 + s)), k=1, user_id=1 + s % N_USERS).ids == [i]


# --------------------------------------------------------------------------- the neighbour service: base + delta
@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_delta_and_merge_answer_like_an_exact_search_of_the_live_set(metric):
    """Base index + added delta − removed ids, before and after merging, against NumPy over the live vectors."""
    x, ids = _unit_vectors(n=400, dim=16, seed=3)
    base = index_mod.create(16, "flat", metric=metric)
    base.add(x[:300], ids[:300])
    svc = serving.NeighbourService(base)
    svc.add(x[300:], ids[300:])  # the delta
    gone = [int(i) for i in ids[::7]]  # from the base and from the delta
    svc.remove(gone)
    live = ~np.isin(ids, gone)
    queries, _ = _unit_vectors(n=20, dim=16, seed=4)

    def expected(q):
        d = x[live] @ q if metric == "ip" else ((x[live] - q) ** 2).sum(1)
        order = np.argsort(-d if metric == "ip" else d, kind="stable")[:15]
        return ids[live][order], d[order]

    for stage in ("delta", "merged"):
        assert len(svc) == int(live.sum()) and svc.ids().tolist() == ids[live].tolist()
        for q in queries:
            scores, found = svc.search(q, 15)
            want_ids, want_scores = expected(q)
            np.testing.assert_allclose(scores, want_scores, atol=1e-5, err_msg=stage)
            assert set(found.tolist()) == set(want_ids.tolist()), stage
        np.testing.assert_array_equal(svc.reconstruct([int(ids[302]), int(ids[2])]), x[[302, 2]])
        with pytest.raises(KeyError):
            svc.reconstruct([gone[0]])
        if stage == "delta":
            assert svc.pending == 100 - len([g for g in gone if g >= ids[300]]) + len([g for g in gone if g < ids[300]])
            assert svc.merge() > 0 and svc.pending == 0
    with pytest.raises(ValueError, match="already"):
        svc.add(x[:1], ids[1:2])
    with pytest.raises(ValueError, match="not in the index"):
        svc.remove([gone[0]])


def test_writer_waits_only_for_current_readers_and_goes_before_new_ones():
    lock = serving.ReadWriteLock()
    events = []
    first_in, release_first, writer_waiting = threading.Event(), threading.Event(), threading.Event()

    def first_reader():
        with lock.read():
            first_in.set()
            release_first.wait(10)
            events.append("reader 1 out")

    def writer():
        first_in.wait(10)
        writer_waiting.set()
        with lock.write():
            events.append("writer")

    def late_reader():
        writer_waiting.wait(10)
        time.sleep(0.1)  # the writer is queued by now
        with lock.read():
            events.append("reader 2")

    threads = [threading.Thread(target=f) for f in (first_reader, writer, late_reader)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    assert events == []  # the writer waits for reader 1, and reader 2 waits behind the writer
    release_first.set()
    for t in threads:
        t.join(10)
    assert events == ["reader 1 out", "writer", "reader 2"]


def test_uploads_never_wait_for_a_search_in_progress(own):
    """An upload changes only the delta: it completes while a search holds the index's lock."""
    _, svc = own
    with svc.neighbours.rw.read():  # a search in progress, as long as we like
        done = []
        t = threading.Thread(target=lambda: done.append(svc.upload(png_bytes(novel_image(77)), owner_id=3)))
        t.start()
        t.join(30)
        assert done and done[0].image_id in svc.neighbours  # finished while the lock was held
    assert svc.search(png_bytes(novel_image(77)), k=1).ids == [done[0].image_id]


# --------------------------------------------------------------------------- bounded work per request
def test_reranker_fetches_hashes_in_bounded_chunks():
    """Hashes are asked for a chunk at a time, and the walk stops once k are kept: no n × n work."""
    n, k = 3000, 5
    ids = np.arange(n)
    meta = {i: ImageMeta(1, False, False) for i in range(n)}
    asked = []

    def hashes(xs):
        asked.append(len(xs))
        return np.arange(len(xs), dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(xs[0])

    res, _ = serving.ReRanker(dup_hamming=2).rerank(ids, np.linspace(1, 0, n), k=k, meta=meta, requester_id=None,
                                                    hashes=hashes)  # fmt: skip
    assert len(res) == k
    assert max(asked) <= 32 and sum(asked) <= 32  # one chunk was enough, not all 3000 candidates


@pytest.fixture
def mostly_flagged(platform, tmp_path):
    """A copy where 90% of the images are flagged, so the filters leave little to show."""
    paths = testing.copy_platform(platform, tmp_path / "flagged")
    conn = sqlite3.connect(paths["db"])
    conn.execute("UPDATE images SET is_flagged = 1 WHERE id % 10 != 0")
    conn.commit()
    conn.close()
    return paths


def test_candidate_widening_is_capped_and_says_so(mostly_flagged):
    svc = testing.open_small_platform(mostly_flagged, max_candidates=300, dup_hamming=None)
    try:
        resp = svc.search(image_id=0, k=100)
        assert resp.candidates == 300 and resp.stop_reason == "candidate_cap" and resp.fewer_than_k
        assert 0 < len(resp.results) < 100 and all(r.image_id % 10 == 0 for r in resp.results)
        assert resp.dropped["flagged"] > 200
    finally:
        svc.close()
    svc = testing.open_small_platform(mostly_flagged, max_candidates=10_000, dup_hamming=None)
    try:
        resp = svc.search(image_id=0, k=100)
        assert resp.stop_reason == "k_results" and len(resp.results) == 100 and not resp.fewer_than_k
        assert 300 < resp.candidates <= N_IMAGES
        assert svc.search(image_id=0, k=100).ids == resp.ids
    finally:
        svc.close()


def test_a_search_past_its_deadline_stops_widening(mostly_flagged):
    svc = testing.open_small_platform(mostly_flagged, deadline_ms=0.0, dup_hamming=None)
    try:
        resp = svc.search(image_id=0, k=100)
        assert resp.stop_reason == "deadline" and resp.candidates == 400  # the first fetch only (4 k)
    finally:
        svc.close()


def test_a_missing_object_file_is_dropped_and_logged_never_an_error(own, caplog):
    _, svc = own
    img = novel_image(9)
    up = svc.upload(png_bytes(img), owner_id=5)
    (svc.store.store_dir / up.storage_key).unlink()
    svc.hashes = caches.HashCache(svc._images)  # forget its hash, so the file would be read again
    with caplog.at_level("WARNING"):
        resp = svc.search(png_bytes(img), k=10)
    assert up.image_id not in resp.ids and len(resp.ids) == 10 and resp.dropped["missing"] == 1
    assert str(up.image_id) in caplog.text
    with pytest.raises(serving.NotFound, match="unknown image_id"):
        svc.get_image(up.image_id, user_id=5)


def test_delete_removes_row_vector_file_and_every_trace_in_searches(own):
    paths, svc = own
    img = novel_image(10)
    up = svc.upload(png_bytes(img), owner_id=5, is_private=True)
    path = svc.store.store_dir / up.storage_key
    assert path.is_file() and svc.search(png_bytes(img), k=1, user_id=5).ids == [up.image_id]
    with pytest.raises(serving.NotFound):
        svc.delete(up.image_id, user_id=6)  # someone else: it does not exist for them
    public = svc.upload(png_bytes(novel_image(11)), owner_id=5)
    with pytest.raises(serving.Forbidden):
        svc.delete(public.image_id, user_id=6)  # visible, but not theirs
    svc.delete(up.image_id, user_id=5)
    assert not path.exists()
    assert rows(paths, "SELECT COUNT(*) FROM images WHERE id = ?", (up.image_id,)) == [(0,)]
    assert rows(paths, "SELECT COUNT(*) FROM vectors WHERE image_id = ?", (up.image_id,)) == [(0,)]
    assert up.image_id not in svc.neighbours and up.image_id not in svc.search(png_bytes(img), k=50, user_id=5).ids
    # ids are never reused: the next upload gets a new one, above every id ever given
    again = svc.upload(png_bytes(img), owner_id=5)
    assert again.image_id > max(up.image_id, public.image_id)
