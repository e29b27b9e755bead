"""Ranking metrics against independent computations: scikit-learn where the definitions
agree, brute force from the set definitions, hand-worked examples, and properties."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, dcg_score, ndcg_score

from vs_lib import metrics as m

grades_list = st.lists(st.integers(0, 5), min_size=1, max_size=30)
binary_list = st.lists(st.integers(0, 1), min_size=1, max_size=30)


# ---- hand-worked examples ---------------------------------------------------------------


def test_hand_worked_binary_example():
    # relevant at ranks 1, 3 and 6 of a list of 6
    r = [1, 0, 1, 0, 0, 1]
    assert m.precision_at_k(r, 1) == 1.0
    assert m.precision_at_k(r, 3) == pytest.approx(2 / 3)
    assert m.precision_at_k(r, 10) == pytest.approx(3 / 10)  # missing positions are misses
    assert m.recall_at_k(r, 3) == pytest.approx(2 / 3)
    assert m.recall_at_k(r, 3, n_relevant=100) == pytest.approx(0.02)
    assert m.reciprocal_rank(r) == 1.0
    assert m.reciprocal_rank([0, 0, 1]) == pytest.approx(1 / 3)
    assert m.reciprocal_rank([0, 0, 0]) == 0.0
    # AP = (1/1 + 2/3 + 3/6) / 3
    assert m.average_precision(r) == pytest.approx((1 + 2 / 3 + 0.5) / 3)
    assert m.average_precision(r, n_relevant=6) == pytest.approx((1 + 2 / 3 + 0.5) / 6)
    assert m.average_precision([0, 0, 0]) == 0.0


def test_hand_worked_graded_example():
    # the classic example: grades 3,2,3,0,1,2 -> DCG6 = 6.861, IDCG6 (3,3,2,2,1,0) = 7.141
    r = [3, 2, 3, 0, 1, 2]
    assert m.dcg_at_k(r) == pytest.approx(3 + 2 / math.log2(3) + 3 / 2 + 0 + 1 / math.log2(6) + 2 / math.log2(7))
    assert m.dcg_at_k(r) == pytest.approx(6.861, abs=1e-3)
    assert m.ndcg_at_k(r) == pytest.approx(6.861 / 7.141, abs=1e-3)
    assert m.dcg_at_k(r, 2, gain="exponential") == pytest.approx(7 + 3 / math.log2(3))
    # an ideal from the collection that holds better items than the list shows
    assert m.ndcg_at_k([3, 3], ideal=[5, 5, 3, 0]) == pytest.approx((3 + 3 / math.log2(3)) / (5 + 5 / math.log2(3)))
    assert m.ndcg_at_k([0, 0]) == 0.0


def test_means_over_lists():
    lists = [[0, 1, 0], [1, 0, 0], [0, 0, 0]]
    assert m.mean_reciprocal_rank(lists) == pytest.approx((0.5 + 1 + 0) / 3)
    assert m.mean_average_precision(lists) == pytest.approx((0.5 + 1 + 0) / 3)
    assert m.mean_average_precision(lists, n_relevant=[2, 1, 4]) == pytest.approx((0.25 + 1 + 0) / 3)
    with pytest.raises(ValueError):
        m.mean_reciprocal_rank([])
    with pytest.raises(ValueError):
        m.mean_average_precision(lists, n_relevant=[1, 2])


def test_user_errors_are_clear():
    with pytest.raises(ValueError, match="k must be a positive integer"):
        m.precision_at_k([1, 0], 0)
    with pytest.raises(ValueError, match="1-D"):
        m.reciprocal_rank([[1, 0]])
    with pytest.raises(ValueError, match="non-negative"):
        m.dcg_at_k([1, -1])
    with pytest.raises(ValueError, match="gain"):
        m.dcg_at_k([1], gain="log")
    with pytest.raises(ValueError, match="smaller"):
        m.average_precision([1, 1, 1], n_relevant=2)
    with pytest.raises(ValueError, match=r"\(queries, k\)"):
        m.precision_at_k_batch([1, 0], 1)


# ---- scikit-learn, where the definitions agree --------------------------------------------


def _scores_for_order(n):
    return np.arange(n, 0, -1, dtype=float)[None, :]  # strictly decreasing: no ties


@settings(max_examples=60, deadline=None)
@given(r=st.lists(st.integers(0, 5), min_size=2, max_size=30), k=st.integers(1, 35))
def test_dcg_ndcg_match_sklearn_linear_gain(r, k):
    y_true = np.asarray(r, dtype=float)[None, :]
    y_score = _scores_for_order(len(r))
    assert m.dcg_at_k(r, k) == pytest.approx(dcg_score(y_true, y_score, k=k, log_base=2))
    assert m.dcg_at_k(r) == pytest.approx(dcg_score(y_true, y_score, log_base=2))
    if sum(r) > 0:  # sklearn and we both call an all-zero list 0
        assert m.ndcg_at_k(r, k) == pytest.approx(ndcg_score(y_true, y_score, k=k))
        assert m.ndcg_at_k(r) == pytest.approx(ndcg_score(y_true, y_score))


@settings(max_examples=60, deadline=None)
@given(r=st.lists(st.integers(0, 1), min_size=2, max_size=30))
def test_average_precision_matches_sklearn(r):
    if sum(r) == 0:
        return
    expected = average_precision_score(np.asarray(r), _scores_for_order(len(r))[0])
    assert m.average_precision(r) == pytest.approx(expected)


# ---- brute force from the definitions ----------------------------------------------------


def _brute(r, k, n_relevant):
    relevant_positions = {i + 1 for i, g in enumerate(r) if g > 0}
    top = {i for i in relevant_positions if i <= k}
    total = n_relevant if n_relevant is not None else len(relevant_positions)
    prec = len(top) / k
    rec = len(top) / total if total else 0.0
    rr = 1 / min(relevant_positions) if relevant_positions else 0.0
    ap_terms = [len([j for j in relevant_positions if j <= i]) / i for i in sorted(relevant_positions)]
    ap = sum(ap_terms) / total if total else 0.0
    return prec, rec, rr, ap


@settings(max_examples=100, deadline=None)
@given(r=grades_list, k=st.integers(1, 40), extra=st.one_of(st.none(), st.integers(0, 20)))
def test_binary_metrics_match_brute_force(r, k, extra):
    n_rel = None if extra is None else sum(g > 0 for g in r) + extra
    prec, rec, rr, ap = _brute(r, k, n_rel)
    assert m.precision_at_k(r, k) == pytest.approx(prec)
    assert m.recall_at_k(r, k, n_rel) == pytest.approx(rec)
    assert m.reciprocal_rank(r) == pytest.approx(rr)
    assert m.average_precision(r, n_rel) == pytest.approx(ap)


def test_ndcg_brute_force_best_permutation():
    # the ideal DCG is the best DCG over every permutation of the grades
    import itertools

    rng = np.random.default_rng(0)
    for _ in range(20):
        r = rng.integers(0, 6, size=6)
        best = max(m.dcg_at_k(list(p), 4) for p in itertools.permutations(r))
        assert m.dcg_at_k(r, 4) / best == pytest.approx(m.ndcg_at_k(r, 4))


# ---- properties ---------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(r=grades_list, k=st.integers(1, 40))
def test_bounds(r, k):
    for v in (
        m.precision_at_k(r, k),
        m.recall_at_k(r, k),
        m.reciprocal_rank(r),
        m.average_precision(r),
        m.ndcg_at_k(r, k),
        m.ndcg_at_k(r, k, gain="exponential"),
    ):
        assert 0.0 <= v <= 1.0 + 1e-12
    assert m.dcg_at_k(r, k) >= 0


@settings(max_examples=100, deadline=None)
@given(r=grades_list)
def test_perfect_ranking_scores_one(r):
    ideal = sorted(r, reverse=True)
    if max(r) > 0:
        assert m.ndcg_at_k(ideal) == pytest.approx(1.0)
        assert m.ndcg_at_k(ideal, 3, gain="exponential") == pytest.approx(1.0)
        assert m.reciprocal_rank(ideal) == 1.0
        assert m.average_precision(ideal) == pytest.approx(1.0)
        n_hits = sum(g > 0 for g in r)
        assert m.recall_at_k(ideal, n_hits) == pytest.approx(1.0)
        assert m.precision_at_k(ideal, n_hits) == pytest.approx(1.0)


@settings(max_examples=100, deadline=None)
@given(r=grades_list, tail=st.lists(st.just(0), max_size=10), scale=st.integers(1, 5))
def test_invariances(r, tail, scale):
    # appending non-relevant items at the end changes nothing but precision@k for large k
    assert m.average_precision(r + tail) == pytest.approx(m.average_precision(r))
    assert m.reciprocal_rank(r + tail) == m.reciprocal_rank(r)
    assert m.ndcg_at_k(r + tail) == pytest.approx(m.ndcg_at_k(r))
    # nDCG (linear gain) ignores a common scale of the grades; binary metrics only see > 0
    assert m.ndcg_at_k([g * scale for g in r]) == pytest.approx(m.ndcg_at_k(r))
    assert m.average_precision([g * scale for g in r]) == pytest.approx(m.average_precision(r))
    # precision ignores the order within the top k
    k = len(r)
    assert m.precision_at_k(r[::-1], k) == pytest.approx(m.precision_at_k(r, k))


@settings(max_examples=60, deadline=None)
@given(r=st.lists(st.integers(0, 5), min_size=2, max_size=20), data=st.data())
def test_swapping_a_better_item_up_never_hurts(r, data):
    i = data.draw(st.integers(0, len(r) - 2))
    if r[i] < r[i + 1]:
        swapped = r.copy()
        swapped[i], swapped[i + 1] = swapped[i + 1], swapped[i]
        assert m.dcg_at_k(swapped) >= m.dcg_at_k(r) - 1e-12
        assert m.average_precision(swapped) >= m.average_precision(r) - 1e-12


# ---- vectorised forms equal the scalar definitions ----------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 8),
    width=st.integers(1, 15),
    k=st.integers(1, 20),
    seed=st.integers(0, 10_000),
    gain=st.sampled_from(["linear", "exponential"]),
)
def test_batch_equals_scalar(n, width, k, seed, gain):
    rng = np.random.default_rng(seed)
    R = rng.integers(0, 6, size=(n, width)) * (rng.random((n, width)) < 0.5)
    extra = rng.integers(0, 5, size=n)
    n_rel = (R > 0).sum(1) + extra
    ideal = rng.integers(0, 6, size=(n, width + 3))
    ideal[:, :width] = np.maximum(ideal[:, :width], R)  # the collection holds the list's items
    np.testing.assert_allclose(m.precision_at_k_batch(R, k), [m.precision_at_k(r, k) for r in R])
    np.testing.assert_allclose(m.recall_at_k_batch(R, k), [m.recall_at_k(r, k) for r in R])
    np.testing.assert_allclose(
        m.recall_at_k_batch(R, k, n_rel), [m.recall_at_k(r, k, t) for r, t in zip(R, n_rel, strict=False)]
    )
    np.testing.assert_allclose(m.reciprocal_rank_batch(R), [m.reciprocal_rank(r) for r in R])
    np.testing.assert_allclose(m.average_precision_batch(R), [m.average_precision(r) for r in R])
    np.testing.assert_allclose(
        m.average_precision_batch(R, n_rel), [m.average_precision(r, t) for r, t in zip(R, n_rel, strict=False)]
    )
    np.testing.assert_allclose(m.dcg_at_k_batch(R, k, gain), [m.dcg_at_k(r, k, gain) for r in R])
    np.testing.assert_allclose(m.ndcg_at_k_batch(R, k, gain), [m.ndcg_at_k(r, k, gain) for r in R])
    np.testing.assert_allclose(
        m.ndcg_at_k_batch(R, None, gain, ideal=ideal),
        [m.ndcg_at_k(r, None, gain, ideal=i) for r, i in zip(R, ideal, strict=False)],
    )
    assert (m.ndcg_at_k_batch(R, k, gain, ideal=ideal) <= 1 + 1e-12).all()


# ---- graded relevance table ---------------------------------------------------------------


def test_fashion_mnist_grades_table():
    G = m.FASHION_MNIST_GRADES
    assert G.shape == (10, 10) and G.dtype.kind == "i"
    assert (G == G.T).all() and (np.diag(G) == 5).all()
    assert G.min() == 0 and (G[~np.eye(10, dtype=bool)] < 5).all()
    names = list(m.FASHION_MNIST_CLASSES)
    idx = names.index
    upper = [idx(c) for c in ("T-shirt/top", "Pullover", "Shirt", "Coat", "Dress")]
    feet = [idx(c) for c in ("Sandal", "Sneaker", "Ankle boot")]
    for group in (upper, feet):
        for a in group:
            for b in group:
                assert G[a, b] > 0  # related within a group
    for a in upper:
        for b in feet:
            assert G[a, b] == 0
    for apart in (idx("Trouser"), idx("Bag")):
        assert G[apart].sum() == 5
    with pytest.raises(ValueError):
        G[0, 0] = 1  # read-only: no one changes the raters' judgement by accident


def test_graded_relevance_lookup():
    q = np.array([0, 7])
    res = np.array([[0, 6, 9], [5, 7, 1]])
    np.testing.assert_array_equal(m.graded_relevance(q, res), [[5, 4, 0], [3, 5, 0]])
    np.testing.assert_array_equal(m.graded_relevance(3, [3, 1]), [5, 0])
    with pytest.raises(ValueError, match="class labels"):
        m.graded_relevance(q, np.array([[0, 10, 1], [1, 1, 1]]))
    with pytest.raises(ValueError, match=r"\(q, k\)"):
        m.graded_relevance(q, np.array([[0, 1, 1]]))


@settings(max_examples=60, deadline=None)
@given(r=binary_list, data=st.data())
def test_average_precision_at_r_matches_its_definition(r, data):
    # the collection holds R >= 1 relevant items; the list shows at least its first R results
    n_rel = data.draw(st.integers(1, len(r)))
    top = r[:n_rel]
    by_definition = sum(sum(top[: i + 1]) / (i + 1) for i in range(n_rel) if top[i]) / n_rel
    assert m.average_precision_at_r(r, n_rel) == pytest.approx(by_definition)
    assert m.average_precision_at_r_batch([r], [n_rel])[0] == pytest.approx(by_definition)


def test_average_precision_at_r_needs_r_results():
    assert m.average_precision_at_r([1, 1, 0, 1], 3) == pytest.approx(2 / 3)  # (1/1 + 2/2) / 3
    assert m.average_precision_at_r([0, 0], 0) == 0.0
    with pytest.raises(ValueError, match="R = 5"):
        m.average_precision_at_r_batch([[1, 0, 1]], [5])
