"""The one exact top-k, against scikit-learn's brute-force neighbours."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.neighbors import NearestNeighbors

from vs_lib.index.exact import exact_topk, neighbour_recall


def _data(seed=0, n=300, q=40, d=12):
    rng = np.random.default_rng(seed)
    g = rng.standard_normal((n, d)).astype(np.float32)
    return g, rng.standard_normal((q, d)).astype(np.float32)


@pytest.mark.parametrize("chunk", [7, 1024])
def test_l2_matches_sklearn(chunk):
    g, q = _data()
    dist, pos = exact_topk(q, g, 5, metric="l2", chunk=chunk)
    ref_d, ref_i = NearestNeighbors(n_neighbors=5, algorithm="brute").fit(g).kneighbors(q)
    np.testing.assert_array_equal(pos, ref_i)
    np.testing.assert_allclose(dist, ref_d**2, rtol=1e-4, atol=1e-4)


def test_ip_matches_cosine_ranking_on_unit_vectors():
    g, q = _data(1)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    sims, pos = exact_topk(q, g, 4, chunk=9)
    _, ref_i = NearestNeighbors(n_neighbors=4, algorithm="brute", metric="cosine").fit(g).kneighbors(q)
    np.testing.assert_array_equal(pos, ref_i)
    np.testing.assert_allclose(sims, np.take_along_axis(q @ g.T, ref_i, 1), atol=1e-5)


def test_exclude_self_is_leave_one_out():
    g, _ = _data(2, n=120)
    _, pos = exact_topk(g, g, 3, metric="l2", exclude=np.arange(len(g)), chunk=50)
    _, ref_i = NearestNeighbors(n_neighbors=4, algorithm="brute").fit(g).kneighbors(g)
    assert not (pos == np.arange(len(g))[:, None]).any()
    np.testing.assert_array_equal(pos, ref_i[:, 1:])


def test_user_errors():
    g, q = _data(3, n=5)
    with pytest.raises(ValueError, match="dimension"):
        exact_topk(q[:, :3], g, 2)
    with pytest.raises(ValueError, match="larger than"):
        exact_topk(g, g, 5, exclude=np.arange(5))
    with pytest.raises(ValueError, match="positive integer"):
        exact_topk(q, g, 0)
    with pytest.raises(ValueError, match="metric"):
        exact_topk(q, g, 1, metric="cos")


def test_neighbour_recall_counts_intersections_and_ignores_padding():
    assert neighbour_recall(np.array([[1, 2, -1]]), np.array([[2, 3, 1]])) == pytest.approx(2 / 3)
    assert neighbour_recall(np.array([[5, 6], [1, 2]]), np.array([[6, 5], [3, 4]])) == pytest.approx(0.5)
