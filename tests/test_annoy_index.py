"""The ``annoy`` kind: Annoy's forest behind the VectorIndex interface.

Ground truth is NumPy's full sort; what each test would catch is said in its docstring.
The forest is built from 2,000+ vectors (``min_build`` lowered where a test needs a forest
of fewer), so the forest path, the exact buffer and the tombstones are all exercised.
"""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from vs_lib import config
from vs_lib import index as vi
from vs_lib.index import IndexCorruptedError

DIM = 24
N = 3000


def numpy_topk(q: np.ndarray, x: np.ndarray, k: int, metric: str = "ip") -> np.ndarray:
    """Rows of the best ``k`` by a full NumPy sort (independent of the index)."""
    if metric == "ip":
        return np.argsort(-(q @ x.T), axis=1, kind="stable")[:, :k]
    d2 = ((q[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    return np.argsort(d2, axis=1, kind="stable")[:, :k]


@pytest.fixture(scope="module")
def data():
    x = vi.clustered_vectors(N, DIM, n_clusters=30, spread=0.8, seed=11)
    q = vi.synthetic_queries(80, DIM, n_clusters=30, spread=0.8, seed=11)
    ids = np.arange(N, dtype=np.int64) * 5 + 17  # ids are not row numbers
    return x, q, ids


def recall(index, q, x, ids, k=10, metric="ip", alive=None) -> float:
    """Recall@k of ``index`` against exact search over the rows in ``alive`` (default: all)."""
    rows = np.arange(len(x)) if alive is None else np.asarray(alive)
    truth = ids[rows][numpy_topk(q, x[rows], k, metric)]
    return vi.neighbour_recall(index.search(q, k)[1], truth, k)


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_search_k_trades_recall_and_scores_are_exact(data, metric):
    """Catches a wrong row→id mapping, a wrong score conversion (angular/euclidean) and a
    search_k that is not passed to Annoy."""
    x, q, ids = data
    x = x if metric == "ip" else 3.0 * x  # l2 also on vectors that are not unit length
    idx = vi.create(DIM, "annoy", metric=metric, n_trees=10).add(x, ids).build()
    assert idx.forest is not None and idx.forest.get_n_trees() == 10
    low = recall(idx.set_search_params(search_k=20), q, x, ids, metric=metric)
    high = recall(idx.set_search_params(search_k=3000), q, x, ids, metric=metric)
    assert high >= 0.95 and low < high - 0.1
    scores, found = idx.search(q, 5)
    rows = (found - 17) // 5
    dots, d2 = np.einsum("nd,nkd->nk", q, x[rows]), ((q[:, None, :] - x[rows]) ** 2).sum(-1)
    expected = dots if metric == "ip" else d2
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-4)
    assert (np.diff(scores, axis=1) <= 1e-5 if metric == "ip" else np.diff(scores, axis=1) >= -1e-5).all()


def test_ip_scores_are_inner_products_for_any_query_norm(data):
    """The forest (angles) and the buffer (dot products) must score alike, whatever |q|."""
    x, q, ids = data
    idx = vi.create(DIM, "annoy", n_trees=10, search_k=5000).add(x[:2000], ids[:2000]).build()
    idx.add(x[2000:2100], ids[2000:2100])  # buffer
    scores, found = idx.search(2.5 * q, 10)
    rows = (found - 17) // 5
    np.testing.assert_allclose(scores, np.einsum("nd,nkd->nk", 2.5 * q, x[rows]), rtol=1e-4, atol=1e-4)


def test_adds_go_to_an_exact_buffer_until_the_rebuild(data):
    """Catches new vectors that are invisible until a rebuild, a rebuild on every add, and a
    buffer that is never folded into the forest."""
    x, q, ids = data
    idx = vi.create(DIM, "annoy", n_trees=10, search_k=3000, min_build=500, rebuild_fraction=0.1)
    idx.add(x[:2000], ids[:2000])
    idx.search(q[:1], 1)
    assert idx.rebuilds == 1 and len(idx.row_ids) == 2000
    idx.add(x[2000:2150], ids[2000:2150])  # 150 <= max(500, 10% of 2000): stays in the buffer
    _, top = idx.search(x[2000:2150], 1)
    assert (top[:, 0] == ids[2000:2150]).all() and idx.rebuilds == 1 and not idx.needs_build()
    assert recall(idx, q, x[:2150], ids[:2150]) >= 0.95
    idx.add(x[2150:2700], ids[2150:2700])  # 700 in the buffer: the next search rebuilds
    assert idx.needs_build()
    _, top = idx.search(x[2000:2700], 1)
    assert idx.rebuilds == 2 and len(idx.row_ids) == 2700 and not idx.needs_build()
    assert (top[:, 0] == ids[2000:2700]).mean() >= 0.98


def test_removed_ids_never_return_and_k_results_survive(data):
    """Tombstones with over-fetch: removing every query's own top neighbours must neither
    return them nor leave fewer than k results (plain filtering would)."""
    x, q, ids = data
    idx = vi.create(DIM, "annoy", n_trees=10, search_k=3000).add(x, ids).build()
    top_rows = np.unique(numpy_topk(q[:20], x, 3))
    assert len(top_rows) < 0.1 * N  # stays below dead_fraction: tombstones, no rebuild
    assert idx.remove(ids[top_rows]) == len(top_rows)
    scores, found = idx.search(q[:20], 10)
    assert idx.rebuilds == 1 and not np.isin(found, ids[top_rows]).any()
    assert (found >= 0).all() and np.isfinite(scores).all()
    alive = np.setdiff1d(np.arange(N), top_rows)
    assert recall(idx, q[:20], x, ids, alive=alive) >= 0.9
    # a removed id added again is found again (from the buffer)
    idx.add(x[top_rows[:3]], ids[top_rows[:3]])
    assert (idx.search(x[top_rows[:3]], 1)[1][:, 0] == ids[top_rows[:3]]).all()
    # many removals: the next search rebuilds without them
    gone = np.intersect1d(ids[: N // 5], idx.ids())
    idx.remove(gone)
    idx.search(q[:1], 1)
    assert idx.rebuilds == 2 and not np.isin(idx.row_ids, gone).any() and len(idx.row_ids) == len(idx)


def test_reconstruct_from_forest_and_buffer(data):
    x, _, ids = data
    idx = vi.create(DIM, "annoy", n_trees=5).add(x[:2000], ids[:2000]).build().add(x[2000:2010], ids[2000:2010])
    pick = ids[[3, 2005, 0, 1999]]
    np.testing.assert_allclose(idx.reconstruct(pick), x[[3, 2005, 0, 1999]], atol=1e-6)
    with pytest.raises(KeyError):
        idx.reconstruct([ids[2500]])


def test_small_index_is_exact_and_pads(data):
    """Below min_build there is no forest: the buffer is searched exactly; k > n pads."""
    x, q, ids = data
    idx = vi.create(DIM, "annoy").add(x[:300], ids[:300])
    assert idx.forest is None
    np.testing.assert_array_equal(idx.search(q, 5)[1], ids[:300][numpy_topk(q, x[:300], 5)])
    scores, found = vi.create(DIM, "annoy").add(x[:3], ids[:3]).search(q[:2], 5)
    assert (found[:, 3:] == -1).all() and np.isneginf(scores[:, 3:]).all()


def test_save_load_round_trip(data, tmp_path):
    """Forest, tombstones and buffer survive a save; the loaded index keeps accepting updates."""
    x, q, ids = data
    idx = vi.create(DIM, "annoy", n_trees=8, search_k=2000, fingerprint="enc").add(x[:2500], ids[:2500]).build()
    idx.remove(ids[:40])
    idx.add(x[2500:2550], ids[2500:2550])
    before = idx.search(q, 10)
    idx.save(tmp_path / "a")
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["kind"] == "annoy" and manifest["count"] == 2510 and "annoy" in manifest["versions"]
    assert set(manifest["files"]) == {"forest", "rowids", "alive", "bufx", "bufids"}
    back = vi.load(tmp_path / "a", expected_dim=DIM, expected_fingerprint="enc")
    assert isinstance(back, vi.AnnoyIndex) and back.params["search_k"] == 2000
    after = back.search(q, 10)
    np.testing.assert_array_equal(before[1], after[1])
    np.testing.assert_allclose(before[0], after[0], atol=1e-5)
    forest_file = tmp_path / "a" / manifest["files"]["forest"]["name"]
    assert back.memory_bytes() >= forest_file.stat().st_size
    back.add(x[2600:2610], ids[2600:2610])
    assert back.remove(ids[100:110]) == 10 and len(back) == 2510
    assert not np.isin(back.search(x[100:110], 3)[1], ids[100:110]).any()


def test_corruption_and_interrupted_saves(data, tmp_path, monkeypatch):
    x, _, ids = data
    idx = vi.create(DIM, "annoy", n_trees=4).add(x[:1500], ids[:1500]).build()
    idx.save(tmp_path / "a")
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    forest = tmp_path / "a" / manifest["files"]["forest"]["name"]
    raw = bytearray(forest.read_bytes())
    raw[len(raw) // 3] ^= 0xFF
    forest.write_bytes(bytes(raw))
    with pytest.raises(IndexCorruptedError, match="checksum"):
        vi.load(tmp_path / "a")
    raw[len(raw) // 3] ^= 0xFF
    forest.write_bytes(bytes(raw))

    # killed before the manifest is replaced: the previous save still loads, whole
    idx.add(x[1500:2600], ids[1500:2600])

    def boom(*a, **k):
        raise KeyboardInterrupt("killed mid-save")

    monkeypatch.setattr(config, "write_json_atomic", boom)
    with pytest.raises(KeyboardInterrupt):
        idx.save(tmp_path / "a")
    monkeypatch.undo()
    old = vi.load(tmp_path / "a")
    assert len(old) == 1500 and old.search(x[:5], 1)[1][:, 0].tolist() == ids[:5].tolist()
    idx.save(tmp_path / "a")
    assert len(vi.load(tmp_path / "a")) == 2600
    names = {f.name for f in (tmp_path / "a").iterdir()} - {"manifest.json"}
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert names == {f["name"] for f in manifest["files"].values()}  # the old forest was cleaned up


def test_concurrent_searches_rebuild_once(data):
    """Searches that find the forest stale race to rebuild it: exactly one does."""
    x, q, ids = data
    idx = vi.create(DIM, "annoy", n_trees=5, search_k=2000).add(x, ids)
    results, errors = [], []

    def worker():
        try:
            results.append(idx.search(q[:10], 5)[1])
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and idx.rebuilds == 1
    assert all(np.array_equal(r, results[0]) for r in results)


def test_bad_input_is_refused_and_changes_nothing(data):
    x, _, ids = data
    idx = vi.create(DIM, "annoy", n_trees=4).add(x[:1200], ids[:1200]).build()
    cases = [
        (lambda: idx.add(x[1200:1205] * 3, ids[1200:1205]), "L2-normalised"),
        (lambda: idx.add(x[1200:1205, :5], ids[1200:1205]), "shape"),
        (lambda: idx.add(x[1200:1202], ids[:2]), "already in the index"),
        (lambda: idx.search(np.full((1, DIM), np.nan, np.float32), 3), "NaN"),
        (lambda: idx.set_search_params(search_k=0), "search_k"),
        (lambda: idx.set_search_params(nprobe=3), "unknown search parameter"),
        (lambda: idx.remove([ids[1500]]), "not in the index"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()
    assert len(idx) == 1200 and not idx.needs_build()
    with pytest.raises(ValueError, match="unknown parameter"):
        vi.create(DIM, "annoy", nlist=3)
    with pytest.raises(ValueError, match="positive"):
        vi.create(DIM, "annoy", n_trees=0)
