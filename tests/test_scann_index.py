"""The ``scann`` kind: ScaNN behind the VectorIndex interface.

Ground truth is NumPy's full sort; what each test would catch is said in its docstring.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from vs_lib import config
from vs_lib import index as vi
from vs_lib.index import IndexCorruptedError, VectorIndexError

DIM = 16
N = 3000


def numpy_topk(q: np.ndarray, x: np.ndarray, k: int, metric: str = "ip") -> np.ndarray:
    if metric == "ip":
        return np.argsort(-(q @ x.T), axis=1, kind="stable")[:, :k]
    return np.argsort(((q[:, None, :] - x[None, :, :]) ** 2).sum(-1), axis=1, kind="stable")[:, :k]


@pytest.fixture(scope="module")
def data():
    x = vi.clustered_vectors(N, DIM, n_clusters=30, spread=0.8, seed=5)
    q = vi.synthetic_queries(60, DIM, n_clusters=30, spread=0.8, seed=5)
    ids = np.arange(N, dtype=np.int64) * 3 + 100
    return x, q, ids


def recall(index, q, x, ids, k=10, metric="ip") -> float:
    return vi.neighbour_recall(index.search(q, k)[1], ids[numpy_topk(q, x, k, metric)], k)


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_knobs_trade_recall_and_scores_are_rescored_exactly(data, metric):
    """Catches wrong ids (row table), unscaled or negated scores, and knobs that do nothing."""
    x, q, ids = data
    x = x if metric == "ip" else 2.0 * x
    idx = vi.create(DIM, "scann", metric=metric, n_leaves=30).add(x, ids)
    assert idx.is_trained and idx.searcher.size() == N
    low = recall(idx.set_search_params(leaves_to_search=1, reorder=10), q, x, ids, metric=metric)
    full = recall(idx.set_search_params(leaves_to_search=30, reorder=300), q, x, ids, metric=metric)
    assert full >= 0.99 and low < full - 0.1
    scores, found = idx.search(q, 5)
    rows = (found - 100) // 3
    dots, d2 = np.einsum("nd,nkd->nk", q, x[rows]), ((q[:, None, :] - x[rows]) ** 2).sum(-1)
    expected = dots if metric == "ip" else d2
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-4)  # re-scored with the float vectors
    # the one-query path and the batch path agree
    for i in (0, 7, 33):
        s1, f1 = idx.search(q[i], 5)
        np.testing.assert_array_equal(f1[0], found[i])
        np.testing.assert_allclose(s1[0], scores[i], atol=1e-5)


def test_buffer_until_min_train_then_trained_on_everything(data):
    """Before training, search is exact over the buffer; the build trains on all buffered vectors."""
    x, q, ids = data
    idx = vi.create(DIM, "scann", min_train=1000)
    idx.add(x[:600], ids[:600])
    assert not idx.is_trained and idx.min_training_vectors() == 0
    np.testing.assert_array_equal(idx.search(q, 5)[1], ids[:600][numpy_topk(q, x[:600], 5)])
    idx.add(x[600:1500], ids[600:1500])
    assert idx.is_trained and idx.searcher.size() == 1500 and idx.params["n_leaves"] == 37
    assert recall(idx.set_search_params(leaves_to_search=37, reorder=200), q, x[:1500], ids[:1500]) >= 0.99


def test_upserts_and_deletes_keep_the_row_table_right(data):
    """ScaNN moves its last point into a deleted row; a wrong mirror returns wrong ids.
    Every survivor must find itself, including the moved ones, after adds and deletes."""
    x, q, ids = data
    idx = vi.create(DIM, "scann", n_leaves=20).add(x[:2000], ids[:2000])
    idx.add(x[2000:], ids[2000:])  # upserts into the trained leaves
    rng = np.random.default_rng(0)
    gone = np.concatenate([rng.choice(ids, 400, replace=False), ids[-5:]])  # include the last rows
    gone = np.unique(gone)
    assert idx.remove(gone) == len(gone) and idx.searcher.size() == N - len(gone)
    idx.set_search_params(leaves_to_search=20, reorder=100)
    keep = ~np.isin(ids, gone)
    _, top = idx.search(x[keep], 1)
    assert (top[:, 0] == ids[keep]).all()
    _, found = idx.search(q, 10)
    assert not np.isin(found, gone).any()
    # re-adding removed ids, then removing everything, then adding again
    idx.add(x[~keep][:10], ids[~keep][:10])
    assert (idx.search(x[~keep][:10], 1)[1][:, 0] == ids[~keep][:10]).all()
    idx.remove(idx.ids())
    assert len(idx) == 0 and (idx.search(q[:2], 3)[1] == -1).all()
    idx.add(x[:50], ids[:50])
    assert (idx.search(x[:50], 1)[1][:, 0] == ids[:50]).all()


def test_save_load_round_trip_and_updates_after_load(data, tmp_path):
    x, q, ids = data
    idx = vi.create(DIM, "scann", fingerprint="enc", n_leaves=25, reorder=150).add(x[:2500], ids[:2500])
    idx.remove(ids[:30])
    before = idx.search(q, 10)
    idx.save(tmp_path / "s")
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["kind"] == "scann" and manifest["count"] == 2470 and "scann" in manifest["versions"]
    back = vi.load(tmp_path / "s", expected_dim=DIM, expected_fingerprint="enc")
    assert isinstance(back, vi.ScannIndex) and back.params["reorder"] == 150 and back.params["n_leaves"] == 25
    after = back.search(q, 10)
    np.testing.assert_array_equal(before[1], after[1])
    np.testing.assert_allclose(before[0], after[0], atol=1e-5)
    back.add(x[2500:2600], ids[2500:2600])
    back.remove(ids[100:120])
    back.set_search_params(leaves_to_search=25)
    assert (back.search(x[2500:2600], 1)[1][:, 0] == ids[2500:2600]).all()
    back.save(tmp_path / "s")
    assert len(vi.load(tmp_path / "s")) == 2470 + 100 - 20
    # a buffer-only index saves and loads too
    small = vi.create(DIM, "scann").add(x[:10], ids[:10])
    small.save(tmp_path / "small")
    np.testing.assert_array_equal(vi.load(tmp_path / "small").search(q, 3)[1], small.search(q, 3)[1])


def test_corruption_refused_and_interrupted_save_keeps_the_previous(data, tmp_path, monkeypatch):
    x, _, ids = data
    idx = vi.create(DIM, "scann", n_leaves=20).add(x[:1200], ids[:1200])
    idx.save(tmp_path / "s")
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    tar = tmp_path / "s" / manifest["files"]["searcher"]["name"]
    raw = bytearray(tar.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    tar.write_bytes(bytes(raw))
    with pytest.raises(IndexCorruptedError, match="checksum"):
        vi.load(tmp_path / "s")
    raw[len(raw) // 2] ^= 0xFF
    tar.write_bytes(bytes(raw))
    idx.add(x[1200:1500], ids[1200:1500])

    def boom(*a, **k):
        raise KeyboardInterrupt("killed mid-save")

    monkeypatch.setattr(config, "write_json_atomic", boom)
    with pytest.raises(KeyboardInterrupt):
        idx.save(tmp_path / "s")
    monkeypatch.undo()
    assert len(vi.load(tmp_path / "s")) == 1200
    assert not list((tmp_path / "s").glob(".scann-*"))  # no unpacked leftovers


def test_bad_input_and_what_it_lacks(data):
    x, q, ids = data
    idx = vi.create(DIM, "scann", n_leaves=10).add(x[:1100], ids[:1100])
    with pytest.raises(VectorIndexError, match="cannot reconstruct"):
        idx.reconstruct(ids[:2])
    with pytest.raises(ValueError, match="NaN"):
        idx.search(np.full(DIM, np.nan, np.float32), 3)
    with pytest.raises(ValueError, match="NaN"):
        idx.search(np.where(np.arange(DIM) == 2, np.inf, q[:3]), 3)
    with pytest.raises(ValueError, match="shape"):
        idx.search(q[:, :5], 3)
    with pytest.raises(ValueError, match="positive"):
        idx.set_search_params(reorder=0)
    with pytest.raises(ValueError, match="unknown search parameter"):
        idx.set_search_params(ef_search=3)
    with pytest.raises(ValueError, match="must divide"):
        vi.create(DIM, "scann", dims_per_block=3)
    with pytest.raises(ValueError, match="unknown parameter"):
        vi.create(DIM, "scann", nprobe=4)
    assert len(idx) == 1100
